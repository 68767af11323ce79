//! SIGKILL of a node that comes straight back, empty and under a new id, at the same address
//! (a rescheduled pod), before the placement manager has declared the old id lost. The
//! address answers again, but for another node: the manager must not take those answers for
//! the lost node while it waits for a copy to catch up, or repairs stall for the whole
//! catch-up timeout. RF is restored promptly, and no acknowledged write is lost.

mod common;

use std::time::Duration;

use common::load::{Ambiguity, Load, summarize, verify_store, written_keys};
use common::processes::{ClusterSpec, ProcessCluster, describe, fast_manager};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarted_at_same_address() {
    let mut manager = fast_manager(Duration::from_millis(500), 3);
    // The production default: a stalled catch-up would outlast every wait below.
    manager.catch_up_timeout = Duration::from_secs(30);
    let mut cluster = ProcessCluster::start(ClusterSpec {
        nodes: 3,
        rf: 2,
        ranges: 4,
        manager,
        node_args: Vec::new(),
    })
    .await;
    let client = cluster
        .client(Duration::from_secs(2), Duration::from_secs(15))
        .await;
    // Every backup holds its first copy before the kill: a bootstrap range whose primary
    // dies before that has no trustworthy copy left and stays unavailable.
    cluster.wait_converged(Duration::from_secs(20), 2).await;
    let load = Load::start(&client, &cluster.tables, 4, 6, 16, Ambiguity::Resolve);
    let slots = load.slots.clone();
    load.wait_progress(200, Duration::from_secs(10), "before the restart")
        .await;

    let victim = 1;
    let addr = cluster.nodes[&victim].addr;
    cluster.kill(victim).await;
    let fresh = cluster.restart_at(addr).await;
    let map = cluster
        .wait_for_map(Duration::from_secs(10), "RF to be restored", |m| {
            m.ranges
                .iter()
                .all(|r| r.replicas.len() == 2 && r.learners.is_empty() && !r.involves(victim))
        })
        .await;
    assert!(
        map.ranges.iter().any(|r| r.involves(fresh)),
        "{}",
        describe(&map)
    );
    load.wait_progress(200, Duration::from_secs(10), "after the restart")
        .await;
    let total = summarize(&load.stop().await, false);
    eprintln!(
        "acknowledged {}, ambiguous applied {}, ambiguous not applied {}",
        total.acked, total.ambiguous_applied, total.ambiguous_not_applied
    );

    // The lost id holds nothing and can be forgotten; the replicas agree.
    assert!(cluster.manager.is_empty(victim).await.expect("map"));
    cluster
        .manager
        .remove_node(victim)
        .await
        .expect("forget the lost node");
    let (_, primaries) = cluster.wait_converged(Duration::from_secs(20), 2).await;
    verify_store(&client, &slots).await;
    let keys: u64 = primaries.iter().map(|s| s.keys).sum();
    assert_eq!(keys, written_keys(&slots));
}
