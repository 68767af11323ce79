//! Property tests of the snapshot descriptor against a naive model: the version set as a
//! plain set of tids.

use std::collections::BTreeSet;

use proptest::prelude::*;
use shmdb_snapshot::Snapshot;

/// The naive model: V = { x | x ≤ base } ∪ committed.
struct Model {
    base: u64,
    committed: BTreeSet<u64>,
}

impl Model {
    fn visible(&self, v: u64) -> bool {
        v <= self.base || self.committed.contains(&v)
    }
}

/// A base anywhere in the tid space (small, mid-range and near the top) and committed tids
/// scattered in a window above it, some of them below or at the base on purpose.
fn base_and_committed() -> impl Strategy<Value = (u64, Vec<u64>)> {
    let base = prop_oneof![
        0u64..1_000,
        1u64 << 40..(1u64 << 40) + 1_000,
        u64::MAX - 5_000..u64::MAX
    ];
    (base, prop::collection::vec(0u64..4_000, 0..300)).prop_map(|(base, offsets)| {
        let committed = offsets
            .into_iter()
            .filter_map(|o| base.checked_add(o).map(|t| t.saturating_sub(10)))
            .collect();
        (base, committed)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_decode_round_trips((base, committed) in base_and_committed()) {
        let s = Snapshot::from_committed(base, committed);
        let bytes = s.to_bytes();
        prop_assert_eq!(bytes.len(), s.encoded_len());
        let back = Snapshot::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &s);
        prop_assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn visibility_equals_the_naive_set_model((base, committed) in base_and_committed(), probes in prop::collection::vec(0u64..4_200, 0..200)) {
        let model = Model { base, committed: committed.iter().copied().collect() };
        let s = Snapshot::from_committed(base, committed);
        // Probe the edges, every committed tid, and random points around the base.
        let mut points: Vec<u64> = vec![0, 1, base.saturating_sub(1), base, base.saturating_add(1), u64::MAX];
        points.extend(model.committed.iter().flat_map(|&t| [t.saturating_sub(1), t, t.saturating_add(1)]));
        points.extend(probes.iter().map(|p| base.saturating_sub(100).saturating_add(*p)));
        for v in points {
            prop_assert_eq!(s.is_visible(v), model.visible(v), "version {}", v);
        }
        let above: Vec<u64> = model.committed.range(base.saturating_add(1)..).copied().collect();
        let above = if base == u64::MAX { Vec::new() } else { above };
        prop_assert_eq!(s.committed_above_base().collect::<Vec<_>>(), above.clone());
        prop_assert_eq!(s.committed_count(), above.len() as u64);
    }

    #[test]
    fn newest_visible_equals_the_naive_choice((base, committed) in base_and_committed(), versions in prop::collection::vec(0u64..4_200, 0..20)) {
        let model = Model { base, committed: committed.iter().copied().collect() };
        let s = Snapshot::from_committed(base, committed);
        let versions: Vec<u64> = versions.iter().map(|v| base.saturating_sub(100).saturating_add(*v)).collect();
        let expected = versions.iter().copied().filter(|&v| model.visible(v)).max();
        prop_assert_eq!(s.newest_visible_version(versions.iter().copied()), expected);
        let rows: Vec<(u64, usize)> = versions.iter().copied().zip(0..).collect();
        prop_assert_eq!(s.newest_visible(rows.iter(), |r| r.0).map(|r| r.0), expected);
    }

    #[test]
    fn subset_equals_the_naive_set_inclusion((b1, c1) in base_and_committed(), shift in 0u64..64, extra in prop::collection::vec(0u64..200, 0..50)) {
        // A second snapshot near the first, usually a superset (later base, more commits).
        let b2 = b1.saturating_add(shift);
        let mut c2: Vec<u64> = c1.clone();
        c2.extend(extra.iter().map(|e| b1.saturating_add(*e)));
        let s1 = Snapshot::from_committed(b1, c1.clone());
        let s2 = Snapshot::from_committed(b2, c2.clone());
        let m1 = Model { base: b1, committed: c1.into_iter().collect() };
        let m2 = Model { base: b2, committed: c2.into_iter().collect() };
        // Versions that matter lie below max base + window; check the model over that span.
        let lo = b1.min(b2).saturating_sub(20);
        let hi = b1.max(b2).saturating_add(4_300);
        let naive = |a: &Model, b: &Model| (lo..=hi).all(|v| !a.visible(v) || b.visible(v));
        prop_assert_eq!(s1.is_subset_of(&s2), naive(&m1, &m2));
        prop_assert_eq!(s2.is_subset_of(&s1), naive(&m2, &m1));
    }

}

proptest! {
    // Each case builds a 100,000-tid set: fewer cases keep the suite fast.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_commits_among_100_000_tids_above_the_base_fit_in_13_kb(base in any::<u64>().prop_map(|b| b % (1u64 << 62)), holes in prop::collection::vec(0u64..100_001, 0..50)) {
        // The densest case: 100,000 of the 100,001 tids above the base committed (the first
        // one is still running, else the base would have moved past it), minus some holes.
        let holes: BTreeSet<u64> = holes.into_iter().collect();
        let committed = (2..=100_001u64).filter(|o| !holes.contains(o)).map(|o| base + o);
        let s = Snapshot::from_committed(base, committed);
        prop_assert!(s.encoded_len() <= 13_000, "{} bytes", s.encoded_len());
        prop_assert_eq!(s.to_bytes().len(), s.encoded_len());
    }
}

#[test]
fn exactly_100_000_committed_tids_above_the_base_take_under_13_kb() {
    let base = 1u64 << 50;
    let s = Snapshot::from_committed(base, (base + 2)..=(base + 100_001));
    assert_eq!(s.committed_count(), 100_000);
    let len = s.to_bytes().len();
    assert!(len <= 13_000, "{len} bytes");
    println!("100,000 committed tids above the base: {len} bytes");
}
