//! The node's background garbage collector: runs the lazy sweeps of [`crate::txn::gc`] on a
//! timer, so rows nobody writes again, index entries no version holds and log entries no
//! recovery needs are reclaimed in a running database, not only when someone calls the
//! sweeps by hand.
//!
//! Each round begins a transaction (which also refreshes the node's lav from its commit
//! manager), loads the current catalog in it (index sweeps need every table's index
//! definitions, including those other nodes created), ends it, and sweeps with that lav.
//! Every change a sweep makes is conditional on the stamp it read, so rounds of several
//! nodes may overlap and race writers without harm; they only repeat work. A failed round
//! is counted and logged and the next one starts after the interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shmdb_placement::tables;
use shmdb_telemetry::prometheus::{Histogram, IntCounterVec};
use shmdb_telemetry::{MetricsRegistry, TelemetryError};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::sql::{SqlEngine, SqlError, txn_error};
use crate::txn::gc::{SweepStats, sweep_index, sweep_log, sweep_records};

/// Rounds scan whole tables: seconds to minutes, not the microseconds of a request.
const ROUND_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Metrics of the background sweeps.
#[derive(Clone, Debug)]
pub struct SweepMetrics {
    /// Rounds, by outcome (`ok`, `error`).
    pub rounds: IntCounterVec,
    /// Records or entries looked at, by what was swept (`rows`, `unique`, `index`, `log`).
    pub visited: IntCounterVec,
    /// Records rewritten without garbage versions or deleted, by what was swept.
    pub reclaimed: IntCounterVec,
    /// How long a round took.
    pub duration: Histogram,
}

impl SweepMetrics {
    /// Registers the sweep metrics in `registry`, so `/metrics` shows them.
    pub fn register(registry: &MetricsRegistry) -> Result<Self, TelemetryError> {
        let duration = registry.register_histogram_vec(
            "shmdb_gc_sweep_duration_seconds",
            "Duration of one background garbage-collection round",
            &[],
            &ROUND_BUCKETS,
        )?;
        Ok(SweepMetrics {
            rounds: registry.register_int_counter_vec(
                "shmdb_gc_sweep_rounds_total",
                "Background garbage-collection rounds, by outcome",
                &["outcome"],
            )?,
            visited: registry.register_int_counter_vec(
                "shmdb_gc_sweep_visited_total",
                "Records and entries the background sweeps looked at, by what was swept",
                &["kind"],
            )?,
            reclaimed: registry.register_int_counter_vec(
                "shmdb_gc_sweep_reclaimed_total",
                "Records compacted or deleted by the background sweeps, by what was swept",
                &["kind"],
            )?,
            duration: duration.with_label_values(&[] as &[&str]),
        })
    }

    fn record(&self, kind: &str, stats: SweepStats) {
        self.visited
            .with_label_values(&[kind])
            .inc_by(stats.visited);
        self.reclaimed
            .with_label_values(&[kind])
            .inc_by(stats.compacted + stats.deleted);
    }
}

/// What one round reclaimed, summed over every sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// The lav the round collected for.
    pub lav: u64,
    /// Sum of the sweeps' statistics.
    pub total: SweepStats,
}

/// Runs one round: every sweep once, with the lav of a fresh transaction.
pub async fn sweep_once(
    sql: &SqlEngine,
    metrics: Option<&SweepMetrics>,
) -> Result<RoundStats, SqlError> {
    let mut tx = sql.engine.begin().await.map_err(txn_error)?;
    let catalog = sql.catalog.load(&mut tx).await;
    // Read-only: nothing to commit; ending it frees the tid at once.
    let _ = tx.rollback().await;
    let catalog = catalog?;
    let lav = sql.engine.lav();
    let store = sql.engine.store();
    let mut round = RoundStats {
        lav,
        ..RoundStats::default()
    };
    let mut add = |kind: &str, stats: SweepStats| {
        if let Some(m) = metrics {
            m.record(kind, stats);
        }
        round.total.visited += stats.visited;
        round.total.compacted += stats.compacted;
        round.total.deleted += stats.deleted;
    };
    add(
        "rows",
        sweep_records(store, tables::ROWS, lav)
            .await
            .map_err(txn_error)?,
    );
    add(
        "unique",
        sweep_records(store, tables::INDEXES, lav)
            .await
            .map_err(txn_error)?,
    );
    for table in catalog.sorted() {
        let def = table.def();
        for index in &def.indexes {
            add(
                "index",
                sweep_index(store, &def, index, lav)
                    .await
                    .map_err(txn_error)?,
            );
        }
    }
    add("log", sweep_log(store, lav).await.map_err(txn_error)?);
    Ok(round)
}

/// Starts the background sweeper: a round every `interval` (the first after one interval,
/// so a starting node serves clients first). Abort the handle to stop it.
pub fn spawn(
    sql: Arc<SqlEngine>,
    interval: Duration,
    metrics: Option<SweepMetrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = Instant::now();
            let result = sweep_once(&sql, metrics.as_ref()).await;
            let outcome = match &result {
                Ok(round) => {
                    debug!(
                        lav = round.lav,
                        visited = round.total.visited,
                        compacted = round.total.compacted,
                        deleted = round.total.deleted,
                        "garbage-collection round done"
                    );
                    "ok"
                }
                Err(e) => {
                    warn!(error = %e, "garbage-collection round failed; retrying next interval");
                    "error"
                }
            };
            if let Some(m) = &metrics {
                m.rounds.with_label_values(&[outcome]).inc();
                m.duration.observe(started.elapsed().as_secs_f64());
            }
        }
    })
}
