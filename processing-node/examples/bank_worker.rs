//! A processing node in its own process running the bank workload, so that a test can
//! SIGKILL it mid-commit (`tests/processing_node_killed_mid_bank.rs`).
//!
//! Usage: `bank_worker <store seeds, comma-separated> <commit manager host:port> <node id>
//! <workers>`. It runs transfers until it is killed or its stdin closes (so it never
//! outlives the test that spawned it), and reports each step on stdout, one flushed line
//! per event, *before* taking the next step — whatever it printed is true even if it is
//! killed right after:
//!
//! ```text
//! ready
//! begin <tid>
//! try <tid> <from> <to> <amount>      about to commit this transfer
//! ok <tid>                            commit acknowledged
//! conflict <tid> | failed <tid> | unknown <tid>
//! ```

#[path = "../tests/common/bank.rs"]
mod bank;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::SeedableRng;
use shmdb_commit_manager::{CommitClient, CommitClientConfig};
use shmdb_processing_node::txn::{Engine, EngineConfig};
use shmdb_store_client::{StoreClient, StoreClientConfig};
use tokio::io::AsyncReadExt;

/// Writes one line and flushes it.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn report(event: bank::Event) {
    match event {
        bank::Event::Begin(tid) => say(format_args!("begin {tid}")),
        bank::Event::Try(t) => say(format_args!(
            "try {} {} {} {}",
            t.tid, t.from, t.to, t.amount
        )),
        bank::Event::Done(t, fate) => {
            let word = match fate {
                bank::Fate::Committed => "ok",
                bank::Fate::Conflict => "conflict",
                bank::Fate::NotCommitted(_) => "failed",
                bank::Fate::Unknown(_) => "unknown",
            };
            say(format_args!("{word} {}", t.tid));
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [seeds, manager, node, workers] = args.as_slice() else {
        anyhow::bail!("usage: bank_worker <seeds> <manager> <node id> <workers>");
    };
    let node: u64 = node.parse().context("node id")?;
    let workers: u64 = workers.parse().context("workers")?;
    let store = StoreClient::connect(StoreClientConfig::with_seeds(seeds.split(','))).await?;
    let mut cfg = CommitClientConfig::new([manager.clone()], node);
    cfg.heartbeat_interval = Some(Duration::from_millis(200));
    let engine = Engine::new(
        EngineConfig::new(node),
        store,
        Arc::new(CommitClient::new(cfg)?),
    );
    for w in 0..workers {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(node * 1000 + w);
            loop {
                if bank::transfer_once(&engine, &mut rng, &mut report)
                    .await
                    .is_none()
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
    }
    say(format_args!("ready"));
    // Run until the parent goes away.
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    Ok(())
}
