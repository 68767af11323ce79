//! Real gRPC, streaming data path: what happens to requests multiplexed on a `Stream`
//! session when the node dies, when one request times out, when the node ends the stream,
//! and when the node predates the method (unary fallback).
//!
//! The fake node answers a batch whose first key is `hang` never, `close` by ending the
//! stream, `bad` with an error answer, and anything else with the key as the found value.

mod echo;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use shmdb_store_client::proto as pb;
use shmdb_store_client::proto::storage_server::{Storage, StorageServer};
use shmdb_store_client::{DataPath, GrpcConfig, GrpcTransport, Transport, TransportError};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use echo::{answer, first_key, found, get, spawn_call, wait_for};

#[derive(Clone, Default)]
struct FakeNode {
    /// Answer `Stream` with UNIMPLEMENTED, as a node older than the client.
    no_stream: bool,
    /// Stream requests received.
    received: Arc<AtomicU64>,
    /// Unary batches served.
    unary: Arc<AtomicU64>,
    /// Streams opened.
    streams: Arc<AtomicU64>,
}

type Answers = futures::channel::mpsc::UnboundedSender<Result<pb::StreamResponse, Status>>;

async fn serve_stream(node: FakeNode, mut inbound: Streaming<pb::StreamRequest>, tx: Answers) {
    while let Ok(Some(request)) = inbound.message().await {
        node.received.fetch_add(1, Ordering::SeqCst);
        let Some(pb::stream_request::Body::Batch(batch)) = request.body else {
            continue;
        };
        let key = first_key(&batch);
        let body = match key.as_ref() {
            b"hang" => continue,
            b"close" => return,
            b"bad" => pb::stream_response::Body::Error(pb::StreamError {
                code: tonic::Code::InvalidArgument as i32,
                message: "bad key".into(),
            }),
            _ => pb::stream_response::Body::Batch(answer(&key)),
        };
        let response = pb::StreamResponse {
            id: request.id,
            body: Some(body),
        };
        if tx.unbounded_send(Ok(response)).is_err() {
            return;
        }
    }
}

#[tonic::async_trait]
impl Storage for FakeNode {
    type StreamStream =
        futures::channel::mpsc::UnboundedReceiver<Result<pb::StreamResponse, Status>>;

    async fn stream(
        &self,
        req: Request<Streaming<pb::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        if self.no_stream {
            return Err(Status::unimplemented("no Stream on this node"));
        }
        self.streams.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tokio::spawn(serve_stream(self.clone(), req.into_inner(), tx));
        Ok(Response::new(rx))
    }

    async fn batch(
        &self,
        req: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        self.unary.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(answer(&first_key(req.get_ref()))))
    }

    async fn scan(
        &self,
        _: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    /// A fake without a framed endpoint, as a node that predates it: clients use gRPC.
    async fn framed_endpoint(
        &self,
        _: Request<pb::FramedEndpointRequest>,
    ) -> Result<Response<pb::FramedEndpointResponse>, Status> {
        Err(Status::unimplemented("FramedEndpoint"))
    }

    async fn echo(
        &self,
        req: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoResponse>, Status> {
        Ok(Response::new(pb::EchoResponse {
            payload: req.into_inner().payload,
        }))
    }
}

/// The fake node behind a TCP relay, so the test can cut every connection at once as a
/// crash would (an in-process server's connections outlive its server task).
struct Harness {
    node: FakeNode,
    addr: String,
    relay: Arc<Mutex<Vec<JoinHandle<()>>>>,
    server: JoinHandle<()>,
}

impl Harness {
    async fn start(node: FakeNode) -> Harness {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let upstream: SocketAddr = incoming.local_addr().expect("local addr");
        let server = {
            let node = node.clone();
            tokio::spawn(async move {
                let _ = Server::builder()
                    .add_service(StorageServer::new(node))
                    .serve_with_incoming(incoming)
                    .await;
            })
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr").to_string();
        let relay: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tasks = relay.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut in_r, mut in_w) = inbound.into_split();
                let (mut out_r, mut out_w) = outbound.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut in_r, &mut out_w).await;
                    let _ = out_w.shutdown().await;
                });
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
                });
                tasks.lock().extend([up, down]);
            }
        });
        relay.lock().push(accept);
        Harness {
            node,
            addr,
            relay,
            server,
        }
    }

    /// Cuts every connection and stops accepting: the node is dead to the client.
    fn kill(&self) {
        for task in self.relay.lock().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill();
        self.server.abort();
    }
}

fn transport(request_timeout: Duration) -> Arc<GrpcTransport> {
    Arc::new(GrpcTransport::new(GrpcConfig {
        request_timeout,
        data_path: DataPath::Stream,
        ..GrpcConfig::default()
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_fails_every_call_in_flight_promptly() {
    let harness = Harness::start(FakeNode::default()).await;
    let timeout = Duration::from_secs(30);
    let t = transport(timeout);
    let warm = t.batch(&harness.addr, get("warm")).await.expect("warm-up");
    assert_eq!(found(&warm), Some(Bytes::from_static(b"warm")));
    let calls: Vec<_> = (0..8)
        .map(|_| spawn_call(&t, &harness.addr, "hang"))
        .collect();
    let received = harness.node.received.clone();
    wait_for("all eight requests to reach the node", || {
        received.load(Ordering::SeqCst) >= 9
    })
    .await;
    harness.kill();
    for call in calls {
        let (result, elapsed) = call.await.expect("call task");
        let err = result.expect_err("a dead node answers nothing");
        assert!(matches!(err, TransportError::Lost(_)), "{err:?}");
        assert!(err.may_have_been_applied() && err.is_retryable());
        assert!(
            elapsed < Duration::from_secs(5),
            "noticed after {elapsed:?}"
        );
    }
    assert_eq!(t.open_streams(), 0, "the broken session is not kept");
    // The next call reconnects, finds nothing listening, and says so at once.
    let started = Instant::now();
    let err = t.batch(&harness.addr, get("after")).await.err();
    assert!(
        matches!(err, Some(TransportError::Unreachable(_))),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_timed_out_call_leaves_the_others_and_the_session_working() {
    let harness = Harness::start(FakeNode::default()).await;
    let timeout = Duration::from_millis(300);
    let t = transport(timeout);
    t.batch(&harness.addr, get("warm")).await.expect("warm-up");
    let hung = spawn_call(&t, &harness.addr, "hang");
    let keys = [
        "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10", "k11",
    ];
    let others: Vec<_> = keys
        .iter()
        .map(|key| spawn_call(&t, &harness.addr, key))
        .collect();
    for (key, call) in keys.iter().zip(others) {
        let (result, _) = call.await.expect("call task");
        let response = result.unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(found(&response), Some(Bytes::from_static(key.as_bytes())));
    }
    let (result, elapsed) = hung.await.expect("call task");
    let err = result.expect_err("nobody answers a hung request");
    assert!(matches!(err, TransportError::Timeout(_)), "{err:?}");
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(2),
        "timed out after {elapsed:?}"
    );
    for key in ["after-1", "after-2", "after-3"] {
        let response = t.batch(&harness.addr, get(key)).await.expect("after");
        assert_eq!(found(&response), Some(Bytes::from_static(key.as_bytes())));
    }
    assert_eq!(t.streams_opened(), 1, "every call shared the one session");
    assert_eq!(t.open_streams(), 1);
    assert_eq!(harness.node.streams.load(Ordering::SeqCst), 1);
    assert_eq!(harness.node.unary.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_node_ends_fails_its_calls_and_is_replaced() {
    let harness = Harness::start(FakeNode::default()).await;
    let t = transport(Duration::from_secs(30));
    t.batch(&harness.addr, get("warm")).await.expect("warm-up");
    let hung = spawn_call(&t, &harness.addr, "hang");
    let received = harness.node.received.clone();
    wait_for("the hung request to reach the node", || {
        received.load(Ordering::SeqCst) >= 2
    })
    .await;
    let closed = t.batch(&harness.addr, get("close")).await.err();
    assert!(
        matches!(closed, Some(TransportError::Lost(_))),
        "{closed:?}"
    );
    let (result, elapsed) = hung.await.expect("call task");
    assert!(matches!(result, Err(TransportError::Lost(_))), "{result:?}");
    assert!(elapsed < Duration::from_secs(5));
    let response = t
        .batch(&harness.addr, get("again"))
        .await
        .expect("fresh session");
    assert_eq!(found(&response), Some(Bytes::from_static(b"again")));
    assert_eq!(t.streams_opened(), 2);
    assert_eq!(harness.node.streams.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_is_classified_like_the_unary_status() {
    let harness = Harness::start(FakeNode::default()).await;
    let t = transport(Duration::from_secs(5));
    let err = t.batch(&harness.addr, get("bad")).await.err();
    // INVALID_ARGUMENT: refused, not applied, not worth retrying, as for a unary call.
    assert!(
        matches!(&err, Some(TransportError::Rejected(text)) if text.contains("bad key")),
        "{err:?}"
    );
    let response = t
        .batch(&harness.addr, get("fine"))
        .await
        .expect("same session");
    assert_eq!(found(&response), Some(Bytes::from_static(b"fine")));
    assert_eq!(t.streams_opened(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_stream_is_served_with_unary_calls() {
    let harness = Harness::start(FakeNode {
        no_stream: true,
        ..FakeNode::default()
    })
    .await;
    let t = transport(Duration::from_secs(5));
    for key in ["a", "b", "c"] {
        let response = t
            .batch(&harness.addr, get(key))
            .await
            .expect("unary fallback");
        assert_eq!(found(&response), Some(Bytes::from_static(key.as_bytes())));
    }
    assert_eq!(harness.node.unary.load(Ordering::SeqCst), 3);
    assert_eq!(t.streams_opened(), 0);
    assert_eq!(harness.node.received.load(Ordering::SeqCst), 0);
}
