//! SIGSTOP of a range's primary, after which the range moves off every node the paused
//! primary replicated to (it is replaced, then its old backup is drained). Resumed, the old
//! primary still believes it leads the range and replicates a direct write to its old
//! backup, which no longer holds the range at all: that node must refuse, so the write is
//! not acknowledged and never becomes visible.

mod common;

use std::time::Duration;

use common::load::{Ambiguity, Load, decode, summarize, verify_store};
use common::processes::{ClusterSpec, ProcessCluster, describe, fast_manager};
use common::{put, run, storage};
use shmdb_placement::range_key;
use shmdb_proto::storage::{self as pb, op_result::Result as R};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_primary_range_moved_away() {
    let mut cluster = ProcessCluster::start(ClusterSpec {
        nodes: 3,
        rf: 2,
        ranges: 3,
        manager: fast_manager(Duration::from_millis(300), 2),
        node_args: Vec::new(),
    })
    .await;
    let client = cluster
        .client(Duration::from_millis(500), Duration::from_secs(15))
        .await;
    let load = Load::start(&client, &cluster.tables, 4, 6, 16, Ambiguity::Resolve);
    let slots = load.slots.clone();
    load.wait_progress(100, Duration::from_secs(10), "before the pause")
        .await;

    let before = cluster.map().await;
    let range = before
        .find(&range_key(cluster.tables[0], b""))
        .expect("a range holds the first table")
        .clone();
    let victim = range.primary().expect("the range has a primary");
    let backup = range.replicas[1];
    cluster.pause(victim);
    cluster
        .wait_for_map(
            Duration::from_secs(10),
            "the paused node to be replaced",
            |m| m.ranges.iter().all(|r| !r.involves(victim)),
        )
        .await;

    // Move everything off the old backup too: no node the paused primary knows as a
    // follower of the range holds it any more.
    cluster.manager.drain(backup);
    cluster
        .wait_for_map(
            Duration::from_secs(10),
            "the old backup to be drained",
            |m| m.ranges.iter().all(|r| !r.involves(backup)),
        )
        .await;
    let drained = async {
        loop {
            if cluster
                .report(backup)
                .await
                .is_some_and(|r| r.ranges.is_empty())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .expect("the drained node drops its copies");
    load.wait_progress(50, Duration::from_secs(10), "after the moves")
        .await;
    summarize(&load.stop().await, false);

    cluster.stop_manager().await;
    cluster.resume(victim);
    let slot = &slots[0];
    assert_eq!(slot.table, common::TABLE);
    let mut direct = storage(&cluster.addr(victim)).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(15),
        run(&mut direct, before.version, put(&slot.key, b"poison")),
    )
    .await
    .expect("the old primary answers");
    match answer {
        R::Error(e)
            if e.code == pb::ErrorCode::WrongOwner as i32
                || e.code == pb::ErrorCode::Unavailable as i32 =>
        {
            eprintln!("the old primary refused the write: {}", e.message);
        }
        other => panic!("the replaced primary acknowledged a write: {other:?}"),
    }
    let read = client
        .get(slot.table, slot.key.clone())
        .await
        .expect("read through the new primary");
    assert_ne!(read.as_ref().map(|v| &v.value[..]), Some(&b"poison"[..]));

    // Once placement settles (the drained node still draining), nobody holds the write.
    cluster.start_manager();
    let (map, _) = cluster.wait_converged(Duration::from_secs(20), 2).await;
    eprintln!("{}", describe(&map));
    assert!(map.ranges.iter().all(|r| !r.involves(backup)));
    let read = client
        .get(slot.table, slot.key.clone())
        .await
        .expect("read after placement settled");
    let value = decode(read.as_ref().map(|v| v.value.as_ref()));
    assert!(value.is_ok(), "the refused write became visible: {read:?}");
    verify_store(&client, &slots).await;
}
