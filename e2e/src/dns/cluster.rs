//! Watch-fed caches of every Pod and Service, so a query is answered from memory in
//! microseconds and a replaced pod's new address is seen as soon as the API reports it.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};

/// The caches, cheap to clone.
#[derive(Clone)]
pub struct ClusterView {
    pods: Store<Pod>,
    services: Store<Service>,
}

/// Why the caches could not be filled.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The first list never completed (the watch task ended).
    #[error("the {0} watch ended before its first list")]
    NeverReady(&'static str),
}

impl ClusterView {
    /// Starts watching Pods and Services in every namespace and waits for the first full
    /// list of each, so the first answers are already right.
    pub async fn start(client: Client) -> Result<Self, ViewError> {
        let pods = watch(Api::<Pod>::all(client.clone()));
        let services = watch(Api::<Service>::all(client));
        pods.wait_until_ready()
            .await
            .map_err(|_| ViewError::NeverReady("pod"))?;
        services
            .wait_until_ready()
            .await
            .map_err(|_| ViewError::NeverReady("service"))?;
        Ok(ClusterView { pods, services })
    }

    /// Every Pod and Service as last seen.
    pub fn snapshot(&self) -> (Vec<Arc<Pod>>, Vec<Arc<Service>>) {
        (self.pods.state(), self.services.state())
    }
}

/// A reflector over `api`, driven by a background task that retries with back-off.
fn watch<K>(api: Api<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watch error; retrying");
            }
        }
    });
    reader
}
