//! Failures injected at the nodes: stale maps, unavailable ranges, lost answers, dead nodes,
//! and the ambiguity rules the client must follow for each.

mod common;

use std::time::Duration;

use common::{Call, FakeCluster, Fault, addr, config, map, two_ranges};
use shmdb_placement::range_key;
use shmdb_store_client::{CondOutcome, Expect, KeyRange, Op, OpOutcome, StoreClient, StoreError};

fn batches_to(calls: &[Call], node: u64) -> usize {
    calls
        .iter()
        .filter(|c| matches!(c, Call::Batch { addr: a, .. } if *a == addr(node)))
        .count()
}

#[tokio::test]
async fn wrong_owner_refreshes_the_map_and_retries_at_the_new_owner() {
    let old = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&old);
    // The upper range failed over from node 2 to node 1 in map version 2.
    let new = map(2, 2, &[(Vec::new(), 1), (range_key(1, b"m"), 1)]);
    cluster.set_map(&new);
    let client = cluster.client_with_map(&old);

    client.put(1, "x", "v").await.expect("put");
    let calls = cluster.take_log();
    let data: Vec<_> = calls
        .iter()
        .filter(|c| !matches!(c, Call::GetMap { .. }))
        .cloned()
        .collect();
    assert_eq!(
        data,
        vec![
            Call::Batch {
                addr: addr(2),
                map_version: 1,
                keys: vec![b"x".to_vec()]
            },
            Call::Batch {
                addr: addr(1),
                map_version: 2,
                keys: vec![b"x".to_vec()]
            },
        ]
    );
    assert!(calls.iter().any(|c| matches!(c, Call::GetMap { .. })));
    assert_eq!(client.map_version(), 2);
    assert_eq!(cluster.value(1, b"x").map(|(v, _)| v), Some("v".into()));
}

#[tokio::test]
async fn only_the_operations_that_failed_are_sent_again() {
    let old = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&old);
    let three = map(2, 3, &[(Vec::new(), 1), (range_key(1, b"m"), 3)]);
    cluster.set_map(&three);
    let client = cluster.client_with_map(&old);

    let out = client
        .batch(vec![
            Op::put(1, "a", "1"),
            Op::put(1, "x", "2"),
            Op::increment(1, "b", 1),
            Op::get(1, "y"),
        ])
        .await
        .expect("batch");
    assert!(matches!(out[0], OpOutcome::Written { .. }));
    assert!(matches!(out[1], OpOutcome::Written { .. }));
    assert!(matches!(out[2], OpOutcome::Counter { value: 1, .. }));
    assert_eq!(out[3], OpOutcome::Value(None));
    let calls = cluster.data_calls();
    assert_eq!(batches_to(&calls, 1), 1, "{calls:?}");
    assert_eq!(batches_to(&calls, 2), 1);
    assert!(calls.contains(&Call::Batch {
        addr: addr(3),
        map_version: 2,
        keys: vec![b"x".to_vec(), b"y".to_vec()]
    }));
    // The counter was applied exactly once.
    assert_eq!(
        cluster.value(1, b"b").map(|(v, _)| v),
        Some(1i64.to_le_bytes().to_vec().into())
    );
}

#[tokio::test]
async fn unavailable_then_conflict_on_put_if_is_ambiguous() {
    let map = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&map);
    let stamp = cluster.insert(1, b"k", b"old");
    let client = cluster.client_with_map(&map);
    // The write is applied, but the node reports replication as failed.
    cluster.inject(1, Fault::UnavailableAfterApply);

    let out = client.put_if(1, "k", "new", Expect::Stamp(stamp)).await;
    assert!(matches!(out, Err(StoreError::Ambiguous { .. })), "{out:?}");
    assert_eq!(batches_to(&cluster.data_calls(), 1), 2);
}

#[tokio::test]
async fn put_if_retried_after_unavailable_succeeds_when_nothing_was_applied() {
    let map = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&map);
    let stamp = cluster.insert(1, b"k", b"old");
    let client = cluster.client_with_map(&map);
    cluster.inject(1, Fault::UnavailableBeforeApply);

    let out = client.put_if(1, "k", "new", Expect::Stamp(stamp)).await;
    assert!(matches!(out, Ok(CondOutcome::Written { .. })), "{out:?}");
    assert_eq!(cluster.value(1, b"k").map(|(v, _)| v), Some("new".into()));
}

#[tokio::test]
async fn increment_after_a_lost_answer_is_ambiguous_and_not_resent() {
    let map = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&map);
    let client = cluster.client_with_map(&map);
    cluster.inject(1, Fault::LostAfterApply);

    let out = client.increment(1, "counter", 1).await;
    assert!(matches!(out, Err(StoreError::Ambiguous { .. })), "{out:?}");
    assert_eq!(batches_to(&cluster.data_calls(), 1), 1);
    assert_eq!(
        cluster.value(1, b"counter").map(|(v, _)| v),
        Some(1i64.to_le_bytes().to_vec().into())
    );
}

#[tokio::test]
async fn increment_after_an_unreachable_node_is_retried() {
    let map = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&map);
    let client = cluster.client_with_map(&map);
    cluster.inject(1, Fault::Unreachable);
    cluster.inject(1, Fault::Unreachable);

    assert_eq!(client.increment(1, "c", 7).await.map(|(v, _)| v), Ok(7));
    assert_eq!(batches_to(&cluster.data_calls(), 1), 3);
}

#[tokio::test]
async fn unconditional_put_is_retried_after_a_timeout() {
    let map = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&map);
    let client = cluster.client_with_map(&map);
    cluster.inject(2, Fault::TimeoutAfterApply);

    let stamp = client.put(1, "x", "v").await.expect("put");
    assert_eq!(cluster.value(1, b"x"), Some(("v".into(), stamp)));
    assert_eq!(batches_to(&cluster.data_calls(), 2), 2);
}

#[tokio::test]
async fn reads_are_retried_after_lost_answers() {
    let map = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&map);
    cluster.insert(1, b"a", b"v");
    let client = cluster.client_with_map(&map);
    cluster.inject(1, Fault::LostAfterApply);
    cluster.inject(1, Fault::TimeoutAfterApply);

    let got = client.get(1, "a").await.expect("get").expect("present");
    assert_eq!(got.value, "v");
    cluster.inject(1, Fault::LostAfterApply);
    let items = client.scan(1, KeyRange::all(), 10).await.expect("scan");
    assert_eq!(items.len(), 1);
}

#[tokio::test]
async fn a_dead_node_until_the_deadline_is_deadline_exceeded() {
    let map = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&map);
    cluster.state.lock().down.insert(addr(1));
    let mut cfg = config();
    cfg.deadline = Duration::from_millis(30);
    let client = StoreClient::with_map(cfg, cluster.clone(), map);

    for out in [
        client.put(1, "a", "v").await.err(),
        client.get(1, "a").await.err(),
        client.scan(1, KeyRange::all(), 10).await.err(),
    ] {
        assert!(
            matches!(out, Some(StoreError::DeadlineExceeded { .. })),
            "{out:?}"
        );
    }
    // Unreachable means never applied: retried many times, nothing written.
    assert!(batches_to(&cluster.data_calls(), 1) > 2);
    assert_eq!(cluster.value(1, b"a"), None);
    // The other node still serves.
    assert!(client.put(1, "x", "v").await.is_ok());
}

#[tokio::test]
async fn a_write_that_keeps_timing_out_until_the_deadline_is_ambiguous() {
    let map = two_ranges(1, b"m");
    let cluster = FakeCluster::new(&map);
    for _ in 0..10_000 {
        cluster.inject(1, Fault::TimeoutAfterApply);
    }
    let mut cfg = config();
    cfg.deadline = Duration::from_millis(20);
    let client = StoreClient::with_map(cfg, cluster.clone(), map);

    let out = client.put_if(1, "a", "v", Expect::Absent).await;
    assert!(matches!(out, Err(StoreError::Ambiguous { .. })), "{out:?}");
}
