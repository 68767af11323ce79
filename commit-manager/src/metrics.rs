//! The commit manager's Prometheus metrics.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use shmdb_telemetry::MetricsRegistry;

use crate::core::CoreStatus;

/// Every metric a commit manager exports, in its own registry (tests run several managers
/// in one process).
#[derive(Debug, Clone)]
pub struct ManagerMetrics {
    /// The registry, served at /metrics.
    pub registry: MetricsRegistry,
    /// Transactions started.
    pub starts: IntCounter,
    /// Transactions committed (durable).
    pub commits: IntCounter,
    /// Transactions aborted, by who ended them (`client` or `recovery`).
    pub aborts: IntCounterVec,
    /// Starts refused, by reason.
    pub start_refusals: IntCounterVec,
    /// Commits and aborts refused, by outcome.
    pub finish_refusals: IntCounterVec,
    /// Transactions not finished.
    pub running: IntGauge,
    /// Newest tid handed out minus lav: how far garbage collection trails.
    pub lav_lag: IntGauge,
    /// The lav handed out.
    pub lav: IntGauge,
    /// The base of the current snapshot.
    pub base: IntGauge,
    /// The newest tid handed out.
    pub newest_tid: IntGauge,
    /// Encoded size of the current snapshot descriptor.
    pub snapshot_bytes: IntGauge,
    /// Publish latency (one store write per group of commits).
    pub publish_seconds: Histogram,
    /// Publishes that waited for a group of fresh commits, by how the wait ended
    /// (`complete`: every fresh transaction finished; `timeout`: the group wait ran out).
    pub group_waits: IntCounterVec,
    /// Publish failures, by kind.
    pub publish_failures: IntCounterVec,
    /// Publishes written and not yet answered (at most `--publish-slots`): shows whether the
    /// overlap of publishes is used.
    pub publishes_in_flight: IntGauge,
    /// Merge rounds completed.
    pub merges: IntCounter,
    /// Tid blocks leased.
    pub leases: IntCounterVec,
    /// Other managers seen by the last merge.
    pub peers: IntGauge,
    /// Open `Session` streams (about one per processing node).
    pub sessions: IntGauge,
}

impl ManagerMetrics {
    /// Creates and registers every metric, labelled with the manager id.
    pub fn new(manager_id: u64) -> Result<ManagerMetrics, shmdb_telemetry::TelemetryError> {
        let registry = MetricsRegistry::new([("manager", manager_id.to_string())])?;
        Ok(ManagerMetrics {
            starts: registry
                .register_int_counter("shmdb_commit_starts_total", "Transactions started")?,
            commits: registry.register_int_counter(
                "shmdb_commit_commits_total",
                "Transactions committed (durable in the store)",
            )?,
            aborts: registry.register_int_counter_vec(
                "shmdb_commit_aborts_total",
                "Transactions aborted, by who ended them",
                &["by"],
            )?,
            start_refusals: registry.register_int_counter_vec(
                "shmdb_commit_start_refusals_total",
                "Starts refused, by reason",
                &["reason"],
            )?,
            finish_refusals: registry.register_int_counter_vec(
                "shmdb_commit_finish_refusals_total",
                "Commits and aborts refused, by outcome",
                &["outcome"],
            )?,
            running: registry
                .register_int_gauge("shmdb_commit_running", "Transactions not finished")?,
            lav_lag: registry.register_int_gauge(
                "shmdb_commit_lav_lag",
                "Newest tid handed out minus the lowest active version",
            )?,
            lav: registry.register_int_gauge("shmdb_commit_lav", "Lowest active version")?,
            base: registry
                .register_int_gauge("shmdb_commit_base", "Base of the current snapshot")?,
            newest_tid: registry
                .register_int_gauge("shmdb_commit_newest_tid", "Newest tid handed out")?,
            snapshot_bytes: registry.register_int_gauge(
                "shmdb_commit_snapshot_bytes",
                "Encoded size of the current snapshot descriptor",
            )?,
            publish_seconds: registry.register_latency_histogram(
                "shmdb_commit_publish_seconds",
                "Latency of publishing the manager state (one store write per commit group)",
            )?,
            group_waits: registry.register_int_counter_vec(
                "shmdb_commit_group_waits_total",
                "Publishes that waited for the commits of fresh short transactions, by how the wait ended",
                &["outcome"],
            )?,
            publish_failures: registry.register_int_counter_vec(
                "shmdb_commit_publish_failures_total",
                "Failed publishes, by kind",
                &["kind"],
            )?,
            publishes_in_flight: registry.register_int_gauge(
                "shmdb_commit_publishes_in_flight",
                "Publishes written to the store and not yet answered",
            )?,
            merges: registry.register_int_counter(
                "shmdb_commit_merges_total",
                "Merge rounds over every manager's published state",
            )?,
            leases: registry.register_int_counter_vec(
                "shmdb_commit_tid_leases_total",
                "Tid block leases, by outcome",
                &["outcome"],
            )?,
            peers: registry.register_int_gauge(
                "shmdb_commit_peer_managers",
                "Other commit managers seen by the last merge",
            )?,
            sessions: registry.register_int_gauge(
                "shmdb_commit_sessions",
                "Open Session streams (about one per processing node)",
            )?,
            registry,
        })
    }

    /// Brings gauges and counters in line with the core's status (called every merge, so
    /// the request path only touches the core).
    pub fn observe(&self, status: &CoreStatus, last: &mut CoreStatusCounters) {
        let s = &status.stats;
        self.starts.inc_by(s.starts.saturating_sub(last.starts));
        self.commits.inc_by(s.commits.saturating_sub(last.commits));
        self.aborts
            .with_label_values(&["client"])
            .inc_by(s.aborts.saturating_sub(last.aborts));
        self.aborts
            .with_label_values(&["recovery"])
            .inc_by(s.recovered_aborts.saturating_sub(last.recovered_aborts));
        self.start_refusals
            .with_label_values(&["window_full"])
            .inc_by(s.window_refusals.saturating_sub(last.window_refusals));
        self.merges.inc_by(s.merges.saturating_sub(last.merges));
        *last = CoreStatusCounters {
            starts: s.starts,
            commits: s.commits,
            aborts: s.aborts,
            recovered_aborts: s.recovered_aborts,
            window_refusals: s.window_refusals,
            merges: s.merges,
        };
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.running.set(gauge(status.running));
        self.lav.set(gauge(status.lav));
        self.base.set(gauge(status.base));
        self.newest_tid.set(gauge(status.issued));
        self.lav_lag
            .set(gauge(status.issued.saturating_sub(status.lav)));
        self.snapshot_bytes.set(gauge(status.snapshot_bytes));
        self.peers.set(gauge(status.peers.len() as u64));
    }
}

/// The core counters as last mirrored into Prometheus (counters only go up, so the
/// difference is added each time).
#[derive(Debug, Clone, Default)]
pub struct CoreStatusCounters {
    starts: u64,
    commits: u64,
    aborts: u64,
    recovered_aborts: u64,
    window_refusals: u64,
    merges: u64,
}
