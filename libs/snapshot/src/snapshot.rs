//! The snapshot descriptor type and its visibility rules.

/// A transaction's view of the database: base `b` plus the committed tids above it.
///
/// Invariant kept by every constructor: `words` has no trailing zero word, so two
/// descriptors with the same version set compare equal and encode identically.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Snapshot {
    /// Every tid ≤ base has finished (committed or aborted).
    base: u64,
    /// Bit `i` (bit `i % 64` of word `i / 64`) set ↔ tid `base + 1 + i` committed.
    words: Vec<u64>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 16;
        let committed: Vec<u64> = self.committed_above_base().take(SHOWN + 1).collect();
        let mut list = f.debug_struct("Snapshot");
        list.field("base", &self.base);
        if committed.len() > SHOWN {
            list.field("committed", &&committed[..SHOWN])
                .field("more", &(self.committed_count() - SHOWN as u64));
        } else {
            list.field("committed", &committed);
        }
        list.finish()
    }
}

impl Snapshot {
    /// A snapshot that sees exactly the tids ≤ `base` (nothing committed above it), e.g. the
    /// first snapshot of an empty cluster (`base` 0: nothing visible).
    pub fn new(base: u64) -> Snapshot {
        Snapshot {
            base,
            words: Vec::new(),
        }
    }

    /// A snapshot from its base and bitset words (bit `i` ↔ tid `base + 1 + i`), as a commit
    /// manager builds it from its own bit window. Trailing zero words are dropped.
    ///
    /// Bits that would name a tid above `u64::MAX` are cleared rather than rejected: such
    /// tids can never exist, so dropping them does not change the version set.
    pub fn from_words(base: u64, mut words: Vec<u64>) -> Snapshot {
        let room = u64::MAX - base; // tids base+1 ..= u64::MAX, i.e. bits 0..room
        if (words.len() as u128) * 64 > u128::from(room) {
            let keep_bits = room;
            let full = (keep_bits / 64) as usize;
            let rest = keep_bits % 64;
            if full < words.len() {
                words[full] &= if rest == 0 { 0 } else { (1u64 << rest) - 1 };
                for w in &mut words[full + 1..] {
                    *w = 0;
                }
            }
        }
        while words.last() == Some(&0) {
            words.pop();
        }
        Snapshot { base, words }
    }

    /// A snapshot with the given base whose committed set is `committed` (tids ≤ `base` are
    /// ignored: they are visible anyway). Convenient for tests and tools; commit managers use
    /// [`Snapshot::from_words`].
    pub fn from_committed(base: u64, committed: impl IntoIterator<Item = u64>) -> Snapshot {
        let mut words: Vec<u64> = Vec::new();
        for tid in committed {
            if tid <= base {
                continue;
            }
            let bit = tid - base - 1;
            let word = (bit / 64) as usize;
            if word >= words.len() {
                words.resize(word + 1, 0);
            }
            words[word] |= 1u64 << (bit % 64);
        }
        Snapshot::from_words(base, words)
    }

    /// Every tid ≤ base has finished; versions with such tids are visible.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The bitset words (bit `i` ↔ tid `base + 1 + i`), without trailing zero words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Whether a version written by transaction `version` is visible in this snapshot:
    /// `version ≤ base` or `version` committed above the base.
    #[inline]
    pub fn is_visible(&self, version: u64) -> bool {
        if version <= self.base {
            return true;
        }
        let bit = version - self.base - 1;
        let word = bit / 64;
        if word >= self.words.len() as u64 {
            return false;
        }
        self.words[word as usize] & (1u64 << (bit % 64)) != 0
    }

    /// The committed tids above the base, ascending.
    pub fn committed_above_base(&self) -> impl Iterator<Item = u64> + '_ {
        let base = self.base;
        self.words.iter().enumerate().flat_map(move |(i, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(base + 1 + (i as u64) * 64 + u64::from(bit))
            })
        })
    }

    /// How many tids above the base are committed.
    pub fn committed_count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The newest tid this snapshot can see: the highest committed tid above the base, else
    /// the base. Versions newer than this are invisible.
    pub fn newest_visible_tid(&self) -> u64 {
        match self.words.last() {
            Some(&last) => {
                let bit = (self.words.len() as u64 - 1) * 64 + u64::from(63 - last.leading_zeros());
                self.base + 1 + bit
            }
            None => self.base,
        }
    }

    /// Of a record's versions, the newest one visible in this snapshot (the version a reader
    /// takes), or `None` when no version is visible: the row does not exist for this reader.
    ///
    /// Versions may come in any order; `tid` extracts the version number (the writer's tid).
    /// A transaction's own writes are not this function's concern: they shadow everything
    /// and are kept by the reader, not in the store's version list.
    pub fn newest_visible<'a, T>(
        &self,
        versions: impl IntoIterator<Item = &'a T>,
        tid: impl Fn(&T) -> u64,
    ) -> Option<&'a T> {
        let mut best: Option<(u64, &'a T)> = None;
        for version in versions {
            let v = tid(version);
            if self.is_visible(v) && best.is_none_or(|(b, _)| v > b) {
                best = Some((v, version));
            }
        }
        best.map(|(_, version)| version)
    }

    /// Of a list of version numbers, the newest visible one.
    pub fn newest_visible_version(&self, versions: impl IntoIterator<Item = u64>) -> Option<u64> {
        versions.into_iter().filter(|&v| self.is_visible(v)).max()
    }

    /// Whether every version visible here is also visible in `other` (V(self) ⊆ V(other)).
    ///
    /// Why: a processing node's shared record buffer may serve a reader from an entry that
    /// is complete for a version set C only if the reader's set V ⊆ C (DESIGN.md, "Shared
    /// record buffer").
    pub fn is_subset_of(&self, other: &Snapshot) -> bool {
        // Tids in (other.base, self.base] are all visible here: other must have them all.
        if self.base > other.base {
            let first = other.base + 1;
            let span = self.base - other.base; // tids first ..= self.base
            if !other.has_all_committed(first, span) {
                return false;
            }
        }
        // Every committed tid above self.base must be visible in other.
        self.committed_above_base().all(|tid| other.is_visible(tid))
    }

    /// Whether the `count` tids starting at `first` (all above `self.base`) are committed.
    fn has_all_committed(&self, first: u64, count: u64) -> bool {
        let first_bit = first - self.base - 1;
        let end_bit = first_bit + count; // exclusive
        if end_bit > self.words.len() as u64 * 64 {
            return false;
        }
        let mut bit = first_bit;
        while bit < end_bit {
            let word = self.words[(bit / 64) as usize];
            let offset = bit % 64;
            let take = (64 - offset).min(end_bit - bit);
            let mask = if take == 64 {
                u64::MAX
            } else {
                ((1u64 << take) - 1) << offset
            };
            if word & mask != mask {
                return false;
            }
            bit += take;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_and_committed_bits_decide_visibility() {
        let s = Snapshot::from_committed(10, [12, 15, 80, 9]);
        assert_eq!(s.base(), 10);
        for v in 0..=10 {
            assert!(s.is_visible(v), "{v} is at or below the base");
        }
        assert!(!s.is_visible(11), "running or aborted above the base");
        assert!(s.is_visible(12));
        assert!(!s.is_visible(13));
        assert!(s.is_visible(15));
        assert!(s.is_visible(80));
        assert!(!s.is_visible(81));
        assert!(!s.is_visible(u64::MAX));
        assert_eq!(
            s.committed_above_base().collect::<Vec<_>>(),
            vec![12, 15, 80]
        );
        assert_eq!(s.newest_visible_tid(), 80);
        assert_eq!(Snapshot::new(7).newest_visible_tid(), 7);
    }

    #[test]
    fn trailing_zero_words_are_trimmed_so_equal_sets_compare_equal() {
        let a = Snapshot::from_words(5, vec![0b1, 0, 0]);
        let b = Snapshot::from_committed(5, [6]);
        assert_eq!(a, b);
        assert_eq!(a.words(), &[1]);
        assert_eq!(Snapshot::from_words(5, vec![0, 0]), Snapshot::new(5));
    }

    #[test]
    fn bits_beyond_the_largest_tid_are_dropped() {
        let s = Snapshot::from_words(u64::MAX - 3, vec![u64::MAX]);
        assert_eq!(
            s.committed_above_base().collect::<Vec<_>>(),
            vec![u64::MAX - 2, u64::MAX - 1, u64::MAX]
        );
        assert!(s.is_visible(u64::MAX));
        assert_eq!(
            Snapshot::from_words(u64::MAX, vec![1, 2]),
            Snapshot::new(u64::MAX)
        );
    }

    #[test]
    fn newest_visible_skips_invisible_versions_in_any_order() {
        let s = Snapshot::from_committed(10, [14]);
        let versions = [
            (16u64, "running"),
            (3, "old"),
            (14, "committed"),
            (9, "older"),
        ];
        let got = s.newest_visible(versions.iter(), |v| v.0);
        assert_eq!(got, Some(&(14, "committed")));
        assert_eq!(s.newest_visible_version([16, 15, 11]), None);
        assert_eq!(s.newest_visible_version([16, 10, 2]), Some(10));
        let none: [(u64, &str); 0] = [];
        assert_eq!(s.newest_visible(none.iter(), |v| v.0), None);
    }

    #[test]
    fn subset_compares_version_sets_not_representations() {
        // small: V = {..=10, 12}; big: V = {..=12, 14}.
        let small = Snapshot::from_committed(10, [12]);
        let big = Snapshot::from_committed(12, [14]);
        assert!(small.is_subset_of(&big));
        assert!(!big.is_subset_of(&small), "11 is visible in big only");
        let v = Snapshot::from_committed(10, [12]);
        let c = Snapshot::from_committed(8, [9, 10, 12, 13]);
        assert!(v.is_subset_of(&c));
        let c_missing = Snapshot::from_committed(8, [9, 12]);
        assert!(
            !v.is_subset_of(&c_missing),
            "10 is visible in v but not in c"
        );
        assert!(!c.is_subset_of(&v), "13 is visible in c only");
    }
}
