//! The bank with a processing node SIGKILLed mid-commit: one processing node runs in this
//! process (8 workers), the other is the `bank_worker` example in its own process (8
//! workers), printing every step of every transfer as it happens. The test stops the
//! worker (SIGSTOP) until it catches a transaction mid-commit — log entry still running,
//! versions already applied to the accounts — and then SIGKILLs it. After the heartbeat
//! timeout the commit manager runs `LogRecovery` for the dead node's tids; the test
//! asserts that lav passes every tid the worker began, that the tids caught mid-commit were
//! settled, that no version of a tid that did not commit remains in any account, that
//! every snapshot summed to the total, and that the final balances are exactly the
//! starting balances plus every committed transfer of both nodes (the worker's
//! acknowledged ones, and the in-flight ones whose log entry carries the commit flag).
//! ~10 s of load by default (`SHMDB_BANK_SECS` / 2).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use shmdb_processing_node::txn::log::LogStatus;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Notify;

/// The worker process's node id.
const WORKER: u64 = 2;

/// What the worker printed.
#[derive(Debug, Default)]
struct WorkerLog {
    ready: bool,
    begun: BTreeSet<u64>,
    tried: BTreeMap<u64, bank::Transfer>,
    /// tid → "ok" | "conflict" | "failed" | "unknown".
    done: BTreeMap<u64, String>,
    lines: u64,
}

impl WorkerLog {
    fn take(&mut self, line: &str) {
        self.lines += 1;
        let parts: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| parts.get(i).and_then(|p| p.parse::<i64>().ok());
        match parts.as_slice() {
            ["ready"] => self.ready = true,
            ["begin", _] => {
                if let Some(tid) = num(1) {
                    self.begun.insert(tid as u64);
                }
            }
            ["try", ..] => {
                if let (Some(tid), Some(from), Some(to), Some(amount)) =
                    (num(1), num(2), num(3), num(4))
                {
                    let tid = tid as u64;
                    self.tried.insert(
                        tid,
                        bank::Transfer {
                            tid,
                            from,
                            to,
                            amount,
                        },
                    );
                }
            }
            [word, _] => {
                if let Some(tid) = num(1) {
                    self.done.insert(tid as u64, word.to_string());
                }
            }
            _ => {}
        }
    }

    /// Transfers about to commit or committing, with no outcome printed yet.
    fn in_flight(&self) -> Vec<bank::Transfer> {
        self.tried
            .values()
            .filter(|t| !self.done.contains_key(&t.tid))
            .copied()
            .collect()
    }
}

fn signal(pid: u32, sig: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    anyhow::ensure!(
        rc == 0,
        "kill({pid}, {sig}) failed: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// The in-flight transfers of the stopped worker whose log entry is still running and whose
/// versions are already in an account: transactions caught mid-commit.
async fn mid_commit(
    cluster: &Cluster,
    log: &Mutex<WorkerLog>,
) -> anyhow::Result<Vec<bank::Transfer>> {
    let in_flight = log.lock().in_flight();
    let mut caught = Vec::new();
    for t in in_flight {
        if log_status(&cluster.store, WORKER, t.tid).await? != Some(LogStatus::Running) {
            continue;
        }
        for account in [t.from, t.to] {
            let record = stored_row(&cluster.store, &bank::table(), &[int(account)]).await?;
            if record.is_some_and(|r| r.versions().iter().any(|v| v.tid == t.tid)) {
                caught.push(t);
                break;
            }
        }
    }
    Ok(caught)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_node_killed_mid_commit_is_recovered() -> anyhow::Result<()> {
    let load = bank::load_duration(20.0, 2.0);
    let cluster = Cluster::start(3, 2).await?;
    let engine = cluster.engine(1)?;
    bank::create(&engine).await?;

    let mut child = Command::new(example_binary("bank_worker")?)
        .arg(cluster.storage.seeds().join(","))
        .arg(cluster.manager.addr.to_string())
        .arg(WORKER.to_string())
        .arg("8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("worker has no pid"))?;
    let log = Arc::new(Mutex::new(WorkerLog::default()));
    let news = Arc::new(Notify::new());
    let reader = {
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (log, news) = (log.clone(), news.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().take(&line);
                news.notify_waiters();
            }
        })
    };
    wait_for("the worker to start", Duration::from_secs(20), || async {
        log.lock().ready.then_some(())
    })
    .await?;

    let commits_before = cluster.manager.manager.status().stats.commits;
    let local = {
        let engine = engine.clone();
        tokio::spawn(async move { bank::run(&[engine], 8, load).await })
    };
    wait_for("the worker to commit transfers", load, || async {
        let ok = log.lock().done.values().filter(|w| *w == "ok").count();
        let commits = cluster.manager.manager.status().stats.commits;
        (ok >= 30 && commits >= commits_before + 150).then_some(())
    })
    .await?;

    // Catch the worker mid-commit: stop it, look, and kill it if a transaction of it has
    // applied versions under a running log entry; else let it run until it printed more.
    let mut caught = Vec::new();
    for _ in 0..200 {
        signal(pid, libc::SIGSTOP)?;
        caught = mid_commit(&cluster, &log).await?;
        if !caught.is_empty() {
            break;
        }
        let printed = log.lock().lines;
        signal(pid, libc::SIGCONT)?;
        wait_for(
            "the worker to make progress",
            Duration::from_secs(10),
            || {
                let news = news.clone();
                let log = log.clone();
                async move {
                    let notified = news.notified();
                    if log.lock().lines > printed + 4 {
                        return Some(());
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
                    None
                }
            },
        )
        .await?;
    }
    signal(pid, libc::SIGKILL)?;
    child.wait().await?;
    reader.await?;
    let killed_at = std::time::Instant::now();
    eprintln!(
        "killed the worker with {} transactions caught mid-commit: {:?}",
        caught.len(),
        caught.iter().map(|t| t.tid).collect::<Vec<_>>()
    );
    assert!(
        !caught.is_empty(),
        "never caught the worker mid-commit in 200 tries"
    );

    // The dead node's transactions are recovered while the surviving node keeps transferring.
    let log = std::mem::take(&mut *log.lock());
    let newest = log
        .begun
        .iter()
        .chain(log.tried.keys())
        .max()
        .copied()
        .unwrap_or_default();
    wait_for(
        "lav to pass every tid of the dead node",
        Duration::from_secs(30),
        || async {
            // A probe transaction, so lav is recomputed from what is running now.
            let tx = engine.begin().await.ok()?;
            let _ = tx.commit().await;
            (cluster.lav() >= newest).then_some(())
        },
    )
    .await?;
    eprintln!(
        "lav passed the dead node's tids {:.1?} after the kill (heartbeat timeout {HEARTBEAT_TIMEOUT:?})",
        killed_at.elapsed()
    );
    let run = local.await?;

    // Settle the worker's transfers: printed outcomes, else the log (recovery flagged them).
    let mut worker_committed = Vec::new();
    let mut not_committed = BTreeSet::new();
    for t in log.tried.values() {
        let committed = match log.done.get(&t.tid).map(String::as_str) {
            Some("ok") => true,
            Some("conflict") | Some("failed") => false,
            _ => {
                let status = log_status(&cluster.store, WORKER, t.tid).await?;
                assert_ne!(
                    status,
                    Some(LogStatus::Running),
                    "tid {} was not recovered",
                    t.tid
                );
                status == Some(LogStatus::Committed)
            }
        };
        if committed {
            worker_committed.push(*t);
        } else {
            not_committed.insert(t.tid);
        }
    }
    not_committed.extend(log.begun.iter().filter(|tid| !log.tried.contains_key(tid)));
    for t in &caught {
        let status = log_status(&cluster.store, WORKER, t.tid).await?;
        assert!(
            matches!(status, Some(LogStatus::Aborted | LogStatus::Committed)),
            "tid {} caught mid-commit ended {status:?}",
            t.tid
        );
    }
    // No version of a tid that did not commit is left in any account.
    for (key, record) in stored_rows(&cluster.store, &bank::table()).await? {
        for v in record.versions() {
            assert!(
                !not_committed.contains(&v.tid),
                "version of uncommitted tid {} left at {key:?}: {record:?}",
                v.tid
            );
        }
    }
    eprintln!(
        "worker: {} begun, {} tried, {} committed ({} acknowledged); local: {} committed, {} conflicts, {} snapshots",
        log.begun.len(),
        log.tried.len(),
        worker_committed.len(),
        log.done.values().filter(|w| *w == "ok").count(),
        run.committed(),
        run.conflicts(),
        run.readers.snapshots
    );
    verify_bank(&cluster.store, &engine, &run, &worker_committed).await?;
    cluster.shutdown().await;
    Ok(())
}
