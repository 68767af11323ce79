//! Unit tests of the state machine, driven without any store.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::*;
use crate::error::{Refusal, StartError};

fn config(id: u64) -> CoreConfig {
    CoreConfig {
        manager_id: id,
        window: 1_000,
        heartbeat_timeout: Duration::from_secs(1),
        max_batch: 64,
    }
}

/// A core with one durable block `[start, end]`, merged once with no peers.
fn core_with_block(id: u64, start: u64, end: u64) -> Core {
    let mut core = Core::new(config(id), start - 1);
    core.add_leased(TidBlock { start, end });
    publish(&mut core);
    let ticket = core.merge_start();
    core.apply_merge(ticket, None, &[]);
    core
}

/// Publishes whatever is pending, as if the store write succeeded.
fn publish(core: &mut Core) -> FlushBatch {
    let batch = core.prepare_flush("test", 0);
    core.flush_succeeded(&batch);
    batch
}

fn merge(core: &mut Core, peers: &[PeerState]) {
    let ticket = core.merge_start();
    core.apply_merge(ticket, None, peers);
}

#[test]
fn a_commit_is_visible_only_after_it_was_published() {
    let now = Instant::now();
    let mut core = core_with_block(1, 1, 100);
    let (t1, s1, _) = core.start(7, now).expect("start");
    let (t2, _, _) = core.start(7, now).expect("start");
    assert_eq!((t1, t2), (1, 2));
    assert!(!s1.snapshot().is_visible(t1));
    let seq = core.commit(t2).expect("commit");
    let (t3, s3, _) = core.start(7, now).expect("start");
    assert!(!s3.snapshot().is_visible(t2), "not durable yet");
    let batch = core.prepare_flush("test", 0);
    assert_eq!(batch.seq, seq);
    assert_eq!(batch.commits, vec![t2]);
    core.flush_succeeded(&batch);
    let (_, s4, _) = core.start(7, now).expect("start");
    assert!(s4.snapshot().is_visible(t2));
    assert!(!s4.snapshot().is_visible(t1) && !s4.snapshot().is_visible(t3));
    assert_eq!(s4.snapshot().base(), t1 - 1, "t1 still runs");
}

#[test]
fn starts_share_one_snapshot_until_something_changes() {
    let now = Instant::now();
    let mut core = core_with_block(1, 1, 100);
    let (_, a, _) = core.start(1, now).expect("start");
    let (_, b, _) = core.start(1, now).expect("start");
    assert!(Arc::ptr_eq(&a, &b));
    let (t, _, _) = core.start(1, now).expect("start");
    core.abort(t).expect("abort");
    let (_, c, _) = core.start(1, now).expect("start");
    assert!(
        Arc::ptr_eq(&a, &c),
        "aborting a young tid moves neither base nor set"
    );
}

#[test]
fn aborts_move_the_base_and_keep_the_aborted_tid_invisible() {
    let now = Instant::now();
    let mut core = core_with_block(1, 1, 100);
    let (t1, _, _) = core.start(1, now).expect("start");
    let (t2, _, _) = core.start(1, now).expect("start");
    core.commit(t2).expect("commit");
    publish(&mut core);
    core.abort(t1).expect("abort");
    let (_, snap, _) = core.start(1, now).expect("start");
    assert_eq!(snap.snapshot().base(), t2, "both finished");
}

#[test]
fn a_batch_shares_one_snapshot_that_excludes_all_its_tids() {
    let now = Instant::now();
    let mut core = core_with_block(1, 1, 100);
    let grant = core.start_batch(3, 10, now).expect("batch");
    assert_eq!(grant.tids, (1..=10).collect::<Vec<_>>());
    for tid in &grant.tids {
        assert!(!grant.snapshot.snapshot().is_visible(*tid));
    }
    assert!(matches!(
        core.start_batch(3, 0, now),
        Err(StartError::BadCount { count: 0, .. })
    ));
    assert!(matches!(
        core.start_batch(3, 65, now),
        Err(StartError::BadCount { count: 65, .. })
    ));
}

#[test]
fn starts_without_a_durable_block_wait_for_one() {
    let now = Instant::now();
    let mut core = Core::new(config(1), 0);
    assert_eq!(core.start(1, now).map(|r| r.0), Err(StartError::NoTids));
    core.add_leased(TidBlock { start: 1, end: 3 });
    assert_eq!(
        core.start(1, now).map(|r| r.0),
        Err(StartError::NoTids),
        "not durable yet"
    );
    publish(&mut core);
    let tids: Vec<u64> = (0..3)
        .map(|_| core.start(1, now).map(|r| r.0).expect("start"))
        .collect();
    assert_eq!(tids, vec![1, 2, 3]);
    assert_eq!(core.start(1, now).map(|r| r.0), Err(StartError::NoTids));
    assert!(core.needs_lease(100));
}

#[test]
fn an_old_transaction_filling_the_window_refuses_starts_with_a_clear_error() {
    let now = Instant::now();
    let mut core = Core::new(
        CoreConfig {
            window: 10,
            ..config(1)
        },
        0,
    );
    core.add_leased(TidBlock { start: 1, end: 100 });
    publish(&mut core);
    merge(&mut core, &[]);
    let (old, _, _) = core.start(9, now).expect("start");
    for _ in 0..9 {
        let (t, _, _) = core.start(1, now).expect("start");
        core.abort(t).expect("abort");
    }
    match core.start(1, now) {
        Err(StartError::WindowFull { holder, base, .. }) => {
            assert_eq!(base, old - 1);
            assert!(holder.contains(&format!("transaction {old}")), "{holder}");
            assert!(holder.contains("processing node 9"), "{holder}");
        }
        other => panic!("expected a full window, got {other:?}"),
    }
    assert_eq!(core.stats().window_refusals, 1);
    core.abort(old).expect("abort");
    core.start(1, now).expect("the window is free again");
}

#[test]
fn bad_finishes_are_refused_without_changing_anything() {
    let now = Instant::now();
    let mut core = core_with_block(1, 1, 100);
    let (committed, _, _) = core.start(1, now).expect("start");
    let (aborted, _, _) = core.start(1, now).expect("start");
    let (running, _, _) = core.start(1, now).expect("start");
    core.commit(committed).expect("commit");
    publish(&mut core);
    core.abort(aborted).expect("abort");
    let before = core.status();
    assert_eq!(
        core.commit(committed),
        Err(Refusal::AlreadyCommitted(committed))
    );
    assert_eq!(
        core.abort(committed),
        Err(Refusal::AlreadyCommitted(committed))
    );
    assert_eq!(core.commit(aborted), Err(Refusal::AlreadyAborted(aborted)));
    assert_eq!(core.abort(aborted), Err(Refusal::AlreadyAborted(aborted)));
    assert_eq!(
        core.commit(99),
        Err(Refusal::UnknownTid(99)),
        "not issued yet"
    );
    assert_eq!(core.abort(5_000), Err(Refusal::UnknownTid(5_000)));
    assert_eq!(core.commit(0), Err(Refusal::UnknownTid(0)));
    let after = core.status();
    assert_eq!(before.stats, after.stats);
    assert_eq!((before.base, before.running), (after.base, after.running));
    assert!(core.is_running(running));
    assert!(!core.has_pending());
}

#[test]
fn heartbeats_keep_transactions_alive_and_silence_expires_them() {
    let t0 = Instant::now();
    let mut core = core_with_block(1, 1, 100);
    let (a, _, _) = core.start(1, t0).expect("start");
    let (b, _, _) = core.start(2, t0).expect("start");
    let (c, _, _) = core.start(2, t0).expect("start");
    let later = t0 + Duration::from_millis(900);
    assert_eq!(core.heartbeat(1, &[a, b, 77], later), vec![b, 77]);
    let expired = core.expire(t0 + Duration::from_millis(1_100));
    assert_eq!(
        expired,
        vec![RecoveryGroup {
            node: Some(2),
            tids: vec![b, c],
        }]
    );
    assert_eq!(core.commit(b), Err(Refusal::Recovering(b)));
    assert_eq!(core.heartbeat(2, &[b], later), vec![b], "too late");
    let lav_before = core.status().base;
    assert!(lav_before < b);
    let committed: HashSet<u64> = [c].into();
    let wait = core.recovered(&expired[0], &committed);
    assert!(wait.is_some(), "c's log showed a commit flag");
    publish(&mut core);
    assert_eq!(core.commit(b), Err(Refusal::AlreadyAborted(b)));
    assert_eq!(core.commit(c), Err(Refusal::AlreadyCommitted(c)));
    let (_, snap, _) = core.start(1, later).expect("start");
    assert!(snap.snapshot().is_visible(c) && !snap.snapshot().is_visible(b));
    core.abort(a).expect("abort");
    assert!(core.status().base >= c);
}

#[test]
fn a_restarted_core_keeps_commits_and_never_reissues_a_tid() {
    let now = Instant::now();
    let mut core = core_with_block(1, 1, 10);
    core.add_leased(TidBlock { start: 21, end: 30 });
    publish(&mut core);
    let (t1, _, _) = core.start(5, now).expect("start");
    let (t2, _, _) = core.start(5, now).expect("start");
    let (t3, _, _) = core.start(5, now).expect("start");
    core.commit(t2).expect("commit");
    let published = publish(&mut core).state;
    core.abort(t3).expect("abort, unpublished");
    let (t4, _, _) = core.start(6, now).expect("start after the last publish");

    let mut restored = Core::new(config(1), 0);
    restored.restore(&published, now).expect("restore");
    assert_eq!(restored.incarnation(), published.incarnation + 1);
    assert_eq!(restored.commit(t2), Err(Refusal::AlreadyCommitted(t2)));
    for tid in [t1, t3, t4] {
        assert!(restored.is_running(tid), "{tid} may be running");
    }
    // Nothing of the old blocks is handed out again.
    assert_eq!(restored.start(1, now).map(|r| r.0), Err(StartError::NoTids));
    restored.add_leased(TidBlock { start: 41, end: 50 });
    publish(&mut restored);
    merge(&mut restored, &[]);
    let (fresh, snap, lav) = restored.start(1, now).expect("start");
    assert_eq!(fresh, 41);
    assert!(snap.snapshot().is_visible(t2));
    assert!(snap.snapshot().base() < t1);
    assert!(lav < t1);
    // A heartbeat claims t4 for node 6; the rest expire and are recovered.
    assert!(restored.heartbeat(6, &[t4], now).is_empty());
    let groups = restored.expire(now + Duration::from_secs(2));
    let expired: Vec<u64> = groups.iter().flat_map(|g| g.tids.clone()).collect();
    assert!(expired.contains(&t1) && expired.contains(&t3) && expired.contains(&t4));
    assert!(
        groups
            .iter()
            .any(|g| g.node == Some(5) && g.tids.contains(&t1))
    );
    assert!(
        groups
            .iter()
            .any(|g| g.node == Some(6) && g.tids == vec![t4])
    );
}

#[test]
fn two_cores_issue_disjoint_tids_and_merge_each_others_commits() {
    let now = Instant::now();
    let mut a = Core::new(config(1), 0);
    let mut b = Core::new(config(2), 0);
    a.add_leased(TidBlock { start: 1, end: 10 });
    b.add_leased(TidBlock { start: 11, end: 20 });
    let pa = publish(&mut a).state;
    let pb = publish(&mut b).state;
    let peer = |s: &shmdb_proto::commit::ManagerState| PeerState::from_state(s).expect("decode");
    merge(&mut a, &[peer(&pa), peer(&pb)]);
    merge(&mut b, &[peer(&pa), peer(&pb)]);
    let (ta, _, _) = a.start(1, now).expect("start");
    let (tb, _, _) = b.start(1, now).expect("start");
    assert_eq!((ta, tb), (1, 11));
    b.commit(tb).expect("commit");
    let pb = publish(&mut b).state;
    let (_, s, _) = a.start(1, now).expect("start");
    assert!(!s.snapshot().is_visible(tb), "not merged yet");
    let pa = publish(&mut a).state;
    merge(&mut a, &[peer(&pa), peer(&pb)]);
    let (_, s, lav) = a.start(1, now).expect("start");
    assert!(s.snapshot().is_visible(tb));
    assert!(!s.snapshot().is_visible(ta));
    assert!(s.snapshot().base() < ta);
    assert!(lav <= s.snapshot().base());
    // b's base is held by a's running ta.
    merge(&mut b, &[peer(&pa), peer(&pb)]);
    let (_, s, _) = b.start(1, now).expect("start");
    assert!(s.snapshot().base() < ta);
    assert!(s.snapshot().is_visible(tb));
}

#[test]
fn lav_is_handed_out_only_after_it_was_published_and_confirmed() {
    let now = Instant::now();
    let mut core = core_with_block(1, 1, 100);
    let (t1, _, lav) = core.start(1, now).expect("start");
    assert_eq!(lav, 0);
    core.abort(t1).expect("abort");
    let (t2, snap, _) = core.start(1, now).expect("start");
    assert_eq!(snap.snapshot().base(), t1);
    merge(&mut core, &[]); // proposes t1
    assert_eq!(core.lav(), 0, "proposal not published yet");
    publish(&mut core);
    merge(&mut core, &[]); // confirms t1
    assert_eq!(core.lav(), t1);
    assert!(core.lav() <= snap.snapshot().base(), "t2's base");
    core.abort(t2).expect("abort");
}

#[test]
fn a_tid_its_live_node_stops_listing_is_recovered_alone() {
    let t0 = Instant::now();
    let mut core = core_with_block(1, 1, 100);
    let (kept, _, _) = core.start(4, t0).expect("start");
    let (lost, _, _) = core.start(4, t0).expect("start, answer lost");
    // The node keeps heartbeating, listing only the tid it knows about.
    for ms in [300u64, 600, 900] {
        let at = t0 + Duration::from_millis(ms);
        assert!(core.heartbeat(4, &[kept], at).is_empty());
        assert!(
            core.expire(at).is_empty(),
            "nothing expires before a full timeout at {ms} ms"
        );
    }
    // A heartbeat a full timeout after the lost tid's start still does not list it.
    let at = t0 + Duration::from_millis(1_100);
    assert!(core.heartbeat(4, &[kept], at).is_empty());
    assert_eq!(
        core.expire(at),
        vec![RecoveryGroup {
            node: Some(4),
            tids: vec![lost],
        }]
    );
    assert!(core.is_running(kept));
}

#[test]
fn an_idle_manager_gives_up_its_block_so_the_other_base_moves_on() {
    let now = Instant::now();
    let peer = |s: &shmdb_proto::commit::ManagerState| PeerState::from_state(s).expect("decode");
    let mut a = Core::new(config(1), 0);
    let mut b = Core::new(config(2), 0);
    a.add_leased(TidBlock { start: 1, end: 10 });
    b.add_leased(TidBlock { start: 11, end: 20 });
    publish(&mut a);
    publish(&mut b);
    let (ta, _, _) = a.start(1, now).expect("start");
    a.commit(ta).expect("commit");
    publish(&mut a); // makes the commit durable; the next record has the new floor
    let pa = publish(&mut a).state;
    assert_eq!(pa.floor, 2, "a may still issue 2..=10");
    // b works on; a's half-used block holds b's base.
    for _ in 0..5 {
        let (t, _, _) = b.start(1, now).expect("start");
        b.commit(t).expect("commit");
    }
    publish(&mut b);
    let pb = publish(&mut b).state;
    let ticket = b.merge_start();
    b.apply_merge(ticket, Some(20), &[peer(&pa), peer(&pb)]);
    assert_eq!(b.status().base, 1);
    // a merges twice without starting anything: the first round saw its own start, the
    // second finds it idle with others having leased past its block, and gives it up.
    for _ in 0..2 {
        let ticket = a.merge_start();
        a.apply_merge(ticket, Some(20), &[peer(&pa), peer(&pb)]);
    }
    let pa = publish(&mut a).state;
    assert_eq!(pa.floor, 21, "nothing of a's old block will be issued");
    let ticket = b.merge_start();
    b.apply_merge(ticket, Some(20), &[peer(&pa), peer(&pb)]);
    assert_eq!(b.status().base, 15, "b's own next tid 16 is the floor now");
    // A lease under way while the counter was read must not move the floor.
    let mut c = Core::new(config(3), 20);
    c.add_leased(TidBlock { start: 21, end: 30 });
    publish(&mut c);
    let ticket = c.merge_start();
    c.lease_started();
    c.apply_merge(ticket, Some(40), &[]);
    let ticket = c.merge_start();
    c.apply_merge(ticket, Some(40), &[]);
    c.lease_finished();
    assert_eq!(
        c.own_floor(),
        21,
        "the counter was read while a lease was under way"
    );
}

#[test]
fn a_later_publish_durable_first_makes_the_earlier_ones_commits_visible() {
    let now = Instant::now();
    let mut core = core_with_block(1, 1, 100);
    let (t1, _, _) = core.start(1, now).expect("start");
    let (t2, _, _) = core.start(1, now).expect("start");
    let wait1 = core.commit(t1).expect("commit");
    let first = core.prepare_flush("test", 0);
    let wait2 = core.commit(t2).expect("commit");
    let second = core.prepare_flush("test", 0);
    assert_eq!((first.seq, second.seq), (wait1, wait2));
    assert!(wait2 > wait1);
    assert_eq!(core.publishes_outstanding(), 2);
    // The second record holds t1 as well: it is complete, not a delta.
    let restored_from_second = {
        let mut c = Core::new(config(1), 0);
        c.restore(&second.state, now).expect("restore");
        c
    };
    assert_eq!(
        restored_from_second.finished_refusal(t1),
        Refusal::AlreadyCommitted(t1)
    );
    // The second write returns first: both commits become visible with it.
    core.flush_succeeded(&second);
    let (_, snap, _) = core.start(1, now).expect("start");
    assert!(snap.snapshot().is_visible(t1) && snap.snapshot().is_visible(t2));
    assert_eq!(core.stats().commits, 2);
    assert_eq!(core.publishes_outstanding(), 0);
    // The first returns late: nothing changes, nothing is counted twice.
    let before = core.status();
    core.flush_succeeded(&first);
    let after = core.status();
    assert_eq!(after.stats.commits, 2);
    assert_eq!((before.base, before.running), (after.base, after.running));
    assert!(!core.has_pending());
}

#[test]
fn a_failed_publish_is_covered_by_a_later_one_without_reusing_its_sequence_number() {
    let now = Instant::now();
    let mut core = core_with_block(1, 1, 100);
    let (t1, _, _) = core.start(1, now).expect("start");
    let (t2, _, _) = core.start(1, now).expect("start");
    let wait1 = core.commit(t1).expect("commit");
    let first = core.prepare_flush("test", 0);
    let (t3, _, _) = core.start(1, now).expect("start");
    core.commit(t3).expect("commit");
    let second = core.prepare_flush("test", 0);
    // The first write fails while the second is in flight: the second carries t1.
    core.flush_failed(first);
    assert!(!core.has_pending(), "the publish in flight covers it");
    core.flush_failed(second);
    assert!(
        core.has_pending(),
        "nothing in flight covers the failed commits"
    );
    let (_, snap, _) = core.start(1, now).expect("start");
    assert!(!snap.snapshot().is_visible(t1), "not durable");
    assert_eq!(
        core.commit(t1),
        Ok(core.next_flush_seq()),
        "still committing"
    );
    // A third publish makes both failed ones' commits durable; its sequence number is new,
    // so commits waiting for the first one's are acknowledged by it.
    let third = core.prepare_flush("test", 0);
    assert!(third.seq > wait1);
    assert!(
        third.commits.is_empty(),
        "the commits stay with their publishes"
    );
    core.flush_succeeded(&third);
    let (_, snap, _) = core.start(1, now).expect("start");
    assert!(snap.snapshot().is_visible(t1) && snap.snapshot().is_visible(t3));
    assert!(!snap.snapshot().is_visible(t2));
    assert_eq!(core.commit(t1), Err(Refusal::AlreadyCommitted(t1)));
    assert!(!core.has_pending());
}

#[test]
fn blocks_are_issued_from_only_once_a_record_naming_them_is_durable() {
    let now = Instant::now();
    let mut core = core_with_block(1, 1, 2);
    core.start(1, now).expect("start");
    core.start(1, now).expect("start");
    core.add_leased(TidBlock { start: 11, end: 12 });
    let first = core.prepare_flush("test", 0);
    core.add_leased(TidBlock { start: 21, end: 22 });
    let second = core.prepare_flush("test", 0);
    assert_eq!((first.blocks, second.blocks), (1, 2));
    // The first record (naming only 11..=12) is durable: that block, not the other.
    core.flush_succeeded(&first);
    let tids: Vec<u64> = (0..2)
        .map(|_| core.start(1, now).map(|r| r.0).expect("start"))
        .collect();
    assert_eq!(tids, vec![11, 12]);
    assert_eq!(core.start(1, now).map(|r| r.0), Err(StartError::NoTids));
    core.flush_succeeded(&second);
    assert_eq!(core.start(1, now).map(|r| r.0), Ok(21));
    // A late success of an older record after a newer one activates nothing twice.
    core.add_leased(TidBlock { start: 31, end: 32 });
    let third = core.prepare_flush("test", 0);
    let fourth = core.prepare_flush("test", 0);
    core.flush_succeeded(&fourth);
    core.flush_succeeded(&third);
    let tids: Vec<u64> = (0..3)
        .map(|_| core.start(1, now).map(|r| r.0).expect("start"))
        .collect();
    assert_eq!(tids, vec![22, 31, 32]);
    assert_eq!(core.start(1, now).map(|r| r.0), Err(StartError::NoTids));
}
