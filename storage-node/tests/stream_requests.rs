//! The `Stream` RPC: requests multiplexed on one stream are answered by id, a bad frame gets
//! an error answer for its id and the stream keeps serving, and stream requests count in the
//! same metrics as unary calls.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use shmdb_proto::storage as pb;
use shmdb_proto::storage::stream_request::Body as RequestBody;
use shmdb_proto::storage::stream_response::Body as ResponseBody;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn batch(id: u64, map_version: u64, ops: Vec<pb::Op>) -> pb::StreamRequest {
    pb::StreamRequest {
        id,
        body: Some(RequestBody::Batch(pb::BatchRequest { map_version, ops })),
    }
}

/// The next answer on the stream, within five seconds.
async fn next(inbound: &mut tonic::Streaming<pb::StreamResponse>) -> pb::StreamResponse {
    tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .expect("an answer in time")
        .expect("stream intact")
        .expect("stream open")
}

fn found(response: &pb::StreamResponse) -> Option<Bytes> {
    match &response.body {
        Some(ResponseBody::Batch(b)) => match b.results.first().and_then(|r| r.result.as_ref()) {
            Some(pb::op_result::Result::Found(f)) => Some(f.value.clone()),
            _ => None,
        },
        _ => None,
    }
}

#[tokio::test]
async fn bad_frames_get_an_error_answer_and_the_stream_keeps_serving() {
    let nodes = start_nodes(1, |_| {}).await;
    let map = bootstrap_map(&nodes, 1, 1);
    install(&nodes, &map).await;
    let v = map.version;
    let node = &nodes[0];
    let batches_before = node
        .node
        .metrics()
        .request_seconds
        .with_label_values(&["batch"])
        .get_sample_count();
    let mut client = storage(&node.addr.to_string()).await;
    let (tx, rx) = mpsc::channel(16);
    let mut inbound = client
        .stream(ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    assert_eq!(node.node.metrics().streams.get(), 1, "one open stream");

    tx.send(batch(7, v, vec![put(b"k", b"v1")]))
        .await
        .expect("send");
    let written = next(&mut inbound).await;
    assert_eq!(written.id, 7);
    assert!(
        matches!(&written.body, Some(ResponseBody::Batch(b))
            if matches!(b.results.first().and_then(|r| r.result.as_ref()), Some(pb::op_result::Result::Written(_)))),
        "{written:?}"
    );

    // A frame with no body: an INVALID_ARGUMENT answer for its id, nothing else changes.
    tx.send(pb::StreamRequest { id: 8, body: None })
        .await
        .expect("send");
    let refused = next(&mut inbound).await;
    assert_eq!(refused.id, 8);
    match &refused.body {
        Some(ResponseBody::Error(e)) => {
            assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
            assert!(e.message.contains("neither a batch nor a scan"), "{e:?}");
        }
        other => panic!("expected an error answer, got {other:?}"),
    }

    // Per-op errors stay per op, inside a batch answer, as on the unary path.
    tx.send(batch(9, v, vec![put_if(b"k", b"v2", None), get(b"k")]))
        .await
        .expect("send");
    let mixed = next(&mut inbound).await;
    assert_eq!(mixed.id, 9);
    assert_eq!(
        found(&mixed),
        None,
        "the first result is the refused put_if"
    );
    match &mixed.body {
        Some(ResponseBody::Batch(b)) => {
            assert_eq!(b.results.len(), 2);
            assert!(matches!(
                b.results[1].result,
                Some(pb::op_result::Result::Found(ref f)) if f.value.as_ref() == b"v1"
            ));
        }
        other => panic!("expected a batch answer, got {other:?}"),
    }

    // A scan on the same stream.
    tx.send(pb::StreamRequest {
        id: 10,
        body: Some(RequestBody::Scan(pb::ScanRequest {
            map_version: v,
            table: TABLE,
            start: Bytes::new(),
            end: Bytes::new(),
            to_table_end: true,
            limit: 10,
            filter: None,
        })),
    })
    .await
    .expect("send");
    let scanned = next(&mut inbound).await;
    assert_eq!(scanned.id, 10);
    match &scanned.body {
        Some(ResponseBody::Scan(s)) => {
            assert_eq!(s.items.len(), 1);
            assert_eq!(s.items[0].key.as_ref(), b"k");
        }
        other => panic!("expected a scan answer, got {other:?}"),
    }

    let batches_after = node
        .node
        .metrics()
        .request_seconds
        .with_label_values(&["batch"])
        .get_sample_count();
    assert_eq!(
        batches_after - batches_before,
        2,
        "stream batches count in the unary metric; the bad frame does not"
    );

    // Closing our side ends the stream; the open-streams gauge follows.
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let streams = node.node.metrics().streams.clone();
    wait_until(Duration::from_secs(5), "the stream gauge to drop", || {
        let open = streams.get();
        async move { open == 0 }
    })
    .await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_graceful_shutdown_ends_open_streams_instead_of_waiting_for_them() {
    let mut nodes = start_nodes(1, |_| {}).await;
    let map = bootstrap_map(&nodes, 1, 1);
    install(&nodes, &map).await;
    let node = nodes.remove(0);
    let mut client = storage(&node.addr.to_string()).await;
    let (tx, rx) = mpsc::channel(16);
    let mut inbound = client
        .stream(ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    tx.send(batch(1, map.version, vec![get(b"k")]))
        .await
        .expect("send");
    assert_eq!(next(&mut inbound).await.id, 1);
    // The client keeps its side open (tx is alive) while the node shuts down.
    tokio::time::timeout(Duration::from_secs(10), node.shutdown())
        .await
        .expect("shutdown is not held up by the open stream");
    let end = tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .expect("the stream ends");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    drop(tx);
}

#[tokio::test]
async fn a_stopped_node_refuses_new_streams_before_reading_anything() {
    let mut nodes = start_nodes(1, |_| {}).await;
    let map = bootstrap_map(&nodes, 1, 1);
    install(&nodes, &map).await;
    let node = nodes.remove(0);
    let mut client = storage(&node.addr.to_string()).await;
    let (tx, rx) = mpsc::channel(16);
    let mut inbound = client
        .stream(ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    tx.send(batch(1, map.version, vec![get(b"k")]))
        .await
        .expect("send");
    assert_eq!(next(&mut inbound).await.id, 1);
    // A crash as in-process tests simulate it: the connection already open outlives the
    // server task, so a new stream on it reaches the service.
    node.abort();
    let (_tx2, rx2) = mpsc::channel::<pb::StreamRequest>(1);
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        client.stream(ReceiverStream::new(rx2)),
    )
    .await
    .expect("an answer in time");
    match refused {
        Err(status) => assert!(
            status.code() == tonic::Code::Unavailable && status.message().contains("shutting down"),
            "{status:?}"
        ),
        Ok(_) => panic!("a stopped node accepted a new stream"),
    }
    drop(tx);
}
