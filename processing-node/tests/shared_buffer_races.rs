//! Races a node-wide record buffer must survive, made deterministic by holding one storage
//! response back (a gate in the store client's transport) while other transactions run:
//!
//! - a commit that overtakes a buffered fetch: the fetched record lacks the commit, so the
//!   entry must not be marked complete for snapshots that include it (else a later
//!   transaction reads a stale row next to a fresh one: read skew);
//! - a try-commit whose applied version is fetched into the buffer and then undone: an
//!   entry revalidated by its cache-unit counter (which an undo does not bump) must not
//!   serve that version once the base passes the aborted tid (else an aborted read, G1a).

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use parking_lot::Mutex;
use shmdb_placement::tables;
use shmdb_processing_node::keys;
use shmdb_processing_node::txn::{
    BufferStrategy, Engine, EngineConfig, TableDef, Transaction, TxnError,
};
use shmdb_store_client::proto as pb;
use shmdb_store_client::{GrpcConfig, GrpcTransport, Transport, TransportError};
use tokio::sync::watch;

type Matcher = Box<dyn Fn(&pb::BatchRequest) -> bool + Send + Sync>;

/// A transport that, when armed, holds back the response to the first batch a matcher
/// accepts — after the node applied it — until released.
struct Gate {
    inner: GrpcTransport,
    armed: Mutex<Option<Matcher>>,
    held: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            inner: GrpcTransport::new(GrpcConfig::default()),
            armed: Mutex::new(None),
            held: watch::channel(false).0,
            released: watch::channel(false).0,
        })
    }

    fn arm(&self, matcher: impl Fn(&pb::BatchRequest) -> bool + Send + Sync + 'static) {
        self.held.send_replace(false);
        self.released.send_replace(false);
        *self.armed.lock() = Some(Box::new(matcher));
    }

    /// Waits until a matching response is being held.
    async fn holding(&self) -> anyhow::Result<()> {
        let mut held = self.held.subscribe();
        tokio::time::timeout(Duration::from_secs(10), held.wait_for(|h| *h)).await??;
        Ok(())
    }

    fn release(&self) {
        self.released.send_replace(true);
    }
}

#[async_trait]
impl Transport for Gate {
    async fn batch(
        &self,
        addr: &str,
        req: pb::BatchRequest,
    ) -> Result<pb::BatchResponse, TransportError> {
        let hold = {
            let mut armed = self.armed.lock();
            let hit = armed.as_ref().is_some_and(|m| m(&req));
            if hit {
                *armed = None;
            }
            hit
        };
        let response = self.inner.batch(addr, req).await;
        if hold {
            let mut released = self.released.subscribe();
            self.held.send_replace(true);
            let _ = released.wait_for(|r| *r).await;
        }
        response
    }

    async fn scan(
        &self,
        addr: &str,
        req: pb::ScanRequest,
    ) -> Result<pb::ScanResponse, TransportError> {
        self.inner.scan(addr, req).await
    }

    async fn get_map(&self, addr: &str) -> Result<pb::PartitionMap, TransportError> {
        self.inner.get_map(addr).await
    }
}

fn table() -> TableDef {
    bank::table()
}

fn row_key(id: i64) -> Bytes {
    Bytes::from(keys::row_key(table().id, &[int(id)]))
}

/// Whether a batch gets the row `id`.
fn gets_row(id: i64) -> impl Fn(&pb::BatchRequest) -> bool {
    let key = row_key(id);
    move |req| {
        req.ops.iter().any(|op| {
            matches!(&op.op, Some(pb::op::Op::Get(g)) if g.table == tables::ROWS && g.key == key)
        })
    }
}

/// Whether a batch conditionally writes the row `id`.
fn writes_row(id: i64) -> impl Fn(&pb::BatchRequest) -> bool {
    let key = row_key(id);
    move |req| {
        req.ops.iter().any(|op| {
            matches!(&op.op, Some(pb::op::Op::PutIf(p)) if p.table == tables::ROWS && p.key == key)
        })
    }
}

/// An engine whose store client goes through `gate`.
async fn gated_engine(
    cluster: &Cluster,
    node: u64,
    buffer: BufferStrategy,
    gate: Arc<Gate>,
) -> anyhow::Result<Arc<Engine>> {
    let mut config = EngineConfig::new(node);
    config.buffer = buffer;
    cluster.engine_through(config, gate).await
}

fn engine_with(
    cluster: &Cluster,
    node: u64,
    buffer: BufferStrategy,
) -> anyhow::Result<Arc<Engine>> {
    let mut config = EngineConfig::new(node);
    config.buffer = buffer;
    cluster.engine_with(config)
}

async fn balance(tx: &mut Transaction, id: i64) -> anyhow::Result<i64> {
    match tx.get(&table(), &[int(id)]).await?.map(|r| r[1].clone()) {
        Some(shmdb_processing_node::Datum::Int(v)) => Ok(v),
        other => anyhow::bail!("row {id}: {other:?}"),
    }
}

async fn set(tx: &mut Transaction, id: i64, v: i64) -> Result<(), TxnError> {
    tx.update(&table(), &[int(id)], vec![int(id), int(v)]).await
}

async fn two_rows(engine: &Arc<Engine>) -> anyhow::Result<()> {
    let mut tx = engine.begin().await?;
    tx.insert(&table(), vec![int(1), int(10)]).await?;
    tx.insert(&table(), vec![int(2), int(20)]).await?;
    tx.commit().await?;
    Ok(())
}

/// The fetch of row 1 by r1 is held while w moves 1 from row 2 to row 1 and commits and r2
/// begins on the same node; then r2 reads both rows and must see w's transfer in both.
async fn commit_overtaking_buffered_fetch(buffer: BufferStrategy) -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let gate = Gate::new();
    let node = gated_engine(&cluster, 1, buffer, gate.clone()).await?;
    let other = engine_with(&cluster, 2, buffer)?;
    two_rows(&other).await?;

    gate.arm(gets_row(1));
    let mut r1 = node.begin().await?;
    let fetch = tokio::spawn(async move {
        let v = balance(&mut r1, 1).await;
        let _ = r1.commit().await;
        v
    });
    gate.holding().await?;
    let mut w = other.begin().await?;
    set(&mut w, 1, 11).await?;
    set(&mut w, 2, 19).await?;
    w.commit().await?;
    let mut r2 = node.begin().await?;
    gate.release();
    assert_eq!(fetch.await??, 10, "r1 reads its snapshot");
    let (a, b) = (balance(&mut r2, 1).await?, balance(&mut r2, 2).await?);
    r2.commit().await?;
    assert_eq!(
        (a, b),
        (11, 19),
        "r2 must see w's transfer in both rows (stale buffered row?)"
    );
    cluster.shutdown().await;
    Ok(())
}

/// t's try-commit applies its version of row 1 and then fails on row 2; while t's response
/// is held, r reads row 1 into the node's buffer (with t's in-flight version in it). After t
/// undid its version and the base passed t, a read of row 1 on that node must not see it.
async fn undone_version_in_buffered_entry(buffer: BufferStrategy) -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let gate = Gate::new();
    let writer = gated_engine(&cluster, 1, buffer, gate.clone()).await?;
    let node = engine_with(&cluster, 2, buffer)?;
    let third = engine_with(&cluster, 3, buffer)?;
    two_rows(&third).await?;

    let mut t = writer.begin().await?;
    let tid = t.tid();
    balance(&mut t, 2).await?;
    set(&mut t, 1, 101).await?;
    set(&mut t, 2, 201).await?;
    let mut x = third.begin().await?;
    set(&mut x, 2, 21).await?;
    x.commit().await?;
    gate.arm(writes_row(1));
    let commit = tokio::spawn(t.commit());
    gate.holding().await?;
    let mut r = node.begin().await?;
    assert_eq!(balance(&mut r, 1).await?, 10);
    r.commit().await?;
    gate.release();
    let outcome = commit.await?;
    assert!(
        matches!(outcome, Err(TxnError::SerializationFailure)),
        "{outcome:?}"
    );

    let mut later = wait_for(
        "a snapshot whose base passed the aborted tid",
        Duration::from_secs(10),
        || {
            let node = node.clone();
            async move {
                let tx = node.begin().await.ok()?;
                (tx.snapshot().base() >= tid).then_some(tx)
            }
        },
    )
    .await?;
    assert_eq!(
        balance(&mut later, 1).await?,
        10,
        "read the version of aborted tid {tid}"
    );
    later.commit().await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_overtaking_fetch_shared_record_buffer() -> anyhow::Result<()> {
    commit_overtaking_buffered_fetch(BufferStrategy::SharedRecordBuffer { capacity: 64 }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_overtaking_fetch_version_set_sync() -> anyhow::Result<()> {
    commit_overtaking_buffered_fetch(BufferStrategy::VersionSetSync {
        capacity: 64,
        unit_shift: 0,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undone_version_shared_record_buffer() -> anyhow::Result<()> {
    undone_version_in_buffered_entry(BufferStrategy::SharedRecordBuffer { capacity: 64 }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undone_version_version_set_sync() -> anyhow::Result<()> {
    undone_version_in_buffered_entry(BufferStrategy::VersionSetSync {
        capacity: 64,
        unit_shift: 0,
    })
    .await
}
