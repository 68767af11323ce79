//! Replication at RF 3 goes over one `ReplicateStream` per range and backup, and every
//! acknowledged write is applied on every backup when it is acknowledged.

mod common;

use common::*;
use shmdb_proto::storage::{self as pb, op_result::Result as R};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_over_one_stream_per_range_and_backup() {
    let nodes = start_nodes(3, |_| {}).await;
    let map = bootstrap_map(&nodes, 3, 1);
    install(&nodes, &map).await;
    let range = &map.ranges[0];
    let primary = nodes
        .iter()
        .find(|n| Some(n.node.id()) == range.primary())
        .expect("the primary runs");
    let mut c = storage(&primary.addr.to_string()).await;
    for i in 0..200u32 {
        let key = format!("k{i:03}");
        assert!(
            matches!(
                run(&mut c, map.version, put(key.as_bytes(), b"v")).await,
                R::Written(_)
            ),
            "write {key}"
        );
    }
    for backup in nodes.iter().filter(|n| n.node.id() != primary.node.id()) {
        // Acknowledged means applied by every backup already.
        let report = shmdb_storage_node::admin::report(
            &backup.node,
            &pb::RangeReportRequest {
                with_split_keys: false,
            },
        );
        let held = report
            .ranges
            .iter()
            .find(|r| r.range_id == range.id)
            .expect("the backup holds the range");
        assert_eq!(held.keys, 200, "node {}", backup.node.id());
        assert_eq!(
            backup.node.metrics().replication_streams.get(),
            1,
            "node {} follows one range from one primary",
            backup.node.id()
        );
    }
    assert_eq!(primary.node.metrics().replication_streams.get(), 0);
}

/// Every range keeps its own stream: with more ranges than HTTP/2's customary limit of
/// concurrent streams per connection (100–200), every one still replicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_ranges_each_keep_a_stream() {
    const RANGES: u32 = 300;
    let nodes = start_nodes(2, |_| {}).await;
    let map = bootstrap_map(&nodes, 2, RANGES);
    install(&nodes, &map).await;
    let streams =
        |node: &shmdb_storage_node::RunningNode| node.node.metrics().replication_streams.get();
    // Each node is primary of about half the ranges and follows the others.
    wait_until(
        std::time::Duration::from_secs(30),
        "a replication stream per followed range",
        || async { streams(&nodes[0]) + streams(&nodes[1]) == i64::from(RANGES) },
    )
    .await;
    // And every backup got its copy over it (a fresh backup waits for a snapshot).
    wait_until(
        std::time::Duration::from_secs(30),
        "every backup to hold its copy",
        || async {
            nodes.iter().all(|node| {
                let report = shmdb_storage_node::admin::report(
                    &node.node,
                    &pb::RangeReportRequest {
                        with_split_keys: false,
                    },
                );
                report.ranges.len() == RANGES as usize && report.ranges.iter().all(|r| !r.fenced)
            })
        },
    )
    .await;
}
