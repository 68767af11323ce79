//! The operator's Prometheus metrics, served on `/metrics`.

use std::time::Duration;

use shmdb_telemetry::MetricsRegistry;
use shmdb_telemetry::prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

use crate::error::Error;

/// Counters and gauges of reconciles and placement, one set per operator process.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub registry: MetricsRegistry,
    /// Reconciles by outcome (`ok`, `error`); specs rejected as invalid are also counted
    /// under `invalid_spec`.
    pub reconciles: IntCounterVec,
    /// Reconcile failures by error kind.
    pub errors: IntCounterVec,
    /// Reconcile durations by outcome.
    pub duration: HistogramVec,
    /// Partition-map version per database.
    pub map_version: IntGaugeVec,
    /// Under-replicated ranges per database.
    pub under_replicated: IntGaugeVec,
    /// Placement steps executed in the last round per database (moves in flight).
    pub moves_in_flight: IntGaugeVec,
    /// Storage nodes the autoscaler wants per database.
    pub storage_target: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, shmdb_telemetry::TelemetryError> {
        let registry = MetricsRegistry::new([("component", "operator")])?;
        Ok(Metrics {
            reconciles: registry.register_int_counter_vec(
                "shmdb_operator_reconciles_total",
                "Reconciles of SharedMemDatabase objects by outcome",
                &["outcome"],
            )?,
            errors: registry.register_int_counter_vec(
                "shmdb_operator_reconcile_errors_total",
                "Failed reconciles by error kind",
                &["error"],
            )?,
            duration: registry.register_latency_histogram_vec(
                "shmdb_operator_reconcile_duration_seconds",
                "Reconcile duration by outcome",
                &["outcome"],
            )?,
            map_version: registry.register_int_gauge_vec(
                "shmdb_operator_partition_map_version",
                "Partition-map version per database",
                &["database"],
            )?,
            under_replicated: registry.register_int_gauge_vec(
                "shmdb_operator_under_replicated_ranges",
                "Ranges below the replication factor per database",
                &["database"],
            )?,
            moves_in_flight: registry.register_int_gauge_vec(
                "shmdb_operator_placement_moves_in_flight",
                "Placement steps executed in the last round per database",
                &["database"],
            )?,
            storage_target: registry.register_int_gauge_vec(
                "shmdb_operator_storage_target_replicas",
                "Storage nodes the autoscaler wants per database",
                &["database"],
            )?,
            registry,
        })
    }

    /// Records one finished reconcile.
    pub fn observe(&self, outcome: &str, elapsed: Duration, error: Option<&Error>) {
        self.reconciles.with_label_values(&[outcome]).inc();
        self.duration
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            self.errors.with_label_values(&[error.metric_label()]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_errors_are_exported() {
        let metrics = Metrics::new().expect("metrics");
        metrics.observe("ok", Duration::from_millis(3), None);
        metrics.observe(
            "error",
            Duration::from_millis(5),
            Some(&Error::MissingField("x")),
        );
        metrics.map_version.with_label_values(&["ns/db"]).set(7);
        let text = metrics.registry.encode_text();
        assert!(text.contains("shmdb_operator_reconciles_total"), "{text}");
        assert!(text.contains("error=\"missing_field\""), "{text}");
        assert!(
            text.contains("shmdb_operator_partition_map_version"),
            "{text}"
        );
        assert!(
            text.contains("shmdb_operator_reconcile_duration_seconds_bucket"),
            "{text}"
        );
    }
}
