//! The processing-node binary: one stateless SQL node serving the PostgreSQL protocol over
//! the shared store, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use shmdb_processing_node::node::{self, NodeConfig};
use shmdb_processing_node::pg::{AuthConfig, TlsConfig};
use shmdb_store_client::TransportKind;

/// shmdb processing node.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "shmdb processing node: SQL over the PostgreSQL wire protocol"
)]
struct Cli {
    /// This node's id (unique among live processing nodes; stable across restarts).
    #[arg(long, env = "SHMDB_NODE_ID")]
    node_id: u64,
    /// PostgreSQL protocol listen address.
    #[arg(long, env = "SHMDB_PG_LISTEN", default_value = "127.0.0.1:5432")]
    listen: SocketAddr,
    /// Storage-node addresses (comma-separated).
    #[arg(
        long,
        env = "SHMDB_STORE_SEEDS",
        value_delimiter = ',',
        required = true
    )]
    store_seeds: Vec<String>,
    /// Commit-manager addresses (comma-separated).
    #[arg(
        long,
        env = "SHMDB_COMMIT_MANAGERS",
        value_delimiter = ',',
        required = true
    )]
    commit_managers: Vec<String>,
    /// HTTP listen address for /metrics, /healthz and /readyz.
    #[arg(long, env = "SHMDB_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Users allowed to connect, `user:password,...`, authenticated with SCRAM-SHA-256;
    /// empty means trust (anyone connects as anyone: for local use only).
    #[arg(
        long,
        env = "SHMDB_PG_USERS",
        default_value = "",
        hide_env_values = true
    )]
    users: String,
    /// TLS certificate chain (PEM); with --tls-key enables SSL for clients.
    #[arg(long, env = "SHMDB_PG_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "SHMDB_PG_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds between background garbage-collection rounds (rows nobody writes again,
    /// stale index entries, old transaction-log entries); 0 turns them off.
    #[arg(long, env = "SHMDB_GC_INTERVAL_SECS", default_value_t = node::DEFAULT_GC_INTERVAL.as_secs())]
    gc_interval_secs: u64,
    /// Data path to the storage nodes: `auto` (RDMA when a device is present, else framed
    /// TCP), `tcp` (length-prefixed frames on plain TCP; gRPC to nodes without it), `grpc`
    /// (gRPC streams only), or `rdma` (fails at start without a device).
    #[arg(long, env = "SHMDB_TRANSPORT", default_value_t = TransportKind::Auto)]
    transport: TransportKind,
    /// Log format: human or json.
    #[arg(long, env = "SHMDB_LOG_FORMAT", default_value = "human")]
    log_format: String,
}

/// mimalloc instead of the system allocator: the server allocates per request, per key and
/// per row, and the system allocator cost 17–19 % of a TPC-C run's CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = cli
        .log_format
        .parse()
        .map_err(|e| anyhow::anyhow!("--log-format: {e}"))?;
    let _telemetry = shmdb_telemetry::init("processing-node", format)?;
    let auth = AuthConfig::from_spec(&cli.users).map_err(|e| anyhow::anyhow!("--users: {e}"))?;
    let tls = match (cli.tls_cert, cli.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
        _ => None,
    };
    let running = node::start(NodeConfig {
        node_id: cli.node_id,
        listen: cli.listen,
        store_seeds: cli.store_seeds,
        commit_managers: cli.commit_managers,
        metrics_listen: cli.metrics_listen,
        auth,
        tls,
        transport: cli.transport,
        gc_interval: (cli.gc_interval_secs > 0)
            .then(|| std::time::Duration::from_secs(cli.gc_interval_secs)),
    })
    .await
    .context("starting the processing node")?;
    println!(
        "processing node {} serving SQL on {}",
        cli.node_id, running.pg.addr
    );
    shmdb_telemetry::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}
