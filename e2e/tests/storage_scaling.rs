//! The storage tier changes size through the placement manager: a new node is registered
//! and ranges are rebalanced onto it; a node leaves only after it is drained (visible as
//! `status.storage.draining`). Losing a storage node raises UnderReplicated until its pod
//! is replaced and the copies are restored, with every row written before still readable.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::{Value, json};
use shmdb_operator::crd::{CONDITION_UNDER_REPLICATED, SharedMemDatabase};
use shmdb_operator::placement::ConfigMapMapStore;
use shmdb_operator::resources::{Names, storage_node_address};
use shmdb_placement::PartitionMap;
use shmdb_placement::tables::KV;
use shmdb_placement_manager::MapStore;
use shmdb_store_client::{StoreClient, StoreClientConfig};

use common::cluster::Cluster;
use common::data_plane::StorageFollower;
use common::database::{self, READY_TIMEOUT, condition, describe, example};
use common::wait;

/// The partition map as the placement manager stored it.
async fn partition_map(cluster: &Cluster, db: &SharedMemDatabase) -> Result<PartitionMap> {
    let names = Names::of(db);
    let store = ConfigMapMapStore::new(
        Api::namespaced(cluster.client.clone(), &names.namespace),
        names.partition_map(),
        None,
        BTreeMap::new(),
    );
    store
        .load()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("no partition map stored")
}

/// Rows written before a failure and read back after it.
const ROWS: usize = 200;

/// A store client seeded with the database's storage nodes (the addresses the partition
/// map records), or `None` where the host cannot reach them (real pods).
async fn store(ns: &str, name: &str, nodes: i32) -> Result<Option<StoreClient>> {
    if !common::data_plane::host_mode() {
        eprintln!("pods are real: the host cannot reach storage nodes; rows are not checked");
        return Ok(None);
    }
    let names = Names {
        database: name.to_string(),
        namespace: ns.to_string(),
    };
    let seeds = (0..nodes).map(|o| storage_node_address(&names, o));
    let client = StoreClient::connect(StoreClientConfig::with_seeds(seeds))
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the storage nodes: {e}"))?;
    Ok(Some(client))
}

fn row(i: usize) -> (String, String) {
    (format!("row-{i:04}"), format!("value of row {i}"))
}

/// Replicas per node id.
fn replicas_per_node(map: &PartitionMap) -> BTreeMap<u64, usize> {
    let mut count = BTreeMap::new();
    for range in &map.ranges {
        for node in &range.replicas {
            *count.entry(*node).or_default() += 1;
        }
    }
    count
}

fn elastic_manifest(name: &str, storage: i32) -> Result<Value> {
    let mut manifest = example("replicated")?;
    manifest["metadata"]["name"] = json!(name);
    manifest["spec"]["storage"]["replicas"] = json!(storage);
    Ok(manifest)
}

async fn patch_storage(cluster: &Cluster, ns: &str, name: &str, replicas: i32) -> Result<()> {
    let patch = json!({"spec": {"storage": {"replicas": replicas}}}).to_string();
    cluster
        .kubectl_ok(
            &[
                "patch",
                "smdb",
                name,
                "-n",
                ns,
                "--type=merge",
                "-p",
                &patch,
            ],
            None,
        )
        .await?;
    Ok(())
}

#[tokio::test]
#[cfg_attr(
    not(e2e_cluster),
    ignore = "needs a cluster: SHMDB_E2E=1 (e2e/run.sh) or KUBECONFIG"
)]
async fn storage_scale_out_rebalances_and_scale_in_drains_first() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("storage-scale").await?;
    let name = "elastic";
    let follower = StorageFollower::start(&cluster, &ns.name, name).await?;
    let out = database::apply(&cluster, &ns.name, &elastic_manifest(name, 2)?).await?;
    ensure!(out.ok, "kubectl apply failed: {}", out.stderr);
    let db = database::wait_ready(&cluster, &ns.name, name, READY_TIMEOUT).await?;
    let before = partition_map(&cluster, &db).await?;
    ensure!(
        before.nodes.len() == 2,
        "bootstrap map nodes {:?}",
        before.nodes
    );

    // Scale out: node 3 joins the map and receives copies.
    patch_storage(&cluster, &ns.name, name, 3).await?;
    let api = database::api(&cluster, &ns.name);
    let map = wait::until(
        "node 3 registered, holding copies, database Ready",
        READY_TIMEOUT,
        || async {
            let db = api.get(name).await?;
            let map = partition_map(&cluster, &db).await?;
            let per_node = replicas_per_node(&map);
            let ready = database::wait_ready(&cluster, &ns.name, name, Duration::ZERO)
                .await
                .is_ok();
            Ok(if ready && per_node.get(&3).is_some_and(|n| *n > 0) {
                Ok(map)
            } else {
                Err(format!("copies per node {per_node:?}; {}", describe(&db)))
            })
        },
    )
    .await?;
    ensure!(map.version > before.version, "the map did not change");
    ensure!(
        map.ranges.iter().all(|r| r.replicas.len() == 2),
        "ranges off the replication factor after the rebalance: {:?}",
        map.ranges
    );

    // Scale in: ordinal 2 (node 3) is drained before its pod goes.
    patch_storage(&cluster, &ns.name, name, 2).await?;
    let saw_draining = Arc::new(AtomicBool::new(false));
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns.name);
    wait::until("node 3 drained and its pod gone", READY_TIMEOUT, || {
        let saw = saw_draining.clone();
        let api = api.clone();
        let pods = pods.clone();
        async move {
            let db = api.get(name).await?;
            let storage = db.status.as_ref().and_then(|s| s.storage.clone());
            if storage.as_ref().is_some_and(|s| s.draining == vec![2]) {
                saw.store(true, Ordering::Relaxed);
            }
            let pod_left = pods.get_opt(&format!("{name}-storage-2")).await?.is_some();
            let done = storage
                .as_ref()
                .is_some_and(|s| s.draining.is_empty() && s.replicas == 2);
            Ok(if done && !pod_left && saw.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err(format!(
                    "storage {storage:?}, pod 2 present {pod_left}, draining [2] seen {}",
                    saw.load(Ordering::Relaxed)
                ))
            })
        }
    })
    .await?;
    let db = database::wait_ready(&cluster, &ns.name, name, READY_TIMEOUT).await?;
    let map = partition_map(&cluster, &db).await?;
    ensure!(
        !map.nodes.contains_key(&3),
        "node 3 still in the map after scale-in: {:?}",
        map.nodes
    );
    ensure!(
        map.ranges
            .iter()
            .all(|r| r.replicas.len() == 2 && !r.replicas.contains(&3)),
        "ranges after the drain: {:?}",
        map.ranges
    );
    follower.stop().await;
    ns.delete().await
}

#[tokio::test]
#[cfg_attr(
    not(e2e_cluster),
    ignore = "needs a cluster: SHMDB_E2E=1 (e2e/run.sh) or KUBECONFIG"
)]
async fn lost_storage_node_raises_under_replicated_until_its_pod_is_replaced() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("storage-loss").await?;
    let name = "fragile";
    let follower = StorageFollower::start(&cluster, &ns.name, name).await?;
    // Two copies on two nodes: a lost node cannot be replaced by another one.
    let out = database::apply(&cluster, &ns.name, &elastic_manifest(name, 2)?).await?;
    ensure!(out.ok, "kubectl apply failed: {}", out.stderr);
    database::wait_ready(&cluster, &ns.name, name, READY_TIMEOUT).await?;
    let client = store(&ns.name, name, 2).await?;
    if let Some(client) = &client {
        for i in 0..ROWS {
            let (key, value) = row(i);
            client
                .put(KV, key.into_bytes(), value.into_bytes())
                .await
                .map_err(|e| anyhow::anyhow!("writing row {i}: {e}"))?;
        }
    }

    ensure!(
        follower.crash(name, 1) || !common::data_plane::host_mode(),
        "no storage process for {name}-storage-1 (running: {:?})",
        follower.running()
    );
    if !common::data_plane::host_mode() {
        // Real pods: the container dies with its pod; deletion below does both.
        database::delete_pod(&cluster, &ns.name, &format!("{name}-storage-1")).await?;
    }
    // A simulated pod stays Ready when its process dies, so nothing wakes the reconciler
    // the way a failing readiness probe would; an annotation does.
    cluster
        .kubectl_ok(
            &[
                "annotate",
                "--overwrite",
                "smdb",
                name,
                "-n",
                &ns.name,
                "e2e.shmdb.io/poke=crash",
            ],
            None,
        )
        .await?;
    let api = database::api(&cluster, &ns.name);
    wait::until("UnderReplicated=True", Duration::from_secs(90), || async {
        let db = api.get(name).await?;
        let under = condition(&db, CONDITION_UNDER_REPLICATED).is_some_and(|c| c.status == "True");
        let ranges = db
            .status
            .as_ref()
            .and_then(|s| s.partition_map.as_ref())
            .map_or(0, |m| m.under_replicated_ranges);
        Ok(if under && ranges > 0 {
            Ok(())
        } else {
            Err(describe(&db))
        })
    })
    .await?;
    let db = api.get(name).await?;
    ensure!(
        condition(&db, shmdb_operator::crd::CONDITION_READY).is_some_and(|c| c.status == "False"),
        "Ready while ranges are under-replicated: {}",
        describe(&db)
    );

    if common::data_plane::host_mode() {
        database::delete_pod(&cluster, &ns.name, &format!("{name}-storage-1")).await?;
    }
    let db = database::wait_ready(&cluster, &ns.name, name, READY_TIMEOUT).await?;
    ensure!(
        condition(&db, CONDITION_UNDER_REPLICATED).is_some_and(|c| c.status == "False"),
        "Ready but {}",
        describe(&db)
    );
    let map = partition_map(&cluster, &db).await?;
    ensure!(
        map.ranges.iter().all(|r| r.replicas.len() == 2),
        "ranges after recovery: {:?}",
        map.ranges
    );
    if let Some(client) = &client {
        let mut lost = Vec::new();
        for i in 0..ROWS {
            let (key, value) = row(i);
            let got = client
                .get(KV, key.clone().into_bytes())
                .await
                .map_err(|e| anyhow::anyhow!("reading row {i}: {e}"))?;
            if got.as_ref().map(|v| v.value.as_ref()) != Some(value.as_bytes()) {
                lost.push(key);
            }
        }
        ensure!(
            lost.is_empty(),
            "{} of {ROWS} rows lost: {lost:?}",
            lost.len()
        );
    }
    follower.stop().await;
    ns.delete().await
}
