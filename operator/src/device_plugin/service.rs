//! The `DevicePlugin` gRPC service the kubelet calls on the plugin's socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use super::api::{self, device_plugin_server::DevicePlugin};
use super::inventory::Inventory;
use super::metrics::PluginMetrics;

/// Where device nodes live inside the container (fixed by the RDMA user-space libraries).
pub const CONTAINER_DEVICE_DIR: &str = "/dev/infiniband";
/// The connection-manager node every RDMA user also needs, beside its verbs node.
pub const RDMA_CM: &str = "rdma_cm";
/// Environment variable naming the allocated devices, so a process opens the right one.
pub const DEVICES_ENV: &str = "SHMDB_RDMA_DEVICES";

/// Serves one registration's worth of kubelet calls from the shared inventory.
#[derive(Clone, Debug)]
pub struct RdmaDevicePlugin {
    inventory: watch::Receiver<Inventory>,
    host_device_dir: PathBuf,
    stop: watch::Receiver<bool>,
    metrics: Option<PluginMetrics>,
}

impl RdmaDevicePlugin {
    /// A service over `inventory`; `ListAndWatch` streams end when `stop` turns true (so the
    /// server can shut down when the kubelet restarts). Device nodes are taken from
    /// `host_device_dir` (`/dev/infiniband` on a real node).
    pub fn new(
        inventory: watch::Receiver<Inventory>,
        host_device_dir: impl Into<PathBuf>,
        stop: watch::Receiver<bool>,
        metrics: Option<PluginMetrics>,
    ) -> Self {
        RdmaDevicePlugin {
            inventory,
            host_device_dir: host_device_dir.into(),
            stop,
            metrics,
        }
    }

    fn device_spec(&self, node: &str) -> api::DeviceSpec {
        api::DeviceSpec {
            container_path: format!("{CONTAINER_DEVICE_DIR}/{node}"),
            host_path: self.host_device_dir.join(node).display().to_string(),
            permissions: "rw".to_string(),
        }
    }

    /// The device nodes and environment of one container's devices.
    fn allocate_container(
        &self,
        inventory: &Inventory,
        ids: &[String],
    ) -> Result<api::ContainerAllocateResponse, Status> {
        if ids.is_empty() {
            return Err(Status::invalid_argument(
                "no device ids in a container request",
            ));
        }
        let mut devices = Vec::new();
        if Path::new(&self.host_device_dir).join(RDMA_CM).exists() {
            devices.push(self.device_spec(RDMA_CM));
        }
        for id in ids {
            let Some(entry) = inventory.get(id) else {
                return Err(Status::invalid_argument(format!(
                    "unknown RDMA device {id:?}: this node advertises no such device"
                )));
            };
            if !entry.healthy() {
                return Err(Status::failed_precondition(format!(
                    "RDMA device {id:?} is unhealthy (removed or link down)"
                )));
            }
            for node in &entry.device.verbs {
                devices.push(self.device_spec(node));
            }
        }
        let envs = BTreeMap::from([(DEVICES_ENV.to_string(), ids.join(","))]);
        Ok(api::ContainerAllocateResponse {
            envs: envs.into_iter().collect(),
            devices,
            ..Default::default()
        })
    }
}

/// Picks `size` devices: the required ones first, then devices on the NUMA node of the first
/// pick (RDMA across sockets costs a QPI/UPI hop), then by id. Unknown ids sort last.
pub fn preferred(
    inventory: &Inventory,
    request: &api::ContainerPreferredAllocationRequest,
) -> Vec<String> {
    let size = usize::try_from(request.allocation_size).unwrap_or(0);
    let mut chosen: Vec<String> = request.must_include_device_i_ds.clone();
    let numa = |id: &str| inventory.get(id).and_then(|d| d.device.numa_node);
    let anchor = chosen
        .first()
        .or(request.available_device_i_ds.first())
        .and_then(|id| numa(id));
    let mut rest: Vec<&String> = request
        .available_device_i_ds
        .iter()
        .filter(|id| !chosen.contains(id))
        .collect();
    rest.sort_by_key(|id| {
        (
            anchor.is_none() || numa(id) != anchor,
            numa(id).is_none(),
            (*id).clone(),
        )
    });
    for id in rest {
        if chosen.len() >= size {
            break;
        }
        chosen.push(id.clone());
    }
    chosen
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for RdmaDevicePlugin {
    async fn get_device_plugin_options(
        &self,
        _request: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(
        &self,
        _request: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut stop = self.stop.clone();
        let stream = WatchStream::new(self.inventory.clone())
            .map(|inventory| {
                Ok(api::ListAndWatchResponse {
                    devices: inventory.to_api(),
                })
            })
            .take_until(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let inventory = self.inventory.borrow().clone();
        let container_responses = request
            .into_inner()
            .container_requests
            .iter()
            .map(|req| api::ContainerPreferredAllocationResponse {
                device_i_ds: preferred(&inventory, req),
            })
            .collect();
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let inventory = self.inventory.borrow().clone();
        let result: Result<Vec<_>, Status> = request
            .into_inner()
            .container_requests
            .iter()
            .map(|req| self.allocate_container(&inventory, &req.devices_i_ds))
            .collect();
        if let Some(metrics) = &self.metrics {
            let outcome = if result.is_ok() { "ok" } else { "error" };
            metrics.allocations.with_label_values(&[outcome]).inc();
        }
        match result {
            Ok(container_responses) => {
                tracing::info!(containers = container_responses.len(), "devices allocated");
                Ok(Response::new(api::AllocateResponse {
                    container_responses,
                }))
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), "allocation refused");
                Err(status)
            }
        }
    }

    async fn pre_start_container(
        &self,
        _request: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        // Nothing to prepare: the device nodes are all a container needs.
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

/// The optional calls this plugin serves (the same in the registration and the RPC).
pub fn options() -> api::DevicePluginOptions {
    api::DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}
