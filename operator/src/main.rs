//! The `operator` binary: reconciles SharedMemDatabases and runs their placement managers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kube::runtime::events::Reporter;
use shmdb_operator::controller::{self, Context};
use shmdb_operator::metrics::Metrics;
use shmdb_operator::placement::PlacementSupervisor;
use shmdb_operator::readiness;
use shmdb_operator::selector::DatabaseSelector;
use shmdb_operator::telemetry;
use shmdb_placement_manager::ManagerConfig;

/// shmdb Kubernetes operator.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "shmdb operator: SharedMemDatabase reconciler and placement manager"
)]
struct Cli {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "SHMDB_OPERATOR_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    metrics_listen: SocketAddr,
    /// Log format: human or json.
    #[arg(long, env = "SHMDB_LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// This operator's identity in placement Leases and Events (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "shmdb-operator")]
    identity: String,
    /// Milliseconds between placement rounds.
    #[arg(long, env = "SHMDB_PLACEMENT_INTERVAL_MS", default_value_t = 1000)]
    placement_interval_ms: u64,
    /// Run the reconciler without placement managers (e.g. a second operator that only
    /// applies objects).
    #[arg(long, env = "SHMDB_NO_PLACEMENT")]
    no_placement: bool,
    /// Manage only the SharedMemDatabases whose labels match this label selector (kubectl
    /// syntax: `shmdb.io/operator=canary`, `team in (a,b)`, `!key`, ...); empty manages all.
    /// Give each operator installation of a cluster a disjoint selector. Placement Leases
    /// are per database, so even a database relabelled from one installation to another
    /// has one placement leader at a time.
    #[arg(long, env = "SHMDB_OPERATOR_SELECTOR", default_value = "")]
    selector: DatabaseSelector,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = cli
        .log_format
        .parse()
        .map_err(|e| anyhow::anyhow!("--log-format: {e}"))?;
    let _telemetry = telemetry::init(format)?;
    let metrics = Metrics::new().context("registering metrics")?;
    let health = shmdb_telemetry::Health::new();
    let (addr, _server) = telemetry::serve(cli.metrics_listen, &metrics, health.clone())
        .await
        .context("serving /metrics")?;
    tracing::info!(%addr, "metrics and health endpoint up");
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let placement = (!cli.no_placement).then(|| {
        Arc::new(PlacementSupervisor::new(
            client.clone(),
            cli.identity.clone(),
            ManagerConfig::default(),
            Duration::from_millis(cli.placement_interval_ms.max(50)),
            Some(metrics.clone()),
        ))
    });
    let reporter = Reporter {
        controller: "shmdb-operator".to_string(),
        instance: Some(cli.identity.clone()),
    };
    let ctx =
        Arc::new(Context::new(client, metrics, reporter, placement).with_selector(cli.selector));
    let readiness = tokio::spawn(readiness::ready_when_api_answers(
        ctx.client.clone(),
        health.clone(),
        Duration::from_millis(500),
    ));
    controller::run(ctx).await;
    readiness.abort();
    tracing::info!("operator stopped");
    Ok(())
}
