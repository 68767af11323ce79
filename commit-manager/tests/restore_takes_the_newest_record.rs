//! A manager restarted after a crash restores from the newest of its record slots, whichever
//! slot holds it and whether or not the write that was in flight when it died landed; a
//! store holding only the single record of the older format is restored as well. Another
//! manager's merge reads the newest record too.
//!
//! The records are made by a core exactly as the running manager makes them (two publishes
//! prepared back to back, as with two writes in flight) and placed in the slots by hand, so
//! every crash outcome is tested deterministically.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use shmdb_commit_manager::core::{Core, CoreConfig, TidBlock};
use shmdb_commit_manager::manager::COUNTER_KEY;
use shmdb_commit_manager::records::{MAX_PUBLISH_SLOTS, slot_key};
use shmdb_commit_manager::{FinishError, NoWritesRecovery, Refusal};
use shmdb_placement::tables;
use shmdb_proto::commit::ManagerState;
use shmdb_store_client::{CondOutcome, Expect};

/// The last records of a crashed manager: `older` has t1's commit, `newer` (prepared right
/// after, while `older` was in flight) has t1's and t2's; t3 was still running.
struct Crash {
    older: ManagerState,
    newer: ManagerState,
    t1: u64,
    t2: u64,
    t3: u64,
}

/// Tids of manager `id` come from the block `id*1000+1 ..= id*1000+100`.
fn crash(id: u64) -> Crash {
    let now = Instant::now();
    let cfg = CoreConfig {
        manager_id: id,
        window: 1 << 20,
        heartbeat_timeout: Duration::from_secs(30),
        max_batch: 64,
    };
    let mut core = Core::new(cfg, id * 1000);
    core.add_leased(TidBlock {
        start: id * 1000 + 1,
        end: id * 1000 + 100,
    });
    let first = core.prepare_flush("crashed", 0);
    core.flush_succeeded(&first);
    let mut tid = || core.start(9, now).map(|s| s.0);
    let (t1, t2, t3) = (
        tid().expect("start"),
        tid().expect("start"),
        tid().expect("start"),
    );
    core.commit(t1).expect("commit");
    let older = core.prepare_flush("crashed", 0).state;
    core.commit(t2).expect("commit");
    let newer = core.prepare_flush("crashed", 0).state;
    assert!(newer.seq > older.seq);
    Crash {
        older,
        newer,
        t1,
        t2,
        t3,
    }
}

/// Writes `records` into manager `id`'s slots (slot index, record).
async fn place(
    store: &common::Store,
    id: u64,
    records: &[(usize, &ManagerState)],
) -> anyhow::Result<()> {
    for (slot, state) in records {
        let written = store
            .client
            .put_if(
                tables::COMMIT,
                slot_key(id, *slot),
                Bytes::from(state.encode_to_vec()),
                Expect::Absent,
            )
            .await?;
        anyhow::ensure!(
            matches!(written, CondOutcome::Written { .. }),
            "{written:?}"
        );
    }
    Ok(())
}

/// Every record slot of manager `id` (decoded), or `None` where absent.
async fn slots(store: &common::Store, id: u64) -> anyhow::Result<Vec<Option<ManagerState>>> {
    let mut out = Vec::new();
    for slot in 0..MAX_PUBLISH_SLOTS {
        let found = store.client.get(tables::COMMIT, slot_key(id, slot)).await?;
        out.push(match found {
            Some(v) => Some(ManagerState::decode(v.value.as_ref())?),
            None => None,
        });
    }
    Ok(out)
}

/// What a restarted manager says about a tid: committed, or still open (running).
async fn outcome(manager: &shmdb_commit_manager::Manager, tid: u64) -> &'static str {
    if manager.is_running(tid) {
        return "running";
    }
    match manager.abort(tid).await {
        Err(FinishError::Refused(Refusal::AlreadyCommitted(_))) => "committed",
        Err(FinishError::Refused(Refusal::AlreadyAborted(_))) => "aborted",
        other => panic!("unexpected answer for {tid}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_takes_the_newest_record_whichever_slot_holds_it() -> anyhow::Result<()> {
    let store = common::store().await?;
    // Tids up to 5,100 belong to the crashed managers' blocks: leases go above them.
    store
        .client
        .increment(tables::COMMIT, Bytes::from_static(COUNTER_KEY), 5_100)
        .await?;
    // (id, case, slots, whether the newer record is in the store)
    let cases: [(u64, &str, Vec<usize>, bool); 4] = [
        (1, "newer write landed in slot 1", vec![0, 1], true),
        (2, "newer write landed in slot 0", vec![1, 0], true),
        (3, "newer write in flight, lost", vec![0], false),
        (4, "single record of the older format", vec![], true),
    ];
    let crashes: Vec<Crash> = cases.iter().map(|(id, ..)| crash(*id)).collect();
    for ((id, case, order, _), c) in cases.iter().zip(&crashes) {
        match order.as_slice() {
            [older_slot, newer_slot] => {
                place(
                    &store,
                    *id,
                    &[(*older_slot, &c.older), (*newer_slot, &c.newer)],
                )
                .await?
            }
            [older_slot] => place(&store, *id, &[(*older_slot, &c.older)]).await?,
            _ => place(&store, *id, &[(0, &c.newer)]).await?,
        }
        println!("{case}: placed");
    }
    for ((id, case, _, newer_landed), c) in cases.iter().zip(&crashes) {
        let mut cfg = common::manager_config(*id, &store);
        // Restored running tids must stay running while the test looks at them.
        cfg.heartbeat_timeout = Duration::from_secs(60);
        let running = common::start_manager(cfg, &store, Arc::new(NoWritesRecovery)).await?;
        let m = &running.manager;
        assert_eq!(outcome(m, c.t1).await, "committed", "{case}: t1");
        let t2 = outcome(m, c.t2).await;
        if *newer_landed {
            assert_eq!(t2, "committed", "{case}: t2 is in the newest record");
        } else {
            // Its commit was never acknowledged (the record carrying it never landed): it is
            // still open, to be committed by the client's retry or recovered.
            assert_eq!(t2, "running", "{case}: t2 was not durable");
        }
        assert_eq!(outcome(m, c.t3).await, "running", "{case}: t3");
        // A fresh snapshot agrees.
        let grant = m.start_batch(50, 1).await?;
        let snap = grant.snapshot.snapshot();
        assert!(snap.is_visible(c.t1), "{case}");
        assert_eq!(snap.is_visible(c.t2), *newer_landed, "{case}");
        assert!(!snap.is_visible(c.t3), "{case}");
        assert!(grant.tids[0] > 5_100, "{case}: no old tid reissued");
        // Every slot was claimed and the new incarnation's records follow the old newest.
        let restored_from = if *newer_landed { &c.newer } else { &c.older };
        let after = slots(&store, *id).await?;
        assert!(
            after.iter().all(Option::is_some),
            "{case}: all slots claimed"
        );
        let newest = after
            .iter()
            .flatten()
            .map(|s| (s.incarnation, s.seq))
            .max()
            .unwrap_or_default();
        assert_eq!(newest.0, restored_from.incarnation + 1, "{case}");
        running.shutdown().await;
    }
    store.cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_reads_the_newest_of_another_managers_records() -> anyhow::Result<()> {
    let store = common::store().await?;
    store
        .client
        .increment(tables::COMMIT, Bytes::from_static(COUNTER_KEY), 7_100)
        .await?;
    // Manager 7 crashed with its newer record in slot 0 and the older in slot 1: a merge
    // that read only slot 1, or took the last slot, would miss t2's commit.
    let c = crash(7);
    place(&store, 7, &[(1, &c.older), (0, &c.newer)]).await?;
    let other = common::start_manager(
        common::manager_config(1, &store),
        &store,
        Arc::new(NoWritesRecovery),
    )
    .await?;
    let peers = other.manager.status().peers;
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(
        (peers[0].manager_id, peers[0].seq),
        (7, c.newer.seq),
        "the newest record is manager 7's state"
    );
    let grant = other.manager.start_batch(1, 1).await?;
    let snap = grant.snapshot.snapshot();
    assert!(snap.is_visible(c.t1) && snap.is_visible(c.t2));
    assert!(!snap.is_visible(c.t3), "manager 7's running tid");
    assert!(snap.base() < c.t1, "manager 7's floor holds the base");
    other.shutdown().await;
    store.cluster.shutdown().await;
    Ok(())
}
