//! The host's names for a database's real storage pods.
//!
//! The operator runs on the host (not in a pod), and its placement manager reaches storage
//! nodes by the addresses the partition map records, `<pod>.<db>-storage-headless.<ns>.svc`;
//! the host resolves through `/etc/hosts`, not the cluster DNS. [`PodHosts`] keeps one line
//! per live storage pod there, pointing at the pod's current IP (a replaced pod gets a new
//! one).

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use shmdb_operator::resources::{Names, Tier, selector_labels, storage_node_address};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use super::data_plane::{add_host, remove_hosts};

/// Keeps `/etc/hosts` in step with one database's storage pods until stopped.
pub struct PodHosts {
    namespace: String,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl PodHosts {
    /// Starts following `database`'s storage pods in `namespace`.
    pub fn start(cluster: &Cluster, namespace: &str, database: &str) -> Self {
        let names = Names {
            database: database.to_string(),
            namespace: namespace.to_string(),
        };
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
        let (stop, mut stopped) = watch::channel(false);
        let handle = tokio::spawn(async move {
            let selector = selector_labels(&names, Tier::Storage)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            loop {
                if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                    for pod in &list.items {
                        if let Err(e) = map_pod(&names, pod) {
                            eprintln!("mapping a storage pod in /etc/hosts: {e:#}");
                        }
                    }
                }
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
        PodHosts {
            namespace: namespace.to_string(),
            stop,
            handle,
        }
    }

    /// Stops following and removes the namespace's lines.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
        let _ = remove_hosts(&self.namespace);
    }
}

fn map_pod(names: &Names, pod: &Pod) -> Result<()> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let (Some(name), Some(ip)) = (
        pod.metadata.name.as_deref(),
        pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
    ) else {
        return Ok(());
    };
    let Some(ordinal) = name.rsplit('-').next().and_then(|o| o.parse::<i32>().ok()) else {
        return Ok(());
    };
    let address = storage_node_address(names, ordinal);
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(h, _)| h);
    add_host(ip, host, &names.namespace)
}
