//! `shmdb`: run a local cluster, inspect a cluster, run benchmarks.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use shmdb::cluster::ClusterOptions;
use shmdb::database::{LocalDatabase, SqlOptions};

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
    /// Start a local database on 127.0.0.1 (no Kubernetes needed) and run until Ctrl-C:
    /// storage nodes, placement manager, commit manager and processing nodes (SQL on 5432).
    Up {
        #[command(flatten)]
        cluster: ClusterOptions,
        #[command(flatten)]
        sql: SqlOptions,
    },
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

/// mimalloc instead of the system allocator: the server allocates per request, per key and
/// per row, and the system allocator cost 17–19 % of a TPC-C run's CPU (BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = cli
        .log_format
        .parse()
        .map_err(|e| anyhow::anyhow!("--log-format: {e}"))?;
    let _telemetry = shmdb_telemetry::init("shmdb", format)?;
    match cli.command {
        Command::Up { cluster, sql } => up(cluster, sql).await,
        Command::Status { seeds } => {
            let status = shmdb::status::gather(&seeds).await?;
            print!("{}", status.render());
            Ok(())
        }
        Command::Bench(command) => shmdb::bench::run(command).await,
    }
}

async fn up(options: ClusterOptions, sql: SqlOptions) -> anyhow::Result<()> {
    let db = LocalDatabase::start(&options, &sql)
        .await
        .context("starting the local database")?;
    let map = db.storage.map().await?;
    println!("shmdb local database is up (Ctrl-C stops it)");
    println!(
        "  storage nodes: {}  replication factor {}  ranges {}  map v{}",
        map.nodes.len(),
        map.replication_factor,
        map.ranges.len(),
        map.version
    );
    for node in db.storage.nodes.lock().iter() {
        println!(
            "  storage node {}: grpc {}  metrics {}",
            node.id(),
            node.addr(),
            node.metrics_addr()
                .map_or("-".to_string(), |m| format!("http://{m}/metrics"))
        );
    }
    println!("  commit manager: grpc {}", db.commit_addr);
    for (i, node) in db.processing.lock().iter().enumerate() {
        println!(
            "  processing node {}: sql {}  metrics {}",
            i + 1,
            node.addr(),
            node.metrics_addr()
                .map_or("-".to_string(), |m| format!("http://{m}/metrics"))
        );
    }
    println!(
        "  status: shmdb status --seeds {}",
        db.storage.seeds().join(",")
    );
    if let Some(first) = db.pg_addrs().first() {
        println!();
        println!("Connect with:");
        println!("  psql -h {} -p {} -U shmdb", first.ip(), first.port());
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("stopping...");
    tokio::time::timeout(Duration::from_secs(15), db.shutdown())
        .await
        .context("the database did not stop in time")?;
    Ok(())
}
