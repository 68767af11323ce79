//! The operator's placement task end to end, without Kubernetes: two operators compete for
//! the database's Lease on a fake API server, the leader bootstraps the partition map into
//! the ConfigMap and runs placement against real storage nodes, drains a pod the autoscaler
//! wants gone, and hands over to the other operator (same map) when it stops.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::fake_api::FakeApi;
use common::nodes::Node;
use kube::Api;
use shmdb_operator::crd::SharedMemDatabase;
use shmdb_operator::fixtures::example_database;
use shmdb_operator::placement::{
    AddressFn, ConfigMapMapStore, PlacementSnapshot, PlacementSupervisor, StorageTarget,
};
use shmdb_placement_manager::{ManagerConfig, MapStore};

fn config() -> ManagerConfig {
    let mut config = ManagerConfig {
        rpc_timeout: Duration::from_millis(300),
        dead_after_failures: 3,
        catch_up_timeout: Duration::from_secs(10),
        ..ManagerConfig::default()
    };
    config.planner.split_bytes = 0;
    config
}

async fn wait(
    what: &str,
    sup: &PlacementSupervisor,
    db: &SharedMemDatabase,
    cond: impl Fn(&PlacementSnapshot) -> bool,
) -> PlacementSnapshot {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let snapshot = sup.snapshot(db);
        if cond(&snapshot) {
            return snapshot;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {snapshot:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_bootstraps_drains_and_hands_over() {
    let api = FakeApi::default();
    let mut nodes = Vec::new();
    for ordinal in 0..4u64 {
        nodes.push(Node::start(ordinal + 1).await);
    }
    let addresses: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let address: AddressFn = Arc::new(move |_, ordinal| {
        addresses
            .get(usize::try_from(ordinal).unwrap_or(usize::MAX))
            .cloned()
            .unwrap_or_default()
    });
    let operator = |holder: &str| {
        PlacementSupervisor::new(
            api.client(),
            holder,
            config(),
            Duration::from_millis(50),
            None,
        )
        .with_addresses(address.clone())
        .with_lease_seconds(3)
    };
    let (a, b) = (operator("operator-a"), operator("operator-b"));
    let mut db = example_database("db", "ns");
    db.spec.ranges.initial = 4;
    db.spec.ranges.split_bytes = 0;
    let all = StorageTarget {
        stateful_set_replicas: 4,
        draining: Vec::new(),
    };
    a.set_target(&db, all.clone());
    b.set_target(&db, all.clone());

    // Whoever wins the Lease bootstraps the map; the other stays a follower.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (leader, follower) = loop {
        let settled = |s: &PlacementSnapshot| s.map_version.is_some() && s.under_replicated == 0;
        if settled(&a.snapshot(&db)) {
            break (&a, &b);
        }
        if settled(&b.snapshot(&db)) {
            break (&b, &a);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader bootstrapped the map"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first = leader.snapshot(&db);
    assert!(first.leader);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!follower.snapshot(&db).leader, "one leader at a time");
    let store = ConfigMapMapStore::new(
        Api::namespaced(api.client(), "ns"),
        "db-partition-map",
        None,
        BTreeMap::new(),
    );
    let map = store
        .load()
        .await
        .expect("load")
        .expect("map in the ConfigMap");
    assert_eq!((map.nodes.len(), map.ranges.len()), (4, 4));
    assert!(first.memory.is_some_and(|m| m.nodes == 4), "{first:?}");

    // The autoscaler wants pod 3 (node 4) gone: drained, then removable.
    let shrink = StorageTarget {
        stateful_set_replicas: 4,
        draining: vec![3],
    };
    a.set_target(&db, shrink.clone());
    b.set_target(&db, shrink.clone());
    let drained = wait("pod 3 drained", leader, &db, |s| {
        s.removable.contains(&3) && s.under_replicated == 0
    })
    .await;
    let map = store.load().await.expect("load").expect("map");
    assert!(!map.nodes.contains_key(&4), "node 4 left the map");
    assert!(map.ranges.iter().all(|r| r.replicas.len() == 2));

    // Operator a stops (released its Lease): b takes over with the same map.
    a.forget(&db).await;
    let taken = wait("b leads", &b, &db, |s| s.leader && s.map_version.is_some()).await;
    assert!(
        taken.map_version >= drained.map_version,
        "{taken:?} vs {drained:?}"
    );
    b.forget(&db).await;
    drop(nodes);
}

/// A database relabelled out of operator a's selector: `retain` stops a's task for it, the
/// Lease is released at once (b leads long before the 30 s Lease could expire), and a's
/// other database keeps its placement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_leaving_the_operator_hands_its_lease_over() {
    let api = FakeApi::default();
    // No storage node answers: rounds fail, but leadership is what this test is about.
    let address: AddressFn = Arc::new(|_, _| "127.0.0.1:1".to_string());
    let operator = |holder: &str| {
        PlacementSupervisor::new(
            api.client(),
            holder,
            config(),
            Duration::from_millis(50),
            None,
        )
        .with_addresses(address.clone())
        .with_lease_seconds(30)
    };
    let (a, b) = (operator("operator-a"), operator("operator-b"));
    let moved = example_database("moved", "ns");
    let stays = example_database("stays", "ns");
    let target = StorageTarget {
        stateful_set_replicas: 1,
        draining: Vec::new(),
    };
    a.set_target(&moved, target.clone());
    a.set_target(&stays, target.clone());
    wait("a leads moved", &a, &moved, |s| s.leader).await;
    wait("a leads stays", &a, &stays, |s| s.leader).await;
    b.set_target(&moved, target.clone());

    let stopped = a
        .retain(|namespace, name| namespace == "ns" && name != "moved")
        .await;
    assert_eq!(stopped, 1);
    assert_eq!(
        a.snapshot(&moved),
        PlacementSnapshot::default(),
        "a's task for moved is gone"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    wait("b leads moved", &b, &moved, |s| {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b waited for the Lease to expire"
        );
        s.leader
    })
    .await;
    let lease = api
        .objects
        .lock()
        .get("/apis/coordination.k8s.io/v1/namespaces/ns/leases/moved-placement")
        .cloned()
        .expect("moved's Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "operator-b");
    assert!(
        a.snapshot(&stays).leader,
        "a still leads the database it kept"
    );
    assert_eq!(a.retain(|_, _| true).await, 0);
    a.forget(&stays).await;
    b.forget(&moved).await;
}
