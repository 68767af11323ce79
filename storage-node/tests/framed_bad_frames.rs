//! Bad input on a node's framed TCP data path: garbage, a length over the limit and a frame
//! cut short each close that one connection (counted, logged), never the node, and a client
//! on another connection is served throughout. A node run with `--transport grpc` offers no
//! framed endpoint and clients reach it over gRPC.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{bootstrap_map, get, install, put, start_nodes, wait_until};
use shmdb_proto::storage as pb;
use shmdb_rdma_transport::TransportKind;
use shmdb_store_client::{FramedConfig, FramedMetrics, FramedTransport, GrpcConfig, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn client() -> FramedTransport {
    FramedTransport::new(
        FramedConfig::default(),
        GrpcConfig::default(),
        FramedMetrics::new().expect("metrics"),
    )
}

async fn put_get(t: &FramedTransport, addr: &str, map_version: u64, key: &str) -> Option<Bytes> {
    let response = t
        .batch(
            addr,
            pb::BatchRequest {
                map_version,
                ops: vec![put(key.as_bytes(), key.as_bytes()), get(key.as_bytes())],
            },
        )
        .await
        .expect("served");
    match response.results.get(1).and_then(|r| r.result.as_ref()) {
        Some(pb::op_result::Result::Found(f)) => Some(f.value.clone()),
        _ => None,
    }
}

/// Sends `bytes` on a fresh connection and waits for the node to close it.
async fn closed_after(port: u16, bytes: &[u8]) {
    let mut socket = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    socket.write_all(bytes).await.expect("write");
    let _ = socket.shutdown().await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("the node answered {n} bytes to a bad frame"),
        Err(_) => panic!("the node kept a connection with a bad frame open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection() {
    let nodes = start_nodes(1, |_| {}).await;
    let map = bootstrap_map(&nodes, 1, 1);
    install(&nodes, &map).await;
    let node = &nodes[0];
    let addr = node.addr.to_string();
    let port = node.framed.as_ref().expect("framed served").addr.port();
    let t = client();
    assert_eq!(
        put_get(&t, &addr, map.version, "before").await.as_deref(),
        Some(&b"before"[..])
    );
    let errors = &node.transport_metrics.framed.connection_errors;
    assert_eq!(errors.get(), 0);

    // Garbage: a valid length, then bytes that are no StreamRequest.
    closed_after(port, &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).await;
    // A length far over the limit: refused from the prefix alone.
    closed_after(port, &u32::MAX.to_be_bytes()).await;
    // A frame cut short by the client closing its side.
    closed_after(port, &[0, 0, 0, 100, 1, 2, 3]).await;
    wait_until(Duration::from_secs(5), "three errors counted", || async {
        errors.get() == 3
    })
    .await;
    let framed = node.framed.as_ref().expect("framed served");
    wait_until(Duration::from_secs(5), "bad connections gone", || async {
        framed.connections() == 1
    })
    .await;

    // The well-behaved client's connection was never touched.
    assert_eq!(
        put_get(&t, &addr, map.version, "after").await.as_deref(),
        Some(&b"after"[..])
    );
    assert_eq!(t.connections_opened(), 1);
    assert_eq!(t.metrics().grpc_fallbacks.get(), 0);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_only_node_offers_no_framed_endpoint_and_clients_use_grpc() {
    let nodes = start_nodes(1, |c| c.transport = TransportKind::Grpc).await;
    let map = bootstrap_map(&nodes, 1, 1);
    install(&nodes, &map).await;
    let node = &nodes[0];
    assert!(node.framed.is_none());
    assert_eq!(node.transport, "grpc");
    let addr = node.addr.to_string();
    let t = client();
    let why = t.grpc().framed_port(&addr).await.expect("asked");
    assert!(
        matches!(&why, Err(m) if m.contains("--transport grpc")),
        "{why:?}"
    );
    assert_eq!(
        put_get(&t, &addr, map.version, "k").await.as_deref(),
        Some(&b"k"[..])
    );
    assert_eq!(t.metrics().grpc_fallbacks.get(), 1);
    assert_eq!(t.connections_opened(), 0);
    assert_eq!(t.grpc().streams_opened(), 1, "the gRPC stream carried it");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_framed_connections_and_clients_notice() {
    let nodes = start_nodes(1, |_| {}).await;
    let map = bootstrap_map(&nodes, 1, 1);
    install(&nodes, &map).await;
    let addr = nodes[0].addr.to_string();
    let t = client();
    assert!(put_get(&t, &addr, map.version, "k").await.is_some());
    assert_eq!(t.open_connections(), 1);
    for node in nodes {
        node.shutdown().await;
    }
    // The node ended the connection: the client notices without sending anything.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while t.open_connections() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connection still open"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
