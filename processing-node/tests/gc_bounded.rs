//! Garbage collection keeps the store bounded under an endless stream of updates to a few
//! rows: eager GC on every write bounds the versions per row, and the lazy sweep
//! (`gc::sweep_records`, `gc::sweep_index`, `gc::sweep_log`, run here by a task as the
//! node's background sweep would) bounds the version-unaware index entries of an updated
//! indexed column and the transaction log. The store's memory, measured after the first
//! half of the updates and at the end, stops growing.
//!
//! An update is one row's new version; transactions update ten rows each. The
//! default-suite test makes 20,000 updates (`SHMDB_GC_UPDATES` overrides it); the
//! issue's 1,000,000 run is `#[ignore]`d (about 2¼ minutes in a release build on the 2-core
//! machine, much longer in a debug build): run it with
//! `cargo test -p shmdb-processing-node --release --test gc_bounded -- --ignored`.
//! Note that `.ci/run` does not run ignored tests today (it runs `cargo test --workspace`
//! only): this run is a manual release check until CI gets a budgeted ignored-tests step.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use shmdb_placement::tables;
use shmdb_processing_node::txn::gc::{sweep_index, sweep_log, sweep_records};
use shmdb_processing_node::txn::{Engine, IndexDef, TableDef, TxnError};
use shmdb_processing_node::{Datum, SortOrder};
use tokio::sync::watch;

const ROWS: i64 = 100;
/// Rows updated per transaction (an update is one row's new version; batching them keeps
/// the default suite short without changing what the store sees per row).
const PER_TXN: u64 = 10;
/// Concurrent updaters (over two engines); each owns the rows `id % UPDATERS == k`, so
/// updaters never conflict with each other. The sweep's compaction of a record between an
/// update's read and its commit changes the record's stamp but adds no version, so the
/// commit writes again instead of failing; an update that still fails (the record kept
/// changing) is retried, as any application retries a serialization failure, and counted.
const UPDATERS: i64 = 10;
/// Most versions a row may hold after the final sweep: the newest version at or below lav
/// plus at most a handful above it.
const MAX_VERSIONS: usize = 3;
/// Most index entries per row after the final sweep (one per value a kept version holds).
const MAX_ENTRIES_PER_ROW: usize = 3;
/// Growth of the store's memory between the half-way and the final measurement that still
/// counts as "not growing" (transaction-log entries not yet below lav, allocation slack).
const MEMORY_SLACK: f64 = 0.10;

/// `counters(id int primary key, n int, tag int)` with a non-unique index on `tag`; every
/// update changes `tag`, so every update adds an index entry.
fn counters() -> TableDef {
    TableDef {
        id: 40,
        columns: 3,
        primary_key: vec![0],
        indexes: vec![IndexDef {
            id: 400,
            columns: vec![2],
            orders: vec![SortOrder::ASC],
            unique: false,
        }],
    }
}

/// One transaction updating `ids`: read them in one round trip, bump each `n`, set each
/// `tag` to its new `n`.
async fn bump(engine: &Arc<Engine>, ids: &[i64]) -> Result<(), TxnError> {
    let t = counters();
    let mut tx = engine.begin().await?;
    let pks: Vec<Vec<Datum>> = ids.iter().map(|id| vec![int(*id)]).collect();
    let rows = tx.get_many(&t, &pks).await?;
    for (id, row) in ids.iter().zip(rows) {
        let Some(Datum::Int(n)) = row.map(|r| r[1].clone()) else {
            return Err(TxnError::NotFound);
        };
        tx.update(&t, &[int(*id)], vec![int(*id), int(n + 1), int(n + 1)])
            .await?;
    }
    tx.commit().await
}

/// Runs `updates` row updates spread over the updaters, `PER_TXN` rows per transaction;
/// returns how many transactions were retried.
async fn update_phase(engines: &[Arc<Engine>], updates: u64) -> anyhow::Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for k in 0..UPDATERS {
        let engine = engines[k as usize % engines.len()].clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mine: Vec<i64> = (0..ROWS).filter(|id| id % UPDATERS == k).collect();
            let (mut batch, mut retries) = (0usize, 0u64);
            loop {
                let claimed = done.fetch_add(PER_TXN, Ordering::Relaxed);
                if claimed >= updates {
                    break;
                }
                let count = PER_TXN.min(updates - claimed) as usize;
                let ids: Vec<i64> = (0..count)
                    .map(|j| mine[(batch * PER_TXN as usize + j) % mine.len()])
                    .collect();
                loop {
                    match bump(&engine, &ids).await {
                        Ok(()) => break,
                        Err(TxnError::SerializationFailure) => retries += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
                batch += 1;
            }
            anyhow::Ok(retries)
        }));
    }
    let mut retries = 0;
    for task in tasks {
        retries += task.await??;
    }
    Ok(retries)
}

/// One pass of the lazy sweep with the commit manager's current lav.
async fn sweep(cluster: &Cluster) -> anyhow::Result<()> {
    let lav = cluster.lav();
    let t = counters();
    sweep_records(&cluster.store, tables::ROWS, lav).await?;
    sweep_index(&cluster.store, &t, &t.indexes[0], lav).await?;
    sweep_log(&cluster.store, lav).await?;
    Ok(())
}

/// Waits until lav passes every transaction so far (a probe transaction moves it along),
/// then sweeps, so a measurement sees everything collectable collected.
async fn settle(cluster: &Cluster, engine: &Arc<Engine>) -> anyhow::Result<()> {
    let probe = engine.begin().await?;
    let newest = probe.tid();
    probe.commit().await?;
    wait_for(
        "lav to pass the finished transactions",
        Duration::from_secs(10),
        || async {
            let tx = engine.begin().await.ok()?;
            let _ = tx.commit().await;
            (cluster.lav() >= newest).then_some(())
        },
    )
    .await?;
    sweep(cluster).await
}

/// What the store holds for the table: (most versions of a row, index entries, memory).
async fn measure(cluster: &Cluster) -> anyhow::Result<(usize, usize, u64)> {
    let t = counters();
    let rows = stored_rows(&cluster.store, &t).await?;
    assert_eq!(rows.len(), ROWS as usize);
    let most = rows.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
    let entries = index_entry_count(&cluster.store, &t.indexes[0]).await?;
    Ok((most, entries, cluster.memory_used()))
}

async fn updates_stay_bounded(updates: u64) -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let engines = [cluster.engine(1)?, cluster.engine(2)?];
    let t = counters();
    let mut tx = engines[0].begin().await?;
    for id in 0..ROWS {
        tx.insert(&t, vec![int(id), int(0), int(0)]).await?;
    }
    tx.commit().await?;

    // The lazy sweep, running all along; it also samples the versions per row it sees
    // before sweeping (eager GC alone bounds those).
    let (stop, mut stopped) = watch::channel(false);
    let sweeper = {
        let store = cluster.store.clone();
        let manager = cluster.manager.manager.clone();
        tokio::spawn(async move {
            let mut most_before_sweep = 0usize;
            let mut most_entries = 0usize;
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return anyhow::Ok((most_before_sweep, most_entries)),
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                let t = counters();
                let rows = stored_rows(&store, &t).await?;
                most_before_sweep =
                    most_before_sweep.max(rows.iter().map(|(_, r)| r.len()).max().unwrap_or(0));
                most_entries = most_entries.max(index_entry_count(&store, &t.indexes[0]).await?);
                let lav = manager.status().lav;
                sweep_records(&store, tables::ROWS, lav).await?;
                sweep_index(&store, &t, &t.indexes[0], lav).await?;
                sweep_log(&store, lav).await?;
            }
        })
    };

    let started = std::time::Instant::now();
    let mut retries = update_phase(&engines, updates / 2).await?;
    settle(&cluster, &engines[0]).await?;
    let (versions_half, entries_half, memory_half) = measure(&cluster).await?;
    retries += update_phase(&engines, updates - updates / 2).await?;
    settle(&cluster, &engines[0]).await?;
    let (versions_end, entries_end, memory_end) = measure(&cluster).await?;
    let _ = stop.send(true);
    let (most_before_sweep, most_entries) = sweeper.await??;
    eprintln!(
        "{updates} updates ({retries} retried after meeting the sweep) in {:.1?}: versions/row half {versions_half} end {versions_end} \
         (most seen between sweeps {most_before_sweep}); index entries half {entries_half} \
         end {entries_end} (most seen {most_entries}); memory half {memory_half} end {memory_end}",
        started.elapsed()
    );

    // Every update happened.
    let mut tx = engines[1].begin().await?;
    let total: i64 = tx
        .scan(
            &t,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            0,
        )
        .await?
        .iter()
        .map(|r| match r[1] {
            Datum::Int(n) => n,
            _ => 0,
        })
        .sum();
    tx.commit().await?;
    assert_eq!(total as u64, updates, "row updates lost");

    assert!(
        versions_end <= MAX_VERSIONS,
        "a row kept {versions_end} versions"
    );
    assert!(
        versions_half <= MAX_VERSIONS,
        "a row kept {versions_half} versions"
    );
    // Between sweeps only eager GC works: still a few versions, not thousands.
    assert!(
        most_before_sweep <= 4 * MAX_VERSIONS,
        "a row held {most_before_sweep} versions between sweeps"
    );
    let entry_bound = ROWS as usize * MAX_ENTRIES_PER_ROW;
    assert!(
        entries_end <= entry_bound,
        "{entries_end} index entries for {ROWS} rows"
    );
    assert!(
        entries_half <= entry_bound,
        "{entries_half} index entries for {ROWS} rows"
    );
    assert!(
        (memory_end as f64) <= memory_half as f64 * (1.0 + MEMORY_SLACK),
        "the store's memory kept growing: {memory_half} bytes after half the updates, {memory_end} at the end"
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_updates_to_few_rows_stay_bounded() -> anyhow::Result<()> {
    let updates = std::env::var("SHMDB_GC_UPDATES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    updates_stay_bounded(updates).await
}

/// The full size: 1,000,000 updates to 100 rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "1,000,000 updates take minutes; run with --release -- --ignored"]
async fn million_updates_to_hundred_rows_stay_bounded() -> anyhow::Result<()> {
    updates_stay_bounded(1_000_000).await
}
