//! A learner misses a write that commits without it (learners are outside the
//! acknowledgement set), is promoted to backup, and is then made primary. The commit
//! watermark of the old primary already covers that write, so a hand-over that waited only
//! for the watermark would pass the range to a node without it: the new primary would serve
//! the old value and build on it. The old primary must wait for the new one's own
//! acknowledgement before it lets go.
//!
//! The placement manager is stopped and the maps are installed by hand, so the learner can
//! be paused exactly while the write commits.

mod common;

use std::time::Duration;

use common::admin;
use common::processes::{ClusterSpec, ProcessCluster, fast_manager};
use shmdb_placement::{NodeId, PartitionMap, Step, apply};

/// Installs `map` on one node.
async fn install_on(cluster: &ProcessCluster, node: NodeId, map: &PartitionMap) {
    admin(&cluster.addr(node))
        .await
        .install_map(map.to_proto())
        .await
        .unwrap_or_else(|e| panic!("install map v{} on node {node}: {e}", map.version));
}

/// Whether `primary` reports `node` as a caught-up follower of `range`.
async fn caught_up(cluster: &ProcessCluster, primary: NodeId, range: u64, node: NodeId) -> bool {
    cluster.report(primary).await.is_some_and(|report| {
        report
            .ranges
            .iter()
            .filter(|r| r.range_id == range)
            .flat_map(|r| &r.followers)
            .any(|f| f.node == node && f.caught_up)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_made_primary_has_every_write_committed_without_it() {
    let mut cluster = ProcessCluster::start(ClusterSpec {
        nodes: 3,
        rf: 2,
        ranges: 1,
        manager: fast_manager(Duration::from_millis(500), 3),
        node_args: Vec::new(),
    })
    .await;
    cluster.stop_manager().await;
    let client = cluster
        .client(Duration::from_secs(2), Duration::from_secs(20))
        .await;
    let table = cluster.tables[0];
    client.put(table, "k", "v1").await.expect("first write");

    let map = cluster.map().await;
    let range = map.ranges[0].clone();
    let (old_primary, backup) = (range.replicas[0], range.replicas[1]);
    let learner = *cluster
        .live()
        .iter()
        .find(|n| !range.involves(**n))
        .expect("a node outside the range");

    // The learner gets a copy and catches up.
    let with_learner = apply(
        &map,
        &Step::AddLearner {
            range: range.id,
            node: learner,
        },
    )
    .expect("add learner");
    for node in [old_primary, backup, learner] {
        install_on(&cluster, node, &with_learner).await;
    }
    common::wait_until(Duration::from_secs(10), "the learner to catch up", || {
        caught_up(&cluster, old_primary, range.id, learner)
    })
    .await;

    // Paused, it misses a write that commits on the primary and the backup alone.
    cluster.pause(learner);
    client
        .put(table, "k", "v2")
        .await
        .expect("a write that does not wait for the learner");

    // Promoted to backup, then made primary, while it still lacks that write.
    let promoted = apply(
        &with_learner,
        &Step::PromoteLearner {
            range: range.id,
            node: learner,
        },
    )
    .expect("promote learner");
    for node in [old_primary, backup] {
        install_on(&cluster, node, &promoted).await;
    }
    let transferred = apply(
        &promoted,
        &Step::TransferPrimary {
            range: range.id,
            to: learner,
        },
    )
    .expect("transfer primary");
    let mut hand_over = {
        let addr = cluster.addr(old_primary);
        let map = transferred.clone();
        tokio::spawn(async move { admin(&addr).await.install_map(map.to_proto()).await })
    };
    // The old primary goes first and hands over; it cannot while the node taking over lacks
    // the write (within the replication timeout, 5 s, after which it would fence itself).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut hand_over)
            .await
            .is_err(),
        "the old primary let go of the range while the new primary lacked an acknowledged write"
    );
    cluster.resume(learner);
    hand_over
        .await
        .expect("hand-over task")
        .expect("the old primary installs the map once the new primary caught up");
    for node in [backup, learner] {
        install_on(&cluster, node, &transferred).await;
    }

    // The new primary serves the acknowledged value.
    let fresh = cluster
        .client(Duration::from_secs(2), Duration::from_secs(20))
        .await;
    let value = fresh
        .get(table, "k")
        .await
        .expect("read from the new primary")
        .expect("the key exists");
    assert_eq!(value.value.as_ref(), b"v2");
    // And it keeps taking writes on top of it.
    fresh
        .put(table, "k", "v3")
        .await
        .expect("write at the new primary");
    let value = fresh.get(table, "k").await.expect("read").expect("exists");
    assert_eq!(value.value.as_ref(), b"v3");
}
