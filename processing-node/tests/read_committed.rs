//! READ COMMITTED, PostgreSQL's default and ours: each statement reads a newer snapshot than
//! the transaction's first one; an UPDATE, DELETE or SELECT … FOR UPDATE that finds a row
//! changed by a transaction committed since its snapshot works on the row's newest committed
//! form if it still qualifies (and skips it if not); a row whose newest version is not
//! committed yet is waited for. REPEATABLE READ keeps one snapshot and fails such writes
//! with 40001. A write over a change the statement never saw still fails (no lost update).

mod common;
mod sql;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::Cluster;
use shmdb_commit_manager::{CommitClient, CommitClientConfig};
use shmdb_processing_node::Datum;
use shmdb_processing_node::txn::engine::Begun;
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

/// Two writers of one row that both saw the same version: the second to commit fails, as
/// PostgreSQL's second writer would have waited and then worked on the first one's row —
/// here its change was computed before the first committed, so it cannot be kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_on_an_unseen_version_is_not_lost() -> anyhow::Result<()> {
    let (_cluster, engines) = start(2).await?;
    let (mut a, mut b) = (engines[0].session(), engines[1].session());
    kv_table(&mut a).await?;

    exec(&mut a, "BEGIN").await?;
    exec(&mut b, "BEGIN").await?;
    exec(&mut a, "UPDATE kv SET v = v + 1 WHERE k = 1").await?;
    exec(&mut b, "UPDATE kv SET v = v + 10 WHERE k = 1").await?;
    exec(&mut a, "COMMIT").await?;
    assert_eq!(err(&mut b, "COMMIT").await?, "40001");
    assert_eq!(rows(&mut b, "SELECT v FROM kv WHERE k = 1").await?, ["11"]);
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
