//! Pruning on read: a scan that meets records every snapshot sees as deleted removes them
//! from the store behind it, so deleted rows at the front of a range stop costing every later
//! scan until the background sweep comes by. The reading transaction's results are those of
//! a scan without pruning, and it can write the pruned keys again without a conflict.

mod common;

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use shmdb_processing_node::txn::{Engine, TableDef};

/// Begins (and drops) transactions until the engine's lav has passed `tid`, so versions up to
/// it count as seen by every snapshot.
async fn lav_past(engine: &Arc<Engine>, tid: u64) -> anyhow::Result<()> {
    wait_for("lav past the delete", Duration::from_secs(20), || async {
        let tx = engine.begin().await.ok()?;
        let passed = engine.lav() >= tid;
        tx.rollback().await.ok()?;
        passed.then_some(())
    })
    .await
}

/// Counts the rows of `table` a fresh transaction sees, by a full scan.
async fn visible_rows(engine: &Arc<Engine>, table: &TableDef) -> anyhow::Result<usize> {
    let mut tx = engine.begin().await?;
    let rows = tx
        .scan(table, Bound::Unbounded, Bound::Unbounded, 0)
        .await?
        .len();
    tx.commit().await?;
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_delete_the_tombstones_every_snapshot_sees() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let engine = cluster.engine(1)?;
    let t = accounts();
    let mut tx = engine.begin().await?;
    for id in 1..=20 {
        tx.insert(&t, vec![int(id), text(&format!("o{id}")), int(id)])
            .await?;
    }
    tx.commit().await?;
    // A snapshot older than the delete still sees the rows, and holds lav back: nothing may
    // be pruned while it runs.
    let mut old = engine.begin().await?;
    let mut tx = engine.begin().await?;
    for id in 1..=10 {
        assert!(tx.delete(&t, &[int(id)]).await?);
    }
    let deleted_by = tx.tid();
    tx.commit().await?;
    assert_eq!(visible_rows(&engine, &t).await?, 10);
    assert_eq!(
        old.scan(&t, Bound::Unbounded, Bound::Unbounded, 0)
            .await?
            .len(),
        20
    );
    old.commit().await?;
    assert_eq!(stored_rows(&cluster.store, &t).await?.len(), 20);
    assert_eq!(engine.prune_stats().pruned.load(Ordering::Relaxed), 0);

    lav_past(&engine, deleted_by).await?;
    // `ORDER BY key LIMIT 1` over the deleted front of the range.
    let mut tx = engine.begin().await?;
    let first = tx.scan(&t, Bound::Unbounded, Bound::Unbounded, 1).await?;
    assert_eq!(first, vec![vec![int(11), text("o11"), int(11)]]);
    tx.commit().await?;
    wait_for("tombstones pruned", Duration::from_secs(10), || async {
        let left = stored_rows(&cluster.store, &t).await.ok()?.len();
        (left == 10).then_some(())
    })
    .await?;
    assert_eq!(engine.prune_stats().pruned.load(Ordering::Relaxed), 10);
    assert_eq!(visible_rows(&engine, &t).await?, 10);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_key_can_be_written_by_the_transaction_that_pruned_it() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let engine = cluster.engine(1)?;
    let t = accounts();
    let mut tx = engine.begin().await?;
    tx.insert(&t, vec![int(1), text("ann"), int(1)]).await?;
    tx.insert(&t, vec![int(2), text("bob"), int(2)]).await?;
    tx.commit().await?;
    let mut tx = engine.begin().await?;
    assert!(tx.delete(&t, &[int(1)]).await?);
    let deleted_by = tx.tid();
    tx.commit().await?;
    lav_past(&engine, deleted_by).await?;

    let mut tx = engine.begin().await?;
    let rows = tx.scan(&t, Bound::Unbounded, Bound::Unbounded, 0).await?;
    assert_eq!(rows, vec![vec![int(2), text("bob"), int(2)]]);
    wait_for("the tombstone pruned", Duration::from_secs(10), || async {
        let gone = stored_row(&cluster.store, &t, &[int(1)])
            .await
            .ok()?
            .is_none();
        gone.then_some(())
    })
    .await?;
    // The key the scan pruned is free for this transaction: no stale stamp to conflict on.
    tx.insert(&t, vec![int(1), text("ann again"), int(3)])
        .await?;
    tx.commit().await?;
    let mut tx = engine.begin().await?;
    assert_eq!(
        tx.get(&t, &[int(1)]).await?,
        Some(vec![int(1), text("ann again"), int(3)])
    );
    tx.commit().await?;
    cluster.shutdown().await;
    Ok(())
}
