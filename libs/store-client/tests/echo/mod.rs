//! The echo protocol of the fake nodes in the transport failure tests: a batch's first key
//! says how the fake behaves (`hang`, `close`, …; see each test file), and any other key is
//! answered as the found value, so a test sees which request an answer belongs to.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shmdb_store_client::proto as pb;
use shmdb_store_client::{Transport, TransportError};
use tokio::task::JoinHandle;

/// The fake's answer to a batch whose first key is `key`.
pub fn answer(key: &Bytes) -> pb::BatchResponse {
    pb::BatchResponse {
        results: vec![pb::OpResult {
            result: Some(pb::op_result::Result::Found(pb::Found {
                value: key.clone(),
                stamp: 1,
            })),
        }],
        map_version: 1,
    }
}

/// The key of a batch's first get (empty for anything else).
pub fn first_key(batch: &pb::BatchRequest) -> Bytes {
    match batch.ops.first().and_then(|op| op.op.as_ref()) {
        Some(pb::op::Op::Get(get)) => get.key.clone(),
        _ => Bytes::new(),
    }
}

/// A batch of one get of `key`.
pub fn get(key: &str) -> pb::BatchRequest {
    pb::BatchRequest {
        map_version: 1,
        ops: vec![pb::Op {
            op: Some(pb::op::Op::Get(pb::GetOp {
                table: 1,
                key: Bytes::from(key.to_owned()),
            })),
        }],
    }
}

/// The value an echoed answer carries.
pub fn found(response: &pb::BatchResponse) -> Option<Bytes> {
    match response.results.first().and_then(|r| r.result.as_ref()) {
        Some(pb::op_result::Result::Found(f)) => Some(f.value.clone()),
        _ => None,
    }
}

/// Waits until `cond` holds, for at most five seconds.
pub async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends `get(key)` in a task of its own; the task gives the outcome and how long it took.
pub fn spawn_call<T: Transport>(
    t: &Arc<T>,
    addr: &str,
    key: &'static str,
) -> JoinHandle<(Result<pb::BatchResponse, TransportError>, Duration)> {
    let t = t.clone();
    let addr = addr.to_owned();
    tokio::spawn(async move {
        let started = Instant::now();
        let result = t.batch(&addr, get(key)).await;
        (result, started.elapsed())
    })
}
