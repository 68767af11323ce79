//! Tests of the storage key layouts and the scan ranges over them.

use std::ops::Bound::{Excluded, Included, Unbounded};

use proptest::prelude::*;

use super::*;

fn int(v: i64) -> Datum {
    Datum::Int(v)
}

fn text(s: &str) -> Datum {
    Datum::Text(s.to_owned())
}

#[test]
fn row_keys_group_by_table_and_round_trip() {
    let pk = vec![text("ab"), int(-5)];
    let key = row_key(7, &pk);
    assert_eq!(decode_row_key(&key), Ok((7, pk.clone())));
    assert_eq!(key, row_key_from_encoded(7, &crate::encode_key(&pk)));
    assert!(table_rows_range(7).contains(&key));
    assert!(!table_rows_range(6).contains(&key));
    assert!(!table_rows_range(8).contains(&key));
    // The last table id's range runs to the end of the storage table.
    assert_eq!(table_rows_range(u32::MAX).end, None);
    assert!(table_rows_range(u32::MAX).contains(&row_key(u32::MAX, &pk)));
    assert!(decode_row_key(&[0, 0, 7]).is_err());
}

#[test]
fn pk_bounds_are_prefix_bounds() {
    let keys: Vec<Vec<u8>> = (1..=3)
        .flat_map(|a| (1..=3).map(move |b| row_key(1, &[int(a), int(b)])))
        .collect();
    let select = |range: &ScanRange| -> Vec<usize> {
        (0..keys.len())
            .filter(|&i| range.contains(&keys[i]))
            .collect()
    };
    // a = 2
    let two = [int(2)];
    assert_eq!(
        select(&pk_range(1, Included(&two), Included(&two))),
        vec![3, 4, 5]
    );
    // a > 2, a >= 2, a < 2, a <= 2
    assert_eq!(
        select(&pk_range(1, Excluded(&two), Unbounded)),
        vec![6, 7, 8]
    );
    assert_eq!(
        select(&pk_range(1, Included(&two), Unbounded)),
        vec![3, 4, 5, 6, 7, 8]
    );
    assert_eq!(
        select(&pk_range(1, Unbounded, Excluded(&two))),
        vec![0, 1, 2]
    );
    assert_eq!(
        select(&pk_range(1, Unbounded, Included(&two))),
        vec![0, 1, 2, 3, 4, 5]
    );
    // (a, b) > (2, 1) and (a, b) <= (3, 2)
    let lo = [int(2), int(1)];
    let hi = [int(3), int(2)];
    assert_eq!(
        select(&pk_range(1, Excluded(&lo), Included(&hi))),
        vec![4, 5, 6, 7]
    );
    // Nothing of table 2 leaks into an unbounded scan of table 1.
    assert!(!pk_range(1, Unbounded, Unbounded).contains(&row_key(2, &[int(0)])));
    assert!(pk_range(1, Excluded(&two), Excluded(&two)).is_empty());
}

#[test]
fn index_entries_are_distinct_per_row_and_split_back() {
    let orders = [SortOrder::DESC];
    let a = index_entry_key(3, &[text("x")], &orders, &[int(1)]);
    let b = index_entry_key(3, &[text("x")], &orders, &[int(2)]);
    assert_ne!(a, b);
    assert_eq!(
        decode_index_key(&a, 1),
        Ok((3, vec![text("x")], vec![int(1)]))
    );
    assert_eq!(index_key_pk(&a, 1), Ok(&crate::encode_key(&[int(1)])[..]));
    assert!(decode_index_key(&a, 3).is_err());
    // A lookup of the value finds every row's entry, and only those.
    let x = [text("x")];
    let lookup = index_range(3, &orders, Included(&x), Included(&x));
    assert!(lookup.contains(&a) && lookup.contains(&b));
    assert!(!lookup.contains(&index_entry_key(3, &[text("xy")], &orders, &[int(1)])));
    assert!(index_entries_range(3).contains(&a));
    assert!(!index_entries_range(4).contains(&a));
}

#[test]
fn descending_index_ranges_run_from_large_to_small() {
    let orders = [SortOrder::DESC];
    let entry = |v: i64| index_entry_key(9, &[int(v)], &orders, &[int(0)]);
    let null = index_entry_key(9, &[Datum::Null], &orders, &[int(0)]);
    // In a DESC index, "lower" is the larger value: 10 down to (excluding) 5.
    let range = index_range(9, &orders, Included(&[int(10)]), Excluded(&[int(5)]));
    assert!(range.contains(&entry(10)) && range.contains(&entry(6)));
    assert!(!range.contains(&entry(11)) && !range.contains(&entry(5)));
    // NULLS FIRST in DESC: an unbounded lower end includes NULLs, bounding by NULL excludes them.
    assert!(index_range(9, &orders, Unbounded, Unbounded).contains(&null));
    let non_null = index_range(9, &orders, Excluded(&[Datum::Null]), Unbounded);
    assert!(!non_null.contains(&null) && non_null.contains(&entry(i64::MAX)));
}

#[test]
fn txlog_entries_of_a_node_are_contiguous() {
    let key = txlog_key(5, 1000);
    assert_eq!(decode_txlog_key(&key), Ok((5, 1000)));
    assert!(decode_txlog_key(&key[..15]).is_err());
    assert!(txlog_node_range(5).contains(&key));
    assert!(!txlog_node_range(4).contains(&key));
    assert!(!txlog_node_range(6).contains(&key));
    assert!(txlog_node_range(5).contains(&txlog_key(5, u64::MAX)));
    let from = txlog_node_range_from(5, 1000);
    assert!(from.contains(&key));
    assert!(!from.contains(&txlog_key(5, 999)));
    assert!(from.contains(&txlog_key(5, u64::MAX)));
    assert!(!from.contains(&txlog_key(6, 0)));
    assert_eq!(txlog_node_range(u64::MAX).end, None);
}

#[test]
fn catalog_spaces_are_separate() {
    let key = catalog_key(CatalogSpace::TABLES, &[text("public"), text("accounts")]);
    assert_eq!(
        decode_catalog_key(&key),
        Ok((CatalogSpace::TABLES, vec![text("public"), text("accounts")]))
    );
    let schema = catalog_range(CatalogSpace::TABLES, &[text("public")]);
    assert!(schema.contains(&key));
    assert!(!schema.contains(&catalog_key(
        CatalogSpace::TABLES,
        &[text("publicx"), text("accounts")]
    )));
    assert!(!catalog_range(CatalogSpace::INDEXES, &[]).contains(&key));
    assert!(catalog_range(CatalogSpace::TABLES, &[]).contains(&key));
}

fn as_bound(b: &Option<(Vec<Datum>, bool)>) -> std::ops::Bound<&[Datum]> {
    match b {
        None => Unbounded,
        Some((p, true)) => Included(p.as_slice()),
        Some((p, false)) => Excluded(p.as_slice()),
    }
}

proptest! {
    #[test]
    fn txlog_keys_order_by_node_then_tid(a in (any::<u64>(), any::<u64>()), b in (any::<u64>(), any::<u64>())) {
        prop_assert_eq!(txlog_key(a.0, a.1).cmp(&txlog_key(b.0, b.1)), a.cmp(&b));
    }

    #[test]
    fn pk_range_selects_exactly_the_tuples_between_its_bounds(
        table in any::<u32>(),
        keys in proptest::collection::vec((0i64..4, 0i64..4), 1..12),
        lo in proptest::option::of((0i64..4, proptest::option::of(0i64..4), any::<bool>())),
        hi in proptest::option::of((0i64..4, proptest::option::of(0i64..4), any::<bool>())),
    ) {
        let to_bound = |b: &Option<(i64, Option<i64>, bool)>| -> Option<(Vec<Datum>, bool)> {
            b.as_ref().map(|(a, second, inclusive)| {
                let mut prefix = vec![int(*a)];
                prefix.extend(second.map(int));
                (prefix, *inclusive)
            })
        };
        let (lo, hi) = (to_bound(&lo), to_bound(&hi));
        let range = pk_range(table, as_bound(&lo), as_bound(&hi));
        for (a, b) in keys {
            let tuple = [int(a), int(b)];
            // The reference: compare the tuple's prefix of the bound's length with the bound.
            let cmp_prefix = |bound: &[Datum]| {
                crate::compare_keys(&tuple[..bound.len()], bound, &[])
            };
            let above = lo.as_ref().is_none_or(|(p, inclusive)| {
                let c = cmp_prefix(p);
                c.is_gt() || (*inclusive && c.is_eq())
            });
            let below = hi.as_ref().is_none_or(|(p, inclusive)| {
                let c = cmp_prefix(p);
                c.is_lt() || (*inclusive && c.is_eq())
            });
            prop_assert_eq!(range.contains(&row_key(table, &tuple)), above && below);
        }
    }
}
