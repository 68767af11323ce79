//! Ranges split while writers increment keys and a reader scans the table: the placement
//! manager splits every range that outgrows a small size limit, again and again; no write
//! fails or is lost, and every scan, across however many split boundaries, returns every
//! key in order with a value no older than what was acknowledged before it started.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::load::{Ambiguity, Load, Slot, decode, summarize, verify_store, written_keys};
use common::processes::{ClusterSpec, ProcessCluster, describe, fast_manager};
use shmdb_store_client::{KeyRange, StoreClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_under_load() {
    let mut manager = fast_manager(Duration::from_secs(1), 3);
    manager.planner.split_bytes = 8 << 10;
    let cluster = ProcessCluster::start(ClusterSpec {
        nodes: 3,
        rf: 2,
        ranges: 1,
        manager,
        node_args: Vec::new(),
    })
    .await;
    let client = cluster
        .client(Duration::from_secs(5), Duration::from_secs(15))
        .await;
    let before = cluster.map().await;
    // 128 keys of ~300 bytes each: about 40 KiB, several times the split size.
    let load = Load::start(&client, &cluster.tables, 8, 16, 224, Ambiguity::Forbid);
    let slots = load.slots.clone();
    let stop_scans = Arc::new(AtomicBool::new(false));
    let scanner = tokio::spawn(scan_loop(
        client.clone(),
        slots.clone(),
        cluster.tables[0],
        stop_scans.clone(),
    ));

    let map = cluster
        .wait_for_map(Duration::from_secs(15), "ranges to split", |m| {
            m.ranges.len() >= before.ranges.len() + 3
        })
        .await;
    eprintln!("{}", describe(&map));
    load.wait_progress(300, Duration::from_secs(10), "after the splits")
        .await;
    let total = summarize(&load.stop().await, false);
    stop_scans.store(true, Ordering::Relaxed);
    let scans = scanner.await.expect("scanner task");
    eprintln!("acknowledged {}, full scans {scans}", total.acked);
    assert!(scans > 0, "no scan completed during the splits");

    let (map, primaries) = cluster.wait_converged(Duration::from_secs(20), 2).await;
    assert!(map.ranges.len() > before.ranges.len(), "{}", describe(&map));
    // The table now spans several ranges; the scan crosses every boundary.
    let table = cluster.tables[0];
    let spanned = map
        .ranges
        .iter()
        .filter(|r| {
            r.end
                .as_deref()
                .is_none_or(|e| e > shmdb_placement::table_start(table).as_slice())
                && shmdb_placement::table_end(table)
                    .is_none_or(|end| r.start.as_slice() < end.as_slice())
        })
        .count();
    assert!(spanned >= 2, "{}", describe(&map));
    verify_store(&client, &slots).await;
    let keys: u64 = primaries.iter().map(|s| s.keys).sum();
    assert_eq!(keys, written_keys(&slots));
}

/// Scans the whole table over and over; every scan must return the keys in order, every key
/// acknowledged before it started, and values between what was acknowledged before it
/// started and one more than what was acknowledged when it ended (a write in flight).
async fn scan_loop(
    client: StoreClient,
    slots: Arc<Vec<Slot>>,
    table: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut scans = 0;
    while !stop.load(Ordering::Relaxed) {
        let low: Vec<u64> = slots
            .iter()
            .map(|s| s.value.load(Ordering::Relaxed))
            .collect();
        let items = client
            .scan(table, KeyRange::all(), usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("scan during splits: {e}"));
        let high: Vec<u64> = slots
            .iter()
            .map(|s| s.value.load(Ordering::Relaxed))
            .collect();
        assert!(
            items.windows(2).all(|w| w[0].key < w[1].key),
            "scan returned keys out of order"
        );
        for (i, slot) in slots.iter().enumerate() {
            if slot.table != table {
                continue;
            }
            let found = items.iter().find(|item| item.key == slot.key);
            let value = match found {
                Some(item) => decode(Some(&item.value)).expect("counter value"),
                None => 0,
            };
            assert!(
                value >= low[i] && value <= high[i] + 1,
                "scan saw {:?} = {value}, acknowledged {} before the scan and {} after",
                slot.key,
                low[i],
                high[i]
            );
        }
        scans += 1;
    }
    scans
}
