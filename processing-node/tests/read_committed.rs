//! READ COMMITTED, PostgreSQL's default and ours: each statement reads a newer snapshot than
//! the transaction's first one; an UPDATE, DELETE or SELECT … FOR UPDATE that finds a row
//! changed by a transaction committed since its snapshot works on the row's newest committed
//! form if it still qualifies (and skips it if not); a row whose newest version is not
//! committed yet is waited for. REPEATABLE READ keeps one snapshot and fails such writes
//! with 40001. A write over a change the statement never saw still fails (no lost update).

mod common;
mod sql;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::Cluster;
use shmdb_commit_manager::{CommitClient, CommitClientConfig};
use shmdb_processing_node::Datum;
use shmdb_processing_node::txn::engine::{Begun, ReapplyStats};
use shmdb_processing_node::txn::{
    Engine, EngineConfig, Newest, TableDef, Transaction, TxnError, TxnManager,
};
use sql::*;
use tokio::sync::Semaphore;

async fn kv_table(s: &mut shmdb_processing_node::sql::Session) -> anyhow::Result<()> {
    exec(s, "CREATE TABLE kv (k int PRIMARY KEY, v int)").await?;
    exec(s, "INSERT INTO kv VALUES (1, 10), (2, 20)").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_statement_sees_what_committed_before_it() -> anyhow::Result<()> {
    let (_cluster, engines) = start(1).await?;
    let (mut a, mut b) = (engines[0].session(), engines[0].session());
    kv_table(&mut a).await?;
    assert_eq!(
        rows(&mut a, "SHOW transaction_isolation").await?,
        ["read committed"]
    );

    exec(&mut a, "BEGIN").await?;
    assert_eq!(rows(&mut a, "SELECT v FROM kv WHERE k = 1").await?, ["10"]);
    exec(&mut b, "UPDATE kv SET v = 11 WHERE k = 1").await?;
    exec(&mut b, "INSERT INTO kv VALUES (3, 30)").await?;
    assert_eq!(rows(&mut a, "SELECT v FROM kv WHERE k = 1").await?, ["11"]);
    assert_eq!(rows(&mut a, "SELECT count(*) FROM kv").await?, ["3"]);
    exec(&mut a, "COMMIT").await?;

    // REPEATABLE READ: one snapshot for the whole block.
    exec(&mut a, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    assert_eq!(rows(&mut a, "SELECT v FROM kv WHERE k = 1").await?, ["11"]);
    exec(&mut b, "UPDATE kv SET v = 12 WHERE k = 1").await?;
    assert_eq!(rows(&mut a, "SELECT v FROM kv WHERE k = 1").await?, ["11"]);
    exec(&mut a, "COMMIT").await?;
    Ok(())
}

/// A statement sees what another processing node committed before it began, although
/// nothing began on this node in between (this node learns of other nodes' commits only
/// from a commit manager, so each statement after the first makes sure one was asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_sees_commits_made_through_another_node() -> anyhow::Result<()> {
    let (_cluster, engines) = start(2).await?;
    let (mut a, mut b) = (engines[0].session(), engines[1].session());
    kv_table(&mut a).await?;

    exec(&mut a, "BEGIN").await?;
    assert_eq!(rows(&mut a, "SELECT v FROM kv WHERE k = 1").await?, ["10"]);
    for (round, v) in [(1, 11), (2, 12), (3, 13)] {
        exec(&mut b, &format!("UPDATE kv SET v = {v} WHERE k = 1")).await?;
        exec(
            &mut b,
            &format!("INSERT INTO kv VALUES ({}, 0)", 100 + round),
        )
        .await?;
        assert_eq!(
            rows(&mut a, "SELECT v FROM kv WHERE k = 1").await?,
            [v.to_string()],
            "round {round}"
        );
        assert_eq!(
            rows(&mut a, "SELECT count(*) FROM kv").await?,
            [(2 + round).to_string()],
            "round {round}"
        );
    }
    exec(&mut a, "COMMIT").await?;
    Ok(())
}

/// The pgbench shape: a transaction updates a row another processing node changed and
/// committed after the transaction began, and before the statement ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_builds_on_the_newest_committed_row() -> anyhow::Result<()> {
    let (_cluster, engines) = start(2).await?;
    let (mut a, mut b) = (engines[0].session(), engines[1].session());
    kv_table(&mut a).await?;

    exec(&mut a, "BEGIN").await?;
    assert_eq!(rows(&mut a, "SELECT v FROM kv WHERE k = 2").await?, ["20"]);
    exec(&mut b, "UPDATE kv SET v = v + 10 WHERE k = 1").await?;
    assert_eq!(
        tag(&mut a, "UPDATE kv SET v = v + 1 WHERE k = 1").await?,
        "UPDATE 1"
    );
    assert_eq!(rows(&mut a, "SELECT v FROM kv WHERE k = 1").await?, ["21"]);
    exec(&mut a, "COMMIT").await?;
    assert_eq!(rows(&mut b, "SELECT v FROM kv WHERE k = 1").await?, ["21"]);

    // The same under REPEATABLE READ is a write-write conflict.
    exec(&mut a, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    assert_eq!(rows(&mut a, "SELECT v FROM kv WHERE k = 2").await?, ["20"]);
    exec(&mut b, "UPDATE kv SET v = v + 10 WHERE k = 1").await?;
    assert_eq!(
        err(&mut a, "UPDATE kv SET v = v + 1 WHERE k = 1").await?,
        "40001"
    );
    exec(&mut a, "ROLLBACK").await?;
    assert_eq!(rows(&mut b, "SELECT v FROM kv WHERE k = 1").await?, ["31"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_no_longer_qualify_are_skipped() -> anyhow::Result<()> {
    let (_cluster, engines) = start(2).await?;
    let (mut a, mut b) = (engines[0].session(), engines[1].session());
    kv_table(&mut a).await?;

    exec(&mut a, "BEGIN").await?;
    assert_eq!(rows(&mut a, "SELECT count(*) FROM kv").await?, ["2"]);
    exec(&mut b, "UPDATE kv SET v = 100 WHERE k = 1").await?;
    exec(&mut b, "DELETE FROM kv WHERE k = 2").await?;
    // Row 1 changed and no longer has v = 10; row 2 is gone.
    assert_eq!(
        tag(&mut a, "UPDATE kv SET v = v + 1 WHERE k = 1 AND v = 10").await?,
        "UPDATE 0"
    );
    assert_eq!(tag(&mut a, "DELETE FROM kv WHERE k = 2").await?, "DELETE 0");
    // A locking read takes the newest row and re-checks its predicate.
    assert_eq!(
        rows(&mut a, "SELECT v FROM kv WHERE k = 1 FOR UPDATE").await?,
        ["100"]
    );
    exec(&mut a, "COMMIT").await?;
    assert_eq!(
        rows(&mut b, "SELECT k, v FROM kv ORDER BY k").await?,
        ["1|100"]
    );
    Ok(())
}

/// Two writers of one row that both saw the same version, each with an UPDATE whose
/// outcome depends only on that row: PostgreSQL's second writer waits for the first and
/// applies its change to the first one's row, and so does ours — at commit, where it finds
/// the newer version. Both orders: the writer with the larger tid commits second (its
/// version goes on top of the other's) or first (the other moves to a fresh tid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_reapplied_onto_a_version_committed_since() -> anyhow::Result<()> {
    let (_cluster, engines) = start(2).await?;
    let (mut a, mut b) = (engines[0].session(), engines[1].session());
    kv_table(&mut a).await?;
    exec(&mut a, "CREATE TABLE notes (round int PRIMARY KEY)").await?;

    for (round, older_commits_first) in [(1, true), (2, false)] {
        exec(&mut a, "BEGIN").await?;
        exec(&mut b, "BEGIN").await?;
        exec(&mut a, "UPDATE kv SET v = v + 1 WHERE k = 1").await?;
        exec(&mut b, "UPDATE kv SET v = v + 10 WHERE k = 1").await?;
        // Statements on other tables do not stop the re-apply.
        exec(&mut b, &format!("INSERT INTO notes VALUES ({round})")).await?;
        let (first, second) = if older_commits_first {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        exec(first, "COMMIT").await?;
        exec(second, "COMMIT").await?;
        let want = 10 + 11 * round;
        assert_eq!(
            rows(&mut a, "SELECT v FROM kv WHERE k = 1").await?,
            [want.to_string()],
            "round {round}"
        );
    }
    assert_eq!(rows(&mut a, "SELECT count(*) FROM notes").await?, ["2"]);
    // One round built on top in place, the other moved to a fresh tid.
    let stats: Vec<_> = engines.iter().map(|e| e.engine.reapply_stats()).collect();
    let count = |f: &dyn Fn(&ReapplyStats) -> &AtomicU64| {
        stats
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    assert_eq!(count(&|s| &s.reapplied), 2);
    assert_eq!(count(&|s| &s.restarts), 1);
    Ok(())
}

/// Where the re-apply could be told apart from the update as first computed, or would
/// break what a statement promised, the second committer still fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_that_cannot_be_reapplied_still_conflict() -> anyhow::Result<()> {
    let (_cluster, engines) = start(2).await?;
    let (mut a, mut b) = (engines[0].session(), engines[1].session());
    kv_table(&mut a).await?;
    exec(&mut a, "CREATE TABLE other (k int PRIMARY KEY, v int)").await?;
    exec(&mut a, "INSERT INTO other VALUES (1, 5)").await?;
    exec(&mut a, "CREATE TABLE indexed (k int PRIMARY KEY, v int)").await?;
    exec(&mut a, "CREATE INDEX indexed_v ON indexed (v)").await?;
    exec(&mut a, "INSERT INTO indexed VALUES (1, 1)").await?;

    // (name, statements of the second committer, statement of the first, value after)
    let cases: [(&str, &[&str], &str, &str, &str); 7] = [
        (
            "RETURNING showed the value",
            &["UPDATE kv SET v = v + 1 WHERE k = 1 RETURNING v"],
            "UPDATE kv SET v = v + 10 WHERE k = 1",
            "SELECT v FROM kv WHERE k = 1",
            "20",
        ),
        (
            "a later statement read the table",
            &[
                "UPDATE kv SET v = v + 1 WHERE k = 1",
                "SELECT v FROM kv WHERE k = 2",
            ],
            "UPDATE kv SET v = v + 10 WHERE k = 1",
            "SELECT v FROM kv WHERE k = 1",
            "30",
        ),
        (
            "the row was locked first",
            &[
                "SELECT v FROM kv WHERE k = 1 FOR UPDATE",
                "UPDATE kv SET v = v + 1 WHERE k = 1",
            ],
            "UPDATE kv SET v = v + 10 WHERE k = 1",
            "SELECT v FROM kv WHERE k = 1",
            "40",
        ),
        (
            "the row no longer qualifies",
            &["UPDATE kv SET v = v + 1 WHERE k = 1 AND v < 1000"],
            "UPDATE kv SET v = 5000 WHERE k = 1",
            "SELECT v FROM kv WHERE k = 1",
            "5000",
        ),
        (
            "the row was deleted",
            &["UPDATE kv SET v = v + 1 WHERE k = 2"],
            "DELETE FROM kv WHERE k = 2",
            "SELECT count(*) FROM kv WHERE k = 2",
            "0",
        ),
        (
            "a subquery read another table",
            &["UPDATE kv SET v = (SELECT v FROM other WHERE k = 1) WHERE k = 1"],
            "UPDATE kv SET v = v + 1 WHERE k = 1",
            "SELECT v FROM kv WHERE k = 1",
            "5001",
        ),
        (
            "an indexed column changed",
            &["UPDATE indexed SET v = v + 1 WHERE k = 1"],
            "UPDATE indexed SET v = v + 10 WHERE k = 1",
            "SELECT v FROM indexed WHERE k = 1",
            "11",
        ),
    ];
    for (name, second, first, check, after) in cases {
        exec(&mut b, "BEGIN").await?;
        for sql in second {
            exec(&mut b, sql).await?;
        }
        exec(&mut a, first).await?;
        assert_eq!(err(&mut b, "COMMIT").await?, "40001", "{name}");
        assert_eq!(rows(&mut a, check).await?, [after], "{name}");
    }

    // REPEATABLE READ never re-applies: the first writer's change was not in its snapshot.
    exec(&mut b, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    exec(&mut b, "UPDATE kv SET v = v + 1 WHERE k = 1").await?;
    exec(&mut a, "UPDATE kv SET v = v + 1 WHERE k = 1").await?;
    assert_eq!(err(&mut b, "COMMIT").await?, "40001");
    assert_eq!(
        rows(&mut a, "SELECT v FROM kv WHERE k = 1").await?,
        ["5002"]
    );
    Ok(())
}

/// Many READ COMMITTED transactions through two processing nodes, each adding to its own
/// row, to one of three warm rows and to one hot row (pgbench's account, teller and branch):
/// every committed transaction's increment is in the
/// counter exactly once (none lost, none applied twice by a re-apply or a restart), and
/// the re-apply lets nearly all of them commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_of_a_hot_row_are_neither_lost_nor_doubled() -> anyhow::Result<()> {
    let (_cluster, engines) = start(2).await?;
    let mut setup = engines[0].session();
    exec(&mut setup, "CREATE TABLE hot (k int PRIMARY KEY, v bigint)").await?;
    exec(&mut setup, "INSERT INTO hot VALUES (0, 0)").await?;
    exec(
        &mut setup,
        "CREATE TABLE warm (k int PRIMARY KEY, v bigint)",
    )
    .await?;
    exec(&mut setup, "INSERT INTO warm VALUES (0, 0), (1, 0), (2, 0)").await?;
    const WORKERS: i64 = 8;
    const ROUNDS: i64 = 25;
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let engine = engines[(w % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            let mut s = engine.session();
            exec(&mut s, &format!("INSERT INTO hot VALUES ({}, 0)", w + 1)).await?;
            let (mut committed, mut failed) = (0i64, 0i64);
            for round in 0..ROUNDS {
                let own = format!("UPDATE hot SET v = v + {} WHERE k = {}", w + 1, w + 1);
                let warm = format!(
                    "UPDATE warm SET v = v + {} WHERE k = {}",
                    w + 1,
                    (round + w) % 3
                );
                let hot = format!("UPDATE hot SET v = v + {} WHERE k = 0", w + 1);
                let mut error = None;
                for sql in ["BEGIN", &own, &warm, &hot, "COMMIT"] {
                    if let Some(Err(e)) = s.simple_query(sql).await.pop() {
                        error = Some(e);
                        break;
                    }
                }
                match error {
                    None => committed += 1,
                    Some(e) if e.code == "40001" => {
                        failed += 1;
                        exec(&mut s, "ROLLBACK").await?;
                    }
                    Some(e) => anyhow::bail!("worker {w}: {} {}", e.code, e.message),
                }
            }
            anyhow::Ok((w + 1, committed, failed))
        }));
    }
    let (mut expected, mut failures) = (0i64, 0i64);
    for task in tasks {
        let (weight, committed, failed) = task.await??;
        assert_eq!(
            rows(&mut setup, &format!("SELECT v FROM hot WHERE k = {weight}")).await?,
            [(weight * committed).to_string()],
            "worker {weight}'s own row"
        );
        expected += weight * committed;
        failures += failed;
    }
    assert_eq!(
        rows(&mut setup, "SELECT v FROM hot WHERE k = 0").await?,
        [expected.to_string()]
    );
    assert_eq!(
        rows(&mut setup, "SELECT sum(v) FROM warm").await?,
        [expected.to_string()]
    );
    // Without the re-apply about half of these commits fail; with it only those whose
    // conflicting writer was still mid-commit past the wait, or that ran out of restarts.
    let total = WORKERS * ROUNDS;
    assert!(
        failures * 10 < total,
        "{failures} of {total} commits failed with 40001"
    );
    Ok(())
}

/// A commit manager whose commits wait for a permit: a transaction held between writing
/// its versions and committing, as a row lock holder is.
struct HeldCommits {
    inner: Arc<dyn TxnManager>,
    permits: Arc<Semaphore>,
}

#[async_trait]
impl TxnManager for HeldCommits {
    async fn start(&self) -> Result<Begun, TxnError> {
        self.inner.start().await
    }
    async fn commit(&self, tid: u64) -> Result<(), TxnError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| TxnError::Commit("gate closed".into()))?;
        permit.forget();
        self.inner.commit(tid).await
    }
    async fn abort(&self, tid: u64) -> Result<(), TxnError> {
        self.inner.abort(tid).await
    }
}

fn table() -> TableDef {
    TableDef {
        id: 40,
        columns: 2,
        primary_key: vec![0],
        indexes: Vec::new(),
    }
}

/// Node 2's transaction writes row 1 and is held before its commit; node 1's writer
/// started with an older snapshot.
async fn writer_held_mid_commit(
    cluster: &Cluster,
) -> anyhow::Result<(
    Arc<Engine>,
    Transaction,
    Arc<Semaphore>,
    tokio::task::JoinHandle<Result<(), TxnError>>,
)> {
    let a = cluster.engine(1)?;
    let permits = Arc::new(Semaphore::new(0));
    let mut cfg = CommitClientConfig::new([cluster.manager.addr.to_string()], 2);
    cfg.heartbeat_interval = Some(Duration::from_millis(200));
    let held = Arc::new(HeldCommits {
        inner: Arc::new(CommitClient::new(cfg)?),
        permits: permits.clone(),
    });
    let b = Engine::new(EngineConfig::new(2), cluster.store.clone(), held);
    let t = table();
    let mut setup = a.begin().await?;
    setup
        .insert(&t, vec![Datum::Int(1), Datum::Int(10)])
        .await?;
    setup.commit().await?;

    let mut waiter = a.begin().await?;
    waiter.begin_statement().await?;
    let mut writer = b.begin().await?;
    writer
        .update(&t, &[Datum::Int(1)], vec![Datum::Int(1), Datum::Int(11)])
        .await?;
    let tid = writer.tid();
    let commit = tokio::spawn(async move { writer.commit().await });
    // Wait (bounded) until the held writer's version is in the store.
    let key = (
        shmdb_placement::tables::ROWS,
        bytes::Bytes::from(shmdb_processing_node::keys::row_key(40, &[Datum::Int(1)])),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let record = cluster.store.get(key.0, key.1.clone()).await?;
        let newest = record
            .map(|v| shmdb_processing_node::record::Record::decode(&v.value))
            .transpose()?
            .and_then(|r| r.newest_tid());
        if newest == Some(tid) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the held writer's version never reached the store"
        );
        tokio::task::yield_now().await;
    }
    Ok((a, waiter, permits, commit))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_waits_for_the_holder_of_the_newest_version() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let (_a, mut waiter, permits, commit) = writer_held_mid_commit(&cluster).await?;
    let t = table();
    let newest = {
        let wait = waiter.newest_for_write(&t, &[Datum::Int(1)]);
        tokio::pin!(wait);
        // Still waiting while the holder has not committed.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut wait)
                .await
                .is_err(),
            "the writer did not wait for the uncommitted version"
        );
        permits.add_permits(1);
        wait.await?
    };
    assert_eq!(
        newest,
        Newest::Changed(Some(vec![Datum::Int(1), Datum::Int(11)]))
    );
    commit.await??;
    waiter
        .update(&t, &[Datum::Int(1)], vec![Datum::Int(1), Datum::Int(12)])
        .await?;
    waiter.commit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_never_commits_ends_the_wait_with_a_serialization_failure()
-> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let (_a, mut waiter, permits, _commit) = writer_held_mid_commit(&cluster).await?;
    let t = table();
    let outcome = waiter.newest_for_write(&t, &[Datum::Int(1)]).await;
    assert!(
        matches!(outcome, Err(TxnError::SerializationFailure)),
        "{outcome:?}"
    );
    drop(permits);
    Ok(())
}
