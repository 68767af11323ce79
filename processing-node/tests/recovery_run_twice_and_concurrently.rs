//! Recovery of a dead processing node's transactions is idempotent: `LogRecovery` run twice
//! at once, again afterwards, again without the node id (the restarted-manager path), and
//! finally by the commit manager itself after the node's heartbeats stop, leaves the same
//! result as one run.
//!
//! The dead node's state is built by hand, exactly as a crash mid-commit leaves it: tids
//! begun at the commit manager by a client for node 7, log entries in each state, and
//! versions applied to records with conditional writes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use shmdb_commit_manager::{CommitClient, CommitClientConfig, Recovery, RecoveryRequest};
use shmdb_placement::tables;
use shmdb_processing_node::record::{Record, Version};
use shmdb_processing_node::txn::log::{LogEntry, LogStatus, now_micros};
use shmdb_processing_node::txn::recover::LogRecovery;
use shmdb_processing_node::{encode_row, keys};
use shmdb_store_client::{CondOutcome, Expect, StoreClient};

const DEAD: u64 = 7;

fn row_key(id: i64) -> (u64, Bytes) {
    (
        tables::ROWS,
        Bytes::from(keys::row_key(bank::table().id, &[int(id)])),
    )
}

/// Adds a version of `tid` holding `(id, balance)` to the row's record, as a try-commit
/// would (conditionally on the stamp read).
async fn apply(store: &StoreClient, id: i64, tid: u64, balance: i64) -> anyhow::Result<()> {
    let (table, key) = row_key(id);
    let found = store.get(table, key.clone()).await?;
    let (mut record, expect) = match &found {
        Some(v) => (Record::decode(&v.value)?, Expect::Stamp(v.stamp)),
        None => (Record::new(), Expect::Absent),
    };
    record.push(Version::live(tid, encode_row(&[int(id), int(balance)])))?;
    let outcome = store
        .put_if(table, key, Bytes::from(record.encode()), expect)
        .await?;
    assert!(
        matches!(outcome, CondOutcome::Written { .. }),
        "{outcome:?}"
    );
    Ok(())
}

async fn log(store: &StoreClient, tid: u64, status: LogStatus, ids: &[i64]) -> anyhow::Result<()> {
    let entry = LogEntry {
        status,
        time_micros: now_micros(),
        keys: ids.iter().map(|id| row_key(*id)).collect(),
        spill: 0,
    };
    store
        .put(
            tables::TXLOG,
            Bytes::from(keys::txlog_key(DEAD, tid)),
            Bytes::from(entry.encode()),
        )
        .await?;
    Ok(())
}

/// The tids whose versions a row's record holds.
async fn tids_at(store: &StoreClient, id: i64) -> anyhow::Result<Option<Vec<u64>>> {
    let (table, key) = row_key(id);
    Ok(match store.get(table, key).await? {
        Some(v) => Some(
            Record::decode(&v.value)?
                .versions()
                .iter()
                .map(|v| v.tid)
                .collect(),
        ),
        None => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_run_twice_concurrently_and_again_is_harmless() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let store = cluster.store.clone();
    let engine = cluster.engine(1)?;
    let t = bank::table();
    let mut setup = engine.begin().await?;
    for id in [1, 2, 4, 5] {
        setup.insert(&t, vec![int(id), int(100)]).await?;
    }
    let setup_tid = setup.tid();
    setup.commit().await?;

    // The dead node's transactions, begun at the manager and heartbeated (for now).
    let mut cfg = CommitClientConfig::new([cluster.manager.addr.to_string()], DEAD);
    cfg.heartbeat_interval = Some(Duration::from_millis(200));
    let dead = CommitClient::new(cfg)?;
    let running = dead.start().await?.tid; // mid-commit: some writes applied
    let flagged = dead.start().await?.tid; // commit flag written, manager never told
    let silent = dead.start().await?.tid; // never logged: wrote nothing
    let undone = dead.start().await?.tid; // already aborted by itself
    // `running` updated rows 1 and 2, inserted row 3, and had not reached row 4.
    log(&store, running, LogStatus::Running, &[1, 2, 3, 4]).await?;
    apply(&store, 1, running, 50).await?;
    apply(&store, 2, running, 150).await?;
    apply(&store, 3, running, 7).await?;
    // `flagged` moved 10 from row 5 (to nowhere: enough to see it kept).
    log(&store, flagged, LogStatus::Running, &[5]).await?;
    apply(&store, 5, flagged, 90).await?;
    log(&store, flagged, LogStatus::Committed, &[5]).await?;
    log(&store, undone, LogStatus::Aborted, &[4]).await?;

    let recovery = Arc::new(LogRecovery::new(store.clone()));
    let request = |node| RecoveryRequest {
        manager_id: 1,
        node,
        tids: vec![running, flagged, silent, undone],
        lav: cluster.lav(),
    };
    let check = || async {
        assert_eq!(tids_at(&store, 1).await?, Some(vec![setup_tid]), "row 1");
        assert_eq!(tids_at(&store, 2).await?, Some(vec![setup_tid]), "row 2");
        assert_eq!(
            tids_at(&store, 3).await?,
            None,
            "the inserted row 3 must be gone"
        );
        assert_eq!(tids_at(&store, 4).await?, Some(vec![setup_tid]), "row 4");
        assert_eq!(
            tids_at(&store, 5).await?,
            Some(vec![flagged, setup_tid]),
            "row 5"
        );
        assert_eq!(
            log_status(&store, DEAD, running).await?,
            Some(LogStatus::Aborted)
        );
        assert_eq!(
            log_status(&store, DEAD, flagged).await?,
            Some(LogStatus::Committed)
        );
        // Never logged: recovery leaves an abort flag so the node cannot log it later.
        assert_eq!(
            log_status(&store, DEAD, silent).await?,
            Some(LogStatus::Aborted)
        );
        assert_eq!(
            log_status(&store, DEAD, undone).await?,
            Some(LogStatus::Aborted)
        );
        anyhow::Ok(())
    };

    // Twice at once.
    let (first, second) = tokio::join!(
        recovery.recover(request(Some(DEAD))),
        recovery.recover(request(Some(DEAD)))
    );
    assert_eq!(first?.committed, vec![flagged]);
    assert_eq!(second?.committed, vec![flagged]);
    check().await?;
    // Again, and without the node id (a restarted manager's tids): same answer, no change.
    assert_eq!(
        recovery.recover(request(Some(DEAD))).await?.committed,
        vec![flagged]
    );
    assert_eq!(
        recovery.recover(request(None)).await?.committed,
        vec![flagged]
    );
    check().await?;

    // Now the node goes silent for real: the manager runs the same recovery once more and
    // finishes the tids — `flagged` as committed, the others as aborted — so lav moves on.
    let before = cluster.manager.manager.status().stats;
    drop(dead);
    wait_for(
        "the manager to recover the silent node's tids",
        Duration::from_secs(20),
        || async { (cluster.lav() >= undone).then_some(()) },
    )
    .await?;
    let after = cluster.manager.manager.status().stats;
    assert_eq!(after.recovered_commits - before.recovered_commits, 1);
    assert_eq!(after.recovered_aborts - before.recovered_aborts, 3);
    check().await?;
    let mut tx = engine.begin().await?;
    assert_eq!(
        tx.get(&t, &[int(5)]).await?,
        Some(vec![int(5), int(90)]),
        "the flagged commit is visible"
    );
    assert_eq!(tx.get(&t, &[int(1)]).await?, Some(vec![int(1), int(100)]));
    assert_eq!(tx.get(&t, &[int(3)]).await?, None);
    tx.commit().await?;
    cluster.shutdown().await;
    Ok(())
}

/// A write set too large for one log record (a bulk load) is spilled over several; a
/// transaction with one commits normally, and recovery of a dead node's finds and reverts
/// versions whose keys are only in a spilled chunk. The sweep removes the chunks with the
/// entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_write_sets_spill_over_several_log_records() -> anyhow::Result<()> {
    use shmdb_processing_node::txn::gc::sweep_log;
    use shmdb_processing_node::txn::log::{read_write_set, write_spill};

    let cluster = Cluster::start(1, 1).await?;
    let store = cluster.store.clone();
    let engine = cluster.engine(1)?;
    // 6,000 rows keyed by 100-character names: about 700 KB of keys, more than one record
    // takes.
    const ROWS: i64 = 6_000;
    let t = shmdb_processing_node::txn::TableDef {
        id: 21,
        columns: 2,
        primary_key: vec![0],
        indexes: Vec::new(),
    };
    let name = |id: i64| format!("{id:0>100}");
    let key = |id: i64| {
        (
            tables::ROWS,
            Bytes::from(keys::row_key(t.id, &[text(&name(id))])),
        )
    };
    let mut bulk = engine.begin().await?;
    for id in 0..ROWS {
        bulk.insert(&t, vec![text(&name(id)), int(1)]).await?;
    }
    let bulk_tid = bulk.tid();
    bulk.commit().await?;
    let head = store
        .get(tables::TXLOG, Bytes::from(keys::txlog_key(1, bulk_tid)))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no log entry for the bulk insert"))?;
    let head = LogEntry::decode(&head.value)?;
    assert_eq!(head.status, LogStatus::Committed);
    assert!(head.spill > 0, "the write set was not spilled");
    assert_eq!(
        read_write_set(&store, 1, bulk_tid, &head, false)
            .await?
            .len(),
        ROWS as usize
    );

    // A dead node's transaction over the same many keys: logged (spilled), and one version
    // applied to the last row, whose key lies in the last chunk only.
    let mut cfg = CommitClientConfig::new([cluster.manager.addr.to_string()], DEAD);
    cfg.heartbeat_interval = Some(Duration::from_millis(200));
    let dead = CommitClient::new(cfg)?;
    let tid = dead.start().await?.tid;
    let write_set: Vec<(u64, Bytes)> = (0..ROWS).map(key).collect();
    let (entry, chunks) = LogEntry::split(LogStatus::Running, &write_set);
    assert!(!entry.keys.contains(&key(ROWS - 1)));
    write_spill(&store, DEAD, tid, &chunks).await?;
    store
        .put(
            tables::TXLOG,
            Bytes::from(keys::txlog_key(DEAD, tid)),
            Bytes::from(entry.encode()),
        )
        .await?;
    let (table, last) = key(ROWS - 1);
    let found = store
        .get(table, last.clone())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the last row is missing"))?;
    let mut record = Record::decode(&found.value)?;
    record.push(Version::live(
        tid,
        encode_row(&[text(&name(ROWS - 1)), int(99)]),
    ))?;
    store
        .put_if(
            table,
            last.clone(),
            Bytes::from(record.encode()),
            Expect::Stamp(found.stamp),
        )
        .await?;
    let recovery = LogRecovery::new(store.clone());
    assert!(!recovery.recover_tid(DEAD, tid).await?);
    let record = store
        .get(table, last)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the last row is missing"))?;
    let tids: Vec<u64> = Record::decode(&record.value)?
        .versions()
        .iter()
        .map(|v| v.tid)
        .collect();
    assert_eq!(
        tids,
        vec![bulk_tid],
        "the version in a spilled chunk's key stayed"
    );
    assert_eq!(
        log_status(&store, DEAD, tid).await?,
        Some(LogStatus::Aborted)
    );

    // Entry and chunks below lav go together.
    let records = |node| {
        let store = store.clone();
        async move {
            let range = keys::txlog_node_range(node);
            let range = shmdb_store_client::KeyRange {
                start: Bytes::from(range.start),
                end: range.end.map(Bytes::from),
            };
            anyhow::Ok(store.scan(tables::TXLOG, range, usize::MAX).await?.len())
        }
    };
    assert!(
        records(1).await? > head.spill as usize,
        "the entry and its chunks"
    );
    assert!(records(DEAD).await? > 1);
    sweep_log(&store, bulk_tid.max(tid) + 1).await?;
    assert_eq!(records(1).await?, 0);
    assert_eq!(records(DEAD).await?, 0);
    cluster.shutdown().await;
    Ok(())
}
