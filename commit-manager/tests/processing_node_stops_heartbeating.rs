//! A processing node stops heartbeating: its transactions are recovered (the Recovery
//! implementation is called with exactly its tids, before they are aborted), then aborted,
//! and lav moves past them; a node that keeps heartbeating keeps its transactions.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use shmdb_commit_manager::{
    CommitClient, CommitClientConfig, CommitError, Manager, Recovery, RecoveryError,
    RecoveryReport, RecoveryRequest, Refusal,
};

/// One call of the recovery, with what the manager looked like while it ran.
#[derive(Debug, Clone)]
struct Call {
    request: RecoveryRequest,
    /// Whether every tid was still unfinished at the manager during the call (not aborted
    /// before recovery finished: the abort invariant).
    all_still_running: bool,
    /// The manager's lav during the call.
    lav: u64,
}

/// Records calls; fails the first `failures` calls; reports `committed` tids as committed.
struct RecordingRecovery {
    manager: OnceLock<Arc<Manager>>,
    calls: Mutex<Vec<Call>>,
    failures: Mutex<u32>,
    committed: Mutex<HashSet<u64>>,
}

impl RecordingRecovery {
    fn new(failures: u32) -> Arc<RecordingRecovery> {
        Arc::new(RecordingRecovery {
            manager: OnceLock::new(),
            calls: Mutex::new(Vec::new()),
            failures: Mutex::new(failures),
            committed: Mutex::new(HashSet::new()),
        })
    }
}

#[async_trait]
impl Recovery for RecordingRecovery {
    async fn recover(&self, request: RecoveryRequest) -> Result<RecoveryReport, RecoveryError> {
        let (all_still_running, lav) = match self.manager.get() {
            Some(m) => (
                request.tids.iter().all(|&t| m.is_running(t)),
                m.status().lav,
            ),
            None => (false, 0),
        };
        self.calls.lock().push(Call {
            request: request.clone(),
            all_still_running,
            lav,
        });
        {
            let mut failures = self.failures.lock();
            if *failures > 0 {
                *failures -= 1;
                return Err(RecoveryError("injected: log scan failed".into()));
            }
        }
        let committed = self.committed.lock();
        Ok(RecoveryReport {
            committed: request
                .tids
                .iter()
                .copied()
                .filter(|t| committed.contains(t))
                .collect(),
        })
    }
}

fn silent_client(addr: &str, node: u64) -> anyhow::Result<CommitClient> {
    let mut cfg = CommitClientConfig::new([addr.to_owned()], node);
    cfg.heartbeat_interval = None;
    Ok(CommitClient::new(cfg)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_nodes_transactions_are_recovered_then_aborted_and_lav_moves_on()
-> anyhow::Result<()> {
    let store = common::store().await?;
    let recovery = RecordingRecovery::new(0);
    let mut cfg = common::manager_config(1, &store);
    cfg.heartbeat_timeout = Duration::from_millis(600);
    let running = common::start_manager(cfg, &store, recovery.clone()).await?;
    let _ = recovery.manager.set(running.manager.clone());
    let addr = running.addr.to_string();

    // Node 8 heartbeats every 100 ms and holds one old transaction through the timeout.
    let mut cfg8 = CommitClientConfig::new([addr.clone()], 8);
    cfg8.heartbeat_interval = Some(Duration::from_millis(100));
    let alive = CommitClient::new(cfg8)?;
    let old = alive.start().await?;
    // Node 7 starts three transactions and never heartbeats.
    let silent = silent_client(&addr, 7)?;
    let mut dead_tids = Vec::new();
    for _ in 0..3 {
        dead_tids.push(silent.start().await?.tid);
    }
    dead_tids.sort_unstable();
    let newest_dead = *dead_tids.last().expect("three tids");

    let call = common::wait_for(
        "the recovery of node 7",
        Duration::from_secs(10),
        || async { recovery.calls.lock().first().cloned() },
    )
    .await?;
    assert_eq!(call.request.node, Some(7));
    assert_eq!(call.request.tids, dead_tids, "exactly node 7's tids");
    assert!(
        call.all_still_running,
        "tids aborted before recovery finished"
    );
    assert!(
        call.lav < dead_tids[0],
        "lav {} passed a tid under recovery",
        call.lav
    );

    // Recovered, then aborted: a late commit from node 7 is refused as aborted.
    common::wait_for(
        "node 7's tids to be aborted",
        Duration::from_secs(5),
        || async {
            dead_tids
                .iter()
                .all(|&t| !running.manager.is_running(t))
                .then_some(())
        },
    )
    .await?;
    match silent.commit(dead_tids[0]).await {
        Err(CommitError::Refused(Refusal::AlreadyAborted(t))) => assert_eq!(t, dead_tids[0]),
        other => panic!("expected an aborted refusal, got {other:?}"),
    }
    assert_eq!(running.manager.status().stats.recovered_aborts, 3);

    // Node 8's heartbeated transaction survived the timeout and commits.
    alive.commit(old.tid).await?;
    let calls = recovery.calls.lock().clone();
    assert_eq!(calls.len(), 1, "only node 7 was recovered: {calls:?}");

    // With nothing running, lav moves past the recovered tids.
    common::wait_for(
        "lav to pass the recovered tids",
        Duration::from_secs(5),
        || async { (running.manager.status().lav >= newest_dead).then_some(()) },
    )
    .await?;
    running.shutdown().await;
    store.cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_recovery_is_retried_and_a_commit_flag_wins() -> anyhow::Result<()> {
    let store = common::store().await?;
    let recovery = RecordingRecovery::new(2);
    let mut cfg = common::manager_config(1, &store);
    cfg.heartbeat_timeout = Duration::from_millis(300);
    let running = common::start_manager(cfg, &store, recovery.clone()).await?;
    let _ = recovery.manager.set(running.manager.clone());
    let addr = running.addr.to_string();
    let silent = silent_client(&addr, 5)?;
    let flagged = silent.start().await?.tid;
    let plain = silent.start().await?.tid;
    recovery.committed.lock().insert(flagged);

    // While recovery keeps failing the tids stay recovering: neither commit nor abort.
    common::wait_for(
        "a failed recovery attempt",
        Duration::from_secs(10),
        || async { (!recovery.calls.lock().is_empty()).then_some(()) },
    )
    .await?;
    let other = silent_client(&addr, 6)?;
    match other.abort(plain).await {
        Err(CommitError::Refused(Refusal::Recovering(t))) => assert_eq!(t, plain),
        Err(CommitError::Refused(Refusal::AlreadyAborted(_))) => {
            // Recovery already succeeded on a retry: fine, but then it was retried.
            assert!(recovery.calls.lock().len() >= 3);
        }
        other => panic!("expected a recovering refusal, got {other:?}"),
    }

    common::wait_for("recovery to succeed", Duration::from_secs(10), || async {
        (!running.manager.is_running(flagged) && !running.manager.is_running(plain)).then_some(())
    })
    .await?;
    let calls = recovery.calls.lock().clone();
    assert_eq!(calls.len(), 3, "two failures, then success");
    assert!(
        calls
            .iter()
            .all(|c| c.request.tids == vec![flagged, plain] && c.all_still_running)
    );
    let status = running.manager.status();
    assert_eq!(status.stats.recovered_commits, 1);
    assert_eq!(status.stats.recovered_aborts, 1);
    // The flagged one is committed and visible; the other aborted and invisible.
    let probe = silent_client(&addr, 9)?.start().await?;
    assert!(probe.snapshot.is_visible(flagged));
    assert!(probe.snapshot.base() >= plain || !probe.snapshot.is_visible(plain));
    match silent.commit(flagged).await {
        Err(CommitError::Refused(Refusal::AlreadyCommitted(t))) => assert_eq!(t, flagged),
        other => panic!("expected an already-committed refusal, got {other:?}"),
    }
    running.shutdown().await;
    store.cluster.shutdown().await;
    Ok(())
}
