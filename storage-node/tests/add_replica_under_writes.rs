//! A third node joins a two-node cluster (RF 2, four ranges) while writers increment keys in
//! every range: the placement manager moves copies onto it (learner: snapshot plus the log
//! tail, then promotion, then the old copy goes) without failing any write, and the new
//! copies end identical to the others.

mod common;

use std::time::Duration;

use common::load::{Ambiguity, Load, summarize, verify_store, written_keys};
use common::processes::{ClusterSpec, ProcessCluster, describe, fast_manager};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_replica_under_writes() {
    let mut cluster = ProcessCluster::start(ClusterSpec {
        nodes: 2,
        rf: 2,
        ranges: 4,
        manager: fast_manager(Duration::from_secs(1), 3),
        node_args: Vec::new(),
    })
    .await;
    let client = cluster
        .client(Duration::from_secs(5), Duration::from_secs(15))
        .await;
    let load = Load::start(&client, &cluster.tables, 6, 8, 256, Ambiguity::Forbid);
    let slots = load.slots.clone();
    load.wait_progress(300, Duration::from_secs(10), "before the new node")
        .await;

    let joined = cluster.add_node().await;
    let acked_at_join = load.acked();
    // Eight copies on three nodes: the new node ends with two, copied while writes go on.
    let map = cluster
        .wait_for_map(
            Duration::from_secs(15),
            "ranges to move to the new node",
            |m| {
                m.ranges
                    .iter()
                    .all(|r| r.replicas.len() == 2 && r.learners.is_empty())
                    && m.ranges.iter().filter(|r| r.involves(joined)).count() >= 2
            },
        )
        .await;
    assert!(
        load.acked() > acked_at_join,
        "no write was acknowledged while the copies were made"
    );
    eprintln!("{}", describe(&map));
    load.wait_progress(300, Duration::from_secs(10), "after the moves")
        .await;
    let total = summarize(&load.stop().await, false);
    eprintln!("acknowledged {}", total.acked);

    let (map, primaries) = cluster.wait_converged(Duration::from_secs(20), 2).await;
    assert!(
        map.ranges
            .iter()
            .filter(|r| r.replicas.contains(&joined))
            .count()
            >= 2,
        "{}",
        describe(&map)
    );
    verify_store(&client, &slots).await;
    let keys: u64 = primaries.iter().map(|s| s.keys).sum();
    assert_eq!(keys, written_keys(&slots));
}
