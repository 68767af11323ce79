//! Routing to range primaries, per-node batch splitting, typed outcomes and map discovery.

mod common;

use bytes::Bytes;
use common::{Call, FakeCluster, addr, config, map, two_ranges};
use shmdb_placement::range_key;
use shmdb_store_client::{CondOutcome, Expect, Op, OpOutcome, StoreClient, StoreError};

#[tokio::test]
async fn each_key_goes_to_its_ranges_primary_with_the_map_version() {
    let cluster = FakeCluster::new(&two_ranges(3, b"m"));
    let client = cluster.client().await;
    assert_eq!(client.map_version(), 3);
    cluster.take_log();

    client.put(1, "apple", "1").await.expect("put");
    client.put(1, "zebra", "2").await.expect("put");
    let calls = cluster.data_calls();
    assert_eq!(
        calls,
        vec![
            Call::Batch {
                addr: addr(1),
                map_version: 3,
                keys: vec![b"apple".to_vec()]
            },
            Call::Batch {
                addr: addr(2),
                map_version: 3,
                keys: vec![b"zebra".to_vec()]
            },
        ]
    );
    let got = client.get(1, "zebra").await.expect("get").expect("present");
    assert_eq!(got.value, Bytes::from_static(b"2"));
    assert_eq!(client.get(1, "nothing").await.expect("get"), None);
}

#[tokio::test]
async fn a_batch_is_split_per_node_and_outcomes_keep_input_order() {
    let three = map(
        1,
        3,
        &[
            (Vec::new(), 1),
            (range_key(1, b"h"), 2),
            (range_key(1, b"p"), 3),
        ],
    );
    let cluster = FakeCluster::new(&three);
    let client = cluster.client_with_map(&three);
    let a = cluster.insert(1, b"a", b"va");
    cluster.insert(1, b"q", b"vq");

    let ops = vec![
        Op::get(1, "q"),
        Op::put(1, "i", "vi"),
        Op::get(1, "a"),
        Op::put_if(1, "r", "vr", Expect::Absent),
        Op::put_if(1, "a", "va2", Expect::Stamp(a)),
        Op::get(1, "j"),
    ];
    let out = client.batch(ops).await.expect("batch");
    assert_eq!(out.len(), 6);
    assert!(matches!(&out[0], OpOutcome::Value(Some(v)) if v.value == "vq"));
    assert!(matches!(out[1], OpOutcome::Written { .. }));
    assert!(matches!(&out[2], OpOutcome::Value(Some(v)) if v.value == "va" && v.stamp == a));
    assert!(matches!(
        out[3],
        OpOutcome::Cond(CondOutcome::Written { .. })
    ));
    assert!(matches!(
        out[4],
        OpOutcome::Cond(CondOutcome::Written { .. })
    ));
    assert_eq!(out[5], OpOutcome::Value(None));

    let mut calls = cluster.data_calls();
    calls.sort_by_key(|c| match c {
        Call::Batch { addr, .. } => addr.clone(),
        _ => String::new(),
    });
    let keys = |c: &Call| match c {
        Call::Batch { keys, .. } => keys.clone(),
        _ => Vec::new(),
    };
    assert_eq!(calls.len(), 3, "one request per node: {calls:?}");
    assert_eq!(keys(&calls[0]), vec![b"a".to_vec(), b"a".to_vec()]);
    assert_eq!(keys(&calls[1]), vec![b"i".to_vec(), b"j".to_vec()]);
    assert_eq!(keys(&calls[2]), vec![b"q".to_vec(), b"r".to_vec()]);
}

#[tokio::test]
async fn a_large_batch_goes_out_in_bounded_requests_with_every_outcome_in_order() {
    let cluster = FakeCluster::new(&two_ranges(1, b"m"));
    let client = cluster.client_with_map(&two_ranges(1, b"m"));
    // 3,000 small puts to one node (split by count), then 3 values of 400 KiB (by bytes).
    let mut ops: Vec<Op> = (0..3000)
        .map(|i| Op::put_if(1, format!("a{i:05}"), "v", Expect::Absent))
        .collect();
    let big = Bytes::from(vec![7u8; 400 << 10]);
    ops.extend((0..3).map(|i| Op::put(1, format!("b{i}"), big.clone())));
    let out = client.batch(ops).await.expect("batch");
    assert_eq!(out.len(), 3003);
    assert!(
        out[..3000]
            .iter()
            .all(|o| matches!(o, OpOutcome::Cond(CondOutcome::Written { .. })))
    );
    assert!(
        out[3000..]
            .iter()
            .all(|o| matches!(o, OpOutcome::Written { .. }))
    );
    assert_eq!(
        cluster.value(1, b"a02999").map(|(v, _)| v),
        Some(Bytes::from("v"))
    );
    let sizes: Vec<usize> = cluster
        .data_calls()
        .iter()
        .map(|c| match c {
            Call::Batch { keys, .. } => keys.len(),
            _ => 0,
        })
        .collect();
    assert!(
        sizes.iter().all(|n| *n <= 1024),
        "a request carried more than 1024 operations: {sizes:?}"
    );
    // By count: 1024 + 1024 + 952 puts; by bytes: two 400 KiB values fit with the last 952
    // under 1 MiB, the third needs a request of its own.
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![1, 954, 1024, 1024], "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 3003);
}

#[tokio::test]
async fn conditional_operations_report_conflicts_as_outcomes() {
    let cluster = FakeCluster::new(&two_ranges(1, b"m"));
    let client = cluster.client().await;

    let CondOutcome::Written { stamp } = client
        .put_if(1, "k", "v1", Expect::Absent)
        .await
        .expect("put_if")
    else {
        panic!("first insert must succeed");
    };
    assert_eq!(
        client.put_if(1, "k", "v2", Expect::Absent).await,
        Ok(CondOutcome::Conflict {
            current: Some(stamp)
        })
    );
    assert_eq!(
        client.check(1, "k", Expect::Stamp(stamp)).await,
        Ok(CondOutcome::Checked)
    );
    assert_eq!(
        client.check(1, "other", Expect::Stamp(stamp)).await,
        Ok(CondOutcome::Conflict { current: None })
    );
    assert!(matches!(
        client.delete_if(1, "k", Expect::Stamp(stamp)).await,
        Ok(CondOutcome::Written { .. })
    ));
    assert_eq!(client.get(1, "k").await, Ok(None));

    assert_eq!(client.increment(1, "c", 5).await.map(|(v, _)| v), Ok(5));
    assert_eq!(client.increment(1, "c", -2).await.map(|(v, _)| v), Ok(3));
    client.put(1, "s", "text").await.expect("put");
    assert_eq!(
        client.increment(1, "s", 1).await,
        Err(StoreError::NotACounter)
    );
    assert!(client.delete(1, "s").await.is_ok());
}

#[tokio::test]
async fn the_newest_map_among_seeds_and_nodes_wins() {
    let cluster = FakeCluster::new(&two_ranges(5, b"m"));
    {
        let mut state = cluster.state.lock();
        // The seed is behind; the other node has the newest map.
        state
            .node_maps
            .insert(addr(1), two_ranges(2, b"m").to_proto());
    }
    let client = cluster.client().await;
    assert_eq!(client.map_version(), 2);
    let map = client.refresh_map().await.expect("refresh");
    assert_eq!(map.version, 5);
    assert_eq!(client.map_version(), 5);
}

#[tokio::test]
async fn nodes_without_a_map_give_no_map() {
    let cluster = FakeCluster::new(&two_ranges(1, b"m"));
    cluster.state.lock().map = Default::default();
    let mut cfg = config();
    cfg.deadline = std::time::Duration::from_millis(20);
    let err = StoreClient::with_transport(cfg, cluster.clone())
        .await
        .err();
    assert_eq!(err, Some(StoreError::NoMap));
}
