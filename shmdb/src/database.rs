//! The whole local database behind `shmdb up`: the storage cluster (see [`crate::cluster`]),
//! a commit manager with transaction-log recovery, and processing nodes serving SQL on the
//! PostgreSQL port — in this process, or as supervised child processes.
//!
//! The commit manager's recovery must revert a failed processing node's writes
//! (`LogRecovery`, from the processing-node crate): in-process it is plugged in here, and in
//! `--processes` mode the child is the `commit-manager` binary, which plugs in the same one
//! (see [`shmdb_commit_manager::start_with_log_recovery`]). Child binaries are found next to
//! the running executable, so `--processes` needs the whole workspace built.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use parking_lot::Mutex;
use shmdb_commit_manager::{ManagerConfig, RunningManager};
use shmdb_processing_node::node::{NodeConfig, RunningNode};
use shmdb_processing_node::pg::{AuthConfig, TlsConfig};
use shmdb_processing_node::txn::recover::LogRecovery;
use shmdb_store_client::{StoreClient, StoreClientConfig, TransportKind};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::cluster::{ClusterOptions, LocalCluster};

/// The SQL tier of `shmdb up`: commit manager and processing nodes.
#[derive(Debug, Clone, clap::Args)]
pub struct SqlOptions {
    /// Processing nodes to start (node i serves SQL on --pg-port + i - 1).
    #[arg(long, default_value_t = 1)]
    pub processing_nodes: u32,
    /// PostgreSQL port of the first processing node; 0 picks free ports.
    #[arg(long, default_value_t = 5432)]
    pub pg_port: u16,
    /// Commit manager gRPC port; 0 picks a free port.
    #[arg(long, default_value_t = 7300)]
    pub commit_manager_port: u16,
    /// First processing-node metrics port (/metrics, /healthz, /readyz); 0 picks free ports.
    #[arg(long, default_value_t = 9501)]
    pub pn_metrics_base_port: u16,
    /// Users for SCRAM-SHA-256 authentication (`user:password,...`); empty = trust.
    #[arg(
        long,
        env = "SHMDB_PG_USERS",
        default_value = "",
        hide_env_values = true
    )]
    pub users: String,
    /// TLS certificate (PEM) for SQL clients; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The processing nodes' data path to the storage nodes: `auto` (RDMA when a device is
    /// present, else framed TCP), `tcp` (framed TCP), `grpc` (gRPC streams only) or `rdma`.
    #[arg(long, env = "SHMDB_TRANSPORT", default_value_t = TransportKind::Auto)]
    pub transport: TransportKind,
}

impl SqlOptions {
    /// Free ports everywhere (tests).
    pub fn ephemeral() -> Self {
        SqlOptions {
            processing_nodes: 1,
            pg_port: 0,
            commit_manager_port: 0,
            pn_metrics_base_port: 0,
            users: String::new(),
            tls_cert: None,
            tls_key: None,
            transport: TransportKind::Tcp,
        }
    }
}

/// The commit manager of the local database.
pub enum CommitProcess {
    /// In this process.
    InProcess(RunningManager),
    /// A supervised child (`commit-manager` binary).
    Child {
        /// Its gRPC address.
        addr: SocketAddr,
        /// The process.
        child: Child,
    },
}

/// One processing node of the local database.
pub enum ProcessingProcess {
    /// In this process.
    InProcess(RunningNode),
    /// A supervised child (`processing-node` binary).
    Child {
        /// Node id.
        id: u64,
        /// SQL address.
        addr: SocketAddr,
        /// Metrics address.
        metrics: Option<SocketAddr>,
        /// The process.
        child: Child,
    },
}

impl ProcessingProcess {
    /// The PostgreSQL address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            ProcessingProcess::InProcess(n) => n.pg.addr,
            ProcessingProcess::Child { addr, .. } => *addr,
        }
    }

    /// The metrics address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        match self {
            ProcessingProcess::InProcess(n) => n.metrics_addr,
            ProcessingProcess::Child { metrics, .. } => *metrics,
        }
    }
}

/// A running local database.
pub struct LocalDatabase {
    /// Storage nodes and placement manager.
    pub storage: LocalCluster,
    /// The commit manager.
    pub commit: Arc<Mutex<Option<CommitProcess>>>,
    /// The commit manager's address.
    pub commit_addr: SocketAddr,
    /// The processing nodes.
    pub processing: Arc<Mutex<Vec<ProcessingProcess>>>,
    stop: watch::Sender<bool>,
    supervisor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LocalDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDatabase")
            .field("commit_addr", &self.commit_addr)
            .finish_non_exhaustive()
    }
}

/// A binary next to the running executable (how `cargo build` lays them out).
pub fn sibling_binary(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for _ in 0..2 {
        let candidate = dir.join(name);
        if candidate.exists() {
            return Ok(candidate);
        }
        dir = dir.parent().map(PathBuf::from).unwrap_or_default();
    }
    bail!(
        "the {name} binary was not found next to {} (build the workspace: cargo build --release)",
        exe.display()
    )
}

/// TLS for the processing nodes' clients, when both files are given.
fn tls_config(sql: &SqlOptions) -> Option<TlsConfig> {
    match (&sql.tls_cert, &sql.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    }
}

fn free_port(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = std::net::TcpListener::bind(addr).context("finding a free port")?;
    Ok(probe.local_addr()?)
}

/// Waits until a TCP port accepts connections (a child has started serving).
async fn wait_listening(addr: SocketAddr, what: &str, child: &mut Child) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{what} exited during start-up: {status}");
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what} did not start listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn manager_config(host: std::net::IpAddr, port: u16, seeds: Vec<String>) -> ManagerConfig {
    let mut config = ManagerConfig::local(1, seeds);
    config.listen = SocketAddr::new(host, port);
    config
}

async fn spawn_commit_manager(config: &ManagerConfig) -> anyhow::Result<(Child, SocketAddr)> {
    let listen = free_port(config.listen)?;
    let exe = sibling_binary("commit-manager", "SHMDB_COMMIT_MANAGER_BIN")?;
    let mut child = Command::new(exe)
        .arg("--manager-id")
        .arg(config.manager_id.to_string())
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--store-seeds")
        .arg(config.store_seeds.join(","))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the commit manager")?;
    wait_listening(listen, "the commit manager", &mut child).await?;
    Ok((child, listen))
}

async fn spawn_processing_node(
    config: &NodeConfig,
    sql: &SqlOptions,
) -> anyhow::Result<(Child, SocketAddr, Option<SocketAddr>)> {
    let listen = free_port(config.listen)?;
    let metrics = match config.metrics_listen {
        Some(m) => Some(free_port(m)?),
        None => None,
    };
    let mut command = Command::new(sibling_binary(
        "processing-node",
        "SHMDB_PROCESSING_NODE_BIN",
    )?);
    command
        .arg("--node-id")
        .arg(config.node_id.to_string())
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--store-seeds")
        .arg(config.store_seeds.join(","))
        .arg("--commit-managers")
        .arg(config.commit_managers.join(","))
        .arg("--gc-interval-secs")
        .arg(config.gc_interval.map_or(0, |i| i.as_secs()).to_string())
        .arg("--transport")
        .arg(config.transport.to_string())
        .env("SHMDB_PG_USERS", &sql.users)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null());
    if let Some(m) = metrics {
        command.arg("--metrics-listen").arg(m.to_string());
    }
    if let (Some(cert), Some(key)) = (&sql.tls_cert, &sql.tls_key) {
        command
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key);
    }
    let mut child = command.spawn().context("starting processing-node")?;
    wait_listening(listen, "a processing node", &mut child).await?;
    Ok((child, listen, metrics))
}

impl LocalDatabase {
    /// Starts storage, the commit manager and the processing nodes.
    pub async fn start(cluster: &ClusterOptions, sql: &SqlOptions) -> anyhow::Result<Self> {
        let auth =
            AuthConfig::from_spec(&sql.users).map_err(|e| anyhow::anyhow!("--users: {e}"))?;
        let tls = tls_config(sql);
        let storage = LocalCluster::start(cluster)
            .await
            .context("starting storage")?;
        let seeds = storage.seeds();
        let manager_cfg = manager_config(cluster.host, sql.commit_manager_port, seeds.clone());
        let (commit, commit_addr) = if cluster.processes {
            let (child, addr) = spawn_commit_manager(&manager_cfg).await?;
            (CommitProcess::Child { addr, child }, addr)
        } else {
            let store = StoreClient::connect(StoreClientConfig::with_seeds(seeds.clone())).await?;
            let running = shmdb_commit_manager::start_with_store(
                manager_cfg.clone(),
                store.clone(),
                Arc::new(LogRecovery::new(store)),
            )
            .await
            .context("starting the commit manager")?;
            let addr = running.addr;
            (CommitProcess::InProcess(running), addr)
        };
        let mut processing = Vec::new();
        for i in 0..sql.processing_nodes {
            let config = node_config(
                cluster,
                sql,
                u64::from(i) + 1,
                i,
                &seeds,
                commit_addr,
                &auth,
                &tls,
            );
            processing.push(start_processing(cluster.processes, config, sql).await?);
        }
        let (stop, stop_rx) = watch::channel(false);
        let commit = Arc::new(Mutex::new(Some(commit)));
        let processing = Arc::new(Mutex::new(processing));
        let supervisor = cluster.processes.then(|| {
            tokio::spawn(supervise(
                commit.clone(),
                manager_cfg,
                processing.clone(),
                sql.clone(),
                cluster.clone(),
                seeds,
                commit_addr,
                stop_rx,
            ))
        });
        Ok(LocalDatabase {
            storage,
            commit,
            commit_addr,
            processing,
            stop,
            supervisor,
        })
    }

    /// The PostgreSQL addresses of the processing nodes.
    pub fn pg_addrs(&self) -> Vec<SocketAddr> {
        self.processing
            .lock()
            .iter()
            .map(ProcessingProcess::addr)
            .collect()
    }

    /// Stops everything: SQL first (no new transactions), then the commit manager, then storage.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.supervisor.take() {
            let _ = task.await;
        }
        let nodes = std::mem::take(&mut *self.processing.lock());
        for node in nodes {
            match node {
                ProcessingProcess::InProcess(n) => n.shutdown().await,
                ProcessingProcess::Child { mut child, .. } => {
                    let _ = child.kill().await;
                }
            }
        }
        let commit = self.commit.lock().take();
        match commit {
            Some(CommitProcess::InProcess(m)) => m.shutdown().await,
            Some(CommitProcess::Child { mut child, .. }) => {
                let _ = child.kill().await;
            }
            None => {}
        }
        self.storage.shutdown().await;
    }
}

#[allow(clippy::too_many_arguments)]
fn node_config(
    cluster: &ClusterOptions,
    sql: &SqlOptions,
    id: u64,
    index: u32,
    seeds: &[String],
    commit: SocketAddr,
    auth: &AuthConfig,
    tls: &Option<TlsConfig>,
) -> NodeConfig {
    let port = |base: u16| if base == 0 { 0 } else { base + index as u16 };
    NodeConfig {
        node_id: id,
        listen: SocketAddr::new(cluster.host, port(sql.pg_port)),
        store_seeds: seeds.to_vec(),
        commit_managers: vec![commit.to_string()],
        metrics_listen: Some(SocketAddr::new(
            cluster.host,
            port(sql.pn_metrics_base_port),
        )),
        auth: auth.clone(),
        tls: tls.clone(),
        gc_interval: Some(shmdb_processing_node::node::DEFAULT_GC_INTERVAL),
        transport: sql.transport,
    }
}

async fn start_processing(
    processes: bool,
    config: NodeConfig,
    sql: &SqlOptions,
) -> anyhow::Result<ProcessingProcess> {
    if processes {
        let (child, addr, metrics) = spawn_processing_node(&config, sql).await?;
        Ok(ProcessingProcess::Child {
            id: config.node_id,
            addr,
            metrics,
            child,
        })
    } else {
        let id = config.node_id;
        let running = shmdb_processing_node::node::start(config)
            .await
            .with_context(|| format!("starting processing node {id}"))?;
        Ok(ProcessingProcess::InProcess(running))
    }
}

/// Restarts exited children: the commit manager under its own id (it resumes from the state
/// it published), processing nodes under a new id (the commit manager recovers the old
/// one's transactions once its heartbeats stop; a new id keeps the two apart).
#[allow(clippy::too_many_arguments)]
async fn supervise(
    commit: Arc<Mutex<Option<CommitProcess>>>,
    manager_cfg: ManagerConfig,
    processing: Arc<Mutex<Vec<ProcessingProcess>>>,
    sql: SqlOptions,
    cluster: ClusterOptions,
    seeds: Vec<String>,
    commit_addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_id = u64::from(sql.processing_nodes) + 1;
    let auth = AuthConfig::from_spec(&sql.users).unwrap_or_default();
    let tls = tls_config(&sql);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let commit_exited = match &mut *commit.lock() {
            Some(CommitProcess::Child { child, .. }) => matches!(child.try_wait(), Ok(Some(_))),
            _ => false,
        };
        if commit_exited {
            warn!("commit manager exited; restarting it");
            let mut cfg = manager_cfg.clone();
            cfg.listen = commit_addr;
            match spawn_commit_manager(&cfg).await {
                Ok((child, addr)) => *commit.lock() = Some(CommitProcess::Child { addr, child }),
                Err(e) => warn!(error = %e, "commit manager restart failed; will retry"),
            }
        }
        let mut exited = Vec::new();
        for (index, node) in processing.lock().iter_mut().enumerate() {
            if let ProcessingProcess::Child {
                id,
                addr,
                metrics,
                child,
            } = node
                && let Ok(Some(status)) = child.try_wait()
            {
                warn!(node = *id, %status, "processing node exited; restarting it");
                exited.push((index, *addr, *metrics));
            }
        }
        for (index, addr, metrics) in exited {
            let id = next_id;
            next_id += 1;
            let mut config = node_config(&cluster, &sql, id, 0, &seeds, commit_addr, &auth, &tls);
            config.listen = addr;
            config.metrics_listen = metrics;
            match spawn_processing_node(&config, &sql).await {
                Ok((child, addr, metrics)) => {
                    processing.lock()[index] = ProcessingProcess::Child {
                        id,
                        addr,
                        metrics,
                        child,
                    };
                    info!(node = id, %addr, "processing node restarted");
                }
                Err(e) => {
                    warn!(node = id, error = %e, "processing node restart failed; will retry")
                }
            }
        }
    }
}
