//! The framed TCP data path against a fake node whose framed listener the test controls:
//! discovery over gRPC and the fallback to gRPC, a node killed with requests in flight, bad
//! frames from the node (garbage, an oversized length), an endpoint that moved, timeouts,
//! and the coalescing of queued requests into one write.
//!
//! The fake's framed side answers a batch whose first key is `hang` never, `garbage` with
//! bytes that are no answer, `huge` with a length far over the limit, `close` by closing the
//! connection, and anything else with the key as the found value.

mod echo;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use shmdb_store_client::framed::codec::{self, FrameReader};
use shmdb_store_client::framed::metrics::Direction;
use shmdb_store_client::proto as pb;
use shmdb_store_client::proto::storage_server::{Storage, StorageServer};
use shmdb_store_client::{
    FramedConfig, FramedMetrics, FramedTransport, GrpcConfig, Transport, TransportError,
};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use echo::{answer, first_key, found, get, spawn_call, wait_for};

/// The gRPC side of the fake: tells the framed port (or has no `FramedEndpoint`, as an
/// older node) and serves unary batches for clients that fall back.
#[derive(Clone, Default)]
struct FakeNode {
    framed_port: Arc<Mutex<Option<u16>>>,
    unary: Arc<AtomicU64>,
    asked: Arc<AtomicU64>,
    /// Never answer `FramedEndpoint` (a node hung before it could say).
    hang_discovery: Arc<std::sync::atomic::AtomicBool>,
}

#[tonic::async_trait]
impl Storage for FakeNode {
    type StreamStream = futures::stream::BoxStream<'static, Result<pb::StreamResponse, Status>>;

    async fn stream(
        &self,
        _: Request<Streaming<pb::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Err(Status::unimplemented("no Stream on this fake"))
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

    async fn framed_endpoint(
        &self,
        _: Request<pb::FramedEndpointRequest>,
    ) -> Result<Response<pb::FramedEndpointResponse>, Status> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if self.hang_discovery.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let port = *self.framed_port.lock();
        match port {
            Some(port) => Ok(Response::new(pb::FramedEndpointResponse {
                port: u32::from(port),
            })),
            None => Err(Status::unimplemented("FramedEndpoint")),
        }
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

/// The framed side of the fake: one task per accepted connection, all killable at once.
struct FramedSide {
    port: u16,
    accepted: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FramedSide {
    async fn start() -> FramedSide {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind framed");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (accepted, received, tasks) = (accepted.clone(), received.clone(), tasks.clone());
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let task = tokio::spawn(serve_framed(socket, received.clone()));
                    tasks.lock().push(task);
                }
            })
        };
        tasks.lock().push(accept);
        FramedSide {
            port,
            accepted,
            received,
            tasks,
        }
    }

    /// Closes the listener and every connection, as a crash would; the tasks it aborted.
    fn kill(&self) -> Vec<JoinHandle<()>> {
        let tasks: Vec<_> = self.tasks.lock().drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        tasks
    }

    /// [`FramedSide::kill`], returning once every task is gone and its sockets are closed
    /// (an abort only asks: a connection may still answer a request meanwhile).
    async fn stop(&self) {
        for task in self.kill() {
            let _ = task.await;
        }
    }
}

impl Drop for FramedSide {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve_framed(socket: TcpStream, received: Arc<AtomicU64>) {
    let (read, mut write) = socket.into_split();
    let mut frames = FrameReader::new(read, 1 << 20);
    while let Ok(Some((request, _))) = frames.next::<pb::StreamRequest>().await {
        received.fetch_add(1, Ordering::SeqCst);
        let Some(pb::stream_request::Body::Batch(batch)) = request.body else {
            continue;
        };
        let key = first_key(&batch);
        let mut out = BytesMut::new();
        match key.as_ref() {
            b"hang" => continue,
            b"close" => return,
            b"garbage" => out.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]),
            b"huge" => out.extend_from_slice(&u32::MAX.to_be_bytes()),
            _ => {
                let response = pb::StreamResponse {
                    id: request.id,
                    body: Some(pb::stream_response::Body::Batch(answer(&key))),
                };
                codec::encode(&response, 1 << 20, &mut out).expect("encode");
            }
        }
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A fake node: gRPC server plus (optionally) a framed listener it announces.
struct Harness {
    node: FakeNode,
    addr: String,
    framed: Option<FramedSide>,
    server: JoinHandle<()>,
}

impl Harness {
    async fn start(framed: bool) -> Harness {
        let node = FakeNode::default();
        let framed = if framed {
            let side = FramedSide::start().await;
            *node.framed_port.lock() = Some(side.port);
            Some(side)
        } else {
            None
        };
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = incoming.local_addr().expect("local addr").to_string();
        let server = {
            let node = node.clone();
            tokio::spawn(async move {
                let _ = Server::builder()
                    .add_service(StorageServer::new(node))
                    .serve_with_incoming(incoming)
                    .await;
            })
        };
        Harness {
            node,
            addr,
            framed,
            server,
        }
    }

    fn framed(&self) -> &FramedSide {
        self.framed.as_ref().expect("a framed side")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn transport(request_timeout: Duration) -> Arc<FramedTransport> {
    Arc::new(FramedTransport::new(
        FramedConfig {
            request_timeout,
            max_frame_bytes: 1 << 20,
            ..FramedConfig::default()
        },
        GrpcConfig {
            request_timeout,
            ..GrpcConfig::default()
        },
        FramedMetrics::new().expect("metrics"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_travel_framed_after_one_discovery_call() {
    let harness = Harness::start(true).await;
    let t = transport(Duration::from_secs(5));
    for i in 0..20 {
        let key = format!("k{i}");
        let response = t.batch(&harness.addr, get(&key)).await.expect("answer");
        assert_eq!(found(&response), Some(Bytes::from(key)));
    }
    assert_eq!(harness.node.asked.load(Ordering::SeqCst), 1, "asked once");
    assert_eq!(harness.framed().received.load(Ordering::SeqCst), 20);
    assert_eq!(
        harness.node.unary.load(Ordering::SeqCst),
        0,
        "nothing over gRPC"
    );
    assert_eq!(t.connections_opened(), 1);
    assert_eq!(t.metrics().frames(Direction::Received), 20);
    // The writer counts a frame once its write returns, which may be after the answer.
    wait_for("all 20 frames counted as sent", || {
        t.metrics().frames(Direction::Sent) == 20
    })
    .await;
    assert_eq!(t.metrics().grpc_fallbacks.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_framed_endpoint_is_served_over_grpc() {
    let harness = Harness::start(false).await;
    let t = transport(Duration::from_secs(5));
    for key in ["a", "b", "c"] {
        let response = t.batch(&harness.addr, get(key)).await.expect("over gRPC");
        assert_eq!(found(&response), Some(Bytes::from(key)));
    }
    assert_eq!(harness.node.unary.load(Ordering::SeqCst), 3);
    // Asked once; the answer is remembered (for `rediscover_after`).
    assert_eq!(harness.node.asked.load(Ordering::SeqCst), 1);
    assert_eq!(t.metrics().grpc_fallbacks.get(), 3);
    assert_eq!(t.connections_opened(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_fails_every_request_in_flight_as_lost_promptly() {
    let harness = Harness::start(true).await;
    let timeout = Duration::from_secs(30);
    let t = transport(timeout);
    t.batch(&harness.addr, get("warm")).await.expect("warm-up");
    let calls: Vec<_> = (0..8)
        .map(|_| spawn_call(&t, &harness.addr, "hang"))
        .collect();
    wait_for("the requests to reach the node", || {
        harness.framed().received.load(Ordering::SeqCst) >= 9
    })
    .await;
    harness.framed().stop().await;
    for call in calls {
        let (result, elapsed) = call.await.expect("task");
        let err = result.expect_err("no answer from a dead node");
        assert!(matches!(err, TransportError::Lost(_)), "{err:?}");
        assert!(err.may_have_been_applied());
        assert!(elapsed < timeout / 3, "noticed after {elapsed:?}");
    }
    assert_eq!(
        t.metrics().connection_errors.get(),
        1,
        "the broken connection is counted"
    );
    // The framed port is closed now and the node still names it: the next request cannot
    // connect, asks the node again, and fails as unreachable (nothing sent), promptly.
    let started = Instant::now();
    let err = t.batch(&harness.addr, get("next")).await.expect_err("dead");
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    assert!(err.is_retryable() && !err.may_have_been_applied());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(harness.node.asked.load(Ordering::SeqCst), 2, "asked again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_closes_the_connection_fails_its_requests_and_the_next_one_reconnects() {
    let harness = Harness::start(true).await;
    let t = transport(Duration::from_secs(30));
    t.batch(&harness.addr, get("warm")).await.expect("warm-up");
    let err = t
        .batch(&harness.addr, get("close"))
        .await
        .expect_err("closed");
    assert!(matches!(err, TransportError::Lost(_)), "{err:?}");
    let response = t
        .batch(&harness.addr, get("after"))
        .await
        .expect("reconnected");
    assert_eq!(found(&response), Some(Bytes::from_static(b"after")));
    assert_eq!(harness.framed().accepted.load(Ordering::SeqCst), 2);
    assert_eq!(t.connections_opened(), 2);
    assert_eq!(t.open_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_from_the_node_close_the_connection_and_fail_its_requests() {
    let harness = Harness::start(true).await;
    let t = transport(Duration::from_secs(30));
    for bad in ["garbage", "huge"] {
        t.batch(&harness.addr, get("warm")).await.expect("warm-up");
        let before = harness.framed().received.load(Ordering::SeqCst);
        let waiting = spawn_call(&t, &harness.addr, "hang");
        wait_for("the hanging request to arrive", || {
            harness.framed().received.load(Ordering::SeqCst) > before
        })
        .await;
        let err = t
            .batch(&harness.addr, get(bad))
            .await
            .expect_err("bad frame");
        assert!(
            matches!(&err, TransportError::Lost(m) if m.contains("bad frame")),
            "{bad}: {err:?}"
        );
        let (other, _) = waiting.await.expect("task");
        assert!(
            matches!(other, Err(TransportError::Lost(_))),
            "{bad}: every request on the connection fails: {other:?}"
        );
    }
    let response = t
        .batch(&harness.addr, get("fine"))
        .await
        .expect("a new connection");
    assert_eq!(found(&response), Some(Bytes::from_static(b"fine")));
    assert_eq!(t.connections_opened(), 3);
    assert_eq!(t.metrics().connection_errors.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_times_out_and_the_connection_lives_on() {
    let harness = Harness::start(true).await;
    let timeout = Duration::from_millis(300);
    let t = transport(timeout);
    t.batch(&harness.addr, get("warm")).await.expect("warm-up");
    let started = Instant::now();
    let err = t
        .batch(&harness.addr, get("hang"))
        .await
        .expect_err("no answer");
    let elapsed = started.elapsed();
    assert!(matches!(err, TransportError::Timeout(_)), "{err:?}");
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(2),
        "{elapsed:?}"
    );
    let response = t
        .batch(&harness.addr, get("after"))
        .await
        .expect("same connection");
    assert_eq!(found(&response), Some(Bytes::from_static(b"after")));
    assert_eq!(t.connections_opened(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_another_framed_port_is_found_again() {
    let mut harness = Harness::start(true).await;
    let t = transport(Duration::from_secs(5));
    t.batch(&harness.addr, get("warm")).await.expect("warm-up");
    // The framed side restarts on a new port; the gRPC address stays.
    if let Some(old) = harness.framed.take() {
        old.stop().await;
    }
    let side = FramedSide::start().await;
    *harness.node.framed_port.lock() = Some(side.port);
    harness.framed = Some(side);
    // The first request may be cut off with the old connection (nothing was sent on it, or
    // it is lost); at the latest the one after it travels on the new port.
    let mut answered = None;
    for _ in 0..2 {
        if let Ok(response) = t.batch(&harness.addr, get("moved")).await {
            answered = found(&response);
            break;
        }
    }
    assert_eq!(answered, Some(Bytes::from_static(b"moved")));
    assert_eq!(harness.framed().accepted.load(Ordering::SeqCst), 1);
    assert_eq!(harness.node.asked.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn requests_queued_together_go_out_in_one_write() {
    let harness = Harness::start(true).await;
    let t = transport(Duration::from_secs(5));
    t.batch(&harness.addr, get("warm")).await.expect("warm-up");
    let writes_before = t.metrics().writes.get();
    // On one thread, all 64 callers queue their frames before the writer task runs again.
    let calls: Vec<_> = (0..64)
        .map(|_| spawn_call(&t, &harness.addr, "same"))
        .collect();
    for call in calls {
        let (result, _) = call.await.expect("task");
        assert_eq!(
            found(&result.expect("answer")),
            Some(Bytes::from_static(b"same"))
        );
    }
    let writes = t.metrics().writes.get() - writes_before;
    assert!((1..8).contains(&writes), "64 frames took {writes} writes");
    assert_eq!(t.metrics().frames(Direction::Sent), 65);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_frame_limit_is_rejected_without_touching_the_connection() {
    let harness = Harness::start(true).await;
    let t = transport(Duration::from_secs(5));
    t.batch(&harness.addr, get("warm")).await.expect("warm-up");
    let big = "x".repeat(2 << 20);
    let err = t
        .batch(&harness.addr, get(&big))
        .await
        .expect_err("too large");
    assert!(matches!(err, TransportError::Rejected(_)), "{err:?}");
    assert!(!err.may_have_been_applied());
    let response = t
        .batch(&harness.addr, get("after"))
        .await
        .expect("still connected");
    assert_eq!(found(&response), Some(Bytes::from_static(b"after")));
    assert_eq!(t.connections_opened(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_that_times_out_leaves_the_request_unsent() {
    let harness = Harness::start(true).await;
    harness.node.hang_discovery.store(true, Ordering::SeqCst);
    // The gRPC question times out (a gRPC `Timeout`) well before the request's own deadline.
    let t = FramedTransport::new(
        FramedConfig {
            request_timeout: Duration::from_secs(5),
            ..FramedConfig::default()
        },
        GrpcConfig {
            request_timeout: Duration::from_millis(200),
            ..GrpcConfig::default()
        },
        FramedMetrics::new().expect("metrics"),
    );
    let err = t
        .batch(&harness.addr, get("k"))
        .await
        .expect_err("no endpoint learned");
    // The write never left: safe to retry, never ambiguous.
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    assert!(!err.may_have_been_applied());
    assert_eq!(harness.framed().received.load(Ordering::SeqCst), 0);
}
