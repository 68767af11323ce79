//! Deleting a database removes every child object: the operator's finalizer stops
//! placement, then the garbage collector follows the owner references.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ListParams;

use common::cluster::Cluster;
use common::data_plane::StorageFollower;
use common::database::{self, READY_TIMEOUT, example};
use common::wait;

/// Objects in `ns` labelled as the database's instance, by kind.
async fn remaining(cluster: &Cluster, ns: &str, db: &str) -> Result<Vec<String>> {
    let selector = format!("app.kubernetes.io/instance={db}");
    let params = ListParams::default().labels(&selector);
    let c = &cluster.client;
    let mut left = Vec::new();
    macro_rules! collect {
        ($kind:ty, $label:expr) => {
            let api: Api<$kind> = Api::namespaced(c.clone(), ns);
            for o in api.list(&params).await?.items {
                left.push(format!(
                    "{} {}",
                    $label,
                    o.metadata.name.unwrap_or_default()
                ));
            }
        };
    }
    collect!(StatefulSet, "StatefulSet");
    collect!(Service, "Service");
    collect!(PodDisruptionBudget, "PodDisruptionBudget");
    collect!(HorizontalPodAutoscaler, "HorizontalPodAutoscaler");
    collect!(ConfigMap, "ConfigMap");
    collect!(Pod, "Pod");
    // The placement Lease carries no labels; it is found by name.
    let leases: Api<Lease> = Api::namespaced(c.clone(), ns);
    let lease = format!("{db}-placement");
    if leases.get_opt(&lease).await?.is_some() {
        left.push(format!("Lease {lease}"));
    }
    Ok(left)
}

#[tokio::test]
#[cfg_attr(
    not(e2e_cluster),
    ignore = "needs a cluster: SHMDB_E2E=1 (e2e/run.sh) or KUBECONFIG"
)]
async fn deleting_the_database_removes_every_child_object() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("delete").await?;
    let manifest = example("replicated")?;
    let name = database::name_of(&manifest)?;
    let follower = StorageFollower::start(&cluster, &ns.name, &name).await?;
    let out = database::apply(&cluster, &ns.name, &manifest).await?;
    ensure!(out.ok, "kubectl apply failed: {}", out.stderr);
    database::wait_ready(&cluster, &ns.name, &name, READY_TIMEOUT).await?;
    let before = remaining(&cluster, &ns.name, &name).await?;
    // 3 StatefulSets, 4 Services, 3 PDBs, 1 HPA, the map and the Lease, and the pods.
    ensure!(
        before.len() >= 13,
        "fewer child objects than expected before deletion: {before:?}"
    );

    cluster
        .kubectl_ok(
            &[
                "delete",
                "smdb",
                &name,
                "-n",
                &ns.name,
                "--wait",
                "--timeout=60s",
            ],
            None,
        )
        .await?;
    ensure!(
        database::api(&cluster, &ns.name)
            .get_opt(&name)
            .await?
            .is_none(),
        "the database is still there after kubectl delete --wait"
    );
    wait::until(
        "every child object gone",
        Duration::from_secs(90),
        || async {
            let left = remaining(&cluster, &ns.name, &name).await?;
            Ok(if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            })
        },
    )
    .await?;
    follower.stop().await;
    ns.delete().await
}
