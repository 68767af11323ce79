//! The local cluster: storage nodes and the placement manager on one machine.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use parking_lot::Mutex;
use shmdb_placement::{NodeId, PartitionMap};
use shmdb_placement_manager::{ManagerConfig, MapStore, MemoryMapStore, PlacementManager};
use shmdb_storage_node::{NodeConfig, RunningNode};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use shmdb_placement::tables::BOOTSTRAP as BOOTSTRAP_TABLES;

/// How to run a local cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterOptions {
    /// Storage nodes to start.
    #[arg(long, default_value_t = 3)]
    pub storage_nodes: u32,
    /// Copies of every range.
    #[arg(long, default_value_t = 2)]
    pub replication_factor: u32,
    /// Ranges to start with (they split as they grow).
    #[arg(long, default_value_t = 4)]
    pub ranges: u32,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// First storage-node port (node i listens on base + i - 1); 0 picks free ports.
    #[arg(long, default_value_t = 7401)]
    pub storage_base_port: u16,
    /// First metrics port (node i serves /metrics on base + i - 1); 0 picks free ports.
    #[arg(long, default_value_t = 9401)]
    pub metrics_base_port: u16,
    /// Record memory per storage node, in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub memory_limit: u64,
    /// Run every storage node as a supervised child process (a killed one is restarted
    /// empty and refilled by the placement manager) instead of inside this process.
    #[arg(long)]
    pub processes: bool,
    /// How often the placement manager probes nodes and plans.
    #[arg(long, default_value_t = 200)]
    pub placement_interval_ms: u64,
    /// Split ranges larger than this many bytes (0 = never).
    #[arg(long, default_value_t = 64 << 20)]
    pub split_bytes: u64,
}

impl ClusterOptions {
    /// Options for tests: free ports, fast placement rounds.
    pub fn ephemeral(storage_nodes: u32, replication_factor: u32) -> Self {
        ClusterOptions {
            storage_nodes,
            replication_factor,
            ranges: 4,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            storage_base_port: 0,
            metrics_base_port: 0,
            memory_limit: 1 << 30,
            processes: false,
            placement_interval_ms: 100,
            split_bytes: 64 << 20,
        }
    }

    fn port(base: u16, index: u32) -> u16 {
        if base == 0 { 0 } else { base + index as u16 }
    }
}

/// One storage node of the local cluster.
#[derive(Debug)]
pub enum StorageProcess {
    /// Running inside this process.
    InProcess(RunningNode),
    /// A supervised child process.
    Child {
        /// Its node id.
        id: NodeId,
        /// Its gRPC address.
        addr: SocketAddr,
        /// Its metrics address.
        metrics: Option<SocketAddr>,
        /// The process.
        child: Child,
    },
}

impl StorageProcess {
    /// The node id.
    pub fn id(&self) -> NodeId {
        match self {
            StorageProcess::InProcess(n) => n.node.id(),
            StorageProcess::Child { id, .. } => *id,
        }
    }

    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            StorageProcess::InProcess(n) => n.addr,
            StorageProcess::Child { addr, .. } => *addr,
        }
    }

    /// The metrics address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        match self {
            StorageProcess::InProcess(n) => n.metrics_addr,
            StorageProcess::Child { metrics, .. } => *metrics,
        }
    }
}

/// A running local cluster.
pub struct LocalCluster {
    /// The storage nodes.
    pub nodes: Arc<Mutex<Vec<StorageProcess>>>,
    /// The placement manager driving them.
    pub manager: Arc<PlacementManager>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster").finish_non_exhaustive()
    }
}

/// The storage-node binary next to the running executable (how `cargo build` lays them out).
pub fn storage_node_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("SHMDB_STORAGE_NODE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for _ in 0..2 {
        let candidate = dir.join("storage-node");
        if candidate.exists() {
            return Ok(candidate);
        }
        // Test binaries live one level deeper (target/<profile>/deps).
        dir = dir.parent().map(PathBuf::from).unwrap_or_default();
    }
    bail!(
        "the storage-node binary was not found next to {} (build the workspace: cargo build --release)",
        exe.display()
    )
}

/// Starts a storage-node child process and waits until it answers.
pub async fn spawn_storage_node(
    id: NodeId,
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    memory_limit: u64,
) -> anyhow::Result<(Child, SocketAddr)> {
    let listen = if listen.port() == 0 {
        // A child cannot report an ephemeral port back easily: pick a free one here.
        let probe = std::net::TcpListener::bind(listen).context("finding a free port")?;
        probe.local_addr()?
    } else {
        listen
    };
    let mut command = Command::new(storage_node_binary()?);
    command
        .arg("--node-id")
        .arg(id.to_string())
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--memory-limit")
        .arg(memory_limit.to_string())
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null());
    if let Some(metrics) = metrics {
        command.arg("--metrics-listen").arg(metrics.to_string());
    }
    let child = command.spawn().context("starting storage-node")?;
    wait_serving(listen).await?;
    Ok((child, listen))
}

/// Waits until a node's gRPC port answers an echo.
pub async fn wait_serving(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let mut client = shmdb_proto::storage::storage_client::StorageClient::connect(format!(
                "http://{addr}"
            ))
            .await?;
            client
                .echo(shmdb_proto::storage::EchoRequest::default())
                .await?;
            anyhow::Ok(())
        };
        if attempt.await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("storage node at {addr} did not start serving");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl LocalCluster {
    /// Starts the storage nodes, bootstraps the map and starts the placement manager.
    pub async fn start(options: &ClusterOptions) -> anyhow::Result<Self> {
        Self::start_with_store(options, Arc::new(MemoryMapStore::default())).await
    }

    /// Like [`LocalCluster::start`], with the map kept in `store`.
    pub async fn start_with_store(
        options: &ClusterOptions,
        store: Arc<dyn MapStore>,
    ) -> anyhow::Result<Self> {
        if options.storage_nodes == 0 {
            bail!("--storage-nodes must be at least 1");
        }
        if options.replication_factor == 0 || options.replication_factor > options.storage_nodes {
            bail!(
                "--replication-factor must be between 1 and the number of storage nodes ({})",
                options.storage_nodes
            );
        }
        let mut nodes = Vec::new();
        for i in 0..options.storage_nodes {
            let id = u64::from(i) + 1;
            let listen = SocketAddr::new(
                options.host,
                ClusterOptions::port(options.storage_base_port, i),
            );
            let metrics = SocketAddr::new(
                options.host,
                ClusterOptions::port(options.metrics_base_port, i),
            );
            nodes.push(start_node(options, id, listen, metrics).await?);
        }
        let addresses: BTreeMap<NodeId, String> = nodes
            .iter()
            .map(|n| (n.id(), n.addr().to_string()))
            .collect();
        let mut config = ManagerConfig::default();
        config.planner.split_bytes = options.split_bytes;
        let manager = Arc::new(PlacementManager::new(store, config));
        let tables = BOOTSTRAP_TABLES
            .iter()
            .map(|(id, name)| (*id, name.to_string()))
            .collect();
        manager
            .bootstrap(
                addresses,
                options.replication_factor,
                options.ranges,
                tables,
            )
            .await
            .context("bootstrapping the partition map")?;
        let (stop, stop_rx) = watch::channel(false);
        let nodes = Arc::new(Mutex::new(nodes));
        let interval = Duration::from_millis(options.placement_interval_ms.max(10));
        let mut tasks = Vec::new();
        {
            let manager = manager.clone();
            let mut stop_rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                manager
                    .run(interval, async move {
                        let _ = stop_rx.wait_for(|s| *s).await;
                    })
                    .await;
            }));
        }
        if options.processes {
            tasks.push(tokio::spawn(supervise(
                nodes.clone(),
                manager.clone(),
                options.clone(),
                stop_rx,
            )));
        }
        Ok(LocalCluster {
            nodes,
            manager,
            stop,
            tasks,
        })
    }

    /// The storage nodes' gRPC addresses (seeds for clients).
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .lock()
            .iter()
            .map(|n| n.addr().to_string())
            .collect()
    }

    /// The map in force.
    pub async fn map(&self) -> anyhow::Result<PartitionMap> {
        Ok(self.manager.map().await?)
    }

    /// Stops the manager and every node.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let nodes = std::mem::take(&mut *self.nodes.lock());
        for node in nodes {
            match node {
                StorageProcess::InProcess(running) => running.shutdown().await,
                StorageProcess::Child { mut child, .. } => {
                    let _ = child.kill().await;
                }
            }
        }
    }
}

async fn start_node(
    options: &ClusterOptions,
    id: NodeId,
    listen: SocketAddr,
    metrics: SocketAddr,
) -> anyhow::Result<StorageProcess> {
    if options.processes {
        let metrics = (metrics.port() != 0).then_some(metrics);
        let (child, addr) = spawn_storage_node(id, listen, metrics, options.memory_limit).await?;
        Ok(StorageProcess::Child {
            id,
            addr,
            metrics,
            child,
        })
    } else {
        let mut config = NodeConfig::local(id, listen);
        config.metrics_listen = Some(metrics);
        config.memory_limit = options.memory_limit;
        let running = shmdb_storage_node::start(config)
            .await
            .with_context(|| format!("starting storage node {id} on {listen}"))?;
        Ok(StorageProcess::InProcess(running))
    }
}

/// Restarts storage-node children that exit. A restarted node comes back empty, so it joins
/// under a new id: the manager replaces the lost node's copies and then refills the new one.
async fn supervise(
    nodes: Arc<Mutex<Vec<StorageProcess>>>,
    manager: Arc<PlacementManager>,
    options: ClusterOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_id = u64::from(options.storage_nodes) + 1;
    let mut retired: Vec<NodeId> = Vec::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let mut exited = Vec::new();
        {
            let mut nodes = nodes.lock();
            for (index, node) in nodes.iter_mut().enumerate() {
                if let StorageProcess::Child {
                    id,
                    addr,
                    metrics,
                    child,
                } = node
                    && let Ok(Some(status)) = child.try_wait()
                {
                    warn!(node = *id, %status, "storage node exited; restarting it empty");
                    exited.push((index, *id, *addr, *metrics));
                }
            }
        }
        for (index, old_id, addr, metrics) in exited {
            let id = next_id;
            next_id += 1;
            match spawn_storage_node(id, addr, metrics, options.memory_limit).await {
                Ok((child, addr)) => {
                    nodes.lock()[index] = StorageProcess::Child {
                        id,
                        addr,
                        metrics,
                        child,
                    };
                    if let Err(e) = manager.add_node(id, addr.to_string()).await {
                        warn!(node = id, error = %e, "could not register restarted node");
                    }
                    retired.push(old_id);
                    info!(old = old_id, new = id, "storage node restarted");
                }
                Err(e) => warn!(node = id, error = %e, "restart failed; will retry"),
            }
        }
        // Forget lost nodes once the manager has moved every copy off them.
        let mut still = Vec::new();
        for old in retired.drain(..) {
            match manager.is_empty(old).await {
                Ok(true) => {
                    if manager.remove_node(old).await.is_err() {
                        still.push(old);
                    }
                }
                _ => still.push(old),
            }
        }
        retired = still;
    }
}
