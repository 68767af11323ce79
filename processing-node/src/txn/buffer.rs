//! Record buffering between reads: per transaction (default), or shared by the node.
//!
//! The three strategies of the design (DESIGN.md, "Buffering strategies"):
//! - **Transaction buffer**: every transaction keeps what it read; nothing is shared, so
//!   there is nothing to validate. Best when transactions rarely re-read each other's rows.
//! - **Shared record buffer**: one LRU per node; an entry carries the version set `C` for
//!   which it is complete, and a transaction with snapshot `V ⊆ C` may use it without a round
//!   trip. A miss stores the fetched record with `C := V_max` (the snapshot of the newest
//!   transaction begun on this node); a successful write stores `C := V_max ∪ {tid}`.
//! - **Shared buffer with version-set synchronization**: additionally, every writer bumps a
//!   counter per *cache unit* (a run of consecutive records: keys equal up to their last
//!   `unit_shift` bytes) in the store. A reader whose `V ⊄ C` fetches only the unit's counter:
//!   unchanged means no write touched the unit since the entry was stored, so the entry is
//!   complete for any snapshot and is used; otherwise the record is fetched again. Larger
//!   units mean fewer counters but more invalidations. All processing nodes of a cluster
//!   must use this strategy together (writers elsewhere would not bump the counters).

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use shmdb_snapshot::Snapshot;

use crate::record::Record;

/// Which buffering strategy a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferStrategy {
    /// Per-transaction buffer only (the default).
    TransactionBuffer,
    /// A node-wide LRU validated by version sets.
    SharedRecordBuffer {
        /// Entries kept.
        capacity: usize,
    },
    /// A node-wide LRU validated by per-cache-unit counters in the store.
    VersionSetSync {
        /// Entries kept.
        capacity: usize,
        /// Keys equal but for their last `unit_shift` bytes share a cache unit (0 = one
        /// record per unit).
        unit_shift: usize,
    },
}

/// Counters of a shared buffer (all zero for the transaction buffer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Reads served from the shared buffer without any round trip.
    pub hits: u64,
    /// Reads that fetched the record.
    pub misses: u64,
    /// Reads served after a cache-unit counter check showed the entry still valid.
    pub validated: u64,
}

impl BufferStats {
    /// Share of reads served without fetching the record.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses + self.validated;
        if total == 0 {
            0.0
        } else {
            (self.hits + self.validated) as f64 / total as f64
        }
    }
}

/// A buffered record: the record, its stamp (`None` = absent in the store), the version set it
/// is complete for, and (version-set sync) the unit counter read before it was fetched.
#[derive(Debug, Clone)]
pub struct BufferEntry {
    /// The record.
    pub record: Record,
    /// Its stamp.
    pub stamp: Option<u64>,
    /// Snapshots contained in this are served by the entry.
    pub valid_for: Arc<Snapshot>,
    /// The cache unit's counter when the entry was fetched.
    pub unit_version: Option<i64>,
}

/// The node-wide buffer of the two shared strategies.
#[derive(Debug)]
pub struct SharedBuffer {
    entries: Mutex<LruCache<(u64, Bytes), BufferEntry>>,
    /// Cache-unit granularity when synchronizing version sets, else `None`.
    pub unit_shift: Option<usize>,
    hits: AtomicU64,
    misses: AtomicU64,
    validated: AtomicU64,
}

impl SharedBuffer {
    /// The shared buffer a strategy needs, if any.
    pub fn for_strategy(strategy: &BufferStrategy) -> Option<Self> {
        let (capacity, unit_shift) = match *strategy {
            BufferStrategy::TransactionBuffer => return None,
            BufferStrategy::SharedRecordBuffer { capacity } => (capacity, None),
            BufferStrategy::VersionSetSync {
                capacity,
                unit_shift,
            } => (capacity, Some(unit_shift)),
        };
        Some(SharedBuffer {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN),
            )),
            unit_shift,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            validated: AtomicU64::new(0),
        })
    }

    /// The entry for a key, if buffered.
    pub fn get(&self, key: &(u64, Bytes)) -> Option<BufferEntry> {
        self.entries.lock().get(key).cloned()
    }

    /// Stores or replaces an entry.
    pub fn put(&self, key: (u64, Bytes), entry: BufferEntry) {
        self.entries.lock().put(key, entry);
    }

    /// Drops an entry (after a failed write: its state is unknown).
    pub fn invalidate(&self, key: &(u64, Bytes)) {
        self.entries.lock().pop(key);
    }

    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn validated(&self) {
        self.validated.fetch_add(1, Ordering::Relaxed);
    }

    /// Hit and miss counters.
    pub fn stats(&self) -> BufferStats {
        BufferStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            validated: self.validated.load(Ordering::Relaxed),
        }
    }
}

/// The store key (in `tables::KV`) of the counter of the cache unit holding `key`.
pub fn unit_counter_key(table: u64, key: &[u8], unit_shift: usize) -> Bytes {
    let unit = &key[..key.len().saturating_sub(unit_shift)];
    let mut out = Vec::with_capacity(12 + unit.len());
    out.extend_from_slice(b"\0vsu");
    out.extend_from_slice(&table.to_be_bytes());
    out.extend_from_slice(unit);
    Bytes::from(out)
}

/// `snapshot ∪ {tid}`: the version set of a record this node just wrote.
pub fn with_tid(snapshot: &Snapshot, tid: u64) -> Snapshot {
    if snapshot.is_visible(tid) {
        return snapshot.clone();
    }
    // Word copy and one bit: this runs on every commit (the node's newest snapshot).
    let bit = tid - snapshot.base() - 1;
    let (word, shift) = ((bit / 64) as usize, bit % 64);
    let mut words = snapshot.words().to_vec();
    if words.len() <= word {
        words.resize(word + 1, 0);
    }
    words[word] |= 1 << shift;
    Snapshot::from_words(snapshot.base(), words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_tid_adds_exactly_one_tid() {
        let s = Snapshot::from_committed(10, [12, 15]);
        let t = with_tid(&s, 20);
        assert!(t.is_visible(20) && t.is_visible(15) && t.is_visible(9));
        assert!(!t.is_visible(13) && !t.is_visible(21));
        assert!(s.is_subset_of(&t));
    }

    #[test]
    fn cache_units_group_neighbouring_keys() {
        let a = unit_counter_key(4, b"row-01", 1);
        let b = unit_counter_key(4, b"row-02", 1);
        let c = unit_counter_key(4, b"row-11", 1);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            unit_counter_key(4, b"row-01", 0),
            unit_counter_key(4, b"row-02", 0)
        );
    }
}
