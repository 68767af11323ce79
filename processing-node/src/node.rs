//! A whole processing node: transaction engine, SQL engine, PostgreSQL front end and the
//! telemetry endpoint, wired from one configuration. The `processing-node` binary and the
//! in-process node of `shmdb up` both start it this way, so they cannot drift apart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shmdb_commit_client::{CommitClient, CommitClientConfig};
use shmdb_rdma_transport::{RdmaConfig, TransportMetrics, client_transport};
use shmdb_store_client::{GrpcConfig, StoreClient, StoreClientConfig, TransportKind};
use shmdb_telemetry::{Health, MetricsRegistry};
use tokio::task::JoinHandle;

use crate::pg::metrics::PgMetrics;
use crate::pg::{AuthConfig, PgServer, ServerConfig, ServerHandle, TlsConfig};
use crate::sql::SqlEngine;
use crate::sweeper::{self, SweepMetrics};
use crate::txn::{Engine, EngineConfig};

/// How a processing node is run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id: its transaction-log entries are keyed by it, so it must be unique
    /// among live processing nodes and stable across restarts of the same node.
    pub node_id: u64,
    /// The SQL (PostgreSQL protocol) listen address.
    pub listen: SocketAddr,
    /// Storage-node addresses to fetch the partition map from.
    pub store_seeds: Vec<String>,
    /// Commit-manager addresses.
    pub commit_managers: Vec<String>,
    /// Where to serve /metrics, /healthz and /readyz (`None`: not served).
    pub metrics_listen: Option<SocketAddr>,
    /// Client authentication.
    pub auth: AuthConfig,
    /// TLS for clients.
    pub tls: Option<TlsConfig>,
    /// How often the background garbage collector sweeps rows, index entries and the
    /// transaction log (`None`: never — only for tests that run sweeps themselves).
    pub gc_interval: Option<Duration>,
    /// The data path to the storage nodes: RDMA where the pod has a device (`Auto`), or TCP.
    pub transport: TransportKind,
}

/// The default sweep interval: rarely written rows keep old versions at most this long
/// past lav, at the cost of one scan of the store per node and interval.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(60);

/// Why a processing node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store could not be reached.
    #[error("connecting to the store: {0}")]
    Store(String),
    /// The commit-manager client could not be built.
    #[error("commit managers: {0}")]
    Commit(String),
    /// The SQL front end could not start.
    #[error(transparent)]
    Server(#[from] crate::pg::server::ServerError),
    /// Metrics or the telemetry endpoint could not start.
    #[error("telemetry: {0}")]
    Telemetry(#[from] shmdb_telemetry::TelemetryError),
}

/// A running processing node.
#[derive(Debug)]
pub struct RunningNode {
    /// The SQL front end (its `addr` is the bound address).
    pub pg: ServerHandle,
    /// The telemetry endpoint's bound address, if served.
    pub metrics_addr: Option<SocketAddr>,
    /// The transaction engine.
    pub engine: Arc<Engine>,
    /// Readiness as /readyz reports it.
    pub health: Health,
    telemetry: Option<JoinHandle<()>>,
    sweeper: Option<JoinHandle<()>>,
}

impl RunningNode {
    /// Stops serving clients, the garbage collector and the telemetry endpoint.
    pub async fn shutdown(self) {
        self.health.set_not_ready("shutting down");
        self.pg.shutdown().await;
        for task in [self.sweeper, self.telemetry].into_iter().flatten() {
            task.abort();
        }
    }
}

/// Starts a processing node.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let health = Health::new();
    let registry = MetricsRegistry::new([("processing_node", config.node_id.to_string())])?;
    let metrics = PgMetrics::register(&registry)?;
    let sweep_metrics = SweepMetrics::register(&registry)?;
    let (metrics_addr, telemetry) = match config.metrics_listen {
        Some(addr) => {
            let (bound, task) =
                shmdb_telemetry::serve(addr, registry.clone(), health.clone()).await?;
            (Some(bound), Some(task))
        }
        None => (None, None),
    };
    let store_config = StoreClientConfig::with_seeds(config.store_seeds.clone());
    let transport_metrics = TransportMetrics::register(registry.registry())
        .map_err(|e| NodeError::Store(format!("transport metrics: {e}")))?;
    let (transport, selected) = client_transport(
        config.transport,
        GrpcConfig {
            connect_timeout: store_config.connect_timeout,
            request_timeout: store_config.request_timeout,
            ..GrpcConfig::default()
        },
        RdmaConfig {
            connect_timeout: store_config.connect_timeout,
            request_timeout: store_config.request_timeout,
            ..RdmaConfig::default()
        },
        transport_metrics,
    )
    .map_err(|e| NodeError::Store(format!("--transport: {e}")))?;
    tracing::info!(transport = selected.name(), "storage data path");
    let store = StoreClient::with_transport(store_config, transport)
        .await
        .map_err(|e| NodeError::Store(e.to_string()))?;
    let commit = CommitClient::new(CommitClientConfig::new(
        config.commit_managers.clone(),
        config.node_id,
    ))
    .map_err(|e| NodeError::Commit(e.to_string()))?;
    let engine = Engine::new(EngineConfig::new(config.node_id), store, Arc::new(commit));
    engine.reapply_stats().export(&registry)?;
    engine.prune_stats().export(&registry)?;
    let sql = SqlEngine::new(engine.clone());
    let sweeper = config
        .gc_interval
        .map(|interval| sweeper::spawn(sql.clone(), interval, Some(sweep_metrics)));
    let mut server = ServerConfig::new(config.listen);
    server.auth = config.auth;
    server.tls = config.tls;
    server.metrics = Some(metrics);
    let pg = PgServer::start(server, sql).await?;
    health.set_ready();
    Ok(RunningNode {
        pg,
        metrics_addr,
        engine,
        health,
        telemetry,
        sweeper,
    })
}
