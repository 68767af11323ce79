//! Prometheus metrics of the storage transport (`shmdb_transport_*`): which transport is in
//! use, queue-pair errors, bytes and completions over RDMA, and the framed TCP path's bytes,
//! frames and connection errors (`shmdb_transport_tcp_*`), so an operator can see which
//! path actually carries the traffic and whether it is healthy.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use shmdb_store_client::FramedMetrics;

/// The transport metrics of one process (or one node in a shared process); cheap to clone.
#[derive(Debug, Clone)]
pub struct TransportMetrics {
    /// 1 for the transport in use (`transport` = `tcp` (framed), `grpc` or `rdma`), 0 for
    /// the others.
    pub in_use: IntGaugeVec,
    /// Queue pairs that failed (error completions, failed posts, protocol violations).
    pub qp_errors: IntCounter,
    /// Payload bytes by direction (`sent`, `received`) over RDMA.
    pub bytes: IntCounterVec,
    /// Work completions by kind (`send`, `recv`, `error`).
    pub completions: IntCounterVec,
    /// Doorbells rung (each posts a chain of one or more sends).
    pub doorbells: IntCounter,
    /// Open RDMA connections (queue pairs).
    pub connections: IntGauge,
    /// The framed TCP data path's metrics (`shmdb_transport_tcp_*`).
    pub framed: FramedMetrics,
}

impl TransportMetrics {
    /// Creates the metrics without registering them (a client without a registry, tests).
    /// Fails only if a metric definition is invalid.
    pub fn new() -> Result<TransportMetrics, prometheus::Error> {
        Self::build(FramedMetrics::new()?)
    }

    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<TransportMetrics, prometheus::Error> {
        let metrics = Self::build(FramedMetrics::register(registry)?)?;
        registry.register(Box::new(metrics.in_use.clone()))?;
        registry.register(Box::new(metrics.qp_errors.clone()))?;
        registry.register(Box::new(metrics.bytes.clone()))?;
        registry.register(Box::new(metrics.completions.clone()))?;
        registry.register(Box::new(metrics.doorbells.clone()))?;
        registry.register(Box::new(metrics.connections.clone()))?;
        Ok(metrics)
    }

    /// Records which transport is in use (`tcp`, `grpc` or `rdma`).
    pub fn set_in_use(&self, transport: &str) {
        for t in ["tcp", "grpc", "rdma"] {
            self.in_use
                .with_label_values(&[t])
                .set(i64::from(t == transport));
        }
    }

    fn build(framed: FramedMetrics) -> Result<TransportMetrics, prometheus::Error> {
        Ok(TransportMetrics {
            framed,
            in_use: IntGaugeVec::new(
                Opts::new(
                    "shmdb_transport_in_use",
                    "1 for the storage transport in use (tcp = framed, grpc or rdma)",
                ),
                &["transport"],
            )?,
            qp_errors: IntCounter::new(
                "shmdb_transport_qp_errors_total",
                "RDMA queue pairs that failed",
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "shmdb_transport_bytes_total",
                    "RDMA payload bytes by direction",
                ),
                &["direction"],
            )?,
            completions: IntCounterVec::new(
                Opts::new(
                    "shmdb_transport_completions_total",
                    "RDMA work completions by kind",
                ),
                &["kind"],
            )?,
            doorbells: IntCounter::new(
                "shmdb_transport_doorbells_total",
                "RDMA doorbells rung (one per posted chain of sends)",
            )?,
            connections: IntGauge::new(
                "shmdb_transport_connections",
                "Open RDMA connections (queue pairs)",
            )?,
        })
    }
}
