//! Tests of records: encoding round trip, visibility, conflicts, undo and eager GC invariants.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn row(tid: u64) -> Version {
    Version::live(tid, format!("row@{tid}").into_bytes())
}

fn record(versions: Vec<Version>) -> Record {
    Record::from_versions(versions).expect("ordered versions")
}

fn tids(record: &Record) -> Vec<u64> {
    record.versions().iter().map(|v| v.tid).collect()
}

/// A snapshot `(b, N)` as DESIGN.md defines it: visible iff `v ≤ b` or `v ∈ N`.
fn snapshot(base: u64, committed: &[u64]) -> impl Fn(u64) -> bool + '_ {
    move |v| v <= base || committed.contains(&v)
}

#[test]
fn round_trips_through_bytes() {
    let rec = record(vec![
        row(1 << 40),
        Version::tombstone((1 << 40) - 1),
        Version::live(7, Vec::new()),
        row(1),
    ]);
    let bytes = Bytes::from(rec.encode());
    assert_eq!(bytes.len(), rec.encoded_len());
    assert_eq!(Record::decode(&bytes), Ok(rec));
    let empty = Record::new();
    assert_eq!(Record::decode(&Bytes::from(empty.encode())), Ok(empty));
}

#[test]
fn rejects_damaged_values() {
    let bytes = record(vec![row(9), row(3)]).encode();
    assert!(matches!(
        Record::decode(&Bytes::from(vec![2u8, 0])),
        Err(DecodeError::UnknownTag { tag: 2, .. })
    ));
    for cut in 1..bytes.len() {
        assert!(Record::decode(&Bytes::copy_from_slice(&bytes[..cut])).is_err());
    }
    // A zero tid delta would repeat a version.
    assert!(Record::decode(&Bytes::from(vec![FORMAT_V1, 2, 5, 0, 0, 0])).is_err());
    // A delta larger than the previous tid would underflow.
    assert!(Record::decode(&Bytes::from(vec![FORMAT_V1, 2, 5, 0, 6, 0])).is_err());
    assert_eq!(
        Record::from_versions(vec![row(3), row(3)]),
        Err(RecordError::Unordered {
            previous: 3,
            tid: 3
        })
    );
}

#[test]
fn reads_the_newest_visible_version() {
    let rec = record(vec![row(12), Version::tombstone(10), row(8), row(5)]);
    // Sees everything up to 9: version 8.
    assert_eq!(rec.visible(snapshot(9, &[])).map(|v| v.tid), Some(8));
    // Sees 10 (a tombstone): the row does not exist, though a version is visible.
    assert_eq!(rec.visible(snapshot(11, &[])).map(|v| v.tid), Some(10));
    assert_eq!(rec.visible_row(snapshot(11, &[])), None);
    // 12 committed above the base.
    assert_eq!(rec.visible(snapshot(6, &[12])).map(|v| v.tid), Some(12));
    // Older than every version: no row.
    assert_eq!(rec.visible(snapshot(4, &[])), None);
}

#[test]
fn conflicts_on_an_invisible_or_newer_head() {
    let rec = record(vec![row(12), row(5)]);
    assert!(!rec.write_conflict(20, snapshot(12, &[])));
    assert!(rec.write_conflict(20, snapshot(11, &[])));
    // Visible but from a larger tid (another commit manager's block).
    assert!(rec.write_conflict(10, snapshot(4, &[12])));
    assert!(!Record::new().write_conflict(1, snapshot(0, &[])));
}

#[test]
fn push_remove_and_write() {
    let mut rec = Record::new();
    rec.push(row(3)).expect("newer");
    rec.push(row(7)).expect("newer");
    assert_eq!(
        rec.push(row(7)),
        Err(RecordError::NotNewest { tid: 7, newest: 7 })
    );
    assert_eq!(rec.newest_tid(), Some(7));
    // Undo is idempotent.
    assert_eq!(rec.remove(7).map(|v| v.tid), Some(7));
    assert_eq!(rec.remove(7), None);
    assert_eq!(tids(&rec), vec![3]);
    // A failed write changes nothing, not even garbage.
    let mut rec = record(vec![row(9), row(4), row(2)]);
    assert!(rec.write(row(9), 5).is_err());
    assert_eq!(tids(&rec), vec![9, 4, 2]);
    assert_eq!(rec.write(row(10), 5), Ok(1));
    assert_eq!(tids(&rec), vec![10, 9, 4]);
}

#[test]
fn gc_keeps_what_old_snapshots_read() {
    let mut rec = record(vec![row(9), row(6), row(4), row(2), row(1)]);
    assert!(rec.has_garbage(5));
    assert_eq!(rec.gc(5), 2);
    assert_eq!(tids(&rec), vec![9, 6, 4]);
    assert!(!rec.has_garbage(5));
    assert_eq!(rec.gc(5), 0);
    // A tombstone as the largest version ≤ lav reads like no version: it goes too.
    let mut rec = record(vec![row(9), Version::tombstone(4), row(2)]);
    assert_eq!(rec.gc(5), 2);
    assert_eq!(tids(&rec), vec![9]);
    // A deleted row that everybody sees deleted is garbage as a whole.
    let mut rec = record(vec![Version::tombstone(4), row(2)]);
    assert!(rec.is_garbage(4));
    assert!(!rec.is_garbage(3));
    rec.gc(4);
    assert!(rec.is_empty());
}

#[test]
fn size_stays_bounded_under_updates() {
    // lav trails the newest tid by `lag`: at most `lag` versions above it plus one below.
    let lag = 5;
    let mut rec = Record::new();
    let mut largest = 0;
    for tid in 1..=10_000u64 {
        rec.write(row(tid), tid.saturating_sub(lag))
            .expect("tids increase");
        largest = largest.max(rec.encode().len());
        assert!(rec.len() <= lag as usize + 1, "{} versions", rec.len());
    }
    assert!(largest < 200, "record grew to {largest} bytes");
}

// ---- property tests --------------------------------------------------------------------

/// A record: distinct tids, newest first, rows and tombstones mixed.
fn any_record() -> impl Strategy<Value = Record> {
    proptest::collection::btree_map(1u64..60, any::<bool>(), 0..10).prop_map(|versions| {
        let versions = versions
            .into_iter()
            .rev()
            .map(|(tid, live)| {
                if live {
                    row(tid)
                } else {
                    Version::tombstone(tid)
                }
            })
            .collect();
        Record::from_versions(versions).unwrap_or_default()
    })
}

/// A snapshot that every running transaction could have for `lav`: base ≥ lav, plus some
/// committed tids above the base.
fn any_snapshot_for(lav: u64) -> impl Strategy<Value = (u64, BTreeSet<u64>)> {
    (lav..70).prop_flat_map(|base| {
        (
            Just(base),
            proptest::collection::btree_set(base + 1..=70, 0..8),
        )
    })
}

proptest! {
    #[test]
    fn encoding_round_trips(rec in any_record()) {
        let bytes = Bytes::from(rec.encode());
        prop_assert_eq!(bytes.len(), rec.encoded_len());
        prop_assert_eq!(Record::decode(&bytes), Ok(rec));
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
        let _ = Record::decode(&Bytes::from(bytes));
    }

    #[test]
    fn visible_is_the_newest_visible(rec in any_record(), visible in proptest::collection::btree_set(1u64..60, 0..20)) {
        let expected = rec.versions().iter().map(|v| v.tid).filter(|t| visible.contains(t)).max();
        prop_assert_eq!(rec.visible(|t| visible.contains(&t)).map(|v| v.tid), expected);
    }

    /// The storage nodes' sweep pre-filter never holds back a record the sweep has work in.
    #[test]
    fn the_sweep_filter_sends_every_record_with_garbage(rec in any_record(), lav in 0u64..65) {
        if rec.is_garbage(lav) || rec.has_garbage(lav) {
            prop_assert!(shmdb_row_format::filter::may_hold_garbage(&rec.encode()));
        }
    }

    #[test]
    fn gc_invariants(
        (rec, lav, snapshots) in any_record().prop_flat_map(|rec| (Just(rec), 0u64..65))
            .prop_flat_map(|(rec, lav)| (
                Just(rec),
                Just(lav),
                proptest::collection::vec(any_snapshot_for(lav), 1..6),
            ))
    ) {
        let before = rec.clone();
        let mut after = rec;
        let had_garbage = after.has_garbage(lav);
        let dropped = after.gc(lav);
        prop_assert_eq!(dropped, before.len() - after.len());
        prop_assert_eq!(had_garbage, dropped > 0);

        // Every version above lav is kept.
        for v in before.versions().iter().filter(|v| v.tid > lav) {
            prop_assert!(after.versions().contains(v));
        }
        // At most one version ≤ lav remains, and only ever the largest one, which stays
        // unless it is a tombstone.
        let old_after: Vec<_> = after.versions().iter().filter(|v| v.tid <= lav).collect();
        prop_assert!(old_after.len() <= 1);
        let largest_old = before.versions().iter().find(|v| v.tid <= lav);
        match largest_old {
            Some(v) if !v.is_tombstone() => prop_assert_eq!(old_after, vec![v]),
            _ => prop_assert!(old_after.is_empty()),
        }
        // Nothing any snapshot that can still run reads has changed.
        for (base, committed) in &snapshots {
            let sees = |t: u64| t <= *base || committed.contains(&t);
            prop_assert_eq!(before.visible_row(sees), after.visible_row(sees));
        }
        // GC is idempotent, and an all-garbage record is exactly one GC empties.
        prop_assert_eq!(after.clone().gc(lav), 0);
        prop_assert_eq!(before.is_garbage(lav), after.is_empty());
    }
}
