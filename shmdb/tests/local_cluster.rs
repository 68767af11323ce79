//! The local cluster behind `shmdb up`: in-process and supervised child processes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shmdb::cluster::{ClusterOptions, LocalCluster, StorageProcess};
use shmdb_placement::tables::KV;
use shmdb_store_client::{StoreClient, StoreClientConfig};

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_cluster_serves_and_reports_status() {
    let cluster = LocalCluster::start(&ClusterOptions::ephemeral(3, 2))
        .await
        .expect("start");
    let client = StoreClient::connect(StoreClientConfig::with_seeds(cluster.seeds()))
        .await
        .expect("client");
    for i in 0..200u32 {
        client
            .put(
                KV,
                Bytes::from(format!("k{i:03}")),
                Bytes::from(i.to_string()),
            )
            .await
            .expect("put");
    }
    let got = client
        .get(KV, Bytes::from_static(b"k042"))
        .await
        .expect("get");
    assert_eq!(got.map(|v| v.value), Some(Bytes::from_static(b"42")));
    let status = shmdb::status::gather(&cluster.seeds())
        .await
        .expect("status");
    let text = status.render();
    assert!(text.contains("storage nodes 3/3 healthy"), "{text}");
    assert!(text.contains("under-replicated 0"), "{text}");
    assert_eq!(status.map.ranges.len(), 4);
    assert!(status.map.ranges.iter().all(|r| r.replicas.len() == 2));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_refused() {
    let mut options = ClusterOptions::ephemeral(2, 3);
    let err = LocalCluster::start(&options).await.expect_err("rf > nodes");
    assert!(err.to_string().contains("replication-factor"), "{err}");
    options.storage_nodes = 0;
    assert!(LocalCluster::start(&options).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_child_is_restarted_empty_and_refilled_without_losing_writes() {
    let mut options = ClusterOptions::ephemeral(3, 2);
    options.processes = true;
    options.placement_interval_ms = 50;
    let cluster = LocalCluster::start(&options).await.expect("start");
    let client = StoreClient::connect(StoreClientConfig::with_seeds(cluster.seeds()))
        .await
        .expect("client");
    for i in 0..300u32 {
        client
            .put(
                KV,
                Bytes::from(format!("k{i:03}")),
                Bytes::from(i.to_string()),
            )
            .await
            .expect("put");
    }
    // SIGKILL node 1 (it holds replicas of some ranges).
    let victim = {
        let mut nodes = cluster.nodes.lock();
        let StorageProcess::Child { id, child, .. } = &mut nodes[0] else {
            panic!("expected child processes")
        };
        child.start_kill().expect("kill");
        *id
    };
    // The supervisor restarts it under a new id; the manager restores RF and forgets the
    // lost id.
    wait_for(
        "replacement and RF restored",
        Duration::from_secs(30),
        || async {
            let Ok(map) = cluster.map().await else {
                return false;
            };
            !map.nodes.contains_key(&victim)
                && map.nodes.len() == 3
                && map
                    .ranges
                    .iter()
                    .all(|r| r.replicas.len() == 2 && r.learners.is_empty())
        },
    )
    .await;
    let map = cluster.map().await.expect("map");
    let new_id = map.nodes.keys().max().copied().unwrap_or_default();
    assert!(new_id > 3, "restarted node should have a new id: {map:?}");
    // Every write is still there.
    for i in 0..300u32 {
        let got = client
            .get(KV, Bytes::from(format!("k{i:03}")))
            .await
            .expect("get");
        assert_eq!(
            got.map(|v| v.value),
            Some(Bytes::from(i.to_string())),
            "k{i:03}"
        );
    }
    cluster.shutdown().await;
}
