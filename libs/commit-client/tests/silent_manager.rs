//! A manager that accepts a session but never answers: the client's calls fail within their
//! deadline (a start as unavailable, a commit as ambiguous) instead of hanging.

use std::time::{Duration, Instant};

use shmdb_commit_client::{CommitClient, CommitClientConfig, CommitError};
use shmdb_proto::commit as pb;
use shmdb_proto::commit::commit_manager_server::{CommitManager, CommitManagerServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Keeps every session open and silent; everything else is unimplemented.
struct Silent;

type Answers = ReceiverStream<Result<pb::SessionResponse, Status>>;

#[tonic::async_trait]
impl CommitManager for Silent {
    async fn start(
        &self,
        _: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }
    async fn start_batch(
        &self,
        _: Request<pb::StartBatchRequest>,
    ) -> Result<Response<pb::StartBatchResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }
    async fn commit(
        &self,
        _: Request<pb::FinishRequest>,
    ) -> Result<Response<pb::FinishResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }
    async fn abort(
        &self,
        _: Request<pb::FinishRequest>,
    ) -> Result<Response<pb::FinishResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }
    async fn finish_batch(
        &self,
        _: Request<pb::FinishBatchRequest>,
    ) -> Result<Response<pb::FinishBatchResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }
    type SessionStream = Answers;
    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let (tx, rx) = mpsc::channel(1);
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            // Read and drop every request; hold the answer side open until the client leaves.
            while let Ok(Some(_)) = inbound.message().await {}
            drop(tx);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
    async fn heartbeat(
        &self,
        _: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }
}

/// A call that never returns fails the test instead of hanging it.
async fn bounded<T>(call: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| anyhow::anyhow!("the call hung"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_silent_manager_fail_within_their_deadline() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CommitManagerServer::new(Silent))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut cfg = CommitClientConfig::new([addr.to_string()], 1);
    cfg.request_timeout = Duration::from_millis(200);
    cfg.deadline = Duration::from_secs(1);
    cfg.heartbeat_interval = None;
    let client = CommitClient::new(cfg)?;

    let began = Instant::now();
    match bounded(client.start()).await? {
        Err(CommitError::Unavailable { last, .. }) => {
            assert!(last.contains("no answer within"), "{last}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(1), "gave up early: {took:?}");
    assert!(took < Duration::from_secs(5), "hung: {took:?}");

    let began = Instant::now();
    match bounded(client.commit(42)).await? {
        Err(CommitError::Ambiguous { tid: 42, reason }) => {
            assert!(reason.contains("no answer within"), "{reason}");
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    assert!(began.elapsed() < Duration::from_secs(5), "hung");
    assert!(client.running().is_empty());
    server.abort();
    Ok(())
}
