//! Many clients start, commit and abort at random against one manager; every snapshot is
//! checked against an oracle of what had happened when the start was requested.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shmdb_commit_manager::{CommitClient, NoWritesRecovery, Started};

/// What the clients know, ordered by one logical clock.
#[derive(Default)]
struct Oracle {
    clock: AtomicU64,
    /// Committed tid → clock value taken after its commit was acknowledged.
    committed: Mutex<BTreeMap<u64, u64>>,
    /// Aborted tid → clock value taken after its abort was acknowledged.
    aborted: Mutex<BTreeMap<u64, u64>>,
    /// Started (acknowledged) and not yet asked to finish: tid → base of its snapshot.
    running: Mutex<BTreeMap<u64, u64>>,
    /// Every tid ever handed out.
    issued: Mutex<HashSet<u64>>,
    checks: AtomicU64,
}

impl Oracle {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Checks one start whose request was sent at clock `requested`.
    fn check_start(&self, requested: u64, started: &Started) {
        let snap = &started.snapshot;
        let base = snap.base();
        assert!(
            self.issued.lock().insert(started.tid),
            "tid {} handed out twice",
            started.tid
        );
        assert!(
            started.tid > base,
            "own tid {} at or below base {base}",
            started.tid
        );
        assert!(!snap.is_visible(started.tid), "own tid visible");
        assert!(
            started.lav <= base,
            "lav {} above own base {base}",
            started.lav
        );
        // Every transaction committed before the start was requested is visible.
        for (&tid, &acked) in self.committed.lock().range(base + 1..) {
            if acked < requested {
                assert!(
                    snap.is_visible(tid),
                    "tid {tid} committed (clock {acked}) before start {} was requested (clock {requested}) but is not in its snapshot {snap:?}",
                    started.tid
                );
            }
        }
        // Every transaction still running is invisible, and lav is at most its base.
        for (&tid, &their_base) in self.running.lock().iter() {
            assert!(
                !snap.is_visible(tid),
                "running tid {tid} visible in the snapshot of {}",
                started.tid
            );
            assert!(
                started.lav <= their_base,
                "lav {} exceeds the base {their_base} of running tid {tid}",
                started.lav
            );
        }
        // An aborted transaction is never in the committed set above the base.
        for (&tid, &acked) in self.aborted.lock().range(base + 1..) {
            if acked < requested {
                assert!(!snap.is_visible(tid), "aborted tid {tid} visible");
            }
        }
        self.checks.fetch_add(1, Ordering::Relaxed);
    }
}

async fn worker(
    client: CommitClient,
    oracle: Arc<Oracle>,
    seed: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Transactions this worker keeps open for a while, so bases lag and bitsets fill.
    let mut held: Vec<u64> = Vec::new();
    for _ in 0..rounds {
        let requested = oracle.tick();
        let started = client.start().await?;
        oracle.check_start(requested, &started);
        oracle
            .running
            .lock()
            .insert(started.tid, started.snapshot.base());
        let mut to_finish = vec![started.tid];
        if rng.random_range(0..10) < 2 {
            held.push(started.tid);
            to_finish.clear();
        }
        if held.len() > 3 || (!held.is_empty() && rng.random_range(0..10) < 3) {
            let i = rng.random_range(0..held.len());
            to_finish.push(held.swap_remove(i));
        }
        for tid in to_finish {
            oracle.running.lock().remove(&tid);
            if rng.random_range(0..10) < 7 {
                client.commit(tid).await?;
                let acked = oracle.tick();
                oracle.committed.lock().insert(tid, acked);
            } else {
                client.abort(tid).await?;
                let acked = oracle.tick();
                oracle.aborted.lock().insert(tid, acked);
            }
        }
    }
    for tid in held {
        oracle.running.lock().remove(&tid);
        client.commit(tid).await?;
        let acked = oracle.tick();
        oracle.committed.lock().insert(tid, acked);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_show_every_earlier_commit_and_no_running_transaction() -> anyhow::Result<()> {
    run_against_oracle(true, Duration::ZERO, 1).await
}

/// The same with up to four publishes in flight (four record slots), which may become
/// durable out of order: a commit is still acknowledged only once visible to every later
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_publishes_keep_the_same_snapshot_rules() -> anyhow::Result<()> {
    run_against_oracle(true, Duration::ZERO, 4).await
}

/// The same over unary `StartBatch` / `FinishBatch` calls instead of sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_batches_keep_the_same_snapshot_rules() -> anyhow::Result<()> {
    run_against_oracle(false, Duration::ZERO, 1).await
}

/// The same with the publisher waiting for groups of short transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_waits_keep_the_same_snapshot_rules() -> anyhow::Result<()> {
    run_against_oracle(true, Duration::from_millis(1), 1).await
}

async fn run_against_oracle(
    sessions: bool,
    group_wait: Duration,
    publish_slots: usize,
) -> anyhow::Result<()> {
    let store = common::store().await?;
    let mut cfg = common::manager_config(1, &store);
    cfg.group_wait = group_wait;
    cfg.publish_slots = publish_slots;
    let manager = common::start_manager(cfg, &store, Arc::new(NoWritesRecovery)).await?;
    let addrs = vec![manager.addr.to_string()];
    let oracle = Arc::new(Oracle::default());
    let mut tasks = Vec::new();
    for node in 1..=4u64 {
        let client = common::client_with(&addrs, node, 0, sessions)?;
        for w in 0..8u64 {
            tasks.push(tokio::spawn(worker(
                client.clone(),
                oracle.clone(),
                node * 100 + w,
                150,
            )));
        }
    }
    for task in tasks {
        task.await??;
    }
    let committed = oracle.committed.lock().len();
    let aborted = oracle.aborted.lock().len();
    assert_eq!(committed + aborted, 4 * 8 * 150);
    assert!(
        committed > 1000 && aborted > 500,
        "{committed} committed, {aborted} aborted"
    );

    // Everything finished: the manager has nothing running, and a last snapshot sees every
    // commit.
    let status = manager.manager.status();
    assert_eq!(status.running, 0);
    assert_eq!(status.stats.commits, committed as u64);
    assert_eq!(status.stats.aborts, aborted as u64);
    let client = common::client_with(&addrs, 9, 0, sessions)?;
    let requested = oracle.tick();
    let last = client.start().await?;
    oracle.check_start(requested, &last);
    for &tid in oracle.committed.lock().keys() {
        assert!(last.snapshot.is_visible(tid));
    }
    println!(
        "{} starts checked, {committed} commits, {aborted} aborts, last snapshot {} bytes",
        oracle.checks.load(Ordering::Relaxed),
        last.snapshot.encoded_len()
    );
    client.abort(last.tid).await?;
    manager.shutdown().await;
    store.cluster.shutdown().await;
    Ok(())
}
