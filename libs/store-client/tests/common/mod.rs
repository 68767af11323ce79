//! An in-memory fake storage cluster behind the `Transport` trait, with injectable faults.
//!
//! Every node serves by the cluster's current map (a node that is not the primary of a key's
//! range answers WRONG_OWNER), all nodes share one data set, and every request is logged so
//! tests can assert where each operation went and how often it was sent.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use shmdb_placement::{PartitionMap, RangeDesc, decode_range_key, range_key};
use shmdb_store_client::proto as pb;
use shmdb_store_client::{StoreClient, StoreClientConfig, Transport, TransportError};

/// A failure injected into the next batch or scan request to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Connection refused: nothing applied.
    Unreachable,
    /// The request is applied, then the answer is lost.
    LostAfterApply,
    /// The request is applied, then the answer times out.
    TimeoutAfterApply,
    /// Every op is applied, then each is answered UNAVAILABLE (replication failed late).
    UnavailableAfterApply,
    /// Every op is answered UNAVAILABLE without being applied (range fenced).
    UnavailableBeforeApply,
}

/// One request a node received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Batch {
        addr: String,
        map_version: u64,
        keys: Vec<Vec<u8>>,
    },
    Scan {
        addr: String,
        start: Vec<u8>,
    },
    GetMap {
        addr: String,
    },
}

#[derive(Default)]
pub struct State {
    /// The map every node serves by.
    pub map: pb::PartitionMap,
    /// What `GetMap` returns at a node, when it differs from `map`.
    pub node_maps: HashMap<String, pb::PartitionMap>,
    pub data: BTreeMap<(u64, Vec<u8>), (Bytes, u64)>,
    pub next_stamp: u64,
    pub faults: HashMap<String, VecDeque<Fault>>,
    /// Nodes that refuse every connection (also map fetches).
    pub down: HashSet<String>,
    pub log: Vec<Call>,
}

#[derive(Default)]
pub struct FakeCluster {
    pub state: Mutex<State>,
}

/// Node ids 1..=n at addresses "n1".."nN".
pub fn addr(node: u64) -> String {
    format!("n{node}")
}

/// A map of `version` whose ranges start at the given range keys (the first must be empty),
/// each served by one primary.
pub fn map(version: u64, nodes: u64, ranges: &[(Vec<u8>, u64)]) -> PartitionMap {
    let descs = ranges
        .iter()
        .enumerate()
        .map(|(i, (start, primary))| RangeDesc {
            id: i as u64 + 1,
            start: start.clone(),
            end: ranges.get(i + 1).map(|(next, _)| next.clone()),
            epoch: version,
            replicas: vec![*primary],
            learners: Vec::new(),
            bootstrap: true,
        })
        .collect();
    let map = PartitionMap {
        version,
        nodes: (1..=nodes).map(|n| (n, addr(n))).collect(),
        ranges: descs,
        tables: BTreeMap::new(),
        replication_factor: 1,
    };
    map.validate().expect("test map is valid");
    map
}

/// Table 1 split at key `split`: keys below on n1, the rest on n2.
pub fn two_ranges(version: u64, split: &[u8]) -> PartitionMap {
    map(version, 2, &[(Vec::new(), 1), (range_key(1, split), 2)])
}

/// Test settings: generous deadline, tiny backoff.
pub fn config() -> StoreClientConfig {
    StoreClientConfig {
        seeds: vec![addr(1)],
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(5),
        backoff_initial: Duration::from_micros(100),
        backoff_max: Duration::from_millis(1),
        scan_page_limit: 1024,
        data_path: shmdb_store_client::DataPath::default(),
    }
}

impl FakeCluster {
    pub fn new(map: &PartitionMap) -> Arc<FakeCluster> {
        let cluster = FakeCluster::default();
        cluster.state.lock().map = map.to_proto();
        cluster.state.lock().next_stamp = 100;
        Arc::new(cluster)
    }

    /// A client that starts from `map` (possibly older than the cluster's).
    pub fn client_with_map(self: &Arc<Self>, map: &PartitionMap) -> StoreClient {
        StoreClient::with_map(config(), self.clone(), map.clone())
    }

    /// A client that fetches the cluster's map from the seed first.
    pub async fn client(self: &Arc<Self>) -> StoreClient {
        StoreClient::with_transport(config(), self.clone())
            .await
            .expect("map fetched")
    }

    pub fn set_map(&self, map: &PartitionMap) {
        self.state.lock().map = map.to_proto();
    }

    pub fn inject(&self, node: u64, fault: Fault) {
        self.state
            .lock()
            .faults
            .entry(addr(node))
            .or_default()
            .push_back(fault);
    }

    pub fn take_log(&self) -> Vec<Call> {
        std::mem::take(&mut self.state.lock().log)
    }

    /// Batch and scan requests only (map fetches left out).
    pub fn data_calls(&self) -> Vec<Call> {
        self.take_log()
            .into_iter()
            .filter(|c| !matches!(c, Call::GetMap { .. }))
            .collect()
    }

    pub fn insert(&self, table: u64, key: &[u8], value: &[u8]) -> u64 {
        let mut state = self.state.lock();
        state.next_stamp += 1;
        let stamp = state.next_stamp;
        state.data.insert(
            (table, key.to_vec()),
            (Bytes::copy_from_slice(value), stamp),
        );
        stamp
    }

    pub fn value(&self, table: u64, key: &[u8]) -> Option<(Bytes, u64)> {
        self.state.lock().data.get(&(table, key.to_vec())).cloned()
    }
}

fn wrong_owner(version: u64) -> pb::OpError {
    pb::OpError {
        code: pb::ErrorCode::WrongOwner as i32,
        message: "not the primary".into(),
        map_version: version,
    }
}

fn unavailable(version: u64) -> pb::OpError {
    pb::OpError {
        code: pb::ErrorCode::Unavailable as i32,
        message: "replication failed".into(),
        map_version: version,
    }
}

fn result(r: pb::op_result::Result) -> pb::OpResult {
    pb::OpResult { result: Some(r) }
}

fn op_target(op: &pb::Op) -> (u64, Bytes) {
    use pb::op::Op as P;
    match op.op.as_ref().expect("op set") {
        P::Get(o) => (o.table, o.key.clone()),
        P::PutIf(o) => (o.table, o.key.clone()),
        P::DeleteIf(o) => (o.table, o.key.clone()),
        P::Put(o) => (o.table, o.key.clone()),
        P::Delete(o) => (o.table, o.key.clone()),
        P::Increment(o) => (o.table, o.key.clone()),
        P::Check(o) => (o.table, o.key.clone()),
    }
}

fn holds(expect: Option<pb::Expect>, current: Option<u64>) -> bool {
    match expect.and_then(|e| e.kind) {
        Some(pb::expect::Kind::Stamp(s)) => current == Some(s),
        Some(pb::expect::Kind::Absent(_)) => current.is_none(),
        None => false,
    }
}

impl State {
    fn primary_addr(&self, table: u64, key: &[u8]) -> Option<String> {
        let map = PartitionMap::from_proto(&self.map).ok()?;
        let range = map.find(&range_key(table, key))?;
        map.nodes.get(&range.primary()?).cloned()
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    fn apply(&mut self, op: &pb::Op) -> pb::OpResult {
        use pb::op::Op as P;
        use pb::op_result::Result as R;
        let (table, key) = op_target(op);
        let k = (table, key.to_vec());
        let current = self.data.get(&k).map(|(_, s)| *s);
        match op.op.clone().expect("op set") {
            P::Get(_) => match self.data.get(&k) {
                Some((value, stamp)) => result(R::Found(pb::Found {
                    value: value.clone(),
                    stamp: *stamp,
                })),
                None => result(R::Absent(pb::Absent {})),
            },
            P::PutIf(o) => {
                if holds(o.expect, current) {
                    let stamp = self.stamp();
                    self.data.insert(k, (o.value, stamp));
                    result(R::Written(pb::Written { stamp }))
                } else {
                    result(R::Conflict(pb::Conflict {
                        stamp: current.unwrap_or(0),
                    }))
                }
            }
            P::DeleteIf(o) => {
                if holds(o.expect, current) {
                    let stamp = self.stamp();
                    self.data.remove(&k);
                    result(R::Written(pb::Written { stamp }))
                } else {
                    result(R::Conflict(pb::Conflict {
                        stamp: current.unwrap_or(0),
                    }))
                }
            }
            P::Put(o) => {
                let stamp = self.stamp();
                self.data.insert(k, (o.value, stamp));
                result(R::Written(pb::Written { stamp }))
            }
            P::Delete(_) => {
                let stamp = self.stamp();
                self.data.remove(&k);
                result(R::Written(pb::Written { stamp }))
            }
            P::Increment(o) => {
                let old = match self.data.get(&k) {
                    None => 0,
                    Some((v, _)) => match <[u8; 8]>::try_from(v.as_ref()) {
                        Ok(b) => i64::from_le_bytes(b),
                        Err(_) => {
                            return result(R::Error(pb::OpError {
                                code: pb::ErrorCode::NotACounter as i32,
                                message: "not a counter".into(),
                                map_version: 0,
                            }));
                        }
                    },
                };
                let value = old + o.delta;
                let stamp = self.stamp();
                self.data
                    .insert(k, (Bytes::copy_from_slice(&value.to_le_bytes()), stamp));
                result(R::Counter(pb::Counter { value, stamp }))
            }
            P::Check(o) => {
                if holds(o.expect, current) {
                    result(R::Checked(pb::Checked {}))
                } else {
                    result(R::Conflict(pb::Conflict {
                        stamp: current.unwrap_or(0),
                    }))
                }
            }
        }
    }

    fn next_fault(&mut self, addr: &str) -> Option<Fault> {
        if self.down.contains(addr) {
            return Some(Fault::Unreachable);
        }
        self.faults.get_mut(addr).and_then(VecDeque::pop_front)
    }
}

#[async_trait]
impl Transport for FakeCluster {
    async fn batch(
        &self,
        addr: &str,
        req: pb::BatchRequest,
    ) -> Result<pb::BatchResponse, TransportError> {
        let mut state = self.state.lock();
        state.log.push(Call::Batch {
            addr: addr.to_owned(),
            map_version: req.map_version,
            keys: req.ops.iter().map(|op| op_target(op).1.to_vec()).collect(),
        });
        let fault = state.next_fault(addr);
        if fault == Some(Fault::Unreachable) {
            return Err(TransportError::Unreachable(format!("{addr}: refused")));
        }
        let version = state.map.version;
        let results = req
            .ops
            .iter()
            .map(|op| {
                let (table, key) = op_target(op);
                if state.primary_addr(table, &key).as_deref() != Some(addr) {
                    return result(pb::op_result::Result::Error(wrong_owner(version)));
                }
                match fault {
                    Some(Fault::UnavailableBeforeApply) => {
                        result(pb::op_result::Result::Error(unavailable(version)))
                    }
                    Some(Fault::UnavailableAfterApply) => {
                        state.apply(op);
                        result(pb::op_result::Result::Error(unavailable(version)))
                    }
                    _ => state.apply(op),
                }
            })
            .collect();
        match fault {
            Some(Fault::LostAfterApply) => Err(TransportError::Lost(format!("{addr}: reset"))),
            Some(Fault::TimeoutAfterApply) => {
                Err(TransportError::Timeout(format!("{addr}: no answer")))
            }
            _ => Ok(pb::BatchResponse {
                results,
                map_version: version,
            }),
        }
    }

    async fn scan(
        &self,
        addr: &str,
        req: pb::ScanRequest,
    ) -> Result<pb::ScanResponse, TransportError> {
        let mut state = self.state.lock();
        state.log.push(Call::Scan {
            addr: addr.to_owned(),
            start: req.start.to_vec(),
        });
        let version = state.map.version;
        match state.next_fault(addr) {
            Some(Fault::Unreachable) => {
                return Err(TransportError::Unreachable(format!("{addr}: refused")));
            }
            Some(Fault::LostAfterApply) => {
                return Err(TransportError::Lost(format!("{addr}: reset")));
            }
            Some(Fault::TimeoutAfterApply) => {
                return Err(TransportError::Timeout(format!("{addr}: no answer")));
            }
            Some(Fault::UnavailableAfterApply | Fault::UnavailableBeforeApply) => {
                return Ok(pb::ScanResponse {
                    error: Some(unavailable(version)),
                    map_version: version,
                    ..Default::default()
                });
            }
            None => {}
        }
        let map = PartitionMap::from_proto(&state.map).expect("valid map");
        let range = map
            .find(&range_key(req.table, &req.start))
            .expect("tiled")
            .clone();
        if map.nodes.get(&range.replicas[0]).map(String::as_str) != Some(addr) {
            return Ok(pb::ScanResponse {
                error: Some(wrong_owner(version)),
                map_version: version,
                ..Default::default()
            });
        }
        // Where this node's range ends within the table, if it does.
        let range_end_in_table = range.end.as_ref().and_then(|end| {
            let (t, k) = decode_range_key(end)?;
            (t == req.table).then(|| k.to_vec())
        });
        let requested_end = (!req.to_table_end).then(|| req.end.to_vec());
        let mut items = Vec::new();
        let mut resume = None;
        for ((table, key), (value, stamp)) in state.data.range((req.table, req.start.to_vec())..) {
            if *table != req.table
                || requested_end.as_ref().is_some_and(|e| key >= e)
                || range_end_in_table.as_ref().is_some_and(|e| key >= e)
            {
                break;
            }
            if items.len() == req.limit as usize {
                let mut next = items
                    .last()
                    .map(|kv: &pb::KeyValue| kv.key.to_vec())
                    .unwrap_or_default();
                next.push(0);
                resume = Some(Bytes::from(next));
                break;
            }
            items.push(pb::KeyValue {
                key: Bytes::copy_from_slice(key),
                value: value.clone(),
                stamp: *stamp,
            });
        }
        if resume.is_none()
            && let Some(end) = range_end_in_table
            && requested_end.as_ref().is_none_or(|e| end < *e)
        {
            resume = Some(Bytes::from(end));
        }
        Ok(pb::ScanResponse {
            items,
            resume_key: resume,
            error: None,
            map_version: version,
        })
    }

    async fn get_map(&self, addr: &str) -> Result<pb::PartitionMap, TransportError> {
        let mut state = self.state.lock();
        state.log.push(Call::GetMap {
            addr: addr.to_owned(),
        });
        if state.down.contains(addr) {
            return Err(TransportError::Unreachable(format!("{addr}: refused")));
        }
        Ok(state
            .node_maps
            .get(addr)
            .cloned()
            .unwrap_or_else(|| state.map.clone()))
    }
}
