//! The plugin's life cycle: scan devices, serve the plugin socket, register, and start over
//! when the kubelet restarts.
//!
//! A restarting kubelet deletes every socket in its device-plugin directory and creates its
//! own socket anew; it forgets registered plugins. So the runner watches both sockets'
//! identities (device, inode and change time) and, when either changes or disappears,
//! stops its server, binds a fresh socket and registers again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{debug, info, warn};

use super::DevicePluginError;
use super::api::{self, device_plugin_server::DevicePluginServer};
use super::discovery;
use super::inventory::Inventory;
use super::metrics::PluginMetrics;
use super::registration;
use super::service::RdmaDevicePlugin;

/// Everything the plugin needs to know about its node.
#[derive(Clone, Debug)]
pub struct PluginConfig {
    /// The extended resource to advertise (`vendor-domain/name`).
    pub resource_name: String,
    /// The kubelet's device-plugin directory (where both sockets live).
    pub plugin_dir: PathBuf,
    /// The kubelet's socket file name in `plugin_dir`.
    pub kubelet_socket: String,
    /// This plugin's socket file name in `plugin_dir`.
    pub endpoint: String,
    /// Where RDMA devices are listed (`/sys/class/infiniband`).
    pub sysfs_root: PathBuf,
    /// Where the device nodes are on the host (`/dev/infiniband`).
    pub host_device_dir: PathBuf,
    /// How often sysfs and the sockets are checked.
    pub poll_interval: Duration,
    /// How long a registration may take.
    pub register_timeout: Duration,
}

impl PluginConfig {
    /// The defaults of a real node, for `resource_name`.
    pub fn node_defaults(resource_name: &str) -> Self {
        PluginConfig {
            resource_name: resource_name.to_string(),
            plugin_dir: PathBuf::from(api::DEVICE_PLUGIN_PATH),
            kubelet_socket: api::KUBELET_SOCKET.to_string(),
            endpoint: "shmdb-rdma.sock".to_string(),
            sysfs_root: PathBuf::from("/sys/class/infiniband"),
            host_device_dir: PathBuf::from("/dev/infiniband"),
            poll_interval: Duration::from_secs(5),
            register_timeout: Duration::from_secs(10),
        }
    }

    /// Rejects settings the kubelet would refuse or that cannot work.
    pub fn validate(&self) -> Result<(), DevicePluginError> {
        let bad = |m: String| Err(DevicePluginError::Config(m));
        match self.resource_name.split_once('/') {
            Some((domain, name))
                if !domain.is_empty() && !name.is_empty() && !name.contains('/') => {}
            _ => {
                return bad(format!(
                    "resource name {:?} must be `domain/name`, e.g. shmdb.io/rdma",
                    self.resource_name
                ));
            }
        }
        if self.endpoint.is_empty() || self.endpoint.contains('/') {
            return bad(format!(
                "endpoint {:?} must be a file name in the plugin directory",
                self.endpoint
            ));
        }
        if self.endpoint == self.kubelet_socket {
            return bad("the plugin endpoint must differ from the kubelet socket".to_string());
        }
        if self.poll_interval.is_zero() {
            return bad("the poll interval must be positive".to_string());
        }
        Ok(())
    }

    fn kubelet_path(&self) -> PathBuf {
        self.plugin_dir.join(&self.kubelet_socket)
    }

    fn plugin_path(&self) -> PathBuf {
        self.plugin_dir.join(&self.endpoint)
    }
}

/// Which file a path names now: a recreated socket has a new identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

fn identity(path: &Path) -> Option<FileIdentity> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
        ctime: meta.ctime(),
        ctime_nsec: meta.ctime_nsec(),
    })
}

fn rescan(
    config: &PluginConfig,
    inventory: &watch::Sender<Inventory>,
    metrics: Option<&PluginMetrics>,
) {
    match discovery::scan(&config.sysfs_root) {
        Ok(devices) => {
            let changed = inventory.send_if_modified(|inv| inv.update(devices));
            if changed {
                let (healthy, unhealthy) = inventory.borrow().counts();
                info!(healthy, unhealthy, "RDMA devices changed");
            }
            if let Some(metrics) = metrics {
                metrics.observe(&inventory.borrow());
            }
        }
        Err(e) => warn!(error = %e, "scanning RDMA devices failed; keeping the last list"),
    }
}

/// Waits one poll interval; true when shutdown was asked for instead (or whoever could ask
/// for it is gone).
async fn pause(interval: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = shutdown.wait_for(|s| *s) => true,
        _ = tokio::time::sleep(interval) => false,
    }
}

fn remove_socket(path: &Path) -> Result<(), DevicePluginError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DevicePluginError::Io {
            what: "removing the stale socket",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// One server generation: serving on a fresh socket until `stop` turns true.
struct Serving {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    socket: FileIdentity,
}

impl Serving {
    fn start(
        config: &PluginConfig,
        inventory: &watch::Receiver<Inventory>,
        metrics: Option<&PluginMetrics>,
    ) -> Result<Self, DevicePluginError> {
        let path = config.plugin_path();
        remove_socket(&path)?;
        let listener = UnixListener::bind(&path).map_err(|source| DevicePluginError::Io {
            what: "binding the plugin socket",
            path: path.clone(),
            source,
        })?;
        let socket = identity(&path).ok_or_else(|| DevicePluginError::Io {
            what: "reading the plugin socket",
            path: path.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        let (stop, stop_rx) = watch::channel(false);
        let service = RdmaDevicePlugin::new(
            inventory.clone(),
            config.host_device_dir.clone(),
            stop_rx.clone(),
            metrics.cloned(),
        );
        let mut until = stop_rx;
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = until.wait_for(|s| *s).await;
                }),
        );
        Ok(Serving { stop, task, socket })
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "plugin server ended with an error"),
            Ok(Err(e)) => warn!(error = %e, "plugin server task failed"),
            Err(_) => warn!("plugin server did not stop within 5s"),
        }
    }
}

/// Runs the plugin until `shutdown` turns true: advertises devices, registers, and
/// registers again after every kubelet restart. Errors on the way are logged and retried;
/// only an invalid configuration is returned.
pub async fn run(
    config: PluginConfig,
    metrics: Option<PluginMetrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DevicePluginError> {
    config.validate()?;
    let (inventory_tx, inventory) = watch::channel(Inventory::default());
    rescan(&config, &inventory_tx, metrics.as_ref());
    let kubelet_path = config.kubelet_path();
    loop {
        // The kubelet may not be up yet (or is restarting).
        let kubelet = loop {
            if let Some(id) = identity(&kubelet_path) {
                break id;
            }
            debug!(socket = %kubelet_path.display(), "waiting for the kubelet socket");
            if pause(config.poll_interval, &mut shutdown).await {
                return Ok(());
            }
            rescan(&config, &inventory_tx, metrics.as_ref());
        };
        let serving = match Serving::start(&config, &inventory, metrics.as_ref()) {
            Ok(serving) => serving,
            Err(e) => {
                warn!(error = %e, "cannot serve the plugin socket; retrying");
                if pause(config.poll_interval, &mut shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        let request = registration::request(&config.endpoint, &config.resource_name);
        let registered =
            registration::register(&kubelet_path, request, config.register_timeout).await;
        let outcome = if registered.is_ok() { "ok" } else { "error" };
        if let Some(metrics) = &metrics {
            metrics.registrations.with_label_values(&[outcome]).inc();
        }
        match registered {
            Ok(()) => info!(
                resource = %config.resource_name,
                endpoint = %config.endpoint,
                "registered with the kubelet"
            ),
            Err(e) => {
                warn!(error = %e, "registration failed; retrying");
                serving.stop().await;
                if pause(config.poll_interval, &mut shutdown).await {
                    let _ = remove_socket(&config.plugin_path());
                    return Ok(());
                }
                continue;
            }
        }
        // Registered: follow devices and watch for a kubelet restart.
        let stopping = loop {
            if pause(config.poll_interval, &mut shutdown).await {
                break true;
            }
            rescan(&config, &inventory_tx, metrics.as_ref());
            if identity(&kubelet_path) != Some(kubelet) {
                info!("the kubelet socket was recreated; registering again");
                break false;
            }
            if identity(&config.plugin_path()) != Some(serving.socket) {
                info!("the plugin socket was removed (kubelet restart); registering again");
                break false;
            }
            if serving.task.is_finished() {
                warn!("the plugin server stopped; starting it again");
                break false;
            }
        };
        serving.stop().await;
        if stopping {
            remove_socket(&config.plugin_path())?;
            return Ok(());
        }
    }
}
