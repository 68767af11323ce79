//! `e2e-dns`: the harness's cluster DNS for the real node (see `shmdb_e2e::dns`). The
//! kubelet's `clusterDNS` points at its listen address; it answers Service and pod names
//! from the API (through `KUBECONFIG`) and exposes `/metrics` like every shmdb process.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser;
use shmdb_e2e::dns::cluster::ClusterView;
use shmdb_e2e::dns::server;
use shmdb_telemetry::{Health, LogFormat, MetricsRegistry};
use tokio::net::UdpSocket;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    about = "Cluster DNS for the e2e harness's real node: Service and pod names from the API"
)]
struct Args {
    /// UDP address to answer on (an address the pods reach, e.g. the CNI bridge's gateway).
    #[arg(long, env = "SHMDB_E2E_DNS_LISTEN", default_value = "10.88.0.1:53")]
    listen: SocketAddr,
    /// The cluster domain (the kubelet's `clusterDomain`).
    #[arg(long, env = "SHMDB_E2E_DNS_DOMAIN", default_value = "cluster.local")]
    domain: String,
    /// HTTP address of /metrics, /healthz and /readyz.
    #[arg(long, env = "SHMDB_METRICS_LISTEN", default_value = "127.0.0.1:0")]
    metrics_listen: SocketAddr,
    /// Log format: human or json.
    #[arg(long, env = "SHMDB_LOG_FORMAT", default_value = "human")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _telemetry = shmdb_telemetry::init("e2e-dns", args.log_format)?;
    let registry = MetricsRegistry::new([("component", "e2e-dns")])?;
    let queries = registry.register_int_counter_vec(
        "shmdb_e2e_dns_queries_total",
        "DNS queries answered, by result (answered, nxdomain, refused)",
        &["result"],
    )?;
    let health = Health::new();
    let (metrics_addr, _http) =
        shmdb_telemetry::serve(args.metrics_listen, registry, health.clone()).await?;

    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster named by KUBECONFIG")?;
    let view = ClusterView::start(client).await?;
    let socket = UdpSocket::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    health.set_ready();
    tracing::info!(listen = %args.listen, metrics = %metrics_addr, domain = %args.domain, "answering");
    let domain: Arc<str> = args.domain.into();
    server::serve(socket, view, domain, |outcome| {
        queries.with_label_values(&[outcome.as_str()]).inc();
    })
    .await
    .context("receiving DNS queries")
}
