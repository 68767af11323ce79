//! SIGKILL of a storage-node process while framed requests are in flight on its
//! connection: every one of them fails as `Lost` (it may have been applied) at once, not at
//! its timeout; the next request fails as unreachable (nothing sent, safe to retry); and
//! the node restarted at the same gRPC address, with a new framed port, is found again.
//! Writes hang beforehand because the range's backup is paused (SIGSTOP), so the kill
//! reliably lands while they wait.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::processes::{ClusterSpec, ProcessCluster, fast_manager};
use shmdb_proto::storage as pb;
use shmdb_store_client::framed::metrics::Direction;
use shmdb_store_client::{
    FramedConfig, FramedMetrics, FramedTransport, GrpcConfig, Transport, TransportError,
};

fn write(table: u64, key: String, map_version: u64) -> pb::BatchRequest {
    pb::BatchRequest {
        map_version,
        ops: vec![pb::Op {
            op: Some(pb::op::Op::Put(pb::PutOp {
                table,
                key: Bytes::from(key),
                value: Bytes::from_static(b"v"),
            })),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_node_killed_mid_request() {
    let mut cluster = ProcessCluster::start(ClusterSpec {
        nodes: 2,
        rf: 2,
        ranges: 1,
        manager: fast_manager(Duration::from_millis(300), 2),
        node_args: Vec::new(),
    })
    .await;
    let map = cluster.map().await;
    // No failover or repair while the test kills and restarts on purpose.
    cluster.stop_manager().await;
    let range = map.ranges.first().expect("one range").clone();
    let primary = *range.replicas.first().expect("a primary");
    let backup = *range.replicas.get(1).expect("a backup");
    let table = cluster.tables[0];
    let addr = cluster.addr(primary);
    let timeout = Duration::from_secs(20);
    let t = std::sync::Arc::new(FramedTransport::new(
        FramedConfig {
            request_timeout: timeout,
            ..FramedConfig::default()
        },
        GrpcConfig {
            request_timeout: timeout,
            ..GrpcConfig::default()
        },
        FramedMetrics::new().expect("metrics"),
    ));
    let warm = t
        .batch(&addr, write(table, "warm".into(), map.version))
        .await
        .expect("a write with both replicas up");
    assert!(matches!(
        warm.results.first().and_then(|r| r.result.as_ref()),
        Some(pb::op_result::Result::Written(_))
    ));
    assert_eq!(t.connections_opened(), 1, "it travelled framed");

    cluster.pause(backup);
    let writers: Vec<_> = (0..6)
        .map(|i| {
            let (t, addr) = (t.clone(), addr.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = t
                    .batch(&addr, write(table, format!("k{i}"), map.version))
                    .await;
                (r, started.elapsed())
            })
        })
        .collect();
    // All six are on the wire (the node holds them, waiting for the paused backup).
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.metrics().frames(Direction::Sent) < 7 {
        assert!(Instant::now() < deadline, "the writes were not sent");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let primary_addr = cluster.nodes[&primary].addr;
    cluster.kill(primary).await;
    for writer in writers {
        let (result, elapsed) = writer.await.expect("writer task");
        let err = result.expect_err("a killed node answers nothing");
        assert!(matches!(err, TransportError::Lost(_)), "{err:?}");
        assert!(err.may_have_been_applied());
        assert!(
            elapsed < timeout / 4,
            "the crash was noticed after {elapsed:?}"
        );
    }

    let started = Instant::now();
    let err = t
        .batch(&addr, write(table, "next".into(), map.version))
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    assert!(err.is_retryable() && !err.may_have_been_applied());
    assert!(started.elapsed() < Duration::from_secs(5));

    // Back at the same gRPC address; its framed listener has a new port.
    cluster.restart_at(primary_addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match t
            .batch(&addr, write(table, "again".into(), map.version))
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "not reconnected: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        t.connections_opened(),
        2,
        "a new framed connection, no gRPC"
    );
    assert_eq!(t.metrics().grpc_fallbacks.get(), 0);
    cluster.resume(backup);
}
