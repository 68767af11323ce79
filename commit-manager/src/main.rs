//! The commit-manager binary: one commit manager serving until it is told to stop.

use anyhow::Context;
use clap::Parser;
use shmdb_commit_manager::ManagerConfig;

/// shmdb commit manager.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "shmdb commit manager: tids, snapshot descriptors, lowest active version"
)]
struct Cli {
    #[command(flatten)]
    manager: ManagerConfig,
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
    let _telemetry = shmdb_telemetry::init("commit-manager", format)?;
    cli.manager
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let id = cli.manager.manager_id;
    let running = shmdb_commit_manager::start_with_log_recovery(cli.manager)
        .await
        .context("starting the commit manager")?;
    println!("commit manager {id} listening on {}", running.addr);
    tokio::select! {
        result = running.wait() => result.map_err(|e| anyhow::anyhow!("server stopped: {e}")),
        _ = shmdb_telemetry::shutdown_signal() => Ok(()),
    }
}
