//! The transport conformance suite (`shmdb_rdma_transport::conformance`) run against every
//! transport available on this machine, each talking to real storage nodes on 127.0.0.1:
//!
//! - `tcp`: the gRPC transport with unary calls;
//! - `tcp_stream`: the gRPC transport with requests multiplexed over `Stream` sessions;
//! - `tcp_framed`: the framed TCP transport (length-prefixed frames on plain TCP, the
//!   default data path) against the node's framed listener;
//! - `rdma_fake`: the RDMA transport and the node's RDMA server over the in-memory verbs
//!   fabric (everything but the NIC is the production code);
//! - `rdma_verbs`: the RDMA transport over ibverbs, when the binary has the `rdma` feature
//!   and the machine has a device; otherwise each test prints a visible skip line.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use shmdb_placement::PartitionMap;
use shmdb_proto::storage::admin_client::AdminClient;
use shmdb_rdma_transport::conformance::{self, Fixture, LARGE_VALUE_BYTES, NodeUnderTest, TABLE};
use shmdb_rdma_transport::fake::FakeFabric;
use shmdb_rdma_transport::verbs::QpConfig;
use shmdb_rdma_transport::{
    Discovery, RdmaConfig, RdmaDevice, RdmaTransport, TransportKind, TransportMetrics,
};
use shmdb_storage_node::{NodeConfig, RunningNode};
use shmdb_store_client::framed::metrics::Direction;
use shmdb_store_client::{
    DataPath, FramedConfig, FramedMetrics, FramedTransport, GrpcConfig, GrpcTransport, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP relay in front of a node: the address in the map, so "killing the node" can cut
/// every client connection at once (an in-process node's open connections outlive its
/// server task), and a count of request bytes that reached the node.
struct Proxy {
    addr: SocketAddr,
    bytes_in: Arc<AtomicU64>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let bytes_in = Arc::new(AtomicU64::new(0));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let bytes_in = bytes_in.clone();
            let tasks = tasks.clone();
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (mut in_r, mut in_w) = inbound.into_split();
                    let (mut out_r, mut out_w) = outbound.into_split();
                    let counter = bytes_in.clone();
                    let up = tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 << 10];
                        while let Ok(n) = in_r.read(&mut buf).await {
                            if n == 0 || out_w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            counter.fetch_add(n as u64, Ordering::SeqCst);
                        }
                    });
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
                    });
                    tasks.lock().extend([up, down]);
                }
            })
        };
        tasks.lock().push(accept);
        Proxy {
            addr,
            bytes_in,
            tasks,
        }
    }

    /// Stops accepting and drops every relayed connection.
    fn kill(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

/// A listener that accepts connections and never answers: a backup that has hung.
async fn black_hole() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

struct Node {
    running: Option<RunningNode>,
    proxy: Proxy,
    map_version: u64,
    rdma: bool,
    /// Requests travel on the node's framed listener (the proxy carries only discovery).
    framed: bool,
    metrics: TransportMetrics,
    _black_hole: Option<JoinHandle<()>>,
}

#[async_trait]
impl NodeUnderTest for Node {
    fn addr(&self) -> String {
        self.proxy.addr.to_string()
    }

    fn map_version(&self) -> u64 {
        self.map_version
    }

    fn received(&self) -> u64 {
        if self.rdma {
            self.metrics.completions.with_label_values(&["recv"]).get()
        } else if self.framed {
            self.metrics.framed.bytes(Direction::Received)
        } else {
            self.proxy.bytes_in.load(Ordering::SeqCst)
        }
    }

    async fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
        }
        self.proxy.kill();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.proxy.kill();
        if let Some(running) = self.running.take() {
            running.abort();
        }
        if let Some(task) = &self._black_hole {
            task.abort();
        }
    }
}

/// Starts node 1 serving table [`TABLE`]; with `stalled`, its range has a backup that never
/// answers, so writes hang while reads are served.
async fn start_node(device: Option<Arc<dyn RdmaDevice>>, stalled: bool, framed: bool) -> Node {
    let mut config = NodeConfig::local(1, "127.0.0.1:0".parse().expect("addr"));
    config.max_value_bytes = LARGE_VALUE_BYTES + (1 << 20);
    config.replication_timeout = Duration::from_secs(120);
    config.transport = if device.is_some() {
        TransportKind::Rdma
    } else {
        TransportKind::Tcp
    };
    let rdma = device.is_some();
    config.rdma_device = device;
    let running = shmdb_storage_node::start(config).await.expect("start node");
    assert_eq!(running.transport, if rdma { "rdma" } else { "tcp" });
    let proxy = Proxy::start(running.addr).await;
    let mut addrs = BTreeMap::from([(1u64, proxy.addr.to_string())]);
    let mut hole = None;
    if stalled {
        let (addr, task) = black_hole().await;
        addrs.insert(2, addr.to_string());
        hole = Some(task);
    }
    let rf = addrs.len() as u32;
    let mut map = PartitionMap::bootstrap(addrs, rf, 1);
    map.tables.insert(TABLE, "t".into());
    assert_eq!(
        map.ranges.first().and_then(|r| r.replicas.first()),
        Some(&1),
        "node 1 leads the range"
    );
    let mut admin = AdminClient::connect(format!("http://{}", running.addr))
        .await
        .expect("admin");
    admin
        .install_map(map.to_proto())
        .await
        .expect("install map");
    Node {
        metrics: running.transport_metrics.clone(),
        running: Some(running),
        proxy,
        map_version: map.version,
        rdma,
        framed,
        _black_hole: hole,
    }
}

enum Client {
    Grpc(DataPath),
    Framed,
    Rdma(Arc<dyn RdmaDevice>, QpConfig),
}

struct NodeFixture {
    name: &'static str,
    server_device: Option<Arc<dyn RdmaDevice>>,
    client: Client,
    fabric: Option<FakeFabric>,
    /// The gRPC transports handed out, to check which data path carried the traffic.
    grpc: Mutex<Vec<Arc<GrpcTransport>>>,
    /// The framed transports handed out, likewise.
    framed: Mutex<Vec<Arc<FramedTransport>>>,
}

#[async_trait]
impl Fixture for NodeFixture {
    fn name(&self) -> String {
        self.name.to_owned()
    }

    fn transport(&self, request_timeout: Duration) -> Arc<dyn Transport> {
        match &self.client {
            Client::Grpc(data_path) => {
                let transport = Arc::new(GrpcTransport::new(GrpcConfig {
                    request_timeout,
                    data_path: *data_path,
                    ..GrpcConfig::default()
                }));
                self.grpc.lock().push(transport.clone());
                transport
            }
            Client::Framed => {
                let transport = Arc::new(FramedTransport::new(
                    FramedConfig {
                        request_timeout,
                        ..FramedConfig::default()
                    },
                    GrpcConfig {
                        request_timeout,
                        ..GrpcConfig::default()
                    },
                    FramedMetrics::new().expect("metrics"),
                ));
                self.framed.lock().push(transport.clone());
                transport
            }
            Client::Rdma(device, qp) => Arc::new(RdmaTransport::new(
                device.clone(),
                RdmaConfig {
                    qp: *qp,
                    request_timeout,
                    // A node without RDMA would be an error here, never a silent pass over TCP.
                    fallback_to_tcp: false,
                    ..RdmaConfig::default()
                },
                TransportMetrics::new().expect("metrics"),
            )),
        }
    }

    async fn serving_node(&self) -> Box<dyn NodeUnderTest> {
        let framed = matches!(self.client, Client::Framed);
        Box::new(start_node(self.server_device.clone(), false, framed).await)
    }

    async fn stalled_node(&self) -> Box<dyn NodeUnderTest> {
        let framed = matches!(self.client, Client::Framed);
        Box::new(start_node(self.server_device.clone(), true, framed).await)
    }
}

impl NodeFixture {
    /// For the fake fabric: the check's traffic really went over RDMA; for gRPC: over
    /// streams exactly when the fixture asked for them.
    fn assert_rdma_carried_traffic(&self) {
        if let Some(fabric) = &self.fabric {
            let stats = fabric.stats();
            assert!(stats.send_wrs > 0 && stats.doorbells > 0, "{stats:?}");
        }
        if let Client::Grpc(data_path) = &self.client {
            let opened: u64 = self.grpc.lock().iter().map(|t| t.streams_opened()).sum();
            match data_path {
                DataPath::Stream | DataPath::Framed => {
                    assert!(opened > 0, "[{}] no stream was opened", self.name)
                }
                DataPath::Unary => assert_eq!(opened, 0, "[{}] unary opened streams", self.name),
            }
        }
        if let Client::Framed = &self.client {
            for t in self.framed.lock().iter() {
                assert!(
                    t.connections_opened() > 0,
                    "[{}] no framed connection",
                    self.name
                );
                assert_eq!(
                    t.metrics().grpc_fallbacks.get(),
                    0,
                    "[{}] requests went over gRPC",
                    self.name
                );
                assert!(t.metrics().frames(Direction::Sent) > 0);
                assert_eq!(
                    t.grpc().streams_opened(),
                    0,
                    "[{}] a gRPC stream carried requests",
                    self.name
                );
            }
        }
    }
}

fn tcp() -> Option<NodeFixture> {
    Some(NodeFixture {
        name: "tcp",
        server_device: None,
        client: Client::Grpc(DataPath::Unary),
        fabric: None,
        grpc: Mutex::default(),
        framed: Mutex::default(),
    })
}

fn tcp_stream() -> Option<NodeFixture> {
    Some(NodeFixture {
        name: "tcp-stream",
        server_device: None,
        client: Client::Grpc(DataPath::Stream),
        fabric: None,
        grpc: Mutex::default(),
        framed: Mutex::default(),
    })
}

fn tcp_framed() -> Option<NodeFixture> {
    Some(NodeFixture {
        name: "tcp-framed",
        server_device: None,
        client: Client::Framed,
        fabric: None,
        grpc: Mutex::default(),
        framed: Mutex::default(),
    })
}

fn rdma_fake() -> Option<NodeFixture> {
    let fabric = FakeFabric::new("fake0");
    let device: Arc<dyn RdmaDevice> = Arc::new(fabric.clone());
    // Smaller client buffers than the node's: fragments are cut to the smaller side and
    // every slot is reused many times per large value.
    let qp = QpConfig {
        slot_bytes: 16 << 10,
        send_slots: 16,
        recv_slots: 16,
    };
    Some(NodeFixture {
        name: "rdma-fake",
        server_device: Some(device.clone()),
        client: Client::Rdma(device, qp),
        fabric: Some(fabric),
        grpc: Mutex::default(),
        framed: Mutex::default(),
    })
}

fn rdma_verbs(check: &str) -> Option<NodeFixture> {
    let discovery = shmdb_rdma_transport::discover();
    let skip = |why: String| {
        // Written past the test harness's capture, so the skip is visible in every run.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED rdma_verbs::{check}: no RDMA device here ({why})"
        );
        None
    };
    let info = match &discovery {
        Discovery::Found(devices) => devices.first().cloned(),
        _ => None,
    };
    let Some(info) = info else {
        return skip(discovery.why_not().unwrap_or_default());
    };
    match shmdb_rdma_transport::device::open(&info) {
        Ok(device) => Some(NodeFixture {
            name: "rdma-verbs",
            server_device: Some(device.clone()),
            client: Client::Rdma(device, QpConfig::default()),
            fabric: None,
            grpc: Mutex::default(),
            framed: Mutex::default(),
        }),
        Err(e) => skip(format!("{} cannot be opened: {e}", info.name)),
    }
}

macro_rules! suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            async fn run<F, Fut>(check: &str, body: F)
            where
                F: FnOnce(NodeFixture) -> Fut,
                Fut: std::future::Future<Output = NodeFixture>,
            {
                let make: fn(&str) -> Option<NodeFixture> = $make;
                if let Some(fixture) = make(check) {
                    let fixture = body(fixture).await;
                    fixture.assert_rdma_carried_traffic();
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ordering() {
                run("ordering", |f| async move {
                    conformance::ordering(&f).await;
                    f
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_values() {
                run("large_values", |f| async move {
                    conformance::large_values(&f).await;
                    f
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_requests() {
                run("concurrent_requests", |f| async move {
                    conformance::concurrent_requests(&f).await;
                    f
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn peer_death_mid_request() {
                run("peer_death_mid_request", |f| async move {
                    conformance::peer_death_mid_request(&f).await;
                    f
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn timeouts() {
                run("timeouts", |f| async move {
                    conformance::timeouts(&f).await;
                    f
                })
                .await;
            }
        }
    };
}

suite!(tcp_grpc, |_| tcp());
suite!(tcp_grpc_stream, |_| tcp_stream());
suite!(tcp_framed, |_| tcp_framed());
suite!(rdma_fake_fabric, |_| rdma_fake());
suite!(rdma_verbs_device, rdma_verbs);
