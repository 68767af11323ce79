//! Helpers shared by the storage-node integration tests: in-process nodes and raw clients.

#![allow(dead_code)]

pub mod load;
pub mod processes;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shmdb_placement::PartitionMap;
use shmdb_proto::storage::{self as pb, admin_client::AdminClient, storage_client::StorageClient};
use shmdb_storage_node::{NodeConfig, RunningNode};
use tonic::transport::Channel;

/// The table every test writes to.
pub const TABLE: u64 = 1;

/// Starts `n` in-process nodes on ephemeral ports.
pub async fn start_nodes(n: u64, tweak: impl Fn(&mut NodeConfig)) -> Vec<RunningNode> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        let mut config = NodeConfig::local(id, "127.0.0.1:0".parse().expect("addr"));
        tweak(&mut config);
        nodes.push(shmdb_storage_node::start(config).await.expect("start node"));
    }
    nodes
}

/// A bootstrap map over the nodes with table 1 ("t").
pub fn bootstrap_map(nodes: &[RunningNode], rf: u32, ranges: u32) -> PartitionMap {
    let addrs: BTreeMap<u64, String> = nodes
        .iter()
        .map(|n| (n.node.id(), n.addr.to_string()))
        .collect();
    let mut map = PartitionMap::bootstrap(addrs, rf, ranges);
    map.tables.insert(TABLE, "t".into());
    map
}

/// Installs a map on every node.
pub async fn install(nodes: &[RunningNode], map: &PartitionMap) {
    for node in nodes {
        let mut admin = admin(&node.addr.to_string()).await;
        admin
            .install_map(map.to_proto())
            .await
            .expect("install map");
    }
}

pub async fn storage(addr: &str) -> StorageClient<Channel> {
    StorageClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

pub async fn admin(addr: &str) -> AdminClient<Channel> {
    AdminClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

pub fn stamp(s: u64) -> Option<pb::Expect> {
    Some(pb::Expect {
        kind: Some(pb::expect::Kind::Stamp(s)),
    })
}

pub fn absent() -> Option<pb::Expect> {
    Some(pb::Expect {
        kind: Some(pb::expect::Kind::Absent(true)),
    })
}

pub fn op(op: pb::op::Op) -> pb::Op {
    pb::Op { op: Some(op) }
}

pub fn get(key: &[u8]) -> pb::Op {
    op(pb::op::Op::Get(pb::GetOp {
        table: TABLE,
        key: Bytes::copy_from_slice(key),
    }))
}

pub fn put_if(key: &[u8], value: &[u8], expect: Option<pb::Expect>) -> pb::Op {
    op(pb::op::Op::PutIf(pb::PutIfOp {
        table: TABLE,
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        expect,
    }))
}

pub fn put(key: &[u8], value: &[u8]) -> pb::Op {
    op(pb::op::Op::Put(pb::PutOp {
        table: TABLE,
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
    }))
}

/// Runs one op and returns its result.
pub async fn run(
    client: &mut StorageClient<Channel>,
    map_version: u64,
    op: pb::Op,
) -> pb::op_result::Result {
    let resp = client
        .batch(pb::BatchRequest {
            map_version,
            ops: vec![op],
        })
        .await
        .expect("batch rpc")
        .into_inner();
    resp.results
        .into_iter()
        .next()
        .and_then(|r| r.result)
        .expect("one result")
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
