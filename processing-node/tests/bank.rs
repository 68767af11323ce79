//! The bank: 100 accounts with a fixed total, transfers from two processing nodes × 8
//! workers, concurrent read-only snapshots. Every snapshot must sum to the starting total,
//! and the final balances must equal the starting balances plus exactly the acknowledged
//! transfers (each worker books its commits; they are replayed and compared).
//!
//! Load lasts 20 s by default; `SHMDB_BANK_SECS` overrides it (also for the failure
//! variants in `storage_node_killed_mid_bank.rs` and `processing_node_killed_mid_bank.rs`,
//! which run half as long).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_from_two_nodes_keep_total_and_every_commit() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, 2).await?;
    let engines = [cluster.engine(1)?, cluster.engine(2)?];
    bank::create(&engines[0]).await?;
    let run = bank::run(&engines, 8, bank::load_duration(20.0, 1.0)).await;
    eprintln!(
        "bank: {} committed, {} conflicts, {} snapshots, {:?}",
        run.committed(),
        run.conflicts(),
        run.readers.snapshots,
        run.ledgers
            .iter()
            .map(|(n, l)| (n, l.failures, &l.failure_messages))
            .collect::<Vec<_>>()
    );
    assert!(run.committed() > 0, "no transfer committed");
    verify_bank(&cluster.store, &engines[1], &run, &[]).await?;
    cluster.shutdown().await;
    Ok(())
}
