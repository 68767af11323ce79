//! The Kubernetes-backed map store and the placement Lease: compare-and-swap on
//! resourceVersion against a stateful fake API server (many clients), and the exact requests
//! against the scripted mock.

mod common;

use std::collections::BTreeMap;

use common::fake_api::FakeApi;
use common::mock_api::{self, expect};
use http::{Method, StatusCode};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use prost::Message;
use serde_json::json;
use shmdb_operator::placement::{ConfigMapMapStore, LeaseLock, MAP_KEY};
use shmdb_placement::PartitionMap;
use shmdb_placement_manager::{MapStore, StoreError};

fn map(version: u64) -> PartitionMap {
    let nodes: BTreeMap<u64, String> =
        [(1, "sn-0:7400".to_string()), (2, "sn-1:7400".to_string())].into();
    let mut m = PartitionMap::bootstrap(nodes, 2, 4);
    m.version = version;
    m
}

fn store(client: kube::Client) -> ConfigMapMapStore {
    ConfigMapMapStore::new(
        Api::namespaced(client, "ns"),
        "db-partition-map",
        None,
        BTreeMap::new(),
    )
}

#[tokio::test]
async fn the_configmap_store_is_compare_and_swap_and_survives_a_restart() {
    let api = FakeApi::default();
    let first = store(api.client());
    assert!(first.load().await.expect("load").is_none());
    first.compare_and_swap(None, &map(1)).await.expect("create");
    assert!(matches!(
        first.compare_and_swap(None, &map(2)).await,
        Err(StoreError::Conflict { found: Some(1), .. })
    ));
    first
        .compare_and_swap(Some(1), &map(2))
        .await
        .expect("swap");
    assert!(matches!(
        first.compare_and_swap(Some(1), &map(3)).await,
        Err(StoreError::Conflict { found: Some(2), .. })
    ));
    // A new manager process (new store, new client) sees the same map.
    let restarted = store(api.client());
    assert_eq!(restarted.load().await.expect("load"), Some(map(2)));
}

#[tokio::test]
async fn racing_writers_never_lose_an_update() {
    let api = FakeApi::default();
    store(api.client())
        .compare_and_swap(None, &map(1))
        .await
        .expect("create");
    // Eight managers each add their own node with read-modify-CAS, retrying on conflict.
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let store = store(api.client());
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            loop {
                let current = store.load().await.expect("load").expect("a map");
                let mut next = current.clone();
                next.nodes
                    .insert(100 + writer, format!("extra-{writer}:7400"));
                next.version = current.version + 1;
                match store.compare_and_swap(Some(current.version), &next).await {
                    Ok(()) => return conflicts,
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("store failed: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let last = store(api.client())
        .load()
        .await
        .expect("load")
        .expect("map");
    assert_eq!(last.version, 9, "every writer's swap landed exactly once");
    for writer in 0..8u64 {
        assert!(
            last.nodes.contains_key(&(100 + writer)),
            "lost update of writer {writer}"
        );
    }
}

#[tokio::test]
async fn a_swap_carries_the_resource_version_and_a_409_is_a_conflict() {
    let (client, mut handle) = mock_api::client();
    let stored = map(3);
    let configmap = move |rv: &str| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "db-partition-map", "namespace": "ns", "resourceVersion": rv},
            "binaryData": {MAP_KEY: k8s_openapi::ByteString(stored.to_proto().encode_to_vec())},
        })
    };
    let server = tokio::spawn(async move {
        let path = "/api/v1/namespaces/ns/configmaps/db-partition-map";
        expect(&mut handle, Method::GET, path)
            .await
            .respond(StatusCode::OK, &configmap("7"));
        let put = expect(&mut handle, Method::PUT, path).await;
        assert_eq!(
            put.body["metadata"]["resourceVersion"], "7",
            "the precondition"
        );
        assert!(put.body["binaryData"][MAP_KEY].is_string());
        assert_eq!(put.body["data"]["version"], "4");
        put.respond(
            StatusCode::CONFLICT,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "changed"}),
        );
        // The store re-reads to report what is stored now.
        expect(&mut handle, Method::GET, path)
            .await
            .respond(StatusCode::OK, &configmap("8"));
    });
    let result = store(client).compare_and_swap(Some(3), &map(4)).await;
    assert!(
        matches!(
            result,
            Err(StoreError::Conflict {
                expected: Some(3),
                found: Some(3)
            })
        ),
        "{result:?}"
    );
    server.await.expect("scenario");
}

#[tokio::test]
async fn one_leader_at_a_time_and_takeover_after_expiry() {
    let api = FakeApi::default();
    let lock = |holder: &str| {
        LeaseLock::new(
            Api::namespaced(api.client(), "ns"),
            "db-placement",
            holder,
            15,
            None,
        )
    };
    let (a, b) = (lock("operator-a"), lock("operator-b"));
    let t0 = Timestamp::now();
    assert!(a.try_acquire(t0).await.expect("a acquires"));
    assert!(
        !b.try_acquire(t0).await.expect("b asks"),
        "a holds the lease"
    );
    let t1 = t0 + SignedDuration::from_secs(10);
    assert!(a.try_acquire(t1).await.expect("a renews"));
    assert!(
        !b.try_acquire(t1 + SignedDuration::from_secs(10))
            .await
            .expect("b asks"),
        "renewed at t1"
    );
    let t2 = t1 + SignedDuration::from_secs(16);
    assert!(
        b.try_acquire(t2).await.expect("b takes over"),
        "a's lease expired"
    );
    assert!(!a.try_acquire(t2).await.expect("a asks"), "b leads now");
    let stored = api
        .objects
        .lock()
        .get("/apis/coordination.k8s.io/v1/namespaces/ns/leases/db-placement")
        .cloned()
        .expect("lease stored");
    assert_eq!(stored["spec"]["holderIdentity"], "operator-b");
    assert_eq!(stored["spec"]["leaseTransitions"], 1);
    b.release().await.expect("release");
    assert!(
        a.try_acquire(t2).await.expect("a acquires"),
        "a released lease is free at once"
    );
}

#[tokio::test]
async fn racing_candidates_elect_exactly_one() {
    let api = FakeApi::default();
    let now = Timestamp::now();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let lock = LeaseLock::new(
            Api::namespaced(api.client(), "ns"),
            "db-placement",
            format!("op-{i}"),
            15,
            None,
        );
        tasks.push(tokio::spawn(async move {
            lock.try_acquire(now).await.expect("acquire")
        }));
    }
    let mut leaders = 0;
    for t in tasks {
        leaders += usize::from(t.await.expect("candidate"));
    }
    assert_eq!(leaders, 1);
}
