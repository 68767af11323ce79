//! The RDMA device plugin against a test that plays the kubelet: a `Registration` server on
//! a temporary Unix socket, and a client of the plugin's own socket, over a fake sysfs tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shmdb_operator::device_plugin::api::{
    self, device_plugin_client::DevicePluginClient, registration_server,
};
use shmdb_operator::device_plugin::metrics::PluginMetrics;
use shmdb_operator::device_plugin::registration::uds_channel;
use shmdb_operator::device_plugin::{DevicePluginError, PluginConfig, run};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);
const RESOURCE: &str = "shmdb.io/rdma";
const ENDPOINT: &str = "shmdb-rdma.sock";
const REGISTRATIONS: &str = "shmdb_device_plugin_registrations_total";
const DEVICES: &str = "shmdb_device_plugin_devices";
const ALLOCATIONS: &str = "shmdb_device_plugin_allocations_total";

/// A node: the kubelet's plugin directory, a sysfs root and a device directory.
struct Node {
    _dir: tempfile::TempDir,
    plugins: PathBuf,
    sysfs: PathBuf,
    dev: PathBuf,
}

impl Node {
    fn new() -> anyhow::Result<Node> {
        let dir = tempfile::tempdir()?;
        let node = Node {
            plugins: dir.path().join("plugins"),
            sysfs: dir.path().join("sys/class/infiniband"),
            dev: dir.path().join("dev/infiniband"),
            _dir: dir,
        };
        std::fs::create_dir_all(&node.plugins)?;
        std::fs::create_dir_all(&node.sysfs)?;
        std::fs::create_dir_all(&node.dev)?;
        std::fs::write(node.dev.join("rdma_cm"), "")?;
        Ok(node)
    }

    /// Adds a device with one verbs node, one port in `state` and a NUMA node.
    fn add_device(&self, name: &str, uverbs: &str, numa: i64, state: &str) -> anyhow::Result<()> {
        let dir = self.sysfs.join(name);
        std::fs::create_dir_all(dir.join("device/infiniband_verbs").join(uverbs))?;
        std::fs::write(dir.join("device/numa_node"), format!("{numa}\n"))?;
        std::fs::create_dir_all(dir.join("ports/1"))?;
        std::fs::write(dir.join("ports/1/state"), state)?;
        std::fs::write(self.dev.join(uverbs), "")?;
        Ok(())
    }

    fn remove_device(&self, name: &str) -> anyhow::Result<()> {
        std::fs::remove_dir_all(self.sysfs.join(name))?;
        Ok(())
    }

    fn config(&self) -> PluginConfig {
        PluginConfig {
            plugin_dir: self.plugins.clone(),
            sysfs_root: self.sysfs.clone(),
            host_device_dir: self.dev.clone(),
            poll_interval: Duration::from_millis(50),
            register_timeout: Duration::from_secs(2),
            ..PluginConfig::node_defaults(RESOURCE)
        }
    }

    fn kubelet_socket(&self) -> PathBuf {
        self.plugins.join(api::KUBELET_SOCKET)
    }

    fn plugin_socket(&self) -> PathBuf {
        self.plugins.join(ENDPOINT)
    }
}

/// The kubelet's registration service: records requests, optionally refuses them.
struct Recorder {
    seen: mpsc::UnboundedSender<api::RegisterRequest>,
    refuse: bool,
}

#[tonic::async_trait]
impl registration_server::Registration for Recorder {
    async fn register(
        &self,
        request: Request<api::RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let _ = self.seen.send(request.into_inner());
        if self.refuse {
            return Err(Status::invalid_argument("resource name already registered"));
        }
        Ok(Response::new(api::Empty {}))
    }
}

/// A running fake kubelet.
struct Kubelet {
    registrations: mpsc::UnboundedReceiver<api::RegisterRequest>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Kubelet {
    fn start(socket: &Path, refuse: bool) -> anyhow::Result<Kubelet> {
        let listener = UnixListener::bind(socket)?;
        let (seen, registrations) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(registration_server::RegistrationServer::new(Recorder {
                    seen,
                    refuse,
                }))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        Ok(Kubelet {
            registrations,
            stop: Some(stop),
            task,
        })
    }

    async fn next_registration(&mut self) -> anyhow::Result<api::RegisterRequest> {
        tokio::time::timeout(WAIT, self.registrations.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no registration within {WAIT:?}"))?
            .ok_or_else(|| anyhow::anyhow!("registration channel closed"))
    }

    /// Stops serving, as a kubelet going down does.
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, self.task).await???;
        Ok(())
    }
}

/// The plugin running in the background.
struct Plugin {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), DevicePluginError>>,
    metrics: PluginMetrics,
}

impl Plugin {
    fn start(config: PluginConfig) -> anyhow::Result<Plugin> {
        let metrics = PluginMetrics::new(RESOURCE)?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(config, Some(metrics.clone()), stop_rx));
        Ok(Plugin {
            stop,
            task,
            metrics,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.task).await???;
        Ok(())
    }
}

async fn plugin_client(node: &Node) -> anyhow::Result<DevicePluginClient<Channel>> {
    Ok(DevicePluginClient::new(
        uds_channel(&node.plugin_socket()).await?,
    ))
}

/// (id, health, NUMA nodes) of a device list.
fn summary(devices: &[api::Device]) -> Vec<(String, String, Vec<i64>)> {
    devices
        .iter()
        .map(|d| {
            (
                d.id.clone(),
                d.health.clone(),
                d.topology
                    .as_ref()
                    .map(|t| t.nodes.iter().map(|n| n.id).collect())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// The value of the sample of `name` that carries `label` (e.g. `outcome="ok"`), if any.
fn sample(metrics: &PluginMetrics, name: &str, label: &str) -> Option<f64> {
    metrics.registry.encode_text().lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once("} ")?;
        labels
            .split(',')
            .any(|l| l == label)
            .then(|| value.trim().parse().ok())?
    })
}

/// Waits until the sample of `name` with `label` satisfies `want` (the plugin counts a
/// registration only after the kubelet's answer reaches it, a moment after the test saw it).
async fn wait_for_sample(
    metrics: &PluginMetrics,
    name: &str,
    label: &str,
    want: impl Fn(f64) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !sample(metrics, name, label).is_some_and(&want) {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "{name}{{{label}}} never reached the expected value:\n{}",
                metrics.registry.encode_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn entry(id: &str, health: &str, numa: &[i64]) -> (String, String, Vec<i64>) {
    (id.to_string(), health.to_string(), numa.to_vec())
}

/// Reads the stream until a list satisfies `want` (each change sends a full list).
async fn wait_for_list(
    stream: &mut Streaming<api::ListAndWatchResponse>,
    want: impl Fn(&[api::Device]) -> bool,
) -> anyhow::Result<Vec<api::Device>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .map_err(|_| anyhow::anyhow!("the expected device list did not arrive"))??
            .ok_or_else(|| anyhow::anyhow!("ListAndWatch ended"))?;
        if want(&message.devices) {
            return Ok(message.devices);
        }
    }
}

fn healthy(id: &str) -> impl Fn(&[api::Device]) -> bool + '_ {
    move |devices| {
        devices
            .iter()
            .any(|d| d.id == id && d.health == api::HEALTHY)
    }
}

fn unhealthy(id: &str) -> impl Fn(&[api::Device]) -> bool + '_ {
    move |devices| {
        devices
            .iter()
            .any(|d| d.id == id && d.health == api::UNHEALTHY)
    }
}

#[tokio::test]
async fn registers_with_the_kubelet_and_lists_the_devices() -> anyhow::Result<()> {
    let node = Node::new()?;
    node.add_device("mlx5_0", "uverbs0", 0, "4: ACTIVE\n")?;
    node.add_device("mlx5_1", "uverbs1", 1, "4: ACTIVE\n")?;
    node.add_device("mlx5_2", "uverbs2", -1, "1: DOWN\n")?;
    let mut kubelet = Kubelet::start(&node.kubelet_socket(), false)?;
    let plugin = Plugin::start(node.config())?;

    let request = kubelet.next_registration().await?;
    assert_eq!(request.version, "v1beta1");
    assert_eq!(request.endpoint, ENDPOINT);
    assert_eq!(request.resource_name, RESOURCE);
    let options = request
        .options
        .ok_or_else(|| anyhow::anyhow!("no options"))?;
    assert!(options.get_preferred_allocation_available);
    assert!(!options.pre_start_required);

    let mut client = plugin_client(&node).await?;
    let served = client
        .get_device_plugin_options(api::Empty {})
        .await?
        .into_inner();
    assert_eq!(served, options, "registered and served options differ");

    let mut stream = client.list_and_watch(api::Empty {}).await?.into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("ListAndWatch sent nothing"))?;
    assert_eq!(
        summary(&first.devices),
        [
            entry("mlx5_0", api::HEALTHY, &[0]),
            entry("mlx5_1", api::HEALTHY, &[1]),
            entry("mlx5_2", api::UNHEALTHY, &[]),
        ]
    );
    wait_for_sample(&plugin.metrics, REGISTRATIONS, "outcome=\"ok\"", |n| {
        n == 1.0
    })
    .await?;
    assert_eq!(
        sample(&plugin.metrics, DEVICES, "health=\"unhealthy\""),
        Some(1.0)
    );
    plugin.stop().await?;
    assert!(
        !node.plugin_socket().exists(),
        "the plugin socket outlived the plugin"
    );
    kubelet.stop().await
}

#[tokio::test]
async fn a_removed_device_turns_unhealthy_and_recovers() -> anyhow::Result<()> {
    let node = Node::new()?;
    node.add_device("mlx5_0", "uverbs0", 0, "4: ACTIVE\n")?;
    node.add_device("mlx5_1", "uverbs1", 0, "4: ACTIVE\n")?;
    let mut kubelet = Kubelet::start(&node.kubelet_socket(), false)?;
    let plugin = Plugin::start(node.config())?;
    kubelet.next_registration().await?;
    let mut client = plugin_client(&node).await?;
    let mut stream = client.list_and_watch(api::Empty {}).await?.into_inner();
    wait_for_list(&mut stream, healthy("mlx5_1")).await?;

    node.remove_device("mlx5_1")?;
    let list = wait_for_list(&mut stream, unhealthy("mlx5_1")).await?;
    assert_eq!(
        summary(&list),
        [
            entry("mlx5_0", api::HEALTHY, &[0]),
            entry("mlx5_1", api::UNHEALTHY, &[0]),
        ],
        "a removed device stays listed, as Unhealthy"
    );
    // The kubelet may still ask for it: allocation refuses an unhealthy device.
    let refused = client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_i_ds: vec!["mlx5_1".to_string()],
            }],
        })
        .await;
    let status = refused
        .err()
        .ok_or_else(|| anyhow::anyhow!("allocated a removed device"))?;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    node.add_device("mlx5_1", "uverbs1", 0, "4: ACTIVE\n")?;
    wait_for_list(&mut stream, healthy("mlx5_1")).await?;

    // A link going down is a health change too.
    std::fs::write(node.sysfs.join("mlx5_0/ports/1/state"), "1: DOWN\n")?;
    wait_for_list(&mut stream, unhealthy("mlx5_0")).await?;
    assert_eq!(
        sample(&plugin.metrics, DEVICES, "health=\"unhealthy\""),
        Some(1.0)
    );
    plugin.stop().await?;
    kubelet.stop().await
}

#[tokio::test]
async fn allocate_hands_out_the_device_nodes() -> anyhow::Result<()> {
    let node = Node::new()?;
    node.add_device("mlx5_0", "uverbs0", 0, "4: ACTIVE\n")?;
    node.add_device("mlx5_1", "uverbs1", 1, "4: ACTIVE\n")?;
    let mut kubelet = Kubelet::start(&node.kubelet_socket(), false)?;
    let plugin = Plugin::start(node.config())?;
    kubelet.next_registration().await?;
    let mut client = plugin_client(&node).await?;
    let mut stream = client.list_and_watch(api::Empty {}).await?.into_inner();
    wait_for_list(&mut stream, healthy("mlx5_1")).await?;

    let response = client
        .allocate(api::AllocateRequest {
            container_requests: vec![
                api::ContainerAllocateRequest {
                    devices_i_ds: vec!["mlx5_0".to_string()],
                },
                api::ContainerAllocateRequest {
                    devices_i_ds: vec!["mlx5_1".to_string(), "mlx5_0".to_string()],
                },
            ],
        })
        .await?
        .into_inner();
    assert_eq!(response.container_responses.len(), 2);
    let host = |n: &str| node.dev.join(n).display().to_string();
    let spec = |n: &str| api::DeviceSpec {
        container_path: format!("/dev/infiniband/{n}"),
        host_path: host(n),
        permissions: "rw".to_string(),
    };
    let first = &response.container_responses[0];
    assert_eq!(first.devices, [spec("rdma_cm"), spec("uverbs0")]);
    assert_eq!(
        first.envs.get("SHMDB_RDMA_DEVICES").map(String::as_str),
        Some("mlx5_0")
    );
    assert!(first.mounts.is_empty());
    let second = &response.container_responses[1];
    assert_eq!(
        second.devices,
        [spec("rdma_cm"), spec("uverbs1"), spec("uverbs0")]
    );
    assert_eq!(
        second.envs.get("SHMDB_RDMA_DEVICES").map(String::as_str),
        Some("mlx5_1,mlx5_0")
    );

    // Ids this node never advertised and empty requests are the kubelet's mistake.
    for ids in [vec!["mlx5_9".to_string()], vec![]] {
        let status = client
            .allocate(api::AllocateRequest {
                container_requests: vec![api::ContainerAllocateRequest { devices_i_ds: ids }],
            })
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("a bad allocation succeeded"))?;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    assert_eq!(
        sample(&plugin.metrics, ALLOCATIONS, "outcome=\"error\""),
        Some(2.0)
    );
    assert_eq!(
        sample(&plugin.metrics, ALLOCATIONS, "outcome=\"ok\""),
        Some(1.0)
    );

    client
        .pre_start_container(api::PreStartContainerRequest {
            devices_i_ds: vec!["mlx5_0".to_string()],
        })
        .await?;
    plugin.stop().await?;
    kubelet.stop().await
}

#[tokio::test]
async fn preferred_allocation_keeps_devices_on_one_numa_node() -> anyhow::Result<()> {
    let node = Node::new()?;
    node.add_device("mlx5_0", "uverbs0", 0, "4: ACTIVE\n")?;
    node.add_device("mlx5_1", "uverbs1", 1, "4: ACTIVE\n")?;
    node.add_device("mlx5_2", "uverbs2", 0, "4: ACTIVE\n")?;
    node.add_device("mlx5_3", "uverbs3", 1, "4: ACTIVE\n")?;
    let mut kubelet = Kubelet::start(&node.kubelet_socket(), false)?;
    let plugin = Plugin::start(node.config())?;
    kubelet.next_registration().await?;
    let mut client = plugin_client(&node).await?;
    let mut stream = client.list_and_watch(api::Empty {}).await?.into_inner();
    wait_for_list(&mut stream, healthy("mlx5_3")).await?;

    let all: Vec<String> = (0..4).map(|i| format!("mlx5_{i}")).collect();
    let ask = |must: &[&str], size: i32| api::ContainerPreferredAllocationRequest {
        available_device_i_ds: all.clone(),
        must_include_device_i_ds: must.iter().map(|s| s.to_string()).collect(),
        allocation_size: size,
    };
    let response = client
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![ask(&["mlx5_1"], 2), ask(&[], 2), ask(&["mlx5_2"], 1)],
        })
        .await?
        .into_inner();
    let picks: Vec<Vec<String>> = response
        .container_responses
        .into_iter()
        .map(|r| r.device_i_ds)
        .collect();
    assert_eq!(
        picks,
        [
            vec!["mlx5_1".to_string(), "mlx5_3".to_string()],
            vec!["mlx5_0".to_string(), "mlx5_2".to_string()],
            vec!["mlx5_2".to_string()],
        ]
    );
    plugin.stop().await?;
    kubelet.stop().await
}

#[tokio::test]
async fn registers_again_after_the_kubelet_restarts() -> anyhow::Result<()> {
    let node = Node::new()?;
    node.add_device("mlx5_0", "uverbs0", 0, "4: ACTIVE\n")?;
    let mut kubelet = Kubelet::start(&node.kubelet_socket(), false)?;
    let plugin = Plugin::start(node.config())?;
    kubelet.next_registration().await?;

    // A restarting kubelet removes every socket in its directory and creates its own anew.
    kubelet.stop().await?;
    std::fs::remove_file(node.kubelet_socket())?;
    std::fs::remove_file(node.plugin_socket())?;
    let mut kubelet = Kubelet::start(&node.kubelet_socket(), false)?;
    let again = kubelet.next_registration().await?;
    assert_eq!(again.endpoint, ENDPOINT);
    assert_eq!(again.resource_name, RESOURCE);

    // The plugin serves on its new socket.
    let mut client = plugin_client(&node).await?;
    let mut stream = client.list_and_watch(api::Empty {}).await?.into_inner();
    wait_for_list(&mut stream, healthy("mlx5_0")).await?;
    wait_for_sample(&plugin.metrics, REGISTRATIONS, "outcome=\"ok\"", |n| {
        n == 2.0
    })
    .await?;

    // Only the kubelet socket recreated (the plugin socket left alone) is noticed as well.
    kubelet.stop().await?;
    std::fs::remove_file(node.kubelet_socket())?;
    let mut kubelet = Kubelet::start(&node.kubelet_socket(), false)?;
    kubelet.next_registration().await?;
    plugin.stop().await?;
    kubelet.stop().await
}

#[tokio::test]
async fn a_refused_registration_is_retried_until_the_kubelet_accepts() -> anyhow::Result<()> {
    let node = Node::new()?;
    node.add_device("mlx5_0", "uverbs0", 0, "4: ACTIVE\n")?;
    let mut refusing = Kubelet::start(&node.kubelet_socket(), true)?;
    let plugin = Plugin::start(node.config())?;
    refusing.next_registration().await?;
    refusing.next_registration().await?;
    refusing.stop().await?;
    std::fs::remove_file(node.kubelet_socket())?;
    wait_for_sample(&plugin.metrics, REGISTRATIONS, "outcome=\"error\"", |n| {
        n >= 2.0
    })
    .await?;

    let mut kubelet = Kubelet::start(&node.kubelet_socket(), false)?;
    kubelet.next_registration().await?;
    let mut client = plugin_client(&node).await?;
    client.get_device_plugin_options(api::Empty {}).await?;
    plugin.stop().await?;
    kubelet.stop().await
}

#[tokio::test]
async fn a_node_without_rdma_hardware_advertises_no_devices() -> anyhow::Result<()> {
    let node = Node::new()?;
    std::fs::remove_dir_all(&node.sysfs)?;
    let mut kubelet = Kubelet::start(&node.kubelet_socket(), false)?;
    let plugin = Plugin::start(node.config())?;
    kubelet.next_registration().await?;
    let mut client = plugin_client(&node).await?;
    let mut stream = client.list_and_watch(api::Empty {}).await?.into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("ListAndWatch sent nothing"))?;
    assert!(first.devices.is_empty(), "{:?}", first.devices);
    plugin.stop().await?;
    kubelet.stop().await
}

#[tokio::test]
async fn invalid_settings_are_refused_before_anything_starts() -> anyhow::Result<()> {
    let node = Node::new()?;
    let cases = [
        PluginConfig {
            resource_name: "rdma".to_string(),
            ..node.config()
        },
        PluginConfig {
            endpoint: "sub/dir.sock".to_string(),
            ..node.config()
        },
        PluginConfig {
            endpoint: api::KUBELET_SOCKET.to_string(),
            ..node.config()
        },
        PluginConfig {
            poll_interval: Duration::ZERO,
            ..node.config()
        },
    ];
    for config in cases {
        let (_stop, stop_rx) = watch::channel(false);
        let result = tokio::time::timeout(WAIT, run(config.clone(), None, stop_rx)).await?;
        assert!(
            matches!(result, Err(DevicePluginError::Config(_))),
            "{config:?} gave {result:?}"
        );
    }
    assert!(!node.plugin_socket().exists());
    Ok(())
}
