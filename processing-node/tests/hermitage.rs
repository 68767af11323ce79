//! The Hermitage anomaly tests (Kleppmann's catalogue of isolation anomalies) at the
//! transaction API, each transaction on its own processing-node engine, all engines sharing
//! one storage cluster and commit manager.
//!
//! Snapshot isolation with first-committer-wins (DESIGN.md, "Known anomalies") must prevent
//! G0, G1a, G1b, G1c, OTV, PMP, P4 and G-single, and allows G2-item and G2 (write skew).
//! Where PostgreSQL's REPEATABLE READ makes the second writer *wait* and then fail, our
//! writes stay local until commit, so the second writer fails with `SerializationFailure`
//! at its commit, or at its write when the conflicting version is already committed: each
//! test asserts exactly which, and what a later reader sees.
//!
//! Every test starts from `test(id int primary key, value int)` holding (1, 10), (2, 20),
//! with a non-unique index on `value` for the predicate forms.

mod common;

use std::ops::Bound;
use std::sync::Arc;

use common::*;
use shmdb_processing_node::SortOrder;
use shmdb_processing_node::txn::{
    BufferStrategy, Engine, EngineConfig, IndexDef, TableDef, Transaction, TxnError,
};

/// `test(id int primary key, value int)` with a non-unique index on `value`.
fn test_table() -> TableDef {
    TableDef {
        id: 30,
        columns: 2,
        primary_key: vec![0],
        indexes: vec![IndexDef {
            id: 300,
            columns: vec![1],
            orders: vec![SortOrder::ASC],
            unique: false,
        }],
    }
}

/// A cluster, three engines (processing nodes 1, 2, 3) and the two starting rows.
async fn setup(buffer: BufferStrategy) -> anyhow::Result<(Cluster, [Arc<Engine>; 3])> {
    let cluster = Cluster::start(1, 1).await?;
    let engine = |node| {
        let mut config = EngineConfig::new(node);
        config.buffer = buffer;
        cluster.engine_with(config)
    };
    let engines = [engine(1)?, engine(2)?, engine(3)?];
    let t = test_table();
    let mut tx = engines[0].begin().await?;
    tx.insert(&t, vec![int(1), int(10)]).await?;
    tx.insert(&t, vec![int(2), int(20)]).await?;
    tx.commit().await?;
    Ok((cluster, engines))
}

/// `update test set value = v where id = id`.
async fn set(tx: &mut Transaction, id: i64, v: i64) -> Result<(), TxnError> {
    tx.update(&test_table(), &[int(id)], vec![int(id), int(v)])
        .await
}

/// `select value from test where id = id`.
async fn value(tx: &mut Transaction, id: i64) -> anyhow::Result<Option<i64>> {
    Ok(tx
        .get(&test_table(), &[int(id)])
        .await?
        .map(|r| as_int(&r[1])))
}

fn as_int(d: &shmdb_processing_node::Datum) -> i64 {
    match d {
        shmdb_processing_node::Datum::Int(v) => *v,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// `select id, value from test` (a primary-key range scan), filtered by `keep`.
async fn select_where(
    tx: &mut Transaction,
    keep: impl Fn(i64) -> bool,
) -> anyhow::Result<Vec<(i64, i64)>> {
    let rows = tx
        .scan(&test_table(), Bound::Unbounded, Bound::Unbounded, 0)
        .await?;
    Ok(rows
        .iter()
        .map(|r| (as_int(&r[0]), as_int(&r[1])))
        .filter(|(_, v)| keep(*v))
        .collect())
}

/// `select id, value from test where value = v`, through the index.
async fn select_value(tx: &mut Transaction, v: i64) -> anyhow::Result<Vec<(i64, i64)>> {
    let t = test_table();
    let rows = tx
        .index_scan(
            &t,
            &t.indexes[0],
            Bound::Included(&[int(v)]),
            Bound::Included(&[int(v)]),
            0,
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (as_int(&r[0]), as_int(&r[1])))
        .collect())
}

/// Every row as a fresh transaction on `engine` sees it.
async fn committed(engine: &Arc<Engine>) -> anyhow::Result<Vec<(i64, i64)>> {
    let mut tx = engine.begin().await?;
    let rows = select_where(&mut tx, |_| true).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Runs an anomaly test once per buffering strategy: shared buffers must not let a stale
/// record through as current, so every anomaly is checked with each.
macro_rules! with_every_buffer {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn transaction_buffer() -> anyhow::Result<()> {
                super::$name(BufferStrategy::TransactionBuffer).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn shared_record_buffer() -> anyhow::Result<()> {
                super::$name(BufferStrategy::SharedRecordBuffer { capacity: 1024 }).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn version_set_sync() -> anyhow::Result<()> {
                super::$name(BufferStrategy::VersionSetSync { capacity: 1024, unit_shift: 1 }).await
            }
        }
    )*};
}

with_every_buffer!(
    g0_write_cycles_second_committer_fails,
    g1a_aborted_reads_never_seen,
    g1b_intermediate_reads_never_seen,
    g1c_circular_information_flow_prevented,
    otv_observed_transaction_does_not_vanish,
    pmp_predicate_reads_ignore_concurrent_insert,
    pmp_write_predicate_second_writer_fails,
    p4_lost_update_prevented,
    g_single_read_skew_prevented,
    g2_item_write_skew_allowed_unless_locked,
    g2_predicate_write_skew_allowed,
);

fn is_serialization_failure<T: std::fmt::Debug>(r: &Result<T, TxnError>) -> bool {
    matches!(r, Err(TxnError::SerializationFailure))
}

/// A write to a record whose newest version a concurrent transaction committed after this
/// one's snapshot: with the transaction buffer the record is fetched fresh, so the write
/// fails at once and the transaction can only be rolled back. A shared buffer may serve an
/// entry that is complete for the snapshot but older than that commit (that is its point:
/// no round trip); then the stale stamp makes the commit fail instead.
async fn conflict_at_write<T: std::fmt::Debug>(
    buffer: BufferStrategy,
    write: Result<T, TxnError>,
    tx: Transaction,
) {
    match (buffer, write) {
        (_, Err(TxnError::SerializationFailure)) => {
            let commit = tx.commit().await;
            assert!(matches!(commit, Err(TxnError::Finished(_))), "{commit:?}");
        }
        (BufferStrategy::TransactionBuffer, other) => {
            panic!("expected a serialization failure at the write, got {other:?}")
        }
        (_, Ok(_)) => {
            let commit = tx.commit().await;
            assert!(is_serialization_failure(&commit), "{commit:?}");
        }
        (_, Err(other)) => panic!("expected a serialization failure, got {other:?}"),
    }
}

/// G0: two transactions write the same two rows in opposite interleaving. The first to
/// commit wins; the second fails at commit, so the result is never a mix of both.
async fn g0_write_cycles_second_committer_fails(buffer: BufferStrategy) -> anyhow::Result<()> {
    let (cluster, [a, b, c]) = setup(buffer).await?;
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    set(&mut t1, 1, 11).await?;
    set(&mut t2, 1, 12).await?;
    set(&mut t1, 2, 21).await?;
    set(&mut t2, 2, 22).await?;
    t1.commit().await?;
    let r2 = t2.commit().await;
    assert!(
        is_serialization_failure(&r2),
        "second committer must fail: {r2:?}"
    );
    assert_eq!(committed(&c).await?, vec![(1, 11), (2, 21)]);
    // The other order of commits gives the other winner, never a mix.
    let mut t3 = a.begin().await?;
    let mut t4 = b.begin().await?;
    set(&mut t3, 1, 13).await?;
    set(&mut t4, 1, 14).await?;
    set(&mut t3, 2, 23).await?;
    set(&mut t4, 2, 24).await?;
    t4.commit().await?;
    assert!(is_serialization_failure(&t3.commit().await));
    assert_eq!(committed(&c).await?, vec![(1, 14), (2, 24)]);
    cluster.shutdown().await;
    Ok(())
}

/// G1a: a reader never sees the writes of an aborted transaction — neither after a
/// rollback, nor after a try-commit that applied a write to the store, hit a conflict on
/// another record and undid it.
async fn g1a_aborted_reads_never_seen(buffer: BufferStrategy) -> anyhow::Result<()> {
    let (cluster, [a, b, c]) = setup(buffer).await?;
    let t = test_table();
    // Rollback.
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    set(&mut t1, 1, 101).await?;
    assert_eq!(
        select_where(&mut t2, |_| true).await?,
        vec![(1, 10), (2, 20)]
    );
    t1.rollback().await?;
    assert_eq!(
        select_where(&mut t2, |_| true).await?,
        vec![(1, 10), (2, 20)]
    );
    t2.commit().await?;

    // A try-commit that writes row 1 and then fails on row 2: t1 read row 2, then t3
    // committed a newer version of it, so t1's put_if on row 2 fails after its put_if on
    // row 1 was applied.
    let mut t1 = a.begin().await?;
    set(&mut t1, 2, 201).await?;
    set(&mut t1, 1, 101).await?;
    let tid1 = t1.tid();
    let mut t3 = c.begin().await?;
    set(&mut t3, 2, 22).await?;
    t3.commit().await?;
    let mut t2 = b.begin().await?;
    let r1 = t1.commit().await;
    assert!(is_serialization_failure(&r1), "{r1:?}");
    // The undo removed every version t1 applied before the abort was reported.
    for id in [1, 2] {
        let record = stored_row(&cluster.store, &t, &[int(id)])
            .await?
            .expect("row");
        assert!(
            record.versions().iter().all(|v| v.tid != tid1),
            "version of aborted tid {tid1} left in row {id}: {record:?}"
        );
    }
    assert_eq!(
        select_where(&mut t2, |_| true).await?,
        vec![(1, 10), (2, 22)]
    );
    t2.commit().await?;
    // Even once the snapshot base has passed the aborted tid (a leftover version would be
    // visible then: `v <= b`).
    let mut tx = wait_for(
        "a snapshot whose base passed the aborted tid",
        std::time::Duration::from_secs(10),
        || {
            let b = b.clone();
            async move {
                let tx = b.begin().await.ok()?;
                (tx.snapshot().base() >= tid1).then_some(tx)
            }
        },
    )
    .await?;
    assert_eq!(value(&mut tx, 1).await?, Some(10));
    tx.commit().await?;
    cluster.shutdown().await;
    Ok(())
}

/// G1b: a reader never sees an intermediate value; the store never even holds one (writes
/// stay local until commit, and only the last value per row is written).
async fn g1b_intermediate_reads_never_seen(buffer: BufferStrategy) -> anyhow::Result<()> {
    let (cluster, [a, b, _]) = setup(buffer).await?;
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    set(&mut t1, 1, 101).await?;
    assert_eq!(
        select_where(&mut t2, |_| true).await?,
        vec![(1, 10), (2, 20)]
    );
    set(&mut t1, 1, 11).await?;
    // The transaction reads its own latest write.
    assert_eq!(value(&mut t1, 1).await?, Some(11));
    let tid1 = t1.tid();
    t1.commit().await?;
    assert_eq!(
        select_where(&mut t2, |_| true).await?,
        vec![(1, 10), (2, 20)]
    );
    t2.commit().await?;
    let record = stored_row(&cluster.store, &test_table(), &[int(1)])
        .await?
        .expect("row");
    let mine: Vec<_> = record.versions().iter().filter(|v| v.tid == tid1).collect();
    assert_eq!(mine.len(), 1);
    let row = shmdb_processing_node::decode_row(mine[0].row.as_ref().expect("live version"))?;
    assert_eq!(row, vec![int(1), int(11)]);
    assert_eq!(committed(&b).await?, vec![(1, 11), (2, 20)]);
    cluster.shutdown().await;
    Ok(())
}

/// G1c: two transactions each write a row and read the other's: neither sees the other's
/// write (no circular information flow), and both commit (the writes are disjoint).
async fn g1c_circular_information_flow_prevented(buffer: BufferStrategy) -> anyhow::Result<()> {
    let (cluster, [a, b, c]) = setup(buffer).await?;
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    set(&mut t1, 1, 11).await?;
    set(&mut t2, 2, 22).await?;
    assert_eq!(value(&mut t1, 2).await?, Some(20));
    assert_eq!(value(&mut t2, 1).await?, Some(10));
    t1.commit().await?;
    // Still not after t1 committed: t2's snapshot predates it.
    assert_eq!(value(&mut t2, 1).await?, Some(10));
    t2.commit().await?;
    assert_eq!(committed(&c).await?, vec![(1, 11), (2, 22)]);
    cluster.shutdown().await;
    Ok(())
}

/// OTV: once a reader saw a committed transaction's writes, a concurrent writer of the same
/// rows cannot make them vanish: it fails at commit, and the reader keeps seeing the first.
async fn otv_observed_transaction_does_not_vanish(buffer: BufferStrategy) -> anyhow::Result<()> {
    let (cluster, [a, b, c]) = setup(buffer).await?;
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    set(&mut t1, 1, 11).await?;
    set(&mut t1, 2, 19).await?;
    set(&mut t2, 1, 12).await?;
    t1.commit().await?;
    let mut t3 = c.begin().await?;
    assert_eq!(value(&mut t3, 1).await?, Some(11));
    // t2's next write meets t1's committed version: a conflict at once.
    let w = set(&mut t2, 2, 18).await;
    conflict_at_write(buffer, w, t2).await;
    assert_eq!(value(&mut t3, 2).await?, Some(19));
    t3.commit().await?;
    // With both writes made before t1 commits, t2 fails at commit instead.
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    set(&mut t1, 1, 31).await?;
    set(&mut t1, 2, 39).await?;
    set(&mut t2, 1, 32).await?;
    set(&mut t2, 2, 38).await?;
    t1.commit().await?;
    let mut t3 = c.begin().await?;
    assert_eq!(value(&mut t3, 1).await?, Some(31));
    assert!(is_serialization_failure(&t2.commit().await));
    assert_eq!(value(&mut t3, 2).await?, Some(39));
    t3.commit().await?;
    assert_eq!(committed(&c).await?, vec![(1, 31), (2, 39)]);
    cluster.shutdown().await;
    Ok(())
}

/// PMP for read predicates: a predicate read (primary-key range scan, and index scan)
/// repeated after a concurrent insert that matches it commits does not see the new row.
async fn pmp_predicate_reads_ignore_concurrent_insert(
    buffer: BufferStrategy,
) -> anyhow::Result<()> {
    let (cluster, [a, b, c]) = setup(buffer).await?;
    let t = test_table();
    let mut t1 = a.begin().await?;
    assert_eq!(select_value(&mut t1, 30).await?, vec![]);
    assert_eq!(select_where(&mut t1, |v| v % 3 == 0).await?, vec![]);
    let mut t2 = b.begin().await?;
    t2.insert(&t, vec![int(3), int(30)]).await?;
    t2.commit().await?;
    assert_eq!(select_where(&mut t1, |v| v % 3 == 0).await?, vec![]);
    // The index now holds an entry for 30, whose row version t1 cannot see: skipped.
    assert_eq!(select_value(&mut t1, 30).await?, vec![]);
    t1.commit().await?;
    let mut t3 = c.begin().await?;
    assert_eq!(select_value(&mut t3, 30).await?, vec![(3, 30)]);
    t3.commit().await?;
    cluster.shutdown().await;
    Ok(())
}

/// PMP for write predicates: t1 adds 10 to every row; t2 deletes the rows with value 20
/// (as of its snapshot). t1 commits first; t2's delete of a row t1 rewrote fails at commit.
async fn pmp_write_predicate_second_writer_fails(buffer: BufferStrategy) -> anyhow::Result<()> {
    let (cluster, [a, b, c]) = setup(buffer).await?;
    let t = test_table();
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    for (id, v) in select_where(&mut t1, |_| true).await? {
        set(&mut t1, id, v + 10).await?;
    }
    let victims = select_value(&mut t2, 20).await?;
    assert_eq!(victims, vec![(2, 20)]);
    for (id, _) in victims {
        assert!(t2.delete(&t, &[int(id)]).await?);
    }
    t1.commit().await?;
    assert!(is_serialization_failure(&t2.commit().await));
    assert_eq!(committed(&c).await?, vec![(1, 20), (2, 30)]);
    cluster.shutdown().await;
    Ok(())
}

/// P4: two read-modify-writes of one row; the second to commit fails (at commit when it
/// read the row before the first committed, at its write when it read it after), so no
/// update is lost. Then many concurrent increments with retries add up exactly.
async fn p4_lost_update_prevented(buffer: BufferStrategy) -> anyhow::Result<()> {
    let (cluster, [a, b, c]) = setup(buffer).await?;
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    let v1 = value(&mut t1, 1).await?.expect("row");
    let v2 = value(&mut t2, 1).await?.expect("row");
    set(&mut t1, 1, v1 + 1).await?;
    set(&mut t2, 1, v2 + 1).await?;
    t1.commit().await?;
    assert!(is_serialization_failure(&t2.commit().await));
    assert_eq!(committed(&c).await?[0], (1, 11));

    // t2 reads only after t1 committed: its snapshot gives the old value, and the record
    // it fetched shows a newest version outside that snapshot, so the write fails at once.
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    let v1 = value(&mut t1, 1).await?.expect("row");
    set(&mut t1, 1, v1 + 1).await?;
    t1.commit().await?;
    let v2 = value(&mut t2, 1).await?.expect("row");
    assert_eq!(v2, 11, "t2 reads its snapshot");
    let w = set(&mut t2, 1, v2 + 1).await;
    conflict_at_write(buffer, w, t2).await;
    assert_eq!(committed(&c).await?[0], (1, 12));

    // Concurrent increments from three engines, retried on conflict.
    const PER_TASK: i64 = 15;
    let mut tasks = Vec::new();
    for engine in [a.clone(), b.clone(), c.clone()] {
        for _ in 0..2 {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                let mut conflicts = 0u64;
                for _ in 0..PER_TASK {
                    loop {
                        let mut tx = engine.begin().await?;
                        let result = async {
                            let v = value(&mut tx, 2).await?.expect("row");
                            set(&mut tx, 2, v + 1).await?;
                            anyhow::Ok(())
                        }
                        .await;
                        let result = match result {
                            Ok(()) => tx.commit().await.map_err(anyhow::Error::from),
                            Err(e) => {
                                let _ = tx.rollback().await;
                                Err(e)
                            }
                        };
                        match result {
                            Ok(()) => break,
                            Err(e)
                                if matches!(
                                    e.downcast_ref::<TxnError>(),
                                    Some(TxnError::SerializationFailure)
                                ) =>
                            {
                                conflicts += 1
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                anyhow::Ok(conflicts)
            }));
        }
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await??;
    }
    assert_eq!(
        committed(&c).await?[1],
        (2, 20 + 6 * PER_TASK),
        "after {conflicts} conflicts"
    );
    cluster.shutdown().await;
    Ok(())
}

/// G-single (read skew): t1 reads row 1, t2 moves value between rows 1 and 2 and commits,
/// t1 reads row 2 and sees the old value — its reads stay one consistent snapshot. The
/// predicate form reads through the index; the write-predicate form makes t1's delete of a
/// row t2 changed fail at once.
async fn g_single_read_skew_prevented(buffer: BufferStrategy) -> anyhow::Result<()> {
    let (cluster, [a, b, c]) = setup(buffer).await?;
    let t = test_table();
    // Item form.
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    assert_eq!(value(&mut t1, 1).await?, Some(10));
    assert_eq!(value(&mut t2, 1).await?, Some(10));
    assert_eq!(value(&mut t2, 2).await?, Some(20));
    set(&mut t2, 1, 12).await?;
    set(&mut t2, 2, 18).await?;
    t2.commit().await?;
    assert_eq!(value(&mut t1, 2).await?, Some(20));
    let sum: i64 = select_where(&mut t1, |_| true)
        .await?
        .iter()
        .map(|r| r.1)
        .sum();
    assert_eq!(sum, 30);
    t1.commit().await?;

    // Predicate form: t1 reads value % 5 = 0, t2 changes 12 -> 10 (a row t1 would now
    // match) and commits; t1's second predicate read still sees its snapshot.
    let mut t1 = a.begin().await?;
    assert_eq!(select_where(&mut t1, |v| v % 5 == 0).await?, vec![]);
    let mut t2 = b.begin().await?;
    set(&mut t2, 1, 10).await?;
    t2.commit().await?;
    assert_eq!(select_value(&mut t1, 10).await?, vec![]);
    assert_eq!(
        select_where(&mut t1, |v| v % 3 == 0).await?,
        vec![(1, 12), (2, 18)]
    );
    t1.commit().await?;

    // Write-predicate form: t1 deletes the rows with value 18 as of its snapshot, after t2
    // changed that row: the newest version is not in t1's snapshot, so the delete fails.
    let mut t1 = a.begin().await?;
    assert_eq!(value(&mut t1, 1).await?, Some(10));
    let mut t2 = b.begin().await?;
    set(&mut t2, 1, 12).await?;
    set(&mut t2, 2, 16).await?;
    t2.commit().await?;
    let victims = select_value(&mut t1, 18).await?;
    assert_eq!(victims, vec![(2, 18)]);
    let d = t1.delete(&t, &[int(2)]).await;
    conflict_at_write(buffer, d, t1).await;
    assert_eq!(committed(&c).await?, vec![(1, 12), (2, 16)]);
    cluster.shutdown().await;
    Ok(())
}

/// G2-item (write skew) is ALLOWED under snapshot isolation: two transactions read both
/// rows, each updates a different one based on what it read, and both commit — the
/// invariant "value(1) + value(2) >= 30" each checked holds no longer. With locking reads
/// (SELECT … FOR UPDATE) the same schedule is prevented.
async fn g2_item_write_skew_allowed_unless_locked(buffer: BufferStrategy) -> anyhow::Result<()> {
    let (cluster, [a, b, c]) = setup(buffer).await?;
    let t = test_table();
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    let s1 = value(&mut t1, 1).await?.unwrap_or(0) + value(&mut t1, 2).await?.unwrap_or(0);
    let s2 = value(&mut t2, 1).await?.unwrap_or(0) + value(&mut t2, 2).await?.unwrap_or(0);
    assert!(
        s1 - 10 >= 20 && s2 - 10 >= 20,
        "each sees room for its own withdrawal"
    );
    set(&mut t1, 1, 0).await?;
    set(&mut t2, 2, 10).await?;
    t1.commit().await?;
    t2.commit().await?;
    let rows = committed(&c).await?;
    assert_eq!(rows, vec![(1, 0), (2, 10)]);
    assert!(
        rows.iter().map(|r| r.1).sum::<i64>() < 20,
        "write skew happened, as SI allows"
    );

    // The same schedule with FOR UPDATE reads: the locks make the second commit conflict.
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    for tx in [&mut t1, &mut t2] {
        tx.get_for_update(&t, &[int(1)]).await?;
        tx.get_for_update(&t, &[int(2)]).await?;
    }
    set(&mut t1, 1, 5).await?;
    set(&mut t2, 2, 5).await?;
    t1.commit().await?;
    assert!(is_serialization_failure(&t2.commit().await));
    assert_eq!(committed(&c).await?, vec![(1, 5), (2, 10)]);
    cluster.shutdown().await;
    Ok(())
}

/// G2 (anti-dependency cycles over predicates) is ALLOWED under snapshot isolation: two
/// transactions both find no row with value % 3 = 0 (by scan and through the index), each
/// inserts one, and both commit — no serial order explains both empty reads.
async fn g2_predicate_write_skew_allowed(buffer: BufferStrategy) -> anyhow::Result<()> {
    let (cluster, [a, b, c]) = setup(buffer).await?;
    let t = test_table();
    let mut t1 = a.begin().await?;
    let mut t2 = b.begin().await?;
    assert_eq!(select_where(&mut t1, |v| v % 3 == 0).await?, vec![]);
    assert_eq!(select_where(&mut t2, |v| v % 3 == 0).await?, vec![]);
    assert_eq!(select_value(&mut t1, 30).await?, vec![]);
    assert_eq!(select_value(&mut t2, 42).await?, vec![]);
    t1.insert(&t, vec![int(3), int(30)]).await?;
    t2.insert(&t, vec![int(4), int(42)]).await?;
    t1.commit().await?;
    t2.commit().await?;
    let mut t3 = c.begin().await?;
    assert_eq!(
        select_where(&mut t3, |v| v % 3 == 0).await?,
        vec![(3, 30), (4, 42)]
    );
    assert_eq!(select_value(&mut t3, 42).await?, vec![(4, 42)]);
    t3.commit().await?;
    cluster.shutdown().await;
    Ok(())
}
