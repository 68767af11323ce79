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
