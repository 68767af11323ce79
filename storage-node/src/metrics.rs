//! The storage node's Prometheus metrics.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use shmdb_telemetry::{LATENCY_BUCKETS, MetricsRegistry};

use crate::error::OpFailure;
use crate::range::Outcome;

/// Operation kinds counted in `shmdb_storage_ops_total`.
const OP_KINDS: &[&str] = &[
    "get",
    "put_if",
    "delete_if",
    "put",
    "delete",
    "increment",
    "check",
    "scan",
    "empty",
];
/// Outcomes counted in `shmdb_storage_ops_total`, indexed as in `record_op`.
const OUTCOMES: &[&str] = &[
    "ok",
    "conflict",
    "wrong_owner",
    "unavailable",
    "unknown_table",
    "invalid_argument",
    "resource_exhausted",
    "not_a_counter",
];

/// Every metric a storage node exports; registered in the node's own registry so several
/// nodes can live in one process (the embedded cluster, tests).
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// The registry the metrics live in, served at /metrics.
    pub registry: MetricsRegistry,
    /// Operations by kind and outcome.
    pub ops: IntCounterVec,
    /// `ops` resolved per (kind, outcome) once, so counting costs no label lookup.
    op_counters: Vec<Vec<IntCounter>>,
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
    /// Open `Stream` RPCs (clients multiplexing their requests over one stream each).
    pub streams: IntGauge,
    /// Open `ReplicateStream` RPCs served (one per range this node follows, per primary).
    pub replication_streams: IntGauge,
    /// Records a filtered scan examined and did not send: the network and decoding work the
    /// filter saved the reader.
    pub scan_filtered_out: IntCounter,
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
        let streams = IntGauge::new(
            "shmdb_storage_streams",
            "Open data-path streams (multiplexed batch and scan requests)",
        )?;
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
        registry.registry().register(Box::new(streams.clone()))?;
        let replication_streams = IntGauge::new(
            "shmdb_storage_replication_streams",
            "Open replication streams served (one per followed range and primary)",
        )?;
        registry
            .registry()
            .register(Box::new(replication_streams.clone()))?;
        let scan_filtered_out = IntCounter::new(
            "shmdb_storage_scan_filtered_out_total",
            "Records filtered scans examined and did not send",
        )?;
        registry
            .registry()
            .register(Box::new(scan_filtered_out.clone()))?;
        let op_counters = OP_KINDS
            .iter()
            .map(|kind| {
                OUTCOMES
                    .iter()
                    .map(|outcome| ops.with_label_values(&[kind, outcome]))
                    .collect()
            })
            .collect();
        Ok(NodeMetrics {
            registry,
            ops,
            op_counters,
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
            streams,
            replication_streams,
            scan_filtered_out,
        })
    }

    /// Counts one operation by its outcome.
    pub fn record_op(&self, kind: &str, result: &Result<Outcome, OpFailure>) {
        let outcome = match result {
            Ok(Outcome::Conflict(_)) => 1,
            Ok(_) => 0,
            Err(OpFailure::WrongOwner { .. }) => 2,
            Err(OpFailure::Unavailable { .. }) => 3,
            Err(OpFailure::UnknownTable(_)) => 4,
            Err(OpFailure::InvalidArgument(_)) => 5,
            Err(OpFailure::ResourceExhausted(_)) => 6,
            Err(OpFailure::NotACounter) => 7,
        };
        let kind = OP_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(OP_KINDS.len() - 1);
        if let Some(counter) = self.op_counters.get(kind).and_then(|k| k.get(outcome)) {
            counter.inc();
        }
    }
}
