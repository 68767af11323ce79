//! A sliding bit window of committed tids, the commit manager's working form of `N`.
//!
//! Snapshots are cut from it word by word ([`CommitBits::snapshot_above`]), published sets
//! are merged into it word by word ([`CommitBits::merge`]), and it is pruned from the front
//! as the base moves on, so its size follows the window of outstanding tids, not history.

use std::collections::VecDeque;

use shmdb_snapshot::Snapshot;

/// Committed tids in `[start, start + 64 · words.len())`; `start` is a multiple of 64.
#[derive(Debug, Clone)]
pub(crate) struct CommitBits {
    start: u64,
    words: VecDeque<u64>,
}

impl CommitBits {
    /// An empty window whose first representable tid is `from` (rounded down to 64).
    pub(crate) fn new(from: u64) -> CommitBits {
        CommitBits {
            start: from & !63,
            words: VecDeque::new(),
        }
    }

    /// The first tid the window can hold; lower tids were pruned.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Marks `tid` committed; false when it already was, or lies below the window.
    pub(crate) fn set(&mut self, tid: u64) -> bool {
        if tid < self.start {
            return false;
        }
        let rel = tid - self.start;
        let word = (rel / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << (rel % 64);
        let was = self.words[word] & mask != 0;
        self.words[word] |= mask;
        !was
    }

    /// Whether `tid` is marked committed (false below the window).
    pub(crate) fn contains(&self, tid: u64) -> bool {
        if tid < self.start {
            return false;
        }
        let rel = tid - self.start;
        self.words
            .get((rel / 64) as usize)
            .is_some_and(|w| w & (1u64 << (rel % 64)) != 0)
    }

    /// Forgets every word whose tids all lie below `tid`.
    pub(crate) fn prune_below(&mut self, tid: u64) {
        while self.start.saturating_add(64) <= tid {
            if self.words.pop_front().is_none() {
                // Empty window: jump straight to the new start.
                self.start = tid & !63;
                return;
            }
            self.start += 64;
        }
    }

    /// The 64 bits for tids `tid ..= tid + 63` (zeros outside the window).
    fn bits_from(&self, tid: u64) -> u64 {
        let rel = i128::from(tid) - i128::from(self.start);
        let word = rel.div_euclid(64);
        let shift = rel.rem_euclid(64) as u32;
        let get = |i: i128| -> u64 {
            if i < 0 {
                0
            } else {
                self.words.get(i as usize).copied().unwrap_or(0)
            }
        };
        let low = get(word);
        if shift == 0 {
            low
        } else {
            (low >> shift) | (get(word + 1) << (64 - shift))
        }
    }

    /// One past the highest tid the window can hold.
    fn end(&self) -> u64 {
        self.start.saturating_add(64 * self.words.len() as u64)
    }

    /// The snapshot with this `base` and every committed tid above it.
    pub(crate) fn snapshot_above(&self, base: u64) -> Snapshot {
        let first = base.saturating_add(1);
        let end = self.end();
        if first >= end {
            return Snapshot::new(base);
        }
        let count = (end - first).div_ceil(64) as usize;
        let mut words = Vec::with_capacity(count);
        let mut tid = first;
        for _ in 0..count {
            words.push(self.bits_from(tid));
            tid = tid.saturating_add(64);
        }
        Snapshot::from_words(base, words)
    }

    /// The committed tids at or above `from`, as a snapshot-shaped set with base `from - 1`
    /// (what a manager publishes: its committed tids above its prune point).
    pub(crate) fn published_from(&self, from: u64) -> Snapshot {
        self.snapshot_above(from.saturating_sub(1))
    }

    /// Adds every committed tid of `set` (above its base) that lies in or above the window;
    /// returns whether any bit changed.
    pub(crate) fn merge(&mut self, set: &Snapshot) -> bool {
        let mut changed = false;
        let mut tid = set.base().saturating_add(1);
        for &word in set.words() {
            if word != 0 {
                changed |= self.or_word(tid, word);
            }
            tid = tid.saturating_add(64);
        }
        changed
    }

    /// ORs 64 bits for tids `tid ..= tid + 63` into the window; bits below it are dropped.
    fn or_word(&mut self, tid: u64, mut bits: u64) -> bool {
        let mut tid = tid;
        if tid < self.start {
            let gap = self.start - tid;
            if gap >= 64 {
                return false;
            }
            bits >>= gap;
            tid = self.start;
            if bits == 0 {
                return false;
            }
        }
        let rel = tid - self.start;
        let word = (rel / 64) as usize;
        let shift = (rel % 64) as u32;
        let needed = if shift == 0 || bits >> (64 - shift) == 0 {
            word + 1
        } else {
            word + 2
        };
        if needed > self.words.len() {
            self.words.resize(needed, 0);
        }
        let mut changed = false;
        let low = bits << shift;
        let before = self.words[word];
        self.words[word] |= low;
        changed |= self.words[word] != before;
        if shift != 0 {
            let high = bits >> (64 - shift);
            if high != 0 {
                let before = self.words[word + 1];
                self.words[word + 1] |= high;
                changed |= self.words[word + 1] != before;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn set_contains_and_prune() {
        let mut bits = CommitBits::new(130);
        assert_eq!(bits.start(), 128);
        assert!(bits.set(130));
        assert!(!bits.set(130));
        assert!(bits.set(1000));
        assert!(!bits.set(5), "below the window");
        assert!(bits.contains(130) && bits.contains(1000) && !bits.contains(131));
        bits.prune_below(700);
        assert_eq!(bits.start(), 640);
        assert!(!bits.contains(130));
        assert!(bits.contains(1000));
        let mut empty = CommitBits::new(0);
        empty.prune_below(1_000_000);
        assert_eq!(empty.start(), 1_000_000 & !63);
    }

    proptest! {
        #[test]
        fn snapshots_and_merges_match_a_set_model(
            start in 0u64..500,
            tids in prop::collection::vec(0u64..2_000, 0..200),
            remote in prop::collection::vec(0u64..2_000, 0..200),
            remote_base in 0u64..1_500,
            base in 0u64..2_100,
            prune in 0u64..800,
        ) {
            let mut bits = CommitBits::new(start);
            let mut model = BTreeSet::new();
            for t in tids {
                bits.set(t);
                if t >= bits.start() { model.insert(t); }
            }
            bits.prune_below(prune);
            model.retain(|&t| t >= bits.start());
            let remote_set = Snapshot::from_committed(remote_base, remote.iter().copied());
            bits.merge(&remote_set);
            model.extend(remote_set.committed_above_base().filter(|&t| t >= bits.start()));
            for t in 0..2_200 {
                prop_assert_eq!(bits.contains(t), model.contains(&t), "tid {}", t);
            }
            let snap = bits.snapshot_above(base);
            let expected = Snapshot::from_committed(base, model.iter().copied());
            prop_assert_eq!(snap, expected);
        }
    }
}
