//! A second instance started under a running manager's id, while the first is under load
//! with publishes in flight in several record slots: the second restores every commit the
//! first acknowledged, and the first can no longer write any of its records — it stops
//! serving instead of acknowledging commits the second would not know.
//!
//! Run with the stale instance writing more slots than the new one uses (it must still be
//! fenced off in the slots the new one does not write) and with both on the default.

mod common;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message;
use shmdb_commit_manager::records::{MAX_PUBLISH_SLOTS, slot_key};
use shmdb_commit_manager::{FinishError, Manager, NoWritesRecovery, Refusal, StartError};
use shmdb_placement::tables;
use shmdb_proto::commit::ManagerState;

/// How a load task on the stale instance ended.
#[derive(Debug, Default)]
struct Seen {
    /// Commits the stale instance acknowledged.
    acked: Vec<u64>,
    /// Tasks that ended because the instance stopped serving (the expected end).
    not_serving: usize,
    /// Anything else (must stay empty).
    errors: Vec<String>,
}

/// Starts and commits on `manager` until it stops serving.
async fn load(manager: Arc<Manager>, node: u64, seen: Arc<Mutex<Seen>>) {
    loop {
        let tid = match manager.start_batch(node, 1).await {
            Ok(grant) => grant.tids[0],
            Err(StartError::NotServing(_)) => break,
            Err(e) => {
                seen.lock().errors.push(format!("start: {e}"));
                break;
            }
        };
        match manager.commit(tid).await {
            Ok(()) => seen.lock().acked.push(tid),
            Err(FinishError::NotServing(_)) => break,
            Err(e) => {
                seen.lock().errors.push(format!("commit {tid}: {e}"));
                break;
            }
        }
    }
    seen.lock().not_serving += 1;
}

/// The record in every slot of manager 1 (each must exist: all are claimed at start-up).
async fn slot_records(store: &common::Store) -> anyhow::Result<Vec<ManagerState>> {
    let mut records = Vec::new();
    for slot in 0..MAX_PUBLISH_SLOTS {
        let found = store.client.get(tables::COMMIT, slot_key(1, slot)).await?;
        let found = found.ok_or_else(|| anyhow::anyhow!("slot {slot} not claimed"))?;
        records.push(ManagerState::decode(found.value.as_ref())?);
    }
    Ok(records)
}

async fn stale_instance_is_fenced(stale_slots: usize, new_slots: usize) -> anyhow::Result<()> {
    let store = common::store().await?;
    let mut cfg = common::manager_config(1, &store);
    cfg.publish_slots = stale_slots;
    let stale = common::start_manager(cfg, &store, Arc::new(NoWritesRecovery)).await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks: Vec<_> = (0..16)
        .map(|i| tokio::spawn(load(stale.manager.clone(), i % 4 + 1, seen.clone())))
        .collect();
    common::wait_for(
        "load with publishes in flight in every slot",
        Duration::from_secs(20),
        || async {
            let in_flight = stale.manager.metrics().publishes_in_flight.get();
            (seen.lock().acked.len() >= 300 && in_flight as usize >= stale_slots.min(2))
                .then_some(())
        },
    )
    .await?;

    // The new instance under the same id: it claims every slot while the stale one writes.
    let mut cfg = common::manager_config(1, &store);
    cfg.publish_slots = new_slots;
    let fresh = common::start_manager(cfg, &store, Arc::new(NoWritesRecovery)).await?;
    let at_open = slot_records(&store).await?;
    let fresh_incarnation = at_open.iter().map(|r| r.incarnation).max().unwrap_or(0);
    common::wait_for(
        "the stale instance fenced",
        Duration::from_secs(10),
        || async { stale.manager.not_ready_reason().map(|_| ()) },
    )
    .await?;
    for task in tasks {
        task.await?;
    }
    let seen = std::mem::take(&mut *seen.lock());
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    assert_eq!(seen.not_serving, 16, "every task ended on the fence");
    let fenced = stale
        .manager
        .metrics()
        .publish_failures
        .with_label_values(&["fenced"])
        .get();
    assert!(fenced >= 1, "the stale instance's writes were refused");

    // The stale instance wrote no record once the new one served: the slots the new one
    // does not write still hold exactly what its claims left there (old records), and the
    // others only the new incarnation's.
    let at_end = slot_records(&store).await?;
    let old = |records: &[ManagerState]| -> Vec<(usize, u64, u64)> {
        records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.incarnation != fresh_incarnation)
            .map(|(slot, r)| (slot, r.incarnation, r.seq))
            .collect()
    };
    assert_eq!(
        old(&at_open).len(),
        MAX_PUBLISH_SLOTS - new_slots,
        "slots the new instance does not write hold old records: {at_open:?}"
    );
    assert_eq!(
        old(&at_end),
        old(&at_open),
        "a stale record was written after the new instance started serving"
    );
    assert!(
        at_end
            .iter()
            .take(new_slots)
            .all(|r| r.incarnation == fresh_incarnation)
    );

    // Every commit the stale instance acknowledged is committed at the new one.
    let grant = fresh.manager.start_batch(99, 1).await?;
    let snapshot = grant.snapshot.snapshot();
    let missing: Vec<u64> = seen
        .acked
        .iter()
        .copied()
        .filter(|&t| !snapshot.is_visible(t))
        .collect();
    assert!(missing.is_empty(), "acknowledged commits lost: {missing:?}");
    // And none of them can be aborted there, nor is reported aborted. (A tid of a block
    // the restored record no longer lists — every tid in it finished — is refused as
    // unknown rather than as committed: the record keeps only blocks at or above its floor.)
    for &tid in seen.acked.iter().rev().take(50) {
        match fresh.manager.abort(tid).await {
            Err(FinishError::Refused(
                Refusal::AlreadyCommitted(_) | Refusal::Finished(_) | Refusal::UnknownTid(_),
            )) => {}
            other => panic!("abort of acknowledged commit {tid} at the new instance: {other:?}"),
        }
    }
    println!(
        "stale instance with {stale_slots} slots: {} commits acknowledged, {fenced} writes refused",
        seen.acked.len()
    );
    stale.shutdown().await;
    fresh.shutdown().await;
    store.cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_instance_writing_four_slots_is_fenced_by_one_writing_one() -> anyhow::Result<()> {
    stale_instance_is_fenced(4, 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_instance_is_fenced_off_both_records() -> anyhow::Result<()> {
    stale_instance_is_fenced(2, 2).await
}
