//! The storage-node binary: one storage node serving until it is told to stop.

use anyhow::Context;
use clap::Parser;

/// shmdb storage node.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "shmdb storage node: in-memory, replicated record store"
)]
struct Cli {
    #[command(flatten)]
    node: shmdb_storage_node::NodeConfig,
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
    let _telemetry = shmdb_telemetry::init("storage-node", format)?;
    let running = shmdb_storage_node::start(cli.node)
        .await
        .context("starting the storage node")?;
    println!(
        "storage node {} listening on {} (data path: {})",
        running.node.id(),
        running.addr,
        running.transport
    );
    tokio::select! {
        result = running.wait() => result.map_err(|e| anyhow::anyhow!("server stopped: {e}")),
        _ = shmdb_telemetry::shutdown_signal() => Ok(()),
    }
}
