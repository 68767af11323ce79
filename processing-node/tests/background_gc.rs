//! The node's background sweeper reclaims garbage nobody writes again — old versions of
//! rows no longer updated, deleted rows, index entries of replaced values, log entries below
//! lav — while it never takes a version a running snapshot still reads, nor loses an update
//! that races it.

mod common;
mod sql;

use std::time::Duration;

use bytes::Bytes;
use shmdb_placement::tables;
use shmdb_processing_node::record::Record;
use shmdb_processing_node::sweeper::{self, SweepMetrics};
use shmdb_store_client::{KeyRange, StoreClient};
use shmdb_telemetry::MetricsRegistry;

use common::wait_for;
use sql::*;

const ROWS: i64 = 20;
const DELETED: i64 = 10;
const UPDATES_PER_ROW: i64 = 5;

/// What the store holds: (row records, versions over all of them, version-unaware index
/// entries, transaction-log entries).
async fn footprint(store: &StoreClient) -> anyhow::Result<(usize, usize, usize, usize)> {
    let all = || KeyRange {
        start: Bytes::new(),
        end: None,
    };
    let rows = store.scan(tables::ROWS, all(), usize::MAX).await?;
    let mut versions = 0;
    for item in &rows {
        versions += Record::decode(&item.value)?.versions().len();
    }
    let entries = store
        .scan(tables::INDEXES, all(), usize::MAX)
        .await?
        .iter()
        .filter(|i| i.value.is_empty())
        .count();
    let log = store.scan(tables::TXLOG, all(), usize::MAX).await?.len();
    Ok((rows.len(), versions, entries, log))
}

fn counter(registry: &MetricsRegistry, name: &str, label: &str) -> u64 {
    registry
        .registry()
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .filter(|m| m.get_label().iter().any(|l| l.value() == label))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_sweeper_reclaims_garbage_and_spares_live_snapshots() -> anyhow::Result<()> {
    let (cluster, engines) = start(1).await?;
    let store = cluster.store.clone();
    let mut s = engines[0].session();
    exec(&mut s, "CREATE TABLE t (id int PRIMARY KEY, tag int)").await?;
    exec(&mut s, "CREATE INDEX t_tag ON t (tag)").await?;
    // The catalog's own rows live in the same storage table: counted apart.
    let catalog = footprint(&store).await?;
    for id in 1..=ROWS {
        exec(&mut s, &format!("INSERT INTO t VALUES ({id}, 0)")).await?;
    }
    // A snapshot taken before any update: the sweeper must leave it everything it reads.
    let mut reader = engines[0].session();
    exec(&mut reader, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    assert_eq!(
        rows(&mut reader, "SELECT count(*), sum(tag) FROM t").await?,
        vec![format!("{ROWS}|0")]
    );

    for round in 1..=UPDATES_PER_ROW {
        for id in 1..=ROWS {
            exec(
                &mut s,
                &format!("UPDATE t SET tag = {round} WHERE id = {id}"),
            )
            .await?;
        }
    }
    exec(&mut s, &format!("DELETE FROM t WHERE id <= {DELETED}")).await?;
    let before = footprint(&store).await?;
    assert!(
        before.1 > ROWS as usize && before.2 > ROWS as usize,
        "the updates left old versions and index entries behind: {before:?}"
    );

    let registry = MetricsRegistry::default();
    let metrics = SweepMetrics::register(&registry)?;
    let task = sweeper::spawn(engines[0].clone(), Duration::from_millis(50), Some(metrics));

    // Rounds run while the old snapshot is open, with a writer racing them.
    wait_for("three sweep rounds", Duration::from_secs(30), || async {
        (counter(&registry, "shmdb_gc_sweep_rounds_total", "ok") >= 3).then_some(())
    })
    .await?;
    let mut writer = engines[0].session();
    for id in DELETED + 1..=ROWS {
        exec(
            &mut writer,
            &format!("UPDATE t SET tag = tag + 100 WHERE id = {id}"),
        )
        .await?;
    }
    let rounds = counter(&registry, "shmdb_gc_sweep_rounds_total", "ok");
    wait_for("two more sweep rounds", Duration::from_secs(30), || async {
        (counter(&registry, "shmdb_gc_sweep_rounds_total", "ok") >= rounds + 2).then_some(())
    })
    .await?;
    assert_eq!(
        rows(&mut reader, "SELECT count(*), sum(tag) FROM t").await?,
        vec![format!("{ROWS}|0")],
        "the sweeper took versions an open snapshot reads"
    );
    assert_eq!(
        rows(
            &mut reader,
            "SELECT id FROM t WHERE tag = 0 ORDER BY id LIMIT 2"
        )
        .await?,
        vec!["1", "2"],
        "the sweeper took index entries an open snapshot reads"
    );
    exec(&mut reader, "COMMIT").await?;

    // With the snapshot gone, every live row shrinks to one version, deleted rows vanish,
    // and only the current values keep index entries.
    let live = (ROWS - DELETED) as usize;
    let records = catalog.0 + live;
    let entries = catalog.2 + live;
    let after = wait_for("garbage to be reclaimed", Duration::from_secs(60), || {
        let store = store.clone();
        async move {
            let f = footprint(&store).await.ok()?;
            (f.0 == records && f.1 == records && f.2 == entries).then_some(f)
        }
    })
    .await?;
    assert!(
        after.3 < before.3,
        "log entries below lav were not swept: {before:?} -> {after:?}"
    );
    assert!(counter(&registry, "shmdb_gc_sweep_reclaimed_total", "rows") > 0);
    assert!(counter(&registry, "shmdb_gc_sweep_reclaimed_total", "index") > 0);
    assert_eq!(
        counter(&registry, "shmdb_gc_sweep_rounds_total", "error"),
        0
    );

    // Nothing a query can see changed: the racing updates all landed.
    let expected: i64 = (DELETED + 1..=ROWS).map(|_| UPDATES_PER_ROW + 100).sum();
    assert_eq!(
        rows(&mut s, "SELECT count(*), sum(tag) FROM t").await?,
        vec![format!("{live}|{expected}")]
    );
    assert_eq!(
        rows(
            &mut s,
            &format!(
                "SELECT count(*) FROM t WHERE tag = {}",
                UPDATES_PER_ROW + 100
            )
        )
        .await?,
        vec![live.to_string()]
    );
    task.abort();
    cluster.shutdown().await;
    Ok(())
}

/// A record compacted by the sweep after a transaction read it is not a write-write
/// conflict: the transaction still commits its update (a bulk load that outlives a sweep
/// round must not fail). A version it does not see, added after the compaction, still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_after_a_read_is_not_a_conflict_but_a_new_version_is() -> anyhow::Result<()> {
    let (cluster, engines) = start(1).await?;
    let store = cluster.store.clone();
    let mut s = engines[0].session();
    exec(&mut s, "CREATE TABLE t (id int PRIMARY KEY, tag int)").await?;
    exec(&mut s, "INSERT INTO t VALUES (1, 0), (2, 0)").await?;
    for round in 1..=UPDATES_PER_ROW {
        exec(&mut s, &format!("UPDATE t SET tag = {round}")).await?;
    }
    let versions = || {
        let store = store.clone();
        async move { anyhow::Ok(footprint(&store).await?.1) }
    };

    // Compaction between the read and the commit.
    let mut writer = engines[0].session();
    exec(&mut writer, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    assert_eq!(
        rows(&mut writer, "SELECT tag FROM t WHERE id = 1").await?,
        vec![UPDATES_PER_ROW.to_string()]
    );
    let before = versions().await?;
    compact_once_lav_allows(&engines[0]).await?;
    assert!(versions().await? < before);
    exec(&mut writer, "UPDATE t SET tag = tag + 1 WHERE id = 1").await?;
    exec(&mut writer, "COMMIT").await?;
    assert_eq!(
        rows(&mut s, "SELECT tag FROM t WHERE id = 1").await?,
        vec![(UPDATES_PER_ROW + 1).to_string()]
    );

    // Compaction and then a concurrent update: first committer wins.
    for round in 1..=3 {
        exec(&mut s, &format!("UPDATE t SET tag = {round} WHERE id = 2")).await?;
    }
    exec(&mut writer, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    assert_eq!(
        rows(&mut writer, "SELECT tag FROM t WHERE id = 2").await?,
        vec!["3"]
    );
    compact_once_lav_allows(&engines[0]).await?;
    exec(&mut s, "UPDATE t SET tag = 100 WHERE id = 2").await?;
    exec(&mut writer, "UPDATE t SET tag = tag + 1 WHERE id = 2").await?;
    assert_eq!(err(&mut writer, "COMMIT").await?, "40001");
    assert_eq!(
        rows(&mut s, "SELECT tag FROM t WHERE id = 2").await?,
        vec!["100"]
    );
    cluster.shutdown().await;
    Ok(())
}

/// Runs sweep rounds until one compacts something. The lav a round works below is the
/// commit manager's, published every few milliseconds: right after the updates it may
/// still name one of them as running. Each round begins a transaction and so learns the
/// newest lav.
async fn compact_once_lav_allows(
    engine: &shmdb_processing_node::sql::SqlEngine,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let round = sweeper::sweep_once(engine, None).await?;
        if round.total.compacted > 0 {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "nothing was compacted: {round:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
