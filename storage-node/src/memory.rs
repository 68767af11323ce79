//! The node's memory budget for record data.
//!
//! Every byte of keys and values a node holds is charged here before it is written, so a
//! write that would pass the configured limit fails with `RESOURCE_EXHAUSTED` instead of the
//! process growing until the kernel kills it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bookkeeping cost of one record beyond its key and value bytes (tree node share, stamp,
/// reference counts), so that many tiny records are charged for what they really take.
pub const RECORD_OVERHEAD: u64 = 64;

/// The memory charged for a record with this key and value length.
pub fn record_cost(key_len: usize, value_len: usize) -> u64 {
    key_len as u64 + value_len as u64 + RECORD_OVERHEAD
}

/// A shared counter of charged bytes with a hard limit.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicU64,
    limit: u64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes; 0 means unlimited.
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            used: AtomicU64::new(0),
            limit,
        }
    }

    /// Charges `bytes` if they fit under the limit; returns false (charging nothing) otherwise.
    pub fn try_charge(&self, bytes: u64) -> bool {
        if self.limit == 0 {
            self.used.fetch_add(bytes, Ordering::Relaxed);
            return true;
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Charges unconditionally: a replica must apply what its primary already applied.
    pub fn force_charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Returns bytes freed by an overwrite, a delete or a dropped range.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Bytes currently charged.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The configured limit (0 = unlimited).
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_limit_only() {
        let budget = MemoryBudget::new(100);
        assert!(budget.try_charge(60));
        assert!(!budget.try_charge(41));
        assert_eq!(budget.used(), 60);
        assert!(budget.try_charge(40));
        budget.release(30);
        assert_eq!(budget.used(), 70);
        budget.force_charge(50);
        assert_eq!(budget.used(), 120);
        assert!(!budget.try_charge(1));
    }

    #[test]
    fn zero_means_unlimited() {
        let budget = MemoryBudget::new(0);
        assert!(budget.try_charge(u64::MAX / 2));
    }
}
