//! A client that dies leaves its queue pair on the node, and RDMA never tells the node: the
//! node closes connections that stay silent past its idle timeout, while live clients keep
//! theirs with keepalive pings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shmdb_rdma_transport::fake::FakeFabric;
use shmdb_rdma_transport::verbs::QpConfig;
use shmdb_rdma_transport::{
    RdmaConfig, RdmaServer, RdmaTransport, RequestHandler, TransportMetrics,
};
use shmdb_store_client::Transport;
use shmdb_store_client::proto as pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

struct Versions;

#[async_trait]
impl RequestHandler for Versions {
    async fn batch(&self, req: pb::BatchRequest) -> pb::BatchResponse {
        pb::BatchResponse {
            results: Vec::new(),
            map_version: req.map_version,
        }
    }
    async fn scan(&self, _req: pb::ScanRequest) -> pb::ScanResponse {
        pb::ScanResponse::default()
    }
}

fn client(fabric: &FakeFabric, keepalive: Duration, metrics: TransportMetrics) -> RdmaTransport {
    RdmaTransport::new(
        Arc::new(fabric.clone()),
        RdmaConfig {
            keepalive_interval: keepalive,
            fallback_to_tcp: false,
            ..RdmaConfig::default()
        },
        metrics,
    )
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_and_a_pinging_one_is_kept() {
    let fabric = FakeFabric::new("fake0");
    let server = RdmaServer::with_idle_timeout(
        Some(Arc::new(fabric.clone())),
        "",
        Arc::new(Versions),
        QpConfig::default(),
        1 << 20,
        TransportMetrics::new().expect("metrics"),
        Duration::from_millis(300),
    )
    .expect("runtime");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.service())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let live_metrics = TransportMetrics::new().expect("metrics");
    let live = client(&fabric, Duration::from_millis(50), live_metrics.clone());
    let silent = client(
        &fabric,
        Duration::from_secs(3600),
        TransportMetrics::new().expect("metrics"),
    );
    let req = |v| pb::BatchRequest {
        map_version: v,
        ops: Vec::new(),
    };
    assert_eq!(
        live.batch(&addr, req(1)).await.map(|r| r.map_version),
        Ok(1)
    );
    assert_eq!(
        silent.batch(&addr, req(2)).await.map(|r| r.map_version),
        Ok(2)
    );
    assert_eq!(server.connections(), 2);

    wait_until("the silent client's connection to be closed", || {
        server.connections() == 1
    })
    .await;
    // The live client kept its connection all along: it is still the one the node holds.
    assert_eq!(live.rdma_connections(), 1);
    assert_eq!(
        live.batch(&addr, req(3)).await.map(|r| r.map_version),
        Ok(3)
    );
    assert_eq!(server.connections(), 1);

    // The silent client finds out at its next request and connects anew.
    let mut answered = None;
    for _ in 0..3 {
        if let Ok(r) = silent.batch(&addr, req(4)).await {
            answered = Some(r.map_version);
            break;
        }
    }
    assert_eq!(answered, Some(4));
    assert_eq!(server.connections(), 2);
    server.shutdown();
    grpc.abort();
}
