//! `--transport auto|tcp|rdma` on a storage node and in the client, on this machine (no
//! RDMA device): `auto` serves TCP and says so in its metrics, `rdma` refuses to start with
//! a clear message, an `auto` client falls back per node, and an RDMA client replaces a
//! connection whose node dropped its queue pairs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shmdb_placement::PartitionMap;
use shmdb_proto::storage::admin_client::AdminClient;
use shmdb_rdma_transport::fake::FakeFabric;
use shmdb_rdma_transport::{
    Discovery, RdmaConfig, RdmaDevice, RdmaTransport, TransportKind, TransportMetrics,
};
use shmdb_storage_node::{NodeConfig, RunningNode, StartError};
use shmdb_store_client::proto as pb;
use shmdb_store_client::{Transport, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TABLE: u64 = 1;

fn no_device_here() -> bool {
    !matches!(shmdb_rdma_transport::discover(), Discovery::Found(_))
}

async fn start(
    kind: TransportKind,
    device: Option<Arc<dyn RdmaDevice>>,
) -> Result<RunningNode, StartError> {
    let mut config = NodeConfig::local(1, "127.0.0.1:0".parse().expect("addr"));
    config.transport = kind;
    config.rdma_device = device;
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    shmdb_storage_node::start(config).await
}

async fn install(node: &RunningNode) -> u64 {
    let mut map = PartitionMap::bootstrap(BTreeMap::from([(1u64, node.addr.to_string())]), 1, 1);
    map.tables.insert(TABLE, "t".into());
    AdminClient::connect(format!("http://{}", node.addr))
        .await
        .expect("admin")
        .install_map(map.to_proto())
        .await
        .expect("install");
    map.version
}

fn put(key: &str) -> pb::BatchRequest {
    pb::BatchRequest {
        map_version: 0,
        ops: vec![pb::Op {
            op: Some(pb::op::Op::Put(pb::PutOp {
                table: TABLE,
                key: Bytes::from(key.to_owned()),
                value: Bytes::from_static(b"v"),
            })),
        }],
    }
}

fn written(response: &pb::BatchResponse) -> bool {
    matches!(
        response.results.first().and_then(|r| r.result.as_ref()),
        Some(pb::op_result::Result::Written(_))
    )
}

async fn scrape(node: &RunningNode) -> String {
    let addr = node.metrics_addr.expect("metrics served");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut body = String::new();
    socket.read_to_string(&mut body).await.expect("response");
    body
}

fn client(device: Arc<dyn RdmaDevice>, fallback_to_tcp: bool) -> RdmaTransport {
    client_with(
        device,
        fallback_to_tcp,
        TransportMetrics::new().expect("metrics"),
    )
}

fn client_with(
    device: Arc<dyn RdmaDevice>,
    fallback_to_tcp: bool,
    metrics: TransportMetrics,
) -> RdmaTransport {
    RdmaTransport::new(
        device,
        RdmaConfig {
            fallback_to_tcp,
            request_timeout: Duration::from_secs(5),
            ..RdmaConfig::default()
        },
        metrics,
    )
}

#[tokio::test]
async fn explicit_rdma_without_a_device_fails_at_start_with_a_clear_message() {
    if !no_device_here() {
        eprintln!("an RDMA device is present; the no-device start check does not apply");
        return;
    }
    let err = start(TransportKind::Rdma, None).await.expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, StartError::Transport(_)), "{err:?}");
    assert!(
        text.contains("--transport rdma: no usable RDMA device"),
        "{text}"
    );
    assert!(text.contains("--transport auto"), "{text}");
}

#[tokio::test]
async fn auto_without_a_device_serves_tcp_and_reports_it_in_metrics() {
    if !no_device_here() {
        eprintln!("an RDMA device is present; the fallback check does not apply");
        return;
    }
    let node = start(TransportKind::Auto, None).await.expect("auto starts");
    assert_eq!(node.transport, "tcp");
    assert!(!node.rdma.serves_rdma());
    let metrics = scrape(&node).await;
    let line = |transport: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("shmdb_transport_in_use")
                    && l.contains(&format!("transport=\"{transport}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
    };
    assert_eq!(line("tcp").as_deref(), Some("1"), "{metrics}");
    assert_eq!(line("rdma").as_deref(), Some("0"), "{metrics}");
    for name in [
        "shmdb_transport_qp_errors_total",
        "shmdb_transport_doorbells_total",
    ] {
        assert!(metrics.contains(name), "{name} exported");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_client_reaches_a_tcp_only_node_over_grpc_and_an_rdma_client_refuses() {
    let node = start(TransportKind::Tcp, None).await.expect("tcp node");
    let version = install(&node).await;
    let addr = node.addr.to_string();
    let fabric = FakeFabric::new("fake0");
    let auto = client(Arc::new(fabric.clone()), true);
    let mut req = put("a");
    req.map_version = version;
    let response = auto.batch(&addr, req.clone()).await.expect("over gRPC");
    assert!(written(&response));
    assert_eq!(auto.rdma_connections(), 0);
    assert_eq!(fabric.stats().send_wrs, 0, "nothing went over RDMA");
    let strict = client(Arc::new(fabric), false);
    let err = strict.batch(&addr, req).await.err();
    assert!(
        matches!(&err, Some(TransportError::Rejected(m)) if m.contains("serves no RDMA")),
        "{err:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdma_traffic_is_counted_and_a_dropped_queue_pair_is_replaced() {
    let fabric = FakeFabric::new("fake0");
    let node = start(TransportKind::Auto, Some(Arc::new(fabric.clone())))
        .await
        .expect("rdma node");
    assert_eq!(node.transport, "rdma");
    let version = install(&node).await;
    let addr = node.addr.to_string();
    let client_metrics = TransportMetrics::new().expect("metrics");
    let t = client_with(Arc::new(fabric.clone()), false, client_metrics.clone());
    let mut req = put("a");
    req.map_version = version;
    assert!(written(&t.batch(&addr, req.clone()).await.expect("first")));
    assert_eq!(t.rdma_connections(), 1);
    assert_eq!(node.rdma.connections(), 1);
    let m = &node.transport_metrics;
    assert!(m.bytes.with_label_values(&["received"]).get() > 0);
    assert!(m.bytes.with_label_values(&["sent"]).get() > 0);
    assert!(m.completions.with_label_values(&["recv"]).get() > 0);
    assert!(m.doorbells.get() > 0);
    assert_eq!(m.in_use.with_label_values(&["rdma"]).get(), 1);
    assert_eq!(client_metrics.qp_errors.get(), 0);

    // The node drops every queue pair (as a restarted RDMA stack would) but keeps serving
    // gRPC: the next request fails as lost, the one after connects anew and succeeds.
    node.rdma.abort();
    let err = t.batch(&addr, req.clone()).await.err();
    assert!(matches!(err, Some(TransportError::Lost(_))), "{err:?}");
    assert!(written(&t.batch(&addr, req).await.expect("reconnected")));
    assert_eq!(node.rdma.connections(), 1);
    assert_eq!(
        client_metrics.qp_errors.get(),
        1,
        "the client's failed queue pair is counted"
    );
    assert_eq!(m.qp_errors.get(), 0, "closing on purpose is no error");
    node.shutdown().await;
}
