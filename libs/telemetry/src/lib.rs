//! Logging, tracing, metrics and health endpoints shared by every shmdb binary.
//!
//! Every shmdb process — storage node, commit manager, processing node, operator and the
//! `shmdb` CLI — calls into this crate at start-up, so that logs, traces, metrics and health
//! look the same everywhere:
//!
//! - [`init`] installs the `tracing` subscriber: `RUST_LOG` filtering, human or JSON lines on
//!   stderr, and — when `OTEL_EXPORTER_OTLP_ENDPOINT` is set — span export over OTLP/gRPC, so
//!   one transaction can be followed from processing node to commit manager and storage nodes.
//! - [`MetricsRegistry`] is a Prometheus registry owned by one component instance (tests run
//!   several storage nodes in one process), with helpers that create and register metrics and
//!   the shared [`LATENCY_BUCKETS`].
//! - [`serve`] exposes a registry and a [`Health`] handle on `/metrics`, `/healthz` and
//!   `/readyz`, for Prometheus scrapes and Kubernetes probes.
//!
//! A binary's start-up typically reads:
//!
//! ```no_run
//! # async fn start() -> anyhow::Result<()> {
//! let _telemetry = shmdb_telemetry::init("storage-node", "json".parse()?)?;
//! let metrics = shmdb_telemetry::MetricsRegistry::new([("node", "sn-0")])?;
//! let health = shmdb_telemetry::Health::new();
//! let (addr, _server) =
//!     shmdb_telemetry::serve("0.0.0.0:9090".parse()?, metrics.clone(), health.clone()).await?;
//! tracing::info!(%addr, "telemetry endpoint up");
//! // … load ranges, then:
//! health.set_ready();
//! # Ok(())
//! # }
//! ```

mod error;
mod health;
mod http;
mod logging;
mod metrics;
mod signal;

pub use error::TelemetryError;
pub use health::{Health, STARTING_REASON};
pub use http::{serve, serve_with_shutdown};
pub use logging::{
    DEFAULT_LOG_FILTER, LOG_FILTER_ENV, LogFormat, OTLP_ENDPOINT_ENV, TelemetryGuard, init,
};
pub use metrics::{LATENCY_BUCKETS, METRICS_CONTENT_TYPE, MetricsRegistry};
pub use signal::shutdown_signal;

/// Re-exported so components name metric types without depending on `prometheus` directly
/// and always get the same version as the registry.
pub use prometheus;
