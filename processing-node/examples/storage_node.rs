//! A storage node process for this crate's failure tests
//! (`tests/storage_node_killed_mid_bank.rs` points the local cluster at it through
//! `SHMDB_STORAGE_NODE_BIN`). It is the storage-node library behind the same flags as the
//! `storage-node` binary; being an example of this package, `cargo test` of this package
//! always builds it from the current sources, where the binary of another package may be
//! missing or stale.

use anyhow::Context;
use clap::Parser;

/// A storage node serving until it is killed.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    node: shmdb_storage_node::NodeConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let running = shmdb_storage_node::start(cli.node)
        .await
        .context("starting the storage node")?;
    println!(
        "storage node {} listening on {}",
        running.node.id(),
        running.addr
    );
    running
        .wait()
        .await
        .map_err(|e| anyhow::anyhow!("server stopped: {e}"))
}
