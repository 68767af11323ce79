//! Two managers on one store: tids never collide, and each sees the other's commits within
//! three publish intervals.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmdb_commit_manager::{CommitClient, NoWritesRecovery, RunningManager};

async fn churn(client: CommitClient, rounds: usize) -> anyhow::Result<Vec<u64>> {
    let mut tids = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let started = client.start().await?;
        tids.push(started.tid);
        if i % 3 == 0 {
            client.abort(started.tid).await?;
        } else {
            client.commit(started.tid).await?;
        }
    }
    Ok(tids)
}

/// Commits one transaction at `from` and measures how many merge rounds `to` completes
/// before one of its snapshots shows it.
async fn rounds_until_seen(
    from: &CommitClient,
    to: &CommitClient,
    to_manager: &RunningManager,
) -> anyhow::Result<(u64, Duration)> {
    let tid = from.start().await?.tid;
    from.commit(tid).await?;
    let committed_at = Instant::now();
    let merges_at_commit = to_manager.manager.status().stats.merges;
    loop {
        let merges_before_start = to_manager.manager.status().stats.merges;
        let probe = to.start().await?;
        let seen = probe.snapshot.is_visible(tid);
        to.abort(probe.tid).await?;
        if seen {
            return Ok((
                merges_before_start.saturating_sub(merges_at_commit),
                committed_at.elapsed(),
            ));
        }
        anyhow::ensure!(
            committed_at.elapsed() < Duration::from_secs(5),
            "tid {tid} never became visible at the other manager"
        );
        // Wait for the next merge round of `to` rather than spinning on starts.
        let target = merges_before_start + 1;
        common::wait_for("a merge round", Duration::from_secs(5), || async {
            (to_manager.manager.status().stats.merges >= target).then_some(())
        })
        .await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tids_are_unique_and_commits_cross_within_three_intervals() -> anyhow::Result<()> {
    let store = common::store().await?;
    let a = common::start_manager(
        common::manager_config(1, &store),
        &store,
        Arc::new(NoWritesRecovery),
    )
    .await?;
    let b = common::start_manager(
        common::manager_config(2, &store),
        &store,
        Arc::new(NoWritesRecovery),
    )
    .await?;
    let interval = a.manager.config().publish_interval;
    let at_a = common::client(&[a.addr.to_string()], 1, 0)?;
    let at_b = common::client(&[b.addr.to_string()], 2, 0)?;

    // Concurrent load on both: every tid is unique across the two managers.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(churn(at_a.clone(), 100)));
        tasks.push(tokio::spawn(churn(at_b.clone(), 100)));
    }
    let mut all = HashSet::new();
    let mut count = 0;
    for task in tasks {
        for tid in task.await?? {
            count += 1;
            assert!(all.insert(tid), "tid {tid} handed out twice");
        }
    }
    assert_eq!(count, 800);
    let a_status = a.manager.status();
    let b_status = b.manager.status();
    assert_eq!(a_status.stats.starts + b_status.stats.starts, 800);
    assert_eq!(a_status.peers.len(), 1, "a sees b");
    assert_eq!(b_status.peers.len(), 1, "b sees a");

    // Visibility across managers, both ways, measured in merge rounds of the reader.
    let mut worst_rounds = 0;
    let mut worst_time = Duration::ZERO;
    for i in 0..20 {
        let (from, to, to_manager) = if i % 2 == 0 {
            (&at_a, &at_b, &b)
        } else {
            (&at_b, &at_a, &a)
        };
        let (rounds, took) = rounds_until_seen(from, to, to_manager).await?;
        assert!(
            rounds <= 3,
            "seen only after {rounds} merge rounds ({took:?})"
        );
        worst_rounds = worst_rounds.max(rounds);
        worst_time = worst_time.max(took);
    }
    println!(
        "publish interval {interval:?}: a commit was visible at the other manager after at most {worst_rounds} merge rounds, {worst_time:?}"
    );

    // Once everything finished, both bases and lavs move past every tid handed out: an idle
    // manager does not hold the other's base at its half-used block.
    let target = a.manager.status().issued.max(b.manager.status().issued);
    common::wait_for(
        "both bases and lavs to pass every finished tid",
        Duration::from_secs(5),
        || async {
            let (sa, sb) = (a.manager.status(), b.manager.status());
            (sa.running == 0
                && sb.running == 0
                && sa.base >= target
                && sb.base >= target
                && sa.lav >= target
                && sb.lav >= target)
                .then_some(())
        },
    )
    .await?;

    a.shutdown().await;
    b.shutdown().await;
    store.cluster.shutdown().await;
    Ok(())
}
