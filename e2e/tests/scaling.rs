//! The processing tier follows the scale subresource: `kubectl scale smdb/NAME` (and an HPA,
//! which writes the same path) changes it, the operator carries the count to the
//! StatefulSet and never writes it back; counts outside the HPA's bounds are refused.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Api;
use serde_json::json;
use shmdb_operator::crd::SharedMemDatabase;
use shmdb_operator::resources::{Names, Tier};

use common::cluster::Cluster;
use common::data_plane::StorageFollower;
use common::database::{self, READY_TIMEOUT, example};
use common::wait;

/// (spec, StatefulSet spec, status) replica counts of the processing tier.
async fn processing_counts(cluster: &Cluster, ns: &str, name: &str) -> Result<(i32, i32, i32)> {
    let db = database::api(cluster, ns).get(name).await?;
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), ns);
    let set = sets
        .get(&Names::of(&db).stateful_set(Tier::Processing))
        .await?;
    let set_replicas = set.spec.and_then(|s| s.replicas).unwrap_or(-1);
    let status = db
        .status
        .as_ref()
        .and_then(|s| s.processing.as_ref())
        .map_or(-1, |p| p.replicas);
    Ok((db.spec.processing.replicas, set_replicas, status))
}

/// Waits until the status, for the current generation, shows `n` processing nodes ready
/// (the processing tier alone: storage health is not what these tests are about).
async fn wait_processing_ready(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    n: i32,
) -> Result<SharedMemDatabase> {
    let api = database::api(cluster, ns);
    wait::until(
        &format!("{n} ready processing nodes"),
        READY_TIMEOUT,
        || {
            let api = api.clone();
            async move {
                let db = api.get(name).await?;
                let status = db.status.clone().unwrap_or_default();
                let current = status.observed_generation == db.metadata.generation;
                let ready = status.processing.as_ref().map_or(0, |p| p.ready_replicas);
                Ok(if current && ready == n {
                    Ok(db)
                } else {
                    Err(format!(
                        "processing ready {ready}; {}",
                        database::describe(&db)
                    ))
                })
            }
        },
    )
    .await
}

#[tokio::test]
#[cfg_attr(
    not(e2e_cluster),
    ignore = "needs a cluster: SHMDB_E2E=1 (e2e/run.sh) or KUBECONFIG"
)]
async fn kubectl_scale_changes_processing_and_the_operator_keeps_the_count() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("scale").await?;
    let manifest = example("minimal")?;
    let name = database::name_of(&manifest)?;
    let follower = StorageFollower::start(&cluster, &ns.name, &name).await?;
    let out = database::apply(&cluster, &ns.name, &manifest).await?;
    ensure!(out.ok, "kubectl apply failed: {}", out.stderr);
    database::wait_ready(&cluster, &ns.name, &name, READY_TIMEOUT).await?;

    cluster
        .kubectl_ok(
            &[
                "scale",
                &format!("smdb/{name}"),
                "--replicas=3",
                "-n",
                &ns.name,
            ],
            None,
        )
        .await?;
    let db = wait_processing_ready(&cluster, &ns.name, &name, 3).await?;
    let counts = processing_counts(&cluster, &ns.name, &name).await?;
    ensure!(
        counts == (3, 3, 3),
        "(spec, StatefulSet, status) = {counts:?}, want 3s"
    );

    // A later spec change makes the operator reconcile again (a new generation it must
    // observe); the scaled count must survive it untouched.
    let generation = db.metadata.generation.unwrap_or(0);
    cluster
        .kubectl_ok(
            &[
                "patch",
                "smdb",
                &name,
                "-n",
                &ns.name,
                "--type=merge",
                "-p",
                &json!({"spec": {"commitManagers": {"replicas": 2}}}).to_string(),
            ],
            None,
        )
        .await?;
    let db = wait_processing_ready(&cluster, &ns.name, &name, 3).await?;
    ensure!(
        db.metadata.generation.unwrap_or(0) > generation,
        "the patch did not create a new generation"
    );
    let counts = processing_counts(&cluster, &ns.name, &name).await?;
    ensure!(
        counts == (3, 3, 3),
        "after a reconcile: {counts:?}, want 3s"
    );
    // The operator applies objects and status only: it owns no field of the spec.
    let managers: Vec<String> = db
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.manager.as_deref() == Some("shmdb-operator"))
        .filter(|f| {
            f.subresource.as_deref() != Some("status")
                && f.fields_v1
                    .as_ref()
                    .is_some_and(|v| v.0.get("f:spec").is_some())
        })
        .map(|f| format!("{f:?}"))
        .collect();
    ensure!(
        managers.is_empty(),
        "the operator owns spec fields: {managers:?}"
    );

    follower.stop().await;
    ns.delete().await
}

#[tokio::test]
#[cfg_attr(
    not(e2e_cluster),
    ignore = "needs a cluster: SHMDB_E2E=1 (e2e/run.sh) or KUBECONFIG"
)]
async fn the_hpa_drives_the_scale_subresource_within_its_bounds() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("hpa").await?;
    let manifest = example("replicated")?;
    let name = database::name_of(&manifest)?;
    let follower = StorageFollower::start(&cluster, &ns.name, &name).await?;
    let out = database::apply(&cluster, &ns.name, &manifest).await?;
    ensure!(out.ok, "kubectl apply failed: {}", out.stderr);
    let db = database::wait_ready(&cluster, &ns.name, &name, READY_TIMEOUT).await?;
    let names = Names::of(&db);

    // The HPA targets the database's scale subresource and the HPA controller reads it.
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), &ns.name);
    let hpa_name = names.hpa(Tier::Processing);
    let hpa = wait::until(
        "the HPA to read the scale subresource",
        Duration::from_secs(60),
        || {
            let hpas = hpas.clone();
            let hpa_name = hpa_name.clone();
            async move {
                let hpa = hpas.get(&hpa_name).await?;
                let status = hpa.status.clone().unwrap_or_default();
                let able = status
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "AbleToScale");
                Ok(match able {
                    Some(c) if c.status == "True" && status.current_replicas == Some(2) => Ok(hpa),
                    other => Err(format!(
                        "AbleToScale {other:?}, current {:?}",
                        status.current_replicas
                    )),
                })
            }
        },
    )
    .await?;
    let target = hpa.spec.context("HPA without spec")?.scale_target_ref;
    ensure!(
        target.kind == "SharedMemDatabase"
            && target.name == name
            && target.api_version.as_deref() == Some("shmdb.io/v1alpha1"),
        "the HPA scales {target:?}, not the database"
    );

    // The HPA's bounds are the CRD's: a scale outside them is refused by the API server.
    let out = cluster
        .kubectl(
            &[
                "scale",
                &format!("smdb/{name}"),
                "--replicas=7",
                "-n",
                &ns.name,
            ],
            None,
        )
        .await?;
    ensure!(
        !out.ok,
        "scaling beyond autoscaling.maxReplicas was accepted"
    );
    ensure!(
        out.stderr
            .contains("processing.replicas must lie within autoscaling.minReplicas..maxReplicas"),
        "refused without the rule's message: {}",
        out.stderr
    );

    // Within the bounds, the scale subresource (the path the HPA writes) moves the tier.
    cluster
        .kubectl_ok(
            &[
                "scale",
                &format!("smdb/{name}"),
                "--replicas=4",
                "-n",
                &ns.name,
            ],
            None,
        )
        .await?;
    wait_processing_ready(&cluster, &ns.name, &name, 4).await?;
    let counts = processing_counts(&cluster, &ns.name, &name).await?;
    ensure!(
        counts == (4, 4, 4),
        "(spec, StatefulSet, status) = {counts:?}, want 4s"
    );
    wait::until("the HPA to see 4 replicas", Duration::from_secs(60), || {
        let hpas = hpas.clone();
        let hpa_name = hpa_name.clone();
        async move {
            let current = hpas
                .get(&hpa_name)
                .await?
                .status
                .and_then(|s| s.current_replicas);
            Ok(if current == Some(4) {
                Ok(())
            } else {
                Err(format!("{current:?}"))
            })
        }
    })
    .await?;

    follower.stop().await;
    ns.delete().await
}
