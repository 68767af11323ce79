//! Pruning on read: records a scan finds to be garbage are deleted behind it.
//!
//! A deleted row stays in the store as a tombstone record until garbage collection removes
//! it. The background sweep visits every record of every table, so on a large database a
//! round takes minutes, and rows deleted at the front of a key range pile up in between:
//! TPC-C's Delivery deletes the oldest `new_order` row of a district and, next time, asks
//! for the oldest again, wading through every tombstone left since the last sweep (hundreds
//! per district; most of the records its scans fetched). Readers therefore remove the
//! garbage they meet, as the sweep would (the same test, [`Record::is_garbage`], and the same
//! conditional delete, so a concurrent writer always wins), in a task of its own so the
//! reading statement does not wait for it.
//!
//! [`Record::is_garbage`]: crate::record::Record::is_garbage

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use shmdb_store_client::{CondOutcome, Expect, Op, OpOutcome, StoreClient};
use shmdb_telemetry::prometheus::IntCounter;
use shmdb_telemetry::{MetricsRegistry, TelemetryError};

/// How many garbage records readers deleted.
#[derive(Debug, Default)]
pub struct PruneStats {
    /// Records deleted (conditional deletes that won).
    pub pruned: AtomicU64,
    /// The same count on the node's `/metrics`, once [`PruneStats::export`]ed.
    exported: OnceLock<IntCounter>,
}

impl PruneStats {
    /// Exposes the counter on `registry` (the node's `/metrics`) from now on.
    pub fn export(&self, registry: &MetricsRegistry) -> Result<(), TelemetryError> {
        let pruned = registry.register_int_counter(
            "shmdb_gc_pruned_on_read_total",
            "Garbage records (tombstones every snapshot sees) deleted by the reads that met them",
        )?;
        pruned.inc_by(self.pruned.load(Ordering::Relaxed));
        // A second export keeps the first registry's counter.
        let _ = self.exported.set(pruned);
        Ok(())
    }

    fn count(&self, n: u64) {
        self.pruned.fetch_add(n, Ordering::Relaxed);
        if let Some(pruned) = self.exported.get() {
            pruned.inc_by(n);
        }
    }
}

/// Deletes `(key, stamp)` records of storage table `table` in the background, each only if
/// it still has the stamp it was read with. Failures are left to the background sweep.
pub(crate) fn prune_behind(
    store: &StoreClient,
    stats: &std::sync::Arc<PruneStats>,
    table: u64,
    garbage: Vec<(Bytes, u64)>,
) {
    if garbage.is_empty() {
        return;
    }
    let (store, stats) = (store.clone(), stats.clone());
    tokio::spawn(async move {
        let ops = garbage
            .into_iter()
            .map(|(key, stamp)| Op::delete_if(table, key, Expect::Stamp(stamp)))
            .collect();
        match store.batch(ops).await {
            Ok(outcomes) => {
                let won = outcomes
                    .iter()
                    .filter(|o| matches!(o, OpOutcome::Cond(CondOutcome::Written { .. })))
                    .count();
                stats.count(won as u64);
            }
            Err(e) => tracing::debug!(table, error = %e, "pruning garbage records failed"),
        }
    });
}
