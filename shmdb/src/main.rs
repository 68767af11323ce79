//! `shmdb`: run a local cluster, inspect a cluster, run benchmarks.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shmdb::cluster::{ClusterOptions, LocalCluster};

/// shmdb command-line tool.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "shmdb: elastic in-memory SQL database — local cluster and tools"
)]
struct Cli {
    /// Log format: human or json.
    #[arg(long, env = "SHMDB_LOG_FORMAT", default_value = "human", global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local cluster on 127.0.0.1 (no Kubernetes needed) and run until Ctrl-C.
    Up(ClusterOptions),
    /// Print tiers, ranges, replicas and health of a running cluster.
    Status {
        /// Storage-node addresses to ask for the partition map.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"
        )]
        seeds: Vec<String>,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(shmdb::bench::BenchCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = cli
        .log_format
        .parse()
        .map_err(|e| anyhow::anyhow!("--log-format: {e}"))?;
    let _telemetry = shmdb_telemetry::init("shmdb", format)?;
    match cli.command {
        Command::Up(options) => up(options).await,
        Command::Status { seeds } => {
            let status = shmdb::status::gather(&seeds).await?;
            print!("{}", status.render());
            Ok(())
        }
        Command::Bench(command) => shmdb::bench::run(command).await,
    }
}

async fn up(options: ClusterOptions) -> anyhow::Result<()> {
    let cluster = LocalCluster::start(&options)
        .await
        .context("starting the local cluster")?;
    let map = cluster.map().await?;
    println!("shmdb local cluster is up (Ctrl-C stops it)");
    println!(
        "  storage nodes: {}  replication factor {}  ranges {}  map v{}",
        map.nodes.len(),
        map.replication_factor,
        map.ranges.len(),
        map.version
    );
    for node in cluster.nodes.lock().iter() {
        println!(
            "  storage node {}: grpc {}  metrics {}",
            node.id(),
            node.addr(),
            node.metrics_addr()
                .map_or("-".to_string(), |m| format!("http://{m}/metrics"))
        );
    }
    println!(
        "  status: shmdb status --seeds {}",
        cluster.seeds().join(",")
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("stopping...");
    tokio::time::timeout(Duration::from_secs(10), cluster.shutdown())
        .await
        .context("the cluster did not stop in time")?;
    Ok(())
}
