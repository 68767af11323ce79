//! SharedMemDatabase helpers: the example manifests, applying them with kubectl, reading
//! conditions, and waiting for Ready.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use serde_json::Value;
use shmdb_operator::crd::{CONDITION_READY, SharedMemDatabase};

use super::cluster::{Cluster, Output};
use super::wait;

/// How long a database may take from apply to Ready on the harness's cluster. Pods of a
/// StatefulSet come up one after another and kwok marks each ready on its own schedule: on
/// a loaded 2-core CI machine the fourth processing pod of a scale-up was not ready after
/// 120 s once (it is ready in well under a minute when the machine is quiet).
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Folders whose `*.yaml` files are example databases: `SHMDB_E2E_EXAMPLES`
/// (colon-separated), else this crate's `manifests/examples` plus the repository's
/// `examples/` (and the chart's, when it ships some).
pub fn example_dirs() -> Vec<PathBuf> {
    if let Ok(dirs) = std::env::var("SHMDB_E2E_EXAMPLES") {
        return dirs.split(':').map(PathBuf::from).collect();
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![here.join("manifests/examples")];
    for shared in ["../examples", "../charts/shmdb/examples"] {
        let dir = here.join(shared);
        if dir.is_dir() {
            dirs.push(dir);
        }
    }
    dirs
}

/// Every example database as (file, manifest).
pub fn examples() -> Result<Vec<(PathBuf, Value)>> {
    let mut out = Vec::new();
    for dir in example_dirs() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            let value: Value = serde_yaml::from_str(&text)
                .with_context(|| format!("parsing {}", file.display()))?;
            if value["kind"] == "SharedMemDatabase" {
                out.push((file, value));
            }
        }
    }
    if out.is_empty() {
        bail!("no example databases found in {:?}", example_dirs());
    }
    Ok(out)
}

/// The example in this crate's `manifests/examples/<name>.yaml`.
pub fn example(name: &str) -> Result<Value> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/examples")
        .join(format!("{name}.yaml"));
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    Ok(serde_yaml::from_str(&text)?)
}

/// The database's name in a manifest.
pub fn name_of(manifest: &Value) -> Result<String> {
    manifest["metadata"]["name"]
        .as_str()
        .map(str::to_string)
        .context("manifest without metadata.name")
}

/// `kubectl apply` of `manifest` in `namespace` (the outcome, accepted or not).
pub async fn apply(cluster: &Cluster, namespace: &str, manifest: &Value) -> Result<Output> {
    let text = serde_json::to_string(manifest)?;
    cluster
        .kubectl(&["apply", "-n", namespace, "-f", "-"], Some(&text))
        .await
}

/// Deletes a pod without waiting for it to go (its StatefulSet then replaces it), as a
/// lost pod would be.
pub async fn delete_pod(cluster: &Cluster, namespace: &str, pod: &str) -> Result<()> {
    cluster
        .kubectl_ok(
            &["delete", "pod", pod, "-n", namespace, "--wait=false"],
            None,
        )
        .await?;
    Ok(())
}

/// Typed access to databases in `namespace`.
pub fn api(cluster: &Cluster, namespace: &str) -> Api<SharedMemDatabase> {
    Api::namespaced(cluster.client.clone(), namespace)
}

/// The condition of `type_`, if the status has it.
pub fn condition<'a>(db: &'a SharedMemDatabase, type_: &str) -> Option<&'a Condition> {
    db.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// `type=status(reason)` of every condition, for messages.
pub fn describe(db: &SharedMemDatabase) -> String {
    let Some(status) = &db.status else {
        return "no status yet".to_string();
    };
    let conditions = status
        .conditions
        .iter()
        .map(|c| format!("{}={}({}: {})", c.type_, c.status, c.reason, c.message))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "generation {:?}, observed {:?}, {conditions}",
        db.metadata.generation, status.observed_generation
    )
}

/// Waits until the database is Ready for its current generation.
pub async fn wait_ready(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<SharedMemDatabase> {
    let api = api(cluster, namespace);
    wait::until(&format!("{namespace}/{name} Ready"), timeout, || {
        let api = api.clone();
        async move {
            let db = api.get(name).await?;
            let ready = condition(&db, CONDITION_READY).is_some_and(|c| c.status == "True");
            let current =
                db.status.as_ref().and_then(|s| s.observed_generation) == db.metadata.generation;
            Ok(if ready && current {
                Ok(db)
            } else {
                Err(describe(&db))
            })
        }
    })
    .await
}
