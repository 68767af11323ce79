//! Draining a node (four nodes, RF 2) while writers increment keys in every range: every
//! copy it holds is re-created elsewhere and its primaries are handed over, without a single
//! write failing; then it holds nothing and can be removed from the map.

mod common;

use std::time::Duration;

use common::load::{Ambiguity, Load, summarize, verify_store, written_keys};
use common::processes::{ClusterSpec, ProcessCluster, describe, fast_manager};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_node() {
    let mut cluster = ProcessCluster::start(ClusterSpec {
        nodes: 4,
        rf: 2,
        ranges: 4,
        manager: fast_manager(Duration::from_secs(1), 3),
        node_args: Vec::new(),
    })
    .await;
    let client = cluster
        .client(Duration::from_secs(5), Duration::from_secs(15))
        .await;
    let load = Load::start(&client, &cluster.tables, 6, 8, 64, Ambiguity::Forbid);
    let slots = load.slots.clone();
    load.wait_progress(300, Duration::from_secs(10), "before the drain")
        .await;

    let drained = 1;
    let before = cluster.map().await;
    assert!(
        before.ranges.iter().any(|r| r.primary() == Some(drained)),
        "{}",
        describe(&before)
    );
    cluster.manager.drain(drained);
    let map = cluster
        .wait_for_map(Duration::from_secs(15), "the node to be drained", |m| {
            m.ranges.iter().all(|r| !r.involves(drained))
        })
        .await;
    eprintln!("{}", describe(&map));
    let emptied = async {
        while !cluster
            .report(drained)
            .await
            .is_some_and(|r| r.ranges.is_empty())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), emptied)
        .await
        .expect("the drained node drops its copies");
    assert!(cluster.manager.is_empty(drained).await.expect("map"));
    load.wait_progress(300, Duration::from_secs(10), "after the drain")
        .await;
    let total = summarize(&load.stop().await, false);
    eprintln!("acknowledged {}", total.acked);

    let map = cluster
        .manager
        .remove_node(drained)
        .await
        .expect("remove the drained node");
    assert!(!map.nodes.contains_key(&drained));
    cluster.kill(drained).await;
    let (map, primaries) = cluster.wait_converged(Duration::from_secs(20), 2).await;
    assert!(map.ranges.iter().all(|r| !r.involves(drained)));
    verify_store(&client, &slots).await;
    let keys: u64 = primaries.iter().map(|s| s.keys).sum();
    assert_eq!(keys, written_keys(&slots));
}
