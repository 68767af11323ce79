//! Invalid specs are rejected by the API server itself (OpenAPI schema and CEL rules in the
//! CRD), with a message that names the problem, and nothing is stored.

mod common;

use anyhow::{Result, ensure};
use serde_json::{Value, json};

use common::cluster::Cluster;
use common::database::{self, example};

/// Sets `pointer` (a JSON pointer) in `manifest` to `value`, creating objects on the way.
fn set(manifest: &mut Value, pointer: &str, value: Value) {
    let mut at = manifest;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            at[*part] = value;
            return;
        }
        at = &mut at[*part];
    }
}

fn remove(manifest: &mut Value, parent: &str, key: &str) {
    if let Some(obj) = manifest.pointer_mut(parent).and_then(Value::as_object_mut) {
        obj.remove(key);
    }
}

#[tokio::test]
#[cfg_attr(
    not(e2e_cluster),
    ignore = "needs a cluster: SHMDB_E2E=1 (e2e/run.sh) or KUBECONFIG"
)]
async fn invalid_specs_are_rejected_with_the_rule_message() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("validation").await?;
    let base = example("replicated")?;
    // (what is wrong, how to break the example, what the rejection must say)
    type Break = fn(&mut Value);
    let cases: [(&str, Break, &str); 7] = [
        (
            "more copies than storage nodes",
            |m| set(m, "/spec/replicationFactor", json!(4)),
            "replicationFactor must not exceed storage.replicas",
        ),
        (
            "replication factor zero",
            |m| set(m, "/spec/replicationFactor", json!(0)),
            "spec.replicationFactor: Invalid value: 0: spec.replicationFactor in body should be greater than or equal to 1",
        ),
        (
            "processing replicas outside the HPA bounds",
            |m| set(m, "/spec/processing/replicas", json!(9)),
            "processing.replicas must lie within autoscaling.minReplicas..maxReplicas",
        ),
        (
            "HPA bounds inverted",
            |m| {
                set(m, "/spec/processing/autoscaling/minReplicas", json!(5));
                set(m, "/spec/processing/replicas", json!(5));
            },
            "minReplicas must not exceed maxReplicas",
        ),
        (
            "storage scale-in threshold above scale-out",
            |m| {
                set(
                    m,
                    "/spec/storage/autoscaling",
                    json!({"minReplicas": 2, "maxReplicas": 5, "scaleOutAbovePercent": 50, "scaleInBelowPercent": 60}),
                )
            },
            "scaleInBelowPercent must be below scaleOutAbovePercent",
        ),
        (
            "storage autoscaling below the replication factor",
            |m| {
                set(
                    m,
                    "/spec/storage/autoscaling",
                    json!({"minReplicas": 1, "maxReplicas": 5}),
                )
            },
            "replicationFactor must not exceed storage.autoscaling.minReplicas",
        ),
        (
            "no storage tier",
            |m| remove(m, "/spec", "storage"),
            "spec.storage: Required value",
        ),
    ];
    let mut failures = Vec::new();
    for (what, breaker, expected) in cases {
        let mut manifest = base.clone();
        set(&mut manifest, "/metadata/name", json!("invalid"));
        breaker(&mut manifest);
        let out = database::apply(&cluster, &ns.name, &manifest).await?;
        if out.ok {
            failures.push(format!("{what}: accepted ({})", out.stdout.trim()));
        } else if !out.stderr.contains(expected) {
            failures.push(format!(
                "{what}: rejected without {expected:?}: {}",
                out.stderr.trim()
            ));
        }
        let stored = database::api(&cluster, &ns.name).get_opt("invalid").await?;
        if stored.is_some() {
            failures.push(format!("{what}: the invalid database was stored"));
            cluster
                .kubectl_ok(
                    &["delete", "smdb", "invalid", "-n", &ns.name, "--wait"],
                    None,
                )
                .await?;
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    ns.delete().await
}

#[tokio::test]
#[cfg_attr(
    not(e2e_cluster),
    ignore = "needs a cluster: SHMDB_E2E=1 (e2e/run.sh) or KUBECONFIG"
)]
async fn immutable_fields_cannot_change_after_creation() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("immutable").await?;
    let mut manifest = example("replicated")?;
    let created = database::apply(&cluster, &ns.name, &manifest).await?;
    ensure!(
        created.ok,
        "the valid example was rejected: {}",
        created.stderr
    );

    set(&mut manifest, "/spec/replicationFactor", json!(3));
    let out = database::apply(&cluster, &ns.name, &manifest).await?;
    ensure!(!out.ok, "changing replicationFactor was accepted");
    ensure!(
        out.stderr.contains("replicationFactor is immutable"),
        "rejected without the rule's message: {}",
        out.stderr
    );
    let stored = database::api(&cluster, &ns.name).get("replicated").await?;
    ensure!(
        stored.spec.replication_factor == 2,
        "stored replicationFactor changed to {}",
        stored.spec.replication_factor
    );
    ns.delete().await
}
