//! The storage node's Prometheus metrics.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use shmdb_telemetry::{LATENCY_BUCKETS, MetricsRegistry};

use crate::error::OpFailure;
use crate::range::Outcome;

/// Every metric a storage node exports; registered in the node's own registry so several
/// nodes can live in one process (the embedded cluster, tests).
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// The registry the metrics live in, served at /metrics.
    pub registry: MetricsRegistry,
    /// Operations by kind and outcome.
    pub ops: IntCounterVec,
    /// Request latency by RPC.
    pub request_seconds: HistogramVec,
    /// Conditional writes whose expectation failed.
    pub conflicts: IntCounter,
    /// Bytes of record data held.
    pub memory_used: IntGauge,
    /// The configured memory limit.
    pub memory_limit: IntGauge,
    /// Installed map version.
    pub map_version: IntGauge,
    /// Keys per range held here.
    pub range_keys: IntGaugeVec,
    /// Bytes per range held here.
    pub range_bytes: IntGaugeVec,
    /// Ranges held here by role.
    pub ranges: IntGaugeVec,
    /// Entries a follower is behind the primary, per range and follower.
    pub replication_lag: IntGaugeVec,
    /// Replication round-trip latency.
    pub replication_seconds: Histogram,
    /// Snapshots sent to followers.
    pub snapshots_sent: IntCounter,
    /// Ranges fenced (deposed primary or diverged replica).
    pub fenced: IntCounter,
}

impl NodeMetrics {
    /// Creates and registers every metric, labelled with the node id.
    pub fn new(node_id: u64) -> Result<Self, prometheus::Error> {
        let registry = MetricsRegistry::new([("node", node_id.to_string())])
            .map_err(|e| prometheus::Error::Msg(e.to_string()))?;
        let ops = IntCounterVec::new(
            Opts::new("shmdb_storage_ops_total", "Operations by kind and outcome"),
            &["kind", "outcome"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("shmdb_storage_request_seconds", "Request latency by RPC")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["rpc"],
        )?;
        let conflicts = IntCounter::new(
            "shmdb_storage_conditional_conflicts_total",
            "Conditional writes whose expectation failed",
        )?;
        let memory_used = IntGauge::new(
            "shmdb_storage_memory_used_bytes",
            "Bytes of record data held",
        )?;
        let memory_limit = IntGauge::new(
            "shmdb_storage_memory_limit_bytes",
            "Configured memory limit",
        )?;
        let map_version = IntGauge::new(
            "shmdb_storage_map_version",
            "Installed partition-map version",
        )?;
        let range_keys = IntGaugeVec::new(
            Opts::new("shmdb_storage_range_keys", "Keys per range"),
            &["range"],
        )?;
        let range_bytes = IntGaugeVec::new(
            Opts::new("shmdb_storage_range_bytes", "Bytes per range"),
            &["range"],
        )?;
        let ranges = IntGaugeVec::new(
            Opts::new("shmdb_storage_ranges", "Ranges held by role"),
            &["role"],
        )?;
        let replication_lag = IntGaugeVec::new(
            Opts::new(
                "shmdb_storage_replication_lag_entries",
                "Log entries a follower is behind",
            ),
            &["range", "follower"],
        )?;
        let replication_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "shmdb_storage_replication_seconds",
                "Replication request round trip",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let snapshots_sent =
            IntCounter::new("shmdb_storage_snapshots_sent_total", "Snapshots sent")?;
        let fenced = IntCounter::new("shmdb_storage_ranges_fenced_total", "Ranges fenced")?;
        registry.registry().register(Box::new(ops.clone()))?;
        registry
            .registry()
            .register(Box::new(request_seconds.clone()))?;
        registry.registry().register(Box::new(conflicts.clone()))?;
        registry
            .registry()
            .register(Box::new(memory_used.clone()))?;
        registry
            .registry()
            .register(Box::new(memory_limit.clone()))?;
        registry
            .registry()
            .register(Box::new(map_version.clone()))?;
        registry.registry().register(Box::new(range_keys.clone()))?;
        registry
            .registry()
            .register(Box::new(range_bytes.clone()))?;
        registry.registry().register(Box::new(ranges.clone()))?;
        registry
            .registry()
            .register(Box::new(replication_lag.clone()))?;
        registry
            .registry()
            .register(Box::new(replication_seconds.clone()))?;
        registry
            .registry()
            .register(Box::new(snapshots_sent.clone()))?;
        registry.registry().register(Box::new(fenced.clone()))?;
        Ok(NodeMetrics {
            registry,
            ops,
            request_seconds,
            conflicts,
            memory_used,
            memory_limit,
            map_version,
            range_keys,
            range_bytes,
            ranges,
            replication_lag,
            replication_seconds,
            snapshots_sent,
            fenced,
        })
    }

    /// Counts one operation by its outcome.
    pub fn record_op(&self, kind: &str, result: &Result<Outcome, OpFailure>) {
        let outcome = match result {
            Ok(Outcome::Conflict(_)) => "conflict",
            Ok(_) => "ok",
            Err(OpFailure::WrongOwner { .. }) => "wrong_owner",
            Err(OpFailure::Unavailable { .. }) => "unavailable",
            Err(OpFailure::UnknownTable(_)) => "unknown_table",
            Err(OpFailure::InvalidArgument(_)) => "invalid_argument",
            Err(OpFailure::ResourceExhausted(_)) => "resource_exhausted",
            Err(OpFailure::NotACounter) => "not_a_counter",
        };
        self.ops.with_label_values(&[kind, outcome]).inc();
    }
}
