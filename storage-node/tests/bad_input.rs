//! Bad input gets a precise error and the node keeps serving.

mod common;

use bytes::Bytes;
use common::*;
use shmdb_proto::storage::{self as pb, op_result::Result as R};

fn code(result: R) -> pb::ErrorCode {
    match result {
        R::Error(e) => pb::ErrorCode::try_from(e.code).expect("known code"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn precise_errors_and_the_node_keeps_serving() {
    let nodes = start_nodes(1, |c| c.max_value_bytes = 1024).await;
    let map = bootstrap_map(&nodes, 1, 1);
    install(&nodes, &map).await;
    let addr = nodes[0].addr.to_string();
    let mut c = storage(&addr).await;
    let v = map.version;

    // Unknown table.
    let unknown = op(pb::op::Op::Get(pb::GetOp {
        table: 99,
        key: Bytes::from_static(b"k"),
    }));
    assert_eq!(
        code(run(&mut c, v, unknown.clone()).await),
        pb::ErrorCode::UnknownTable
    );
    // A client that claims a newer map than the node has is told to retry, not "unknown".
    assert_eq!(
        code(run(&mut c, v + 5, unknown).await),
        pb::ErrorCode::Unavailable
    );
    // Key over 4 KiB.
    assert_eq!(
        code(run(&mut c, v, put(&vec![b'k'; 4097], b"v")).await),
        pb::ErrorCode::InvalidArgument
    );
    // A 4 KiB key is fine.
    assert!(matches!(
        run(&mut c, v, put(&vec![b'k'; 4096], b"v")).await,
        R::Written(_)
    ));
    // Value over the configured maximum.
    assert_eq!(
        code(run(&mut c, v, put(b"k", &[0u8; 1025])).await),
        pb::ErrorCode::InvalidArgument
    );
    // A conditional write without an expectation.
    assert_eq!(
        code(run(&mut c, v, put_if(b"k", b"v", None)).await),
        pb::ErrorCode::InvalidArgument
    );
    // Inverted scan range.
    let scan = c
        .scan(pb::ScanRequest {
            map_version: v,
            table: TABLE,
            start: Bytes::from_static(b"z"),
            end: Bytes::from_static(b"a"),
            to_table_end: false,
            limit: 10,
            filter: None,
        })
        .await
        .expect("scan rpc")
        .into_inner();
    assert_eq!(
        scan.error.map(|e| e.code),
        Some(pb::ErrorCode::InvalidArgument as i32)
    );
    // A map with overlapping ranges is refused with INVALID_ARGUMENT, and the old map stays.
    let mut bad = bootstrap_map(&nodes, 1, 2);
    bad.version = v + 1;
    bad.ranges[1].start = Vec::new();
    let mut a = admin(&addr).await;
    let status = a
        .install_map(bad.to_proto())
        .await
        .expect_err("overlapping map");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // An older map is refused too.
    let mut old = bootstrap_map(&nodes, 1, 1);
    old.version = 0;
    let status = a.install_map(old.to_proto()).await.expect_err("stale map");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let current = a
        .get_map(pb::GetMapRequest {})
        .await
        .expect("get map")
        .into_inner();
    assert_eq!(current.version, v);
    // Still serving.
    assert!(matches!(
        run(&mut c, v, put(b"after", b"ok")).await,
        R::Written(_)
    ));
}

#[tokio::test]
async fn memory_limit_refuses_writes_but_not_reads_or_deletes() {
    let nodes = start_nodes(1, |c| c.memory_limit = 64 * 1024).await;
    let map = bootstrap_map(&nodes, 1, 1);
    install(&nodes, &map).await;
    let mut c = storage(&nodes[0].addr.to_string()).await;
    let v = map.version;
    let value = vec![7u8; 1000];
    let mut written = 0;
    let exhausted = loop {
        match run(&mut c, v, put(format!("k{written}").as_bytes(), &value)).await {
            R::Written(_) => written += 1,
            other => break other,
        }
        assert!(written < 1000, "memory limit never reached");
    };
    assert_eq!(code(exhausted), pb::ErrorCode::ResourceExhausted);
    assert!(written >= 50, "limit hit too early: {written}");
    assert!(nodes[0].node.memory_used() <= 64 * 1024);
    // Reads still work, and deletes free memory so writes work again.
    assert!(matches!(run(&mut c, v, get(b"k0")).await, R::Found(_)));
    let del = op(pb::op::Op::Delete(pb::DeleteOp {
        table: TABLE,
        key: Bytes::from_static(b"k0"),
    }));
    assert!(matches!(run(&mut c, v, del).await, R::Written(_)));
    assert!(matches!(
        run(&mut c, v, put(b"again", &value)).await,
        R::Written(_)
    ));
}
