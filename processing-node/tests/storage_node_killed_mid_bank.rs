//! The bank with a storage node SIGKILLed mid-run at replication factor 2: the primary of
//! the range holding the accounts (and, in a fresh cluster, the transaction log and the
//! commit manager's state) dies while 2 processing nodes × 8 workers transfer. The
//! placement manager promotes the backup, the local cluster's supervisor restarts the
//! process under a new id and the manager restores RF (all asserted). Every snapshot still
//! sums to the total, and the final balances are exactly the starting balances plus every
//! committed transfer (acknowledged ones, and those whose outcome a worker could not know but
//! whose log entry carries the commit flag).
//!
//! Storage nodes are child processes (`LocalCluster` with `processes: true`), running this
//! package's `storage_node` example, so that the kill is a real SIGKILL. ~10 s of load by
//! default (`SHMDB_BANK_SECS` / 2).

mod common;

use std::time::Duration;

use common::*;
use shmdb::cluster::{ClusterOptions, StorageProcess};
use shmdb_placement::{range_key, tables};
use shmdb_processing_node::keys;

/// Commits (transfers and snapshot reads) before the kill.
const LOAD_BEFORE_KILL: u64 = 150;

async fn storage_node_killed(load: Duration) -> anyhow::Result<()> {
    let mut options = ClusterOptions::ephemeral(3, 2);
    options.processes = true;
    options.placement_interval_ms = 100;
    let cluster = Cluster::start_with(options).await?;
    let engines = [cluster.engine(1)?, cluster.engine(2)?];
    bank::create(&engines[0]).await?;

    // The primary of the range holding the accounts.
    let map = cluster.storage.map().await?;
    let account = range_key(tables::ROWS, &keys::row_key(bank::table().id, &[int(0)]));
    let victim = map
        .find(&account)
        .and_then(|r| r.primary())
        .ok_or_else(|| anyhow::anyhow!("no primary for the accounts' range"))?;

    let commits_before = cluster.manager.manager.status().stats.commits;
    let load_task = {
        let engines = engines.clone();
        tokio::spawn(async move { bank::run(&engines, 8, load).await })
    };
    // The fault, once the load is well under way.
    wait_for("the load to get going", load, || async {
        let commits = cluster.manager.manager.status().stats.commits;
        (commits >= commits_before + LOAD_BEFORE_KILL).then_some(())
    })
    .await?;
    {
        let mut nodes = cluster.storage.nodes.lock();
        let child = nodes.iter_mut().find_map(|n| match n {
            StorageProcess::Child { id, child, .. } if *id == victim => Some(child),
            _ => None,
        });
        let Some(child) = child else {
            anyhow::bail!("storage node {victim} is not a child process");
        };
        child.start_kill()?; // SIGKILL
    }
    let killed_at = std::time::Instant::now();
    eprintln!("killed storage node {victim}, the accounts' primary");
    // How long the accounts' range is unavailable (for the log; the load runs on).
    wait_for(
        "the accounts' range to take writes again",
        Duration::from_secs(60),
        || async {
            let probe = cluster
                .store
                .put(
                    tables::KV,
                    bytes::Bytes::from_static(b"failover-probe"),
                    bytes::Bytes::new(),
                )
                .await;
            probe.ok().map(|_| ())
        },
    )
    .await?;
    eprintln!(
        "the store took writes again {:.1?} after the kill",
        killed_at.elapsed()
    );
    let run = load_task.await?;
    eprintln!(
        "bank with a storage node killed: {} committed, {} conflicts, {} snapshots ({} failed), \
         failures {:?}, unknown outcomes {}",
        run.committed(),
        run.conflicts(),
        run.readers.snapshots,
        run.readers.errors,
        run.ledgers
            .iter()
            .map(|(n, l)| (*n, l.failures, l.failure_messages.clone()))
            .collect::<Vec<_>>(),
        run.ledgers
            .iter()
            .map(|(_, l)| l.unknown.len())
            .sum::<usize>(),
    );
    assert!(run.committed() > 0, "no transfer committed");

    // The backup was promoted: the accounts' range has a primary other than the victim.
    let new_primary = wait_for(
        "a new primary for the accounts' range",
        Duration::from_secs(60),
        || async {
            let map = cluster.storage.map().await.ok()?;
            map.find(&account)
                .and_then(|r| r.primary())
                .filter(|p| *p != victim)
        },
    )
    .await?;
    // The supervisor restarted the process under a new id and the manager restored RF.
    let map = wait_for(
        "the lost node replaced and RF restored",
        Duration::from_secs(60),
        || async {
            let map = cluster.storage.map().await.ok()?;
            (!map.nodes.contains_key(&victim)
                && map.nodes.len() == 3
                && map
                    .ranges
                    .iter()
                    .all(|r| r.replicas.len() == 2 && r.learners.is_empty()))
            .then_some(map)
        },
    )
    .await?;
    eprintln!(
        "accounts' primary {victim} -> {new_primary}; RF restored at map v{}",
        map.version
    );

    verify_bank(&cluster.store, &engines[1], &run, &[]).await?;
    cluster.shutdown().await;
    Ok(())
}

/// Also the regression test of transfers whose log entry stayed running for good when the
/// answer to the log write itself was lost (the deterministic version is
/// `tests/lost_commit_answers.rs`).
#[test]
fn storage_node_killed_mid_bank_at_rf2() -> anyhow::Result<()> {
    let node = example_binary("storage_node")?;
    // SAFETY: this is the only test of this binary and no thread of it has started yet (the
    // runtime is built below), so nothing reads the environment concurrently.
    unsafe { std::env::set_var("SHMDB_STORAGE_NODE_BIN", node) };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(storage_node_killed(bank::load_duration(20.0, 2.0)))
}
