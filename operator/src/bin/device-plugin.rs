//! The `device-plugin` binary: advertises a node's RDMA devices to the kubelet (run by the
//! chart's DaemonSet on RDMA nodes).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use shmdb_operator::device_plugin::metrics::PluginMetrics;
use shmdb_operator::device_plugin::{PluginConfig, api, run};
use tokio::sync::watch;

/// shmdb RDMA device plugin (kubelet device-plugin API v1beta1).
#[derive(Debug, Parser)]
#[command(version, about = "shmdb RDMA device plugin for the kubelet")]
struct Cli {
    /// Extended resource name to advertise.
    #[arg(long, env = "SHMDB_RDMA_RESOURCE", default_value = "shmdb.io/rdma")]
    resource_name: String,
    /// The kubelet's device-plugin directory.
    #[arg(long, env = "SHMDB_DEVICE_PLUGIN_DIR", default_value = api::DEVICE_PLUGIN_PATH)]
    plugin_dir: PathBuf,
    /// This plugin's socket file name in the plugin directory.
    #[arg(
        long,
        env = "SHMDB_DEVICE_PLUGIN_ENDPOINT",
        default_value = "shmdb-rdma.sock"
    )]
    endpoint: String,
    /// Where RDMA devices are listed.
    #[arg(
        long,
        env = "SHMDB_RDMA_SYSFS_ROOT",
        default_value = "/sys/class/infiniband"
    )]
    sysfs_root: PathBuf,
    /// Where the device nodes are on the host.
    #[arg(long, env = "SHMDB_RDMA_DEVICE_DIR", default_value = "/dev/infiniband")]
    device_dir: PathBuf,
    /// Milliseconds between device scans and kubelet-socket checks.
    #[arg(long, env = "SHMDB_DEVICE_PLUGIN_POLL_MS", default_value_t = 5000)]
    poll_ms: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "SHMDB_DEVICE_PLUGIN_METRICS_LISTEN",
        default_value = "0.0.0.0:9096"
    )]
    metrics_listen: SocketAddr,
    /// Log format: human or json.
    #[arg(long, env = "SHMDB_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = cli
        .log_format
        .parse()
        .map_err(|e| anyhow::anyhow!("--log-format: {e}"))?;
    let _telemetry = shmdb_telemetry::init("shmdb-device-plugin", format)?;
    let config = PluginConfig {
        resource_name: cli.resource_name.clone(),
        plugin_dir: cli.plugin_dir,
        endpoint: cli.endpoint,
        sysfs_root: cli.sysfs_root,
        host_device_dir: cli.device_dir,
        poll_interval: Duration::from_millis(cli.poll_ms),
        ..PluginConfig::node_defaults(&cli.resource_name)
    };
    config.validate()?;
    let metrics = PluginMetrics::new(&cli.resource_name).context("registering metrics")?;
    let health = shmdb_telemetry::Health::new();
    let (addr, _server) =
        shmdb_telemetry::serve(cli.metrics_listen, metrics.registry.clone(), health.clone())
            .await
            .context("serving /metrics")?;
    tracing::info!(%addr, "metrics and health endpoint up");
    let (stop, stop_rx) = watch::channel(false);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        let _ = stop.send(true);
    });
    health.set_ready();
    run(config, Some(metrics), stop_rx).await?;
    tracing::info!("device plugin stopped");
    Ok(())
}
