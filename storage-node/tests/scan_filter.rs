//! Filtered scans: the node sends only records that may hold a row with the given column
//! values, keeps anything it cannot read as the processing nodes' layout, bounds the work of
//! one request (an empty page with a continuation), and refuses malformed filters.

mod common;

use bytes::Bytes;
use common::*;
use shmdb_proto::storage::{self as pb, storage_client::StorageClient};
use shmdb_row_format::{RECORD_FORMAT_V1, TAG_INT, TAG_TEXT};
use shmdb_storage_node::RunningNode;
use tonic::transport::Channel;

/// A one-version record of a row `(id, name)` in the processing nodes' layout.
fn record(tid: u8, id: u8, name: &str) -> Vec<u8> {
    let mut row = vec![2, TAG_INT, id << 1, TAG_TEXT, name.len() as u8];
    row.extend_from_slice(name.as_bytes());
    let mut out = vec![RECORD_FORMAT_V1, 1, tid, row.len() as u8 + 1];
    out.extend_from_slice(&row);
    out
}

fn name_is(name: &str) -> pb::RowFilter {
    let mut value = vec![TAG_TEXT, name.len() as u8];
    value.extend_from_slice(name.as_bytes());
    pb::RowFilter {
        equals: vec![pb::ColumnEquals {
            column: 1,
            value: value.into(),
        }],
        garbage_only: false,
    }
}

fn scan(v: u64, start: &[u8], limit: u32, filter: pb::RowFilter) -> pb::ScanRequest {
    pb::ScanRequest {
        map_version: v,
        table: TABLE,
        start: Bytes::copy_from_slice(start),
        end: Bytes::new(),
        to_table_end: true,
        limit,
        filter: Some(filter),
    }
}

/// One node owning the whole table in one range: the node (kept running by the caller), a
/// client to it, and the map version requests carry.
async fn one_node() -> (Vec<RunningNode>, StorageClient<Channel>, u64) {
    let nodes = start_nodes(1, |_| {}).await;
    let map = bootstrap_map(&nodes, 1, 1);
    install(&nodes, &map).await;
    let c = storage(&nodes[0].addr.to_string()).await;
    (nodes, c, map.version)
}

/// Writes every `(key, value)` and checks each was written.
async fn put_all<const N: usize>(
    c: &mut StorageClient<Channel>,
    v: u64,
    items: [(&[u8], Vec<u8>); N],
) {
    for (key, value) in items {
        assert!(matches!(
            run(c, v, put(key, &value)).await,
            pb::op_result::Result::Written(_)
        ));
    }
}

/// The keys one scan request answers with; fails on an error answer.
async fn scanned_keys(c: &mut StorageClient<Channel>, req: pb::ScanRequest) -> Vec<Bytes> {
    let resp = c.scan(req).await.expect("scan rpc").into_inner();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    resp.items.into_iter().map(|kv| kv.key).collect()
}

#[tokio::test]
async fn only_records_that_may_match_are_sent() {
    let (nodes, mut c, v) = one_node().await;
    put_all(
        &mut c,
        v,
        [
            (&b"a"[..], record(5, 1, "ABLE")),
            (b"b", record(6, 2, "BAR")),
            (b"c", record(7, 3, "ABLE")),
            (b"d", b"opaque, not a record".to_vec()),
            (b"e", record(8, 4, "OUGHT")),
        ],
    )
    .await;
    assert_eq!(
        scanned_keys(&mut c, scan(v, b"", 0, name_is("ABLE"))).await,
        [&b"a"[..], b"c", b"d"],
        "matches plus what it cannot read"
    );
    assert_eq!(nodes[0].node.metrics().scan_filtered_out.get(), 2);

    // The limit counts records sent: the continuation is the first key not examined.
    let resp = c
        .scan(scan(v, b"", 1, name_is("ABLE")))
        .await
        .expect("scan rpc")
        .into_inner();
    assert_eq!(resp.items.len(), 1);
    assert_eq!(resp.resume_key.as_deref(), Some(&b"b"[..]));
}

#[tokio::test]
async fn one_request_examines_a_bounded_share_of_the_range() {
    let (_nodes, mut c, v) = one_node().await;
    // 20,000 records that do not match, then one that does.
    for chunk in (0..20_000u32).collect::<Vec<_>>().chunks(2_000) {
        let ops = chunk
            .iter()
            .map(|i| put(format!("k{i:06}").as_bytes(), &record(1, 1, "BAR")))
            .collect();
        let resp = c
            .batch(pb::BatchRequest {
                map_version: v,
                ops,
            })
            .await
            .expect("batch rpc")
            .into_inner();
        assert!(
            resp.results
                .iter()
                .all(|r| matches!(r.result, Some(pb::op_result::Result::Written(_))))
        );
    }
    run(&mut c, v, put(b"k999999", &record(1, 2, "ABLE"))).await;

    let first = c
        .scan(scan(v, b"", 0, name_is("ABLE")))
        .await
        .expect("scan rpc")
        .into_inner();
    assert!(first.error.is_none(), "{:?}", first.error);
    assert!(first.items.is_empty());
    let resume = first
        .resume_key
        .expect("a continuation after the examination budget");
    assert!(resume.as_ref() > &b"k000000"[..] && resume.as_ref() < &b"k999999"[..]);
    let second = c
        .scan(scan(v, &resume, 0, name_is("ABLE")))
        .await
        .expect("scan rpc")
        .into_inner();
    let keys: Vec<&[u8]> = second.items.iter().map(|kv| kv.key.as_ref()).collect();
    assert_eq!(keys, [&b"k999999"[..]]);
    assert_eq!(second.resume_key, None);
}

#[tokio::test]
async fn malformed_filters_are_refused_and_the_node_keeps_serving() {
    let (_nodes, mut c, v) = one_node().await;
    let condition = |value: Vec<u8>| pb::ColumnEquals {
        column: 0,
        value: value.into(),
    };
    for (what, filter) in [
        ("an empty value", vec![condition(Vec::new())]),
        (
            "a value over 64 KiB",
            vec![condition(vec![TAG_TEXT; 64 * 1024 + 1])],
        ),
        ("33 conditions", vec![condition(vec![TAG_INT, 2]); 33]),
    ] {
        let resp = c
            .scan(scan(
                v,
                b"",
                0,
                pb::RowFilter {
                    equals: filter,
                    garbage_only: false,
                },
            ))
            .await
            .expect("scan rpc")
            .into_inner();
        assert_eq!(
            resp.error.map(|e| e.code),
            Some(pb::ErrorCode::InvalidArgument as i32),
            "{what}"
        );
    }
    assert!(matches!(
        run(&mut c, v, put(b"after", b"ok")).await,
        pb::op_result::Result::Written(_)
    ));
}

#[tokio::test]
async fn a_garbage_only_scan_sends_the_records_a_sweep_has_work_in() {
    let (nodes, mut c, v) = one_node().await;
    let live = record(5, 1, "ABLE");
    // The same row in two versions (tid 9 over tid 5), and a lone tombstone of tid 7.
    let mut updated = vec![RECORD_FORMAT_V1, 2, 9, live.len() as u8 - 3];
    updated.extend_from_slice(&live[4..]);
    updated.extend_from_slice(&[4, live.len() as u8 - 3]);
    updated.extend_from_slice(&live[4..]);
    put_all(
        &mut c,
        v,
        [
            (&b"a"[..], live.clone()),
            (b"b", updated),
            (b"c", vec![RECORD_FORMAT_V1, 1, 7, 0]),
            (b"d", Vec::new()),
            (b"e", b"opaque, not a record".to_vec()),
            (b"f", live),
        ],
    )
    .await;
    let garbage_only = pb::RowFilter {
        equals: Vec::new(),
        garbage_only: true,
    };
    assert_eq!(
        scanned_keys(&mut c, scan(v, b"", 0, garbage_only)).await,
        [&b"b"[..], b"c", b"e"],
        "several versions, a tombstone, and what the node cannot read"
    );
    assert_eq!(nodes[0].node.metrics().scan_filtered_out.get(), 3);
}
