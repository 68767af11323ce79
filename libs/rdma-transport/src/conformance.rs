//! The transport conformance suite: what every [`Transport`] must do, written once and run
//! against each implementation available on the machine (framed TCP, and gRPC with unary
//! calls and with multiplexed streams, always; RDMA over the in-memory fabric always; RDMA
//! over ibverbs where a device exists).
//!
//! A [`Fixture`] supplies the transport under test and real storage nodes to talk to; the
//! checks assert behaviour the store client relies on: answers match their requests and
//! keep request order within a batch and across sequential writes; values of several
//! megabytes travel intact; many concurrent requests share connections without mixing up
//! answers; a node dying with a request outstanding fails it as `Lost` promptly (not after
//! the timeout); and a node that does not answer yields `Timeout` without breaking the
//! connection for later requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use shmdb_store_client::proto as pb;
use shmdb_store_client::{Transport, TransportError};

/// The table fixtures create on their nodes; every check writes to it.
pub const TABLE: u64 = 1;

/// Largest value fixtures must let their nodes accept (the large-value check writes values
/// up to this size).
pub const LARGE_VALUE_BYTES: usize = 3 << 20;

/// Supplies what the suite runs against.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// Name for failure messages (`tcp`, `tcp-stream`, `tcp-framed`, `rdma-fake`,
    /// `rdma-verbs`).
    fn name(&self) -> String;

    /// A fresh transport under test, with this request timeout.
    fn transport(&self, request_timeout: Duration) -> Arc<dyn Transport>;

    /// A storage node that is the sole primary (RF 1) of table [`TABLE`], accepting values
    /// up to [`LARGE_VALUE_BYTES`] plus a megabyte.
    async fn serving_node(&self) -> Box<dyn NodeUnderTest>;

    /// A storage node that is primary of table [`TABLE`] with a backup that never answers:
    /// reads are served, writes stay in flight (for much longer than any check waits).
    async fn stalled_node(&self) -> Box<dyn NodeUnderTest>;
}

/// A storage node under test.
#[async_trait]
pub trait NodeUnderTest: Send + Sync {
    /// The address clients use (the one in the partition map).
    fn addr(&self) -> String;

    /// The node's partition-map version, sent with requests.
    fn map_version(&self) -> u64;

    /// A counter that grows whenever the node receives request bytes over the transport
    /// under test, so a check can tell that a request has reached the node.
    fn received(&self) -> u64;

    /// Kills the node as a crash would: connections drop, nothing answers any more.
    async fn kill(&mut self);
}

fn get(key: &[u8]) -> pb::Op {
    pb::Op {
        op: Some(pb::op::Op::Get(pb::GetOp {
            table: TABLE,
            key: Bytes::copy_from_slice(key),
        })),
    }
}

fn put(key: &[u8], value: Bytes) -> pb::Op {
    pb::Op {
        op: Some(pb::op::Op::Put(pb::PutOp {
            table: TABLE,
            key: Bytes::copy_from_slice(key),
            value,
        })),
    }
}

fn put_if(key: &[u8], value: Bytes, expect: Option<u64>) -> pb::Op {
    let kind = match expect {
        Some(stamp) => pb::expect::Kind::Stamp(stamp),
        None => pb::expect::Kind::Absent(true),
    };
    pb::Op {
        op: Some(pb::op::Op::PutIf(pb::PutIfOp {
            table: TABLE,
            key: Bytes::copy_from_slice(key),
            value,
            expect: Some(pb::Expect { kind: Some(kind) }),
        })),
    }
}

async fn batch(
    t: &dyn Transport,
    node: &dyn NodeUnderTest,
    ops: Vec<pb::Op>,
) -> Result<Vec<pb::op_result::Result>, TransportError> {
    let n = ops.len();
    let response = t
        .batch(
            &node.addr(),
            pb::BatchRequest {
                map_version: node.map_version(),
                ops,
            },
        )
        .await?;
    assert_eq!(response.results.len(), n, "one result per op");
    Ok(response
        .results
        .into_iter()
        .map(|r| {
            r.result
                .unwrap_or(pb::op_result::Result::Absent(pb::Absent {}))
        })
        .collect())
}

fn found(result: &pb::op_result::Result) -> Option<(Bytes, u64)> {
    match result {
        pb::op_result::Result::Found(f) => Some((f.value.clone(), f.stamp)),
        _ => None,
    }
}

fn written(result: &pb::op_result::Result) -> Option<u64> {
    match result {
        pb::op_result::Result::Written(w) => Some(w.stamp),
        _ => None,
    }
}

/// Waits until `cond` holds, checking every millisecond, for at most `timeout`.
async fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Results come back in request order within a batch, and sequential conditional writes
/// from one client apply in the order issued (each expects the previous one's stamp).
pub async fn ordering(f: &dyn Fixture) {
    let name = f.name();
    let node = f.serving_node().await;
    let t = f.transport(Duration::from_secs(5));
    let mut ops = Vec::new();
    for i in 0..20u32 {
        ops.push(put(
            format!("order-{i}").as_bytes(),
            Bytes::from(format!("v{i}")),
        ));
    }
    for i in (0..20u32).rev() {
        ops.push(get(format!("order-{i}").as_bytes()));
    }
    let results = batch(t.as_ref(), node.as_ref(), ops).await.expect("batch");
    for (j, i) in (0..20u32).rev().enumerate() {
        let value = found(&results[20 + j]).map(|(v, _)| v);
        assert_eq!(
            value,
            Some(Bytes::from(format!("v{i}"))),
            "[{name}] result {} answers get(order-{i})",
            20 + j
        );
    }
    let mut stamp = None;
    for i in 0..50u32 {
        let results = batch(
            t.as_ref(),
            node.as_ref(),
            vec![put_if(b"chain", Bytes::from(i.to_string()), stamp)],
        )
        .await
        .expect("put_if");
        let new = written(&results[0])
            .unwrap_or_else(|| panic!("[{name}] write {i} of the chain: {:?}", results[0]));
        assert!(stamp.is_none_or(|s| new > s), "[{name}] stamps increase");
        stamp = Some(new);
    }
    let results = batch(t.as_ref(), node.as_ref(), vec![get(b"chain")])
        .await
        .expect("get");
    assert_eq!(
        found(&results[0]),
        stamp.map(|s| (Bytes::from("49"), s)),
        "[{name}] the last write is what is read"
    );
}

/// Values of megabytes, alone and several per batch, and a scan returning them, travel
/// byte-exact; a value above the node's limit is refused per op, and the connection keeps
/// working.
pub async fn large_values(f: &dyn Fixture) {
    let name = f.name();
    let node = f.serving_node().await;
    let t = f.transport(Duration::from_secs(20));
    let pattern = |seed: u8, len: usize| -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into()
    };
    let big = pattern(1, LARGE_VALUE_BYTES);
    let results = batch(t.as_ref(), node.as_ref(), vec![put(b"big", big.clone())])
        .await
        .expect("put big");
    assert!(written(&results[0]).is_some(), "[{name}] {:?}", results[0]);
    let results = batch(t.as_ref(), node.as_ref(), vec![get(b"big")])
        .await
        .expect("get big");
    assert!(
        found(&results[0]).is_some_and(|(v, _)| v == big),
        "[{name}] the large value comes back intact"
    );

    let values: Vec<Bytes> = (0..4u8).map(|i| pattern(i + 10, 1 << 20)).collect();
    let puts = values
        .iter()
        .enumerate()
        .map(|(i, v)| put(format!("many-{i}").as_bytes(), v.clone()))
        .collect();
    batch(t.as_ref(), node.as_ref(), puts).await.expect("puts");
    let gets = (0..4)
        .map(|i| get(format!("many-{i}").as_bytes()))
        .collect();
    let results = batch(t.as_ref(), node.as_ref(), gets).await.expect("gets");
    for (i, v) in values.iter().enumerate() {
        assert!(
            found(&results[i]).is_some_and(|(got, _)| got == *v),
            "[{name}] value {i} of the batch comes back intact"
        );
    }
    let scan = t
        .scan(
            &node.addr(),
            pb::ScanRequest {
                map_version: node.map_version(),
                table: TABLE,
                start: Bytes::from_static(b"many-"),
                end: Bytes::from_static(b"many-~"),
                to_table_end: false,
                limit: 10,
                filter: None,
            },
        )
        .await
        .expect("scan");
    assert_eq!(scan.items.len(), 4, "[{name}] scan returns the four values");
    for (item, v) in scan.items.iter().zip(&values) {
        assert_eq!(&item.value, v, "[{name}] scanned value intact");
    }

    let too_big = pattern(7, LARGE_VALUE_BYTES + (2 << 20));
    let results = batch(t.as_ref(), node.as_ref(), vec![put(b"too-big", too_big)])
        .await
        .expect("the request itself is carried");
    assert!(
        matches!(&results[0], pb::op_result::Result::Error(e) if e.code == pb::ErrorCode::InvalidArgument as i32),
        "[{name}] an oversized value is refused per op: {:?}",
        results[0]
    );
    let results = batch(t.as_ref(), node.as_ref(), vec![get(b"too-big")])
        .await
        .expect("still connected");
    assert!(found(&results[0]).is_none(), "[{name}] nothing was stored");
}

/// Many tasks sharing one transport, each writing and reading its own keys: every answer
/// belongs to its request.
pub async fn concurrent_requests(f: &dyn Fixture) {
    let name = f.name();
    let node: Arc<dyn NodeUnderTest> = Arc::from(f.serving_node().await);
    let t = f.transport(Duration::from_secs(10));
    let tasks: Vec<_> = (0..32u32)
        .map(|task| {
            let t = t.clone();
            let node = node.clone();
            tokio::spawn(async move {
                for i in 0..16u32 {
                    let key = format!("c-{task}-{i}");
                    let value =
                        Bytes::from(format!("{task}:{i}:{}", "x".repeat((task * i) as usize)));
                    let results = batch(
                        t.as_ref(),
                        node.as_ref(),
                        vec![
                            put_if(key.as_bytes(), value.clone(), None),
                            get(key.as_bytes()),
                        ],
                    )
                    .await?;
                    let stamp = written(&results[0]);
                    if stamp.is_none() || found(&results[1]) != stamp.map(|s| (value.clone(), s)) {
                        return Err(TransportError::Lost(format!(
                            "task {task} request {i} got someone else's answer: {results:?}"
                        )));
                    }
                }
                Ok::<_, TransportError>(())
            })
        })
        .collect();
    for (task, handle) in tasks.into_iter().enumerate() {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("[{name}] task {task}: {e}"),
            Err(e) => panic!("[{name}] task {task} panicked: {e}"),
        }
    }
}

/// A node killed while a write is outstanding: the write fails as `Lost` (it may have been
/// applied) well before its timeout, and the next request fails fast and retryably.
pub async fn peer_death_mid_request(f: &dyn Fixture) {
    let name = f.name();
    let mut node = f.stalled_node().await;
    let timeout = Duration::from_secs(15);
    let t = f.transport(timeout);
    // A read connects and proves the node serves.
    batch(t.as_ref(), node.as_ref(), vec![get(b"k")])
        .await
        .expect("warm-up read");
    let before = node.received();
    let addr = node.addr();
    let map_version = node.map_version();
    let writer = {
        let t = t.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = t
                .batch(
                    &addr,
                    pb::BatchRequest {
                        map_version,
                        ops: vec![put(b"k", Bytes::from_static(b"v"))],
                    },
                )
                .await;
            (r, started.elapsed())
        })
    };
    wait_for(
        Duration::from_secs(5),
        "the write to reach the node",
        || node.received() > before,
    )
    .await;
    node.kill().await;
    let (result, elapsed) = tokio::time::timeout(timeout + Duration::from_secs(5), writer)
        .await
        .expect("the write ends")
        .expect("writer task");
    let err = result
        .err()
        .unwrap_or_else(|| panic!("[{name}] a write to a dead node cannot succeed"));
    assert!(
        matches!(err, TransportError::Lost(_)),
        "[{name}] a request cut off by a crash is lost, not {err:?}"
    );
    assert!(err.may_have_been_applied());
    assert!(
        elapsed < timeout / 2,
        "[{name}] the crash was noticed after {elapsed:?}, not promptly"
    );
    let started = Instant::now();
    let next = batch(t.as_ref(), node.as_ref(), vec![get(b"k")]).await;
    let err = next
        .err()
        .unwrap_or_else(|| panic!("[{name}] a dead node cannot answer"));
    assert!(err.is_retryable(), "[{name}] {err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "[{name}] a request to a dead node fails fast"
    );
}

/// A write the node never answers ends in `Timeout` after about the request timeout, and
/// the same transport keeps serving other requests to that node afterwards.
pub async fn timeouts(f: &dyn Fixture) {
    let name = f.name();
    let node = f.stalled_node().await;
    let timeout = Duration::from_millis(400);
    let t = f.transport(timeout);
    batch(t.as_ref(), node.as_ref(), vec![get(b"k")])
        .await
        .expect("warm-up read");
    let started = Instant::now();
    let result = batch(
        t.as_ref(),
        node.as_ref(),
        vec![put(b"k", Bytes::from_static(b"v"))],
    )
    .await;
    let elapsed = started.elapsed();
    let err = result
        .err()
        .unwrap_or_else(|| panic!("[{name}] a stalled write cannot succeed"));
    assert!(
        matches!(err, TransportError::Timeout(_)),
        "[{name}] expected a timeout, got {err:?}"
    );
    assert!(err.may_have_been_applied());
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(2),
        "[{name}] timed out after {elapsed:?}"
    );
    for _ in 0..3 {
        let results = batch(t.as_ref(), node.as_ref(), vec![get(b"other")])
            .await
            .unwrap_or_else(|e| panic!("[{name}] the connection survives a timeout: {e}"));
        assert!(found(&results[0]).is_none());
    }
}
