//! A processing node the commit manager took for dead (its heartbeats arrived late) may
//! still be committing while recovery runs for it. Whatever the interleaving, the outcome is
//! one of two and never a mix: either the node's commit succeeds and recovery finds the
//! commit flag and reports the tid committed, or recovery claims the log entry first, the
//! node's commit fails with `TxnError::Recovered`, and no version of the tid is left.

mod common;

use std::sync::Arc;

use common::*;
use shmdb_processing_node::txn::recover::LogRecovery;
use shmdb_processing_node::txn::{Engine, TxnError};

const NODE: u64 = 9;
const RACES: i64 = 40;

/// The tids of the versions two rows hold.
async fn holders(cluster: &Cluster) -> anyhow::Result<Vec<Vec<u64>>> {
    let mut out = Vec::new();
    for id in [0, 1] {
        let record = stored_row(&cluster.store, &bank::table(), &[int(id)])
            .await?
            .ok_or_else(|| anyhow::anyhow!("row {id} is gone"))?;
        out.push(record.versions().iter().map(|v| v.tid).collect());
    }
    Ok(out)
}

/// One transaction moving `amount` between rows 0 and 1, with recovery of its tid started
/// after `yields` scheduler yields (`None`: only after the commit returned). Returns the
/// commit's outcome, whether recovery reported the tid committed, and the tid.
async fn race(
    engine: &Arc<Engine>,
    recovery: &Arc<LogRecovery>,
    amount: i64,
    yields: Option<usize>,
) -> anyhow::Result<(Result<(), TxnError>, bool, u64)> {
    let t = bank::table();
    let mut tx = engine.begin().await?;
    let tid = tx.tid();
    tx.update(&t, &[int(0)], vec![int(0), int(bank::INITIAL - amount)])
        .await?;
    tx.update(&t, &[int(1)], vec![int(1), int(bank::INITIAL + amount)])
        .await?;
    let Some(yields) = yields else {
        let outcome = tx.commit().await;
        let committed = recovery.recover_tid(NODE, tid).await?;
        return Ok((outcome, committed, tid));
    };
    let racing = {
        let recovery = recovery.clone();
        tokio::spawn(async move {
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            recovery.recover_tid(NODE, tid).await
        })
    };
    let outcome = tx.commit().await;
    let committed = racing.await??;
    Ok((outcome, committed, tid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_racing_a_live_commit_never_mixes_outcomes() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let engine = cluster.engine(NODE)?;
    bank::create(&engine).await?;
    let recovery = Arc::new(LogRecovery::new(cluster.store.clone()));

    // Recovery done before the commit starts: the node cannot even log the transaction.
    let t = bank::table();
    let mut tx = engine.begin().await?;
    let early = tx.tid();
    tx.update(&t, &[int(0)], vec![int(0), int(0)]).await?;
    assert!(!recovery.recover_tid(NODE, early).await?);
    let outcome = tx.commit().await;
    assert!(
        matches!(outcome, Err(TxnError::Recovered)),
        "a recovered tid committed: {outcome:?}"
    );
    assert!(
        holders(&cluster).await?.iter().all(|h| !h.contains(&early)),
        "a recovered tid left a version"
    );

    // Recovery only after the commit returned: it finds the flag.
    let (outcome, committed, tid) = race(&engine, &recovery, 2, None).await?;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(committed, "recovery reverted a committed transaction");
    assert!(
        holders(&cluster)
            .await?
            .iter()
            .all(|h| h.first() == Some(&tid))
    );

    // Every interleaving in between: the two views always agree.
    let (mut won, mut lost) = (0, 0);
    for i in 0..RACES {
        let amount = 3 + i;
        let (outcome, committed, tid) =
            race(&engine, &recovery, amount, Some((i % 10) as usize)).await?;
        let held = holders(&cluster).await?;
        match outcome {
            Ok(()) => {
                assert!(committed, "race {i}: committed, but recovery reverted it");
                assert!(
                    held.iter().all(|h| h.first() == Some(&tid)),
                    "race {i}: a committed tid lost a version: {held:?}"
                );
                won += 1;
            }
            Err(TxnError::Recovered) => {
                assert!(
                    !committed,
                    "race {i}: recovery reported a failed commit committed"
                );
                assert!(
                    held.iter().all(|h| !h.contains(&tid)),
                    "race {i}: a recovered tid left a version: {held:?}"
                );
                lost += 1;
            }
            Err(e) => anyhow::bail!("race {i}: unexpected commit error {e}"),
        }
    }
    eprintln!("{won} commits won the race, {lost} were recovered");

    // What a reader sees is a committed state: the two rows still sum to the initial total.
    let mut tx = engine.begin().await?;
    let rows = tx.get_many(&t, &[vec![int(0)], vec![int(1)]]).await?;
    let sum: i64 = rows
        .into_iter()
        .map(|r| match r.and_then(|r| r.get(1).cloned()) {
            Some(shmdb_processing_node::Datum::Int(v)) => v,
            other => panic!("unexpected row {other:?}"),
        })
        .sum();
    assert_eq!(sum, 2 * bank::INITIAL);
    tx.commit().await?;
    cluster.shutdown().await;
    Ok(())
}
