//! The primary's side of `ReplicateStream`: the replication requests of one range to one
//! follower over a long-lived stream, answered one by one in order.
//!
//! Why: a replicated write costs the primary one `Replicate` round trip per backup, and as a
//! unary call each pays for an HTTP/2 stream, header coding and a handler task on both
//! nodes. The replication task sends one request at a time and waits for its answer anyway,
//! so a stream carries exactly the same exchange. Any failure drops the stream (the task
//! then resynchronises with a handshake, as after a failed unary call) and the next request
//! opens a new one; a follower without the method is served with unary calls for as long
//! as its address stays the same.

use std::time::Duration;

use shmdb_proto::storage::{self as pb, replication_client::ReplicationClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// One replication task's connection state to its follower.
#[derive(Default)]
pub(crate) struct ReplicaStream {
    open: Option<Open>,
    /// The follower address that answered `UNIMPLEMENTED`: unary calls to it.
    unary_at: Option<String>,
}

struct Open {
    address: String,
    requests: mpsc::UnboundedSender<pb::ReplicateRequest>,
    answers: Streaming<pb::ReplicateResponse>,
}

impl ReplicaStream {
    /// Sends one request to the follower at `address` and waits (up to `timeout`) for its
    /// answer.
    pub(crate) async fn replicate(
        &mut self,
        client: &mut ReplicationClient<Channel>,
        address: &str,
        request: pb::ReplicateRequest,
        timeout: Duration,
    ) -> Result<pb::ReplicateResponse, Status> {
        if self.unary_at.as_deref() == Some(address) {
            return unary(client, request, timeout).await;
        }
        if self.open.as_ref().is_none_or(|o| o.address != address) {
            self.open = None;
            let (requests, rx) = mpsc::unbounded_channel();
            let opened = tokio::time::timeout(
                timeout,
                client.replicate_stream(UnboundedReceiverStream::new(rx)),
            )
            .await
            .map_err(|_| Status::deadline_exceeded("opening the replication stream"))?;
            match opened {
                Ok(answers) => {
                    self.open = Some(Open {
                        address: address.to_string(),
                        requests,
                        answers: answers.into_inner(),
                    });
                }
                Err(status) if status.code() == Code::Unimplemented => {
                    self.unary_at = Some(address.to_string());
                    return unary(client, request, timeout).await;
                }
                Err(status) => return Err(status),
            }
        }
        let Some(open) = self.open.as_mut() else {
            return Err(Status::internal("replication stream missing"));
        };
        if open.requests.send(request).is_err() {
            self.open = None;
            return Err(Status::unavailable("replication stream closed"));
        }
        let answer = match tokio::time::timeout(timeout, open.answers.message()).await {
            Ok(Ok(Some(answer))) => return Ok(answer),
            Ok(Ok(None)) => Status::unavailable("the follower ended the replication stream"),
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded("no replication answer in time"),
        };
        // The stream's state is unknown now (a late answer would be taken for the next
        // request's): start over on a new one.
        self.open = None;
        Err(answer)
    }
}

async fn unary(
    client: &mut ReplicationClient<Channel>,
    request: pb::ReplicateRequest,
    timeout: Duration,
) -> Result<pb::ReplicateResponse, Status> {
    tokio::time::timeout(timeout, client.replicate(request))
        .await
        .map_err(|_| Status::deadline_exceeded("no replication answer in time"))?
        .map(tonic::Response::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::StreamExt as _;
    use shmdb_proto::storage::replication_server::{Replication, ReplicationServer};
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response};

    use super::*;

    /// A follower that answers each request with its `committed_lsn` as `applied_lsn` (so
    /// an answer names its request), with or without the stream method, and that can end
    /// a stream after a number of answers.
    #[derive(Default)]
    struct Follower {
        streams_supported: bool,
        end_stream_after: Option<usize>,
        unary_calls: AtomicUsize,
        stream_calls: AtomicUsize,
    }

    fn answer(request: &pb::ReplicateRequest) -> pb::ReplicateResponse {
        pb::ReplicateResponse {
            accepted: true,
            applied_lsn: request.committed_lsn,
            ..Default::default()
        }
    }

    /// The served handle (the trait cannot be implemented for `Arc<Follower>` here).
    struct Served(Arc<Follower>);

    #[tonic::async_trait]
    impl Replication for Served {
        async fn replicate(
            &self,
            request: Request<pb::ReplicateRequest>,
        ) -> Result<Response<pb::ReplicateResponse>, Status> {
            self.0.unary_calls.fetch_add(1, Ordering::Relaxed);
            Ok(Response::new(answer(request.get_ref())))
        }

        type ReplicateStreamStream = crate::service::ReplicateAnswers;

        async fn replicate_stream(
            &self,
            request: Request<Streaming<pb::ReplicateRequest>>,
        ) -> Result<Response<Self::ReplicateStreamStream>, Status> {
            if !self.0.streams_supported {
                return Err(Status::unimplemented("no ReplicateStream here"));
            }
            self.0.stream_calls.fetch_add(1, Ordering::Relaxed);
            let answers = request
                .into_inner()
                .take(self.0.end_stream_after.unwrap_or(usize::MAX))
                .map(|r| r.map(|r| answer(&r)));
            Ok(Response::new(Box::pin(answers)))
        }

        async fn install_snapshot(
            &self,
            _: Request<Streaming<pb::SnapshotChunk>>,
        ) -> Result<Response<pb::SnapshotAck>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    async fn serve(follower: Arc<Follower>) -> (ReplicationClient<Channel>, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ReplicationServer::new(Served(follower)))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let client = ReplicationClient::connect(format!("http://{address}"))
            .await
            .expect("connect");
        (client, address)
    }

    fn request(seq: u64) -> pb::ReplicateRequest {
        pb::ReplicateRequest {
            committed_lsn: seq,
            ..Default::default()
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn requests_go_over_one_stream_and_answers_come_back_in_order() {
        let follower = Arc::new(Follower {
            streams_supported: true,
            ..Default::default()
        });
        let (mut client, address) = serve(follower.clone()).await;
        let mut link = ReplicaStream::default();
        for seq in 1..=20 {
            let answer = link
                .replicate(&mut client, &address, request(seq), TIMEOUT)
                .await
                .expect("answer");
            assert_eq!(answer.applied_lsn, seq);
        }
        assert_eq!(follower.stream_calls.load(Ordering::Relaxed), 1);
        assert_eq!(follower.unary_calls.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_follower_without_the_stream_method_is_served_with_unary_calls() {
        let follower = Arc::new(Follower::default());
        let (mut client, address) = serve(follower.clone()).await;
        let mut link = ReplicaStream::default();
        for seq in 1..=3 {
            let answer = link
                .replicate(&mut client, &address, request(seq), TIMEOUT)
                .await
                .expect("answer");
            assert_eq!(answer.applied_lsn, seq);
        }
        assert_eq!(follower.unary_calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn an_ended_stream_fails_the_request_and_the_next_one_opens_another() {
        let follower = Arc::new(Follower {
            streams_supported: true,
            end_stream_after: Some(2),
            ..Default::default()
        });
        let (mut client, address) = serve(follower.clone()).await;
        let mut link = ReplicaStream::default();
        for seq in 1..=2 {
            let answer = link
                .replicate(&mut client, &address, request(seq), TIMEOUT)
                .await
                .expect("answer");
            assert_eq!(answer.applied_lsn, seq);
        }
        // The follower ended the stream: this request has no answer...
        assert!(
            link.replicate(&mut client, &address, request(3), TIMEOUT)
                .await
                .is_err()
        );
        // ...and the next one goes over a new stream.
        let answer = link
            .replicate(&mut client, &address, request(4), TIMEOUT)
            .await
            .expect("answer on a new stream");
        assert_eq!(answer.applied_lsn, 4);
        assert_eq!(follower.stream_calls.load(Ordering::Relaxed), 2);
    }
}
