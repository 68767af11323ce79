//! SIGKILL of a commit manager process under load, then a restart under the same id: no tid
//! is handed out twice, no acknowledged commit is forgotten, and clients fail over to the
//! other manager while it is down.
//!
//! The killed manager writes two record slots (`--publish-slots 2`) and is killed while its
//! metrics show two publishes in flight: whichever of them landed, the restart (with one
//! slot, so the number of slots may change across a restart) finds every acknowledged
//! commit in the newest record.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use shmdb_commit_manager::{CommitClient, CommitError};

/// Everything the load saw.
#[derive(Default)]
struct Record {
    /// Every tid handed out, with the manager that issued it and the phase it was issued in.
    starts: Mutex<Vec<(u64, u64, u64)>>,
    /// Acknowledged commits.
    committed: Mutex<Vec<u64>>,
    /// Commits whose outcome stayed unknown.
    ambiguous: Mutex<Vec<u64>>,
    /// Other failures (should stay empty).
    errors: Mutex<Vec<String>>,
    /// Starts by clients that prefer manager 1, served by manager 2 (failovers).
    failovers: AtomicU64,
    /// Commits acknowledged per phase.
    commits_in_phase: [AtomicU64; 3],
    phase: AtomicU64,
}

async fn load(
    client: CommitClient,
    prefers_a: bool,
    record: Arc<Record>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut n = seed;
    while !stop.load(Ordering::Relaxed) {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let phase = record.phase.load(Ordering::SeqCst);
        let started = match client.start().await {
            Ok(s) => s,
            Err(e) => {
                record.errors.lock().push(format!("start: {e}"));
                continue;
            }
        };
        record
            .starts
            .lock()
            .push((started.tid, started.manager_id, phase));
        if prefers_a && started.manager_id == 2 && phase == 1 {
            record.failovers.fetch_add(1, Ordering::Relaxed);
        }
        if (n >> 33) % 10 < 7 {
            match client.commit(started.tid).await {
                Ok(()) => {
                    record.committed.lock().push(started.tid);
                    let phase = record.phase.load(Ordering::SeqCst) as usize;
                    record.commits_in_phase[phase.min(2)].fetch_add(1, Ordering::Relaxed);
                }
                Err(CommitError::Ambiguous { tid, .. }) => record.ambiguous.lock().push(tid),
                Err(e) => record
                    .errors
                    .lock()
                    .push(format!("commit {}: {e}", started.tid)),
            }
        } else if let Err(e) = client.abort(started.tid).await {
            record
                .errors
                .lock()
                .push(format!("abort {}: {e}", started.tid));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_manager_restarts_without_reusing_tids_or_forgetting_commits()
-> anyhow::Result<()> {
    let store = common::store().await?;
    let seeds = store.cluster.seeds();
    let (addr_a, addr_b) = (common::free_addr()?, common::free_addr()?);
    let metrics_a = common::free_addr()?;
    let mut a = common::spawn_manager_with(
        1,
        addr_a,
        &seeds,
        &[
            "--publish-slots",
            "2",
            "--metrics-listen",
            &metrics_a.to_string(),
        ],
    )
    .await?;
    let b = common::spawn_manager(2, addr_b, &seeds).await?;
    let managers = vec![addr_a.to_string(), addr_b.to_string()];

    let record = Arc::new(Record::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut clients = Vec::new();
    for node in 0..4u64 {
        let prefers_a = node % 2 == 0;
        let client = common::client(&managers, node + 1, if prefers_a { 0 } else { 1 })?;
        for w in 0..3 {
            tasks.push(tokio::spawn(load(
                client.clone(),
                prefers_a,
                record.clone(),
                stop.clone(),
                node * 10 + w,
            )));
        }
        clients.push((client, prefers_a));
    }
    let commits_in = |phase: usize| record.commits_in_phase[phase].load(Ordering::Relaxed);

    // Phase 0: both up.
    common::wait_for("load on both managers", Duration::from_secs(20), || async {
        (commits_in(0) >= 300).then_some(())
    })
    .await?;

    // Phase 1: SIGKILL manager 1 mid-load, with two publishes in flight; clients preferring
    // it fail over to manager 2.
    common::wait_for(
        "two publishes in flight at manager 1",
        Duration::from_secs(20),
        || async {
            let text = common::http_get(metrics_a, "/metrics").await.ok()?;
            let in_flight = common::metric_value(&text, "shmdb_commit_publishes_in_flight")?;
            (in_flight >= 2.0).then_some(())
        },
    )
    .await?;
    record.phase.store(1, Ordering::SeqCst);
    a.start_kill()?;
    a.wait().await?;
    // Tasks whose transaction was running at the killed manager wait for it to come back
    // (only it can finish them); fresh tasks on the same clients start new transactions,
    // which fail over to manager 2.
    for (i, (client, prefers_a)) in clients.iter().enumerate() {
        if *prefers_a {
            for w in 0..2 {
                tasks.push(tokio::spawn(load(
                    client.clone(),
                    true,
                    record.clone(),
                    stop.clone(),
                    1000 + i as u64 * 10 + w,
                )));
            }
        }
    }
    let max_before_kill = record
        .starts
        .lock()
        .iter()
        .filter(|(_, m, _)| *m == 1)
        .map(|(t, _, _)| *t)
        .max()
        .unwrap_or(0);
    common::wait_for("failover to manager 2", Duration::from_secs(20), || async {
        (record.failovers.load(Ordering::Relaxed) >= 50 && commits_in(1) >= 100).then_some(())
    })
    .await?;

    // Phase 2: restart manager 1 under the same id and address; it resumes from the store.
    let restarted =
        common::spawn_manager_with(1, addr_a, &seeds, &["--publish-slots", "1"]).await?;
    record.phase.store(2, Ordering::SeqCst);
    // Clients that failed over stay with manager 2; new processing nodes that prefer the
    // restarted manager load it.
    for node in 10..12u64 {
        let client = common::client(&managers, node, 0)?;
        for w in 0..2 {
            tasks.push(tokio::spawn(load(
                client.clone(),
                true,
                record.clone(),
                stop.clone(),
                node * 10 + w,
            )));
        }
    }
    common::wait_for(
        "load after the restart",
        Duration::from_secs(20),
        || async {
            let from_a = record
                .starts
                .lock()
                .iter()
                .filter(|(_, m, p)| *m == 1 && *p == 2)
                .count();
            (commits_in(2) >= 200 && from_a >= 50).then_some(())
        },
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }

    // No errors: commits and aborts of tids issued by the killed manager waited for it.
    let errors = record.errors.lock().clone();
    assert!(
        errors.is_empty(),
        "{} failures, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // A commit whose answer was lost in the kill is retried at the restarted manager; it is
    // reported ambiguous only if the manager no longer keeps that tid's outcome. Ambiguous
    // commits were never acknowledged, so they are not in `committed`.
    let ambiguous = record.ambiguous.lock().len();

    // No tid handed out twice, across both managers and the restart; the restarted manager
    // never went back to its old blocks.
    let starts = record.starts.lock().clone();
    let mut seen = HashMap::new();
    for &(tid, manager, phase) in &starts {
        if let Some(prev) = seen.insert(tid, (manager, phase)) {
            panic!(
                "tid {tid} handed out twice: {prev:?} and {:?}",
                (manager, phase)
            );
        }
    }
    for &(tid, manager, phase) in &starts {
        if manager == 1 && phase == 2 {
            assert!(
                tid > max_before_kill,
                "restarted manager reissued old tid {tid}"
            );
        }
    }

    // No acknowledged commit forgotten: fresh snapshots at both managers show all of them.
    let committed: HashSet<u64> = record.committed.lock().iter().copied().collect();
    for (index, name) in [(0usize, "restarted manager 1"), (1, "manager 2")] {
        let checker = common::client(&managers, 100 + index as u64, index)?;
        common::wait_for(
            &format!("every commit visible at {name}"),
            Duration::from_secs(10),
            || async {
                let probe = checker.start().await.ok()?;
                let _ = checker.abort(probe.tid).await;
                let missing = committed
                    .iter()
                    .filter(|&&t| !probe.snapshot.is_visible(t))
                    .count();
                (missing == 0).then_some(())
            },
        )
        .await?;
    }
    println!(
        "{} starts, {} commits ({} / {} / {} per phase), {} failovers, {ambiguous} ambiguous; last tid of the killed manager {max_before_kill}",
        starts.len(),
        committed.len(),
        commits_in(0),
        commits_in(1),
        commits_in(2),
        record.failovers.load(Ordering::Relaxed)
    );
    drop(restarted);
    drop(b);
    store.cluster.shutdown().await;
    Ok(())
}
