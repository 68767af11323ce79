//! Logging, traces and the `/metrics` + health endpoint of the operator process.
//!
//! The shared `shmdb-telemetry` crate does the work (JSON or human logs, OTLP span export
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, Prometheus text on `/metrics`); this module
//! names the operator's service and wires its registry.

use std::net::SocketAddr;

use shmdb_telemetry::{Health, LogFormat, TelemetryError, TelemetryGuard};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// The service name in logs and traces.
pub const SERVICE: &str = "shmdb-operator";

/// Installs logging and tracing; keep the guard alive for the process's lifetime so spans
/// are flushed on exit.
pub fn init(format: LogFormat) -> Result<TelemetryGuard, TelemetryError> {
    shmdb_telemetry::init(SERVICE, format)
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr`.
pub async fn serve(
    addr: SocketAddr,
    metrics: &Metrics,
    health: Health,
) -> Result<(SocketAddr, JoinHandle<()>), TelemetryError> {
    shmdb_telemetry::serve(addr, metrics.registry.clone(), health).await
}
