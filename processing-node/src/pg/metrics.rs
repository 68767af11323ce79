//! Metrics of the PostgreSQL front end: connections, statements, transactions, latencies.

use shmdb_telemetry::prometheus::{HistogramVec, IntCounterVec, IntGauge};
use shmdb_telemetry::{MetricsRegistry, TelemetryError};

/// The front end's metrics. A server without a registry (tests) uses [`PgMetrics::unregistered`].
#[derive(Clone, Debug)]
pub struct PgMetrics {
    /// Connections accepted, by outcome of startup (`ok`, `auth_failed`, `cancel`, `error`).
    pub connections: IntCounterVec,
    /// Connections open now.
    pub connections_active: IntGauge,
    /// Statements run, by protocol (`simple`, `extended`, `copy`) and result (`ok`, `error`).
    pub queries: IntCounterVec,
    /// Statement latency in seconds, by protocol.
    pub query_latency: HistogramVec,
    /// Transactions ended, by outcome (`commit`, `rollback`).
    pub transactions: IntCounterVec,
}

impl PgMetrics {
    /// Registers the front end's metrics in `registry`, so `/metrics` shows them.
    pub fn register(registry: &MetricsRegistry) -> Result<Self, TelemetryError> {
        Ok(PgMetrics {
            connections: registry.register_int_counter_vec(
                "shmdb_pg_connections_total",
                "Client connections accepted, by startup outcome",
                &["outcome"],
            )?,
            connections_active: registry
                .register_int_gauge("shmdb_pg_connections_active", "Client connections open now")?,
            queries: registry.register_int_counter_vec(
                "shmdb_pg_queries_total",
                "Statements run over the wire, by protocol and result",
                &["protocol", "result"],
            )?,
            query_latency: registry.register_latency_histogram_vec(
                "shmdb_pg_query_duration_seconds",
                "Statement latency as the wire protocol sees it, by protocol",
                &["protocol"],
            )?,
            transactions: registry.register_int_counter_vec(
                "shmdb_pg_transactions_total",
                "Transaction blocks ended by COMMIT/ROLLBACK statements, by outcome",
                &["outcome"],
            )?,
        })
    }

    /// Metrics registered in a private registry nobody scrapes (tests, embedded use).
    pub fn unregistered() -> Result<Self, TelemetryError> {
        Self::register(&MetricsRegistry::default())
    }

    /// Counts a statement and its latency; counts COMMIT/ROLLBACK as transaction ends.
    pub fn statement(&self, protocol: &str, ok: bool, seconds: f64, tag: Option<&str>) {
        self.queries
            .with_label_values(&[protocol, if ok { "ok" } else { "error" }])
            .inc();
        self.query_latency
            .with_label_values(&[protocol])
            .observe(seconds);
        match tag {
            Some("COMMIT") => self.transactions.with_label_values(&["commit"]).inc(),
            Some("ROLLBACK") => self.transactions.with_label_values(&["rollback"]).inc(),
            _ => {}
        }
    }
}
