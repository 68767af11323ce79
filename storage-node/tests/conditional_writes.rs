//! Load-link / store-conditional semantics of a single storage node, replicated at RF 2.

mod common;

use common::*;
use shmdb_proto::storage::{self as pb, op_result::Result as R};

#[tokio::test]
async fn put_if_with_a_stamp_from_before_an_aba_sequence_fails() {
    let nodes = start_nodes(2, |_| {}).await;
    let map = bootstrap_map(&nodes, 2, 1);
    install(&nodes, &map).await;
    let primary = &nodes[0];
    let mut c = storage(&primary.addr.to_string()).await;
    let v = map.version;

    let R::Written(w) = run(&mut c, v, put_if(b"k", b"A", absent())).await else {
        panic!("insert failed")
    };
    // Load-link: read A with its stamp.
    let R::Found(found) = run(&mut c, v, get(b"k")).await else {
        panic!("missing")
    };
    assert_eq!(&found.value[..], b"A");
    assert_eq!(found.stamp, w.stamp);
    let linked = found.stamp;
    // Someone else writes A -> B -> A.
    assert!(matches!(
        run(&mut c, v, put(b"k", b"B")).await,
        R::Written(_)
    ));
    assert!(matches!(
        run(&mut c, v, put(b"k", b"A")).await,
        R::Written(_)
    ));
    // The value is A again, but the store-conditional with the old stamp must fail.
    let R::Conflict(conflict) = run(&mut c, v, put_if(b"k", b"C", stamp(linked))).await else {
        panic!("ABA write succeeded")
    };
    assert_ne!(conflict.stamp, linked);
    let R::Found(now) = run(&mut c, v, get(b"k")).await else {
        panic!("missing")
    };
    assert_eq!(&now.value[..], b"A");
    assert_eq!(now.stamp, conflict.stamp);
    // With the fresh stamp it succeeds.
    assert!(matches!(
        run(&mut c, v, put_if(b"k", b"C", stamp(now.stamp))).await,
        R::Written(_)
    ));
    // Inserting over an existing key with "absent" fails.
    assert!(matches!(
        run(&mut c, v, put_if(b"k", b"D", absent())).await,
        R::Conflict(_)
    ));
}

#[tokio::test]
async fn delete_if_check_and_increment() {
    let nodes = start_nodes(2, |_| {}).await;
    let map = bootstrap_map(&nodes, 2, 1);
    install(&nodes, &map).await;
    let mut c = storage(&nodes[0].addr.to_string()).await;
    let v = map.version;
    let inc = |delta| {
        op(pb::op::Op::Increment(pb::IncrementOp {
            table: TABLE,
            key: bytes::Bytes::from_static(b"ctr"),
            delta,
        }))
    };
    let R::Counter(a) = run(&mut c, v, inc(100)).await else {
        panic!("increment")
    };
    let R::Counter(b) = run(&mut c, v, inc(-1)).await else {
        panic!("increment")
    };
    assert_eq!((a.value, b.value), (100, 99));
    assert!(b.stamp > a.stamp);

    let R::Written(w) = run(&mut c, v, put(b"x", b"1")).await else {
        panic!("put")
    };
    let check = |expect| {
        op(pb::op::Op::Check(pb::CheckOp {
            table: TABLE,
            key: bytes::Bytes::from_static(b"x"),
            expect,
        }))
    };
    assert!(matches!(
        run(&mut c, v, check(stamp(w.stamp))).await,
        R::Checked(_)
    ));
    assert!(matches!(
        run(&mut c, v, check(absent())).await,
        R::Conflict(_)
    ));
    let del = |expect| {
        op(pb::op::Op::DeleteIf(pb::DeleteIfOp {
            table: TABLE,
            key: bytes::Bytes::from_static(b"x"),
            expect,
        }))
    };
    assert!(matches!(
        run(&mut c, v, del(stamp(w.stamp + 1))).await,
        R::Conflict(_)
    ));
    assert!(matches!(
        run(&mut c, v, del(stamp(w.stamp))).await,
        R::Written(_)
    ));
    assert!(matches!(run(&mut c, v, get(b"x")).await, R::Absent(_)));
    assert!(matches!(
        run(&mut c, v, check(absent())).await,
        R::Checked(_)
    ));
    // An increment on a non-counter value is refused.
    run(&mut c, v, put(b"ctr", b"not a counter")).await;
    let R::Error(e) = run(&mut c, v, inc(1)).await else {
        panic!("increment of a string")
    };
    assert_eq!(e.code, pb::ErrorCode::NotACounter as i32);
}

#[tokio::test]
async fn backups_hold_exactly_what_the_primary_acknowledged() {
    let nodes = start_nodes(3, |_| {}).await;
    let map = bootstrap_map(&nodes, 3, 1);
    install(&nodes, &map).await;
    let mut c = storage(&nodes[0].addr.to_string()).await;
    let mut ops = Vec::new();
    for i in 0..500u32 {
        ops.push(put(format!("k{i:04}").as_bytes(), &i.to_le_bytes()));
    }
    let resp = c
        .batch(pb::BatchRequest {
            map_version: map.version,
            ops,
        })
        .await
        .expect("batch")
        .into_inner();
    assert!(
        resp.results
            .iter()
            .all(|r| matches!(r.result, Some(R::Written(_))))
    );
    // Acknowledged means applied on every replica.
    let primary = nodes[0].node.local_items(TABLE);
    assert_eq!(primary.len(), 500);
    for backup in &nodes[1..] {
        assert_eq!(backup.node.local_items(TABLE), primary);
    }
}
