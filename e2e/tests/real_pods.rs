//! A database on the harness's real node (kubelet + containerd, the project image built by
//! `harness/image.sh`), managed by the chart's operator running in-cluster there
//! (`harness/in-cluster-operator.sh`): the database is labelled for that operator, and its
//! placement Lease is held by one of the operator Deployment's pods on the real node.
//! `psql` through the client Service's DNS name runs a transaction; deleting a storage pod
//! raises UnderReplicated (and Ready=False), after which the database returns to Ready with
//! every row written before still readable; deleting the operator pod that leads placement
//! hands the Lease to another replica while the database stays Ready and readable.
//!
//! Runs only where run.sh brought the real node and its operator up
//! (`SHMDB_E2E_REAL_PODS=1`); elsewhere it says so and passes without checking anything,
//! like the other tests without a cluster.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::{Value, json};
use shmdb_operator::crd::{CONDITION_READY, CONDITION_UNDER_REPLICATED};
use shmdb_operator::resources::Names;

use common::cluster::Cluster;
use common::cluster_dns;
use common::database::{self, READY_TIMEOUT, condition, describe};
use common::operator::lease_holder;
use common::wait;

/// Rows written before the storage pod is lost.
const ROWS: usize = 100;
/// The real node's label and taint key (harness/real-node.sh).
const REAL_NODE: &str = "shmdb.io/e2e-real";
/// The real node's name (harness/real-node.sh).
const REAL_NODE_NAME: &str = "real-node-0";
/// The label that hands a database to the in-cluster operator (its `operator.selector` in
/// harness/in-cluster-operator.sh; the host operators select everything else).
const IN_CLUSTER: (&str, &str) = ("shmdb.io/operator", "in-cluster");
/// The chart's labels of the operator pods.
const OPERATOR_PODS: &str = "app.kubernetes.io/component=operator,app.kubernetes.io/part-of=shmdb";

fn real_pods() -> bool {
    std::env::var("SHMDB_E2E_REAL_PODS").is_ok_and(|v| v == "1")
}

/// Pins a tier's pods to the real node: select its label, tolerate its taint.
fn pinned() -> Value {
    json!({
        "nodeSelector": {REAL_NODE: "true"},
        "tolerations": [{"key": REAL_NODE, "operator": "Exists", "effect": "NoSchedule"}],
    })
}

/// One processing node, two storage nodes at RF 2, one commit manager, all on the real
/// node, running the image image.sh imported (never pulled), labelled for the in-cluster
/// operator.
fn manifest(name: &str) -> Value {
    let image = std::env::var("SHMDB_E2E_IMAGE").unwrap_or_else(|_| "shmdb.local/shmdb:e2e".into());
    let (repository, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "e2e"));
    json!({
        "apiVersion": "shmdb.io/v1alpha1",
        "kind": "SharedMemDatabase",
        "metadata": {"name": name, "labels": {IN_CLUSTER.0: IN_CLUSTER.1}},
        "spec": {
            "replicationFactor": 2,
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "ranges": {"initial": 2},
            "processing": {"replicas": 1, "pod": pinned()},
            "storage": {"replicas": 2, "memoryPerNode": "64Mi", "pod": pinned()},
            "commitManagers": {"replicas": 1, "pod": pinned()},
        },
    })
}

/// Runs `psql` against `host` with `commands` (one `-c` each, ON_ERROR_STOP) and returns
/// its unaligned, tuples-only output.
/// The lines psql prints for `commands`, as a set (the tests compare row sets).
async fn psql_rows(host: &str, commands: &[String]) -> Result<BTreeSet<String>> {
    Ok(psql(host, commands)
        .await?
        .lines()
        .map(str::to_string)
        .collect())
}

async fn psql(host: &str, commands: &[String]) -> Result<String> {
    let mut cmd = tokio::process::Command::new("psql");
    cmd.args(["-h", host, "-p", "5432", "-U", "shmdb", "-d", "shmdb"])
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "--no-password"])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PAGER", "cat")
        .kill_on_drop(true);
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("psql did not finish within 60s")?
        .context("running psql (apt-get install postgresql-client)")?;
    if !out.status.success() {
        bail!(
            "psql failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The client Service's address as the cluster DNS gives it (a processing pod's IP: there
/// is no kube-proxy, see e2e-dns).
async fn client_service_ip(service: &str, namespace: &str) -> Result<String> {
    let name = format!("{service}.{namespace}.svc.cluster.local");
    let ips = wait::until(
        &format!("{name} to resolve"),
        Duration::from_secs(60),
        || async {
            let ips = cluster_dns::resolve(&name).await?;
            Ok(if ips.is_empty() {
                Err("no addresses".to_string())
            } else {
                Ok(ips)
            })
        },
    )
    .await?;
    Ok(ips[0].to_string())
}

/// The namespace of the in-cluster operator's pods (the chart's release namespace).
fn operator_namespace() -> String {
    std::env::var("SHMDB_E2E_OPERATOR_NAMESPACE").unwrap_or_else(|_| "shmdb-system".into())
}

/// Waits until the database's placement Lease is held by a running operator pod on the
/// real node other than `not` (the pod just deleted), and returns that pod's name. The
/// host operators' identities are never pod names there, so this shows the database is
/// managed in-cluster.
async fn in_cluster_leader(
    cluster: &Cluster,
    namespace: &str,
    database: &str,
    not: Option<&str>,
    timeout: Duration,
) -> Result<String> {
    let lease = Names {
        database: database.to_string(),
        namespace: namespace.to_string(),
    }
    .placement_lease();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &operator_namespace());
    wait::until(
        &format!("an in-cluster operator pod to hold Lease {lease}"),
        timeout,
        || async {
            let Some((holder, _)) = lease_holder(cluster, namespace, &lease).await? else {
                return Ok(Err("the Lease is not held".to_string()));
            };
            let list = pods
                .list(&ListParams::default().labels(OPERATOR_PODS))
                .await?;
            let running: Vec<String> = list
                .items
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                            == Some(REAL_NODE_NAME)
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            Ok(
                if running.contains(&holder) && Some(holder.as_str()) != not {
                    Ok(holder)
                } else {
                    Err(format!(
                        "held by {holder}; running operator pods {running:?}"
                    ))
                },
            )
        },
    )
    .await
}

fn expected_rows() -> BTreeSet<String> {
    (0..ROWS).map(|i| format!("{i}|row {i}")).collect()
}

#[tokio::test]
#[cfg_attr(
    not(e2e_cluster),
    ignore = "needs a cluster: SHMDB_E2E=1 (e2e/run.sh) or KUBECONFIG"
)]
async fn psql_through_the_client_service_and_a_lost_storage_pod_loses_no_rows() -> Result<()> {
    if !real_pods() {
        eprintln!(
            "SKIPPED: no real node (SHMDB_E2E_REAL_PODS != 1; run.sh sets it when \
             harness/real-node.sh and image.sh succeeded)"
        );
        return Ok(());
    }
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("real-pods").await?;
    let name = "real";
    let out = database::apply(&cluster, &ns.name, &manifest(name)).await?;
    ensure!(out.ok, "kubectl apply failed: {}", out.stderr);
    database::wait_ready(&cluster, &ns.name, name, READY_TIMEOUT).await?;
    let leader = in_cluster_leader(&cluster, &ns.name, name, None, Duration::from_secs(30)).await?;

    // A transaction through the client Service's DNS name.
    let host = client_service_ip(name, &ns.name).await?;
    let mut txn = vec![
        "BEGIN".to_string(),
        "CREATE TABLE kept (id int PRIMARY KEY, v text NOT NULL)".to_string(),
    ];
    txn.extend((0..ROWS).map(|i| format!("INSERT INTO kept VALUES ({i}, 'row {i}')")));
    txn.push("COMMIT".to_string());
    psql(&host, &txn).await?;
    let select = vec!["SELECT id, v FROM kept ORDER BY id".to_string()];
    let rows = psql_rows(&host, &select).await?;
    ensure!(
        rows == expected_rows(),
        "after COMMIT read {} rows: {rows:?}",
        rows.len()
    );

    // Lose a storage pod. Its replacement would start within a second or two and the
    // placement manager would restore the copies about as fast, too fast to see the
    // UnderReplicated condition, so the node is cordoned first: the replacement stays
    // Pending (as on a cluster out of room) until the node is uncordoned.
    cluster
        .kubectl_ok(&["cordon", REAL_NODE_NAME], None)
        .await?;
    database::delete_pod(&cluster, &ns.name, &format!("{name}-storage-1")).await?;
    let api = database::api(&cluster, &ns.name);
    let lost = wait::until("UnderReplicated=True", Duration::from_secs(120), || async {
        let db = api.get(name).await?;
        let under = condition(&db, CONDITION_UNDER_REPLICATED).is_some_and(|c| c.status == "True");
        Ok(if under { Ok(db) } else { Err(describe(&db)) })
    })
    .await;
    cluster
        .kubectl_ok(&["uncordon", REAL_NODE_NAME], None)
        .await?;
    let lost = lost?;
    ensure!(
        condition(&lost, CONDITION_READY).is_some_and(|c| c.status == "False"),
        "Ready while under-replicated: {}",
        describe(&lost)
    );
    let db = database::wait_ready(&cluster, &ns.name, name, READY_TIMEOUT).await?;
    ensure!(
        condition(&db, CONDITION_UNDER_REPLICATED).is_some_and(|c| c.status == "False")
            && condition(&db, CONDITION_READY).is_some_and(|c| c.status == "True"),
        "Ready but {}",
        describe(&db)
    );

    // Every row is still there. The processing node may need a moment to reconnect to the
    // replaced storage node, so errors are retried; a wrong answer fails at once.
    let host = client_service_ip(name, &ns.name).await?;
    let rows = wait::until(
        "the rows to be readable",
        Duration::from_secs(60),
        || async {
            Ok(psql_rows(&host, &select)
                .await
                .map_err(|e| format!("{e:#}")))
        },
    )
    .await?;
    let expected = expected_rows();
    let lost: Vec<&String> = expected.difference(&rows).collect();
    let extra: Vec<&String> = rows.difference(&expected).collect();
    ensure!(
        lost.is_empty() && extra.is_empty(),
        "after the lost pod: missing {lost:?}, unexpected {extra:?}"
    );

    // The operator pod leading placement is lost without warning: another replica takes
    // the Lease (after it expires, 15 s) and the database stays Ready and readable.
    let operator_pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &operator_namespace());
    operator_pods
        .delete(&leader, &DeleteParams::default().grace_period(0))
        .await
        .with_context(|| format!("deleting the leading operator pod {leader}"))?;
    let successor = in_cluster_leader(
        &cluster,
        &ns.name,
        name,
        Some(&leader),
        Duration::from_secs(90),
    )
    .await?;
    let db = api.get(name).await?;
    ensure!(
        condition(&db, CONDITION_READY).is_some_and(|c| c.status == "True"),
        "not Ready after {successor} took the Lease from {leader}: {}",
        describe(&db)
    );
    let rows = psql_rows(&host, &select).await?;
    ensure!(
        rows == expected,
        "after the operator failover read {} rows",
        rows.len()
    );

    ns.delete().await
}
