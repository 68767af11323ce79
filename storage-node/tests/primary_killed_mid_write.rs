//! SIGKILL of a range's primary while writers increment keys in every range (RF 3 on four
//! node processes), three times over: each time the placement manager promotes a backup,
//! a fresh node joins, and RF is restored while the writers go on. No acknowledged increment
//! is lost, none is applied twice, and in the end every replica of every range holds the
//! same data.

mod common;

use std::time::Duration;

use common::load::{Ambiguity, Load, summarize, verify_store, written_keys};
use common::processes::{ClusterSpec, ProcessCluster, describe, fast_manager};
use shmdb_placement::range_key;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_mid_write() {
    let mut cluster = ProcessCluster::start(ClusterSpec {
        nodes: 4,
        rf: 3,
        ranges: 4,
        manager: fast_manager(Duration::from_millis(300), 2),
        node_args: Vec::new(),
    })
    .await;
    let client = cluster
        .client(Duration::from_secs(2), Duration::from_secs(15))
        .await;
    let load = Load::start(&client, &cluster.tables, 8, 6, 16, Ambiguity::Resolve);
    let slots = load.slots.clone();
    load.wait_progress(200, Duration::from_secs(10), "before the first kill")
        .await;

    let mut victims = Vec::new();
    for round in 0..3 {
        let before = cluster.map().await;
        let range = before
            .find(&range_key(
                cluster.tables[round % cluster.tables.len()],
                b"",
            ))
            .expect("a range holds the table")
            .clone();
        let victim = range.primary().expect("the range has a primary");
        cluster.kill(victim).await;
        victims.push(victim);

        // A backup takes over every range the victim led, at a higher epoch.
        let after = cluster
            .wait_for_map(Duration::from_secs(10), "a backup to be promoted", |m| {
                m.ranges.iter().all(|r| r.primary() != Some(victim))
            })
            .await;
        let promoted = after.range(range.id).expect("the range still exists");
        assert!(promoted.epoch > range.epoch, "{}", describe(&after));
        load.wait_progress(100, Duration::from_secs(10), "after the failover")
            .await;

        // A fresh node joins, and RF 3 is restored without the victim under the writes.
        cluster.add_node().await;
        cluster
            .wait_for_map(Duration::from_secs(15), "RF 3 to be restored", |m| {
                m.ranges.iter().all(|r| {
                    r.replicas.len() == 3
                        && r.learners.is_empty()
                        && !victims.iter().any(|v| r.involves(*v))
                })
            })
            .await;
        load.wait_progress(100, Duration::from_secs(10), "after RF is restored")
            .await;
    }
    let total = summarize(&load.stop().await, false);
    eprintln!(
        "acknowledged {}, ambiguous applied {}, ambiguous not applied {}",
        total.acked, total.ambiguous_applied, total.ambiguous_not_applied
    );

    // The replicas of every range agree, and hold exactly what was acknowledged.
    let (map, primaries) = cluster.wait_converged(Duration::from_secs(20), 3).await;
    assert!(
        map.ranges
            .iter()
            .all(|r| !victims.iter().any(|v| r.involves(*v))),
        "{}",
        describe(&map)
    );
    verify_store(&client, &slots).await;
    let keys: u64 = primaries.iter().map(|s| s.keys).sum();
    assert_eq!(keys, written_keys(&slots));
}
