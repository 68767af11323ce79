//! SIGSTOP of a range's primary: the placement manager replaces it (a backup is promoted,
//! the paused node leaves the range) and writes go on through the new primary. When the
//! old primary is resumed, it still believes it leads the range; a write sent straight to it
//! with the old map version must not be acknowledged, and must never become visible.

mod common;

use std::time::Duration;

use common::load::{Ambiguity, Load, decode, summarize, verify_store};
use common::processes::{ClusterSpec, ProcessCluster, describe, fast_manager};
use common::{put, run, storage};
use shmdb_placement::range_key;
use shmdb_proto::storage::{self as pb, op_result::Result as R};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_paused_cannot_write() {
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
    cluster.pause(victim);

    // The manager gives up on the paused node: a backup leads the range, the node is out.
    let after = cluster
        .wait_for_map(
            Duration::from_secs(10),
            "the paused node to be replaced",
            |m| m.ranges.iter().all(|r| !r.involves(victim)),
        )
        .await;
    let replaced = after.range(range.id).expect("the range still exists");
    assert!(replaced.epoch > range.epoch, "{}", describe(&after));
    load.wait_progress(100, Duration::from_secs(10), "through the new primary")
        .await;
    let total = summarize(&load.stop().await, false);
    eprintln!(
        "acknowledged {}, ambiguous applied {}, ambiguous not applied {}",
        total.acked, total.ambiguous_applied, total.ambiguous_not_applied
    );

    // Resume the old primary with the manager quiet, so nothing tells it that it was
    // replaced, and write to it directly as a client with the old map would.
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

    // The new primary never shows it, neither now nor once placement has settled.
    let read = client
        .get(slot.table, slot.key.clone())
        .await
        .expect("read through the new primary");
    assert_ne!(read.as_ref().map(|v| &v.value[..]), Some(&b"poison"[..]));
    cluster.start_manager();
    let (map, _) = cluster.wait_converged(Duration::from_secs(20), 2).await;
    eprintln!("{}", describe(&map));
    let read = client
        .get(slot.table, slot.key.clone())
        .await
        .expect("read after placement settled");
    let value = decode(read.as_ref().map(|v| v.value.as_ref()));
    assert!(value.is_ok(), "the refused write became visible: {read:?}");
    verify_store(&client, &slots).await;
}
