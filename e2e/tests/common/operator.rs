//! The operator replicas: who holds a database's placement Lease, and killing a replica
//! without warning (SIGKILL of the harness's process, or a zero-grace pod delete on a
//! cluster where the operator runs in pods).

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;

use super::cluster::Cluster;

/// (holder identity, lease transitions) of the Lease `name`, if it exists and is held.
pub async fn lease_holder(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<Option<(String, i32)>> {
    let api: Api<Lease> = Api::namespaced(cluster.client.clone(), namespace);
    let Some(lease) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let spec = lease.spec.unwrap_or_default();
    Ok(spec
        .holder_identity
        .filter(|h| !h.is_empty())
        .map(|h| (h, spec.lease_transitions.unwrap_or(0))))
}

/// Kills operator replica `identity` at once. The harness records each replica's pid in
/// `$SHMDB_E2E_OPERATOR_PIDS/<identity>.pid` (and restarts it, as a Deployment would);
/// elsewhere the identity is the pod name in `SHMDB_E2E_OPERATOR_NAMESPACE`
/// (default `shmdb-system`).
pub async fn kill(cluster: &Cluster, identity: &str) -> Result<()> {
    if let Some(dir) = std::env::var_os("SHMDB_E2E_OPERATOR_PIDS") {
        let file = PathBuf::from(dir).join(format!("{identity}.pid"));
        let pid = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let pid = pid.trim();
        let status = tokio::process::Command::new("kill")
            .args(["-KILL", pid])
            .status()
            .await?;
        if !status.success() {
            bail!("kill -KILL {pid} ({identity}) failed");
        }
        return Ok(());
    }
    let namespace =
        std::env::var("SHMDB_E2E_OPERATOR_NAMESPACE").unwrap_or_else(|_| "shmdb-system".into());
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &namespace);
    pods.delete(identity, &DeleteParams::default().grace_period(0))
        .await
        .with_context(|| format!("deleting operator pod {namespace}/{identity}"))?;
    Ok(())
}
