//! The operator's readiness: `/readyz` answers ready only once the Kubernetes API has
//! answered a list of SharedMemDatabases. Until then the operator cannot reconcile anything
//! (API server unreachable, credentials refused, RBAC or the CRD missing), and a rollout
//! that replaced a working operator with such a pod must stall instead of completing.

use std::time::Duration;

use kube::Api;
use kube::api::ListParams;
use shmdb_telemetry::Health;
use tracing::{info, warn};

use crate::crd::SharedMemDatabase;

/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Marks `health` not ready, lists SharedMemDatabases until the API answers (backing off
/// from `first_backoff` up to ten seconds, the last error kept as the not-ready reason),
/// then marks it ready and returns.
pub async fn ready_when_api_answers(client: kube::Client, health: Health, first_backoff: Duration) {
    let databases: Api<SharedMemDatabase> = Api::all(client);
    health.set_not_ready("the Kubernetes API has not answered yet");
    let mut backoff = first_backoff;
    loop {
        match databases.list(&ListParams::default().limit(1)).await {
            Ok(_) => {
                info!("the Kubernetes API answered: ready");
                health.set_ready();
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot list SharedMemDatabases yet; not ready (is the CRD installed? crds/shmdbs.yaml)");
                health.set_not_ready(format!("cannot list SharedMemDatabases: {e}"));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
