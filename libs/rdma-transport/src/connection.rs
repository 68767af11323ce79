//! One queue pair at work: registered slots reused for every request, outgoing messages
//! batched under one doorbell, completions handled on a dedicated thread, and a single
//! place where the connection dies.
//!
//! Flow control relies on the reliable-connected transport's receiver-not-ready retry
//! (set to "infinite" on real queue pairs): a sender whose peer has no receive posted is
//! held back by the NIC, not failed, and both ends repost a receive as soon as they have
//! copied a fragment out of it, so the window is the peer's `recv_slots`. Send slots are
//! the only other bound: a slot is busy from `post_send` until its completion, and the
//! sender waits for a free one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::frame::{self, Kind, Message, Reassembler};
use crate::metrics::TransportMetrics;
use crate::verbs::{Completion, QueuePair, SendWr, VerbsError};

/// Most messages taken from the queue for one doorbell.
const DOORBELL_BATCH: usize = 64;
/// Most completions taken per poll.
const POLL_BATCH: usize = 64;
/// How long the completion thread sleeps in `wait` before it looks at its flags again.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Called with every complete incoming message (never a ping), on the completion thread:
/// it must not block.
pub type OnMessage = Box<dyn Fn(Message, &ConnSender) + Send + Sync>;
/// Called once, with the reason, when the connection dies.
pub type OnDead = Box<dyn Fn(&str) + Send + Sync>;

struct Outgoing {
    kind: Kind,
    request_id: u64,
    payload: Vec<u8>,
}

struct Shared {
    qp: Arc<dyn QueuePair>,
    /// Payload bytes per fragment: what both our send slots and the peer's receive slots
    /// hold.
    slot_bytes: usize,
    max_message: usize,
    dead: Mutex<Option<String>>,
    closed: AtomicBool,
    free_send: Mutex<Vec<u32>>,
    slot_freed: Notify,
    last_received: Mutex<Instant>,
    on_dead: Mutex<Option<OnDead>>,
    metrics: TransportMetrics,
}

impl Shared {
    fn is_dead(&self) -> bool {
        self.dead.lock().is_some()
    }

    /// Marks the connection dead by a failure (first reason wins) and tells the owner.
    fn die(&self, reason: String) {
        self.end(reason, true);
    }

    /// Marks the connection dead (first reason wins), counting it as a queue-pair error
    /// unless it was closed on purpose, and tells the owner.
    fn end(&self, reason: String, failed: bool) {
        {
            let mut dead = self.dead.lock();
            if dead.is_some() {
                return;
            }
            *dead = Some(reason.clone());
        }
        if failed {
            tracing::warn!(reason, "rdma connection failed");
            self.metrics.qp_errors.inc();
        }
        self.slot_freed.notify_one();
        self.qp.wake();
        if let Some(on_dead) = self.on_dead.lock().take() {
            on_dead(&reason);
        }
    }
}

/// A handle that queues messages on a connection; cheap to clone.
#[derive(Clone)]
pub struct ConnSender {
    out: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
}

impl ConnSender {
    /// Queues a message; fails at once (nothing sent) when the connection is already dead
    /// or the message exceeds the size limit.
    pub fn send(&self, kind: Kind, request_id: u64, payload: Vec<u8>) -> Result<(), SendError> {
        if payload.len() > self.shared.max_message {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: self.shared.max_message,
            });
        }
        if let Some(reason) = self.shared.dead.lock().clone() {
            return Err(SendError::Dead(reason));
        }
        self.out
            .send(Outgoing {
                kind,
                request_id,
                payload,
            })
            .map_err(|_| SendError::Dead("connection closed".into()))
    }
}

/// Why a message could not be queued; in both cases nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is dead or closed.
    #[error("rdma connection is down: {0}")]
    Dead(String),
    /// The message exceeds the connection's limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A running connection over one connected queue pair.
pub struct Connection {
    sender: ConnSender,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("dead", &*self.sender.shared.dead.lock())
            .finish()
    }
}

/// Creates a queue pair and posts every receive slot, so the peer may send as soon as the
/// two ends are connected.
pub fn prepare_qp(
    device: &dyn crate::verbs::RdmaDevice,
    config: crate::verbs::QpConfig,
) -> Result<Arc<dyn QueuePair>, VerbsError> {
    let qp: Arc<dyn QueuePair> = Arc::from(device.create_qp(config)?);
    let slots: Vec<u32> = (0..config.recv_slots).collect();
    qp.post_recv(&slots)?;
    Ok(qp)
}

impl Connection {
    /// Starts the sender task (on `runtime`) and the completion thread for a queue pair
    /// already connected to a peer whose receive slots hold `peer_slot_bytes`.
    pub fn start(
        qp: Arc<dyn QueuePair>,
        peer_slot_bytes: u32,
        max_message: usize,
        on_message: OnMessage,
        on_dead: OnDead,
        metrics: TransportMetrics,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Arc<Connection>, VerbsError> {
        let config = qp.config();
        let slot_bytes = config.slot_bytes.min(peer_slot_bytes) as usize;
        if slot_bytes <= frame::HEADER_BYTES {
            return Err(VerbsError::Setup(format!(
                "slots of {slot_bytes} bytes cannot carry a fragment"
            )));
        }
        let shared = Arc::new(Shared {
            qp,
            slot_bytes,
            max_message,
            dead: Mutex::new(None),
            closed: AtomicBool::new(false),
            free_send: Mutex::new((0..config.send_slots).rev().collect()),
            slot_freed: Notify::new(),
            last_received: Mutex::new(Instant::now()),
            on_dead: Mutex::new(Some(on_dead)),
            metrics: metrics.clone(),
        });
        let (out, rx) = mpsc::unbounded_channel();
        let sender = ConnSender {
            out,
            shared: shared.clone(),
        };
        runtime.spawn(send_loop(shared.clone(), rx));
        let thread_sender = sender.clone();
        std::thread::Builder::new()
            .name("rdma-cq".into())
            .spawn(move || completion_loop(thread_sender, on_message))
            .map_err(|e| VerbsError::Device(format!("completion thread: {e}")))?;
        metrics.connections.inc();
        Ok(Arc::new(Connection { sender }))
    }

    /// A handle to queue messages.
    pub fn sender(&self) -> &ConnSender {
        &self.sender
    }

    /// Why the connection died, if it did.
    pub fn dead_reason(&self) -> Option<String> {
        self.sender.shared.dead.lock().clone()
    }

    /// How long ago the last fragment arrived.
    pub fn since_last_received(&self) -> Duration {
        self.sender.shared.last_received.lock().elapsed()
    }

    /// Stops the connection: the completion thread exits and the queue pair is released
    /// once the last handle is gone. In-flight requests fail as if the peer died.
    pub fn close(&self) {
        self.sender.shared.closed.store(true, Ordering::Release);
        self.sender.shared.end("connection closed".into(), false);
    }

    /// Destroys the queue pair at once, as a crashing process would.
    pub fn crash(&self) {
        self.sender.shared.qp.destroy();
        self.close();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

async fn send_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    let mut batch = Vec::with_capacity(DOORBELL_BATCH);
    while let Some(first) = rx.recv().await {
        if shared.is_dead() {
            break;
        }
        batch.clear();
        batch.push(first);
        while batch.len() < DOORBELL_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if let Err(reason) = send_batch(&shared, &batch).await {
            shared.die(reason);
            break;
        }
    }
}

/// Fragments every message of the batch into free send slots and posts them with as few
/// doorbells as the free slots allow (one, unless the batch needs more slots than are free).
///
/// Out of slots, it rings for what is ready and then waits until a quarter of the slots
/// (or as many as the rest of the batch needs) are free again, not just one: completions
/// come back one by one, and taking each freed slot as it comes would ring once per
/// fragment for as long as the queue stays full.
async fn send_batch(shared: &Shared, batch: &[Outgoing]) -> Result<(), String> {
    let mut fragments = Vec::new();
    for message in batch {
        fragments.extend(
            frame::fragments(
                message.kind,
                message.request_id,
                &message.payload,
                shared.slot_bytes,
            )
            .map_err(|e| e.to_string())?,
        );
    }
    let low_watermark = (shared.qp.config().send_slots as usize / 4).max(1);
    let mut wrs: Vec<SendWr> = Vec::new();
    for (i, (header, chunk)) in fragments.iter().enumerate() {
        let free = shared.free_send.lock().pop();
        let slot = match free {
            Some(slot) => slot,
            None => {
                post(shared, &mut wrs)?;
                let wanted = low_watermark.min(fragments.len() - i);
                wait_for_free_slots(shared, wanted).await?
            }
        };
        let len = shared
            .qp
            .write_send_slot(slot, &[&header.encode(), chunk])
            .map_err(|e| e.to_string())?;
        shared
            .metrics
            .bytes
            .with_label_values(&["sent"])
            .inc_by(chunk.len() as u64);
        wrs.push(SendWr { slot, len });
    }
    post(shared, &mut wrs)
}

/// Waits until `wanted` send slots are free (or the connection dies), then takes one.
async fn wait_for_free_slots(shared: &Shared, wanted: usize) -> Result<u32, String> {
    loop {
        if let Some(reason) = shared.dead.lock().clone() {
            return Err(reason);
        }
        let freed = shared.slot_freed.notified();
        {
            let mut free = shared.free_send.lock();
            if free.len() >= wanted
                && let Some(slot) = free.pop()
            {
                return Ok(slot);
            }
        }
        freed.await;
    }
}

fn post(shared: &Shared, wrs: &mut Vec<SendWr>) -> Result<(), String> {
    if wrs.is_empty() {
        return Ok(());
    }
    // Counted before ringing: the answer may be back before `post_send` returns.
    shared.metrics.doorbells.inc();
    shared.qp.post_send(wrs).map_err(|e| e.to_string())?;
    wrs.clear();
    Ok(())
}

fn completion_loop(sender: ConnSender, on_message: OnMessage) {
    let shared = sender.shared.clone();
    let mut reassembler = Reassembler::new(shared.max_message);
    let mut completions = Vec::with_capacity(POLL_BATCH);
    let mut fragment = Vec::with_capacity(shared.slot_bytes);
    let mut repost = Vec::with_capacity(POLL_BATCH);
    let completed = |kind: &str| shared.metrics.completions.with_label_values(&[kind]).inc();
    loop {
        if shared.closed.load(Ordering::Acquire) || shared.is_dead() {
            break;
        }
        completions.clear();
        if let Err(e) = shared.qp.poll(&mut completions, POLL_BATCH) {
            shared.die(e.to_string());
            break;
        }
        if completions.is_empty() {
            if let Err(e) = shared.qp.wait(WAIT_SLICE) {
                shared.die(e.to_string());
                break;
            }
            continue;
        }
        for completion in completions.drain(..) {
            match completion {
                Completion::Sent { slot } => {
                    completed("send");
                    shared.free_send.lock().push(slot);
                    shared.slot_freed.notify_one();
                }
                Completion::Received { slot, len } => {
                    completed("recv");
                    fragment.clear();
                    if let Err(e) = shared.qp.read_recv_slot(slot, len, &mut fragment) {
                        shared.die(e.to_string());
                        break;
                    }
                    repost.push(slot);
                    *shared.last_received.lock() = Instant::now();
                    shared
                        .metrics
                        .bytes
                        .with_label_values(&["received"])
                        .inc_by(fragment.len().saturating_sub(frame::HEADER_BYTES) as u64);
                    match reassembler.push(&fragment) {
                        Ok(Some(message)) if message.kind != Kind::Ping => {
                            on_message(message, &sender)
                        }
                        Ok(_) => {}
                        Err(e) => {
                            shared.die(format!("protocol violation: {e}"));
                            break;
                        }
                    }
                }
                Completion::Failed { send, slot, status } => {
                    completed("error");
                    let what = if send { "send" } else { "receive" };
                    shared.die(format!("{what} from slot {slot} failed: {status}"));
                    break;
                }
            }
        }
        if !repost.is_empty() {
            if let Err(e) = shared.qp.post_recv(&repost) {
                shared.die(e.to_string());
                break;
            }
            repost.clear();
        }
    }
    shared.metrics.connections.dec();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeFabric;
    use crate::verbs::QpConfig;

    struct Pair {
        a: Arc<Connection>,
        b: Arc<Connection>,
        a_rx: std::sync::mpsc::Receiver<Message>,
        b_rx: std::sync::mpsc::Receiver<Message>,
        a_dead: std::sync::mpsc::Receiver<String>,
    }

    fn pair(fabric: &FakeFabric, config: QpConfig, max_message: usize) -> Pair {
        let qa = prepare_qp(fabric, config).expect("qa");
        let qb = prepare_qp(fabric, config).expect("qb");
        qa.connect(&qb.endpoint()).expect("ca");
        qb.connect(&qa.endpoint()).expect("cb");
        let metrics = TransportMetrics::new().expect("metrics");
        let rt = tokio::runtime::Handle::current();
        let (a_tx, a_rx) = std::sync::mpsc::channel();
        let (b_tx, b_rx) = std::sync::mpsc::channel();
        let (dead_tx, a_dead) = std::sync::mpsc::channel();
        let a_tx = Mutex::new(a_tx);
        let b_tx = Mutex::new(b_tx);
        let dead_tx = Mutex::new(dead_tx);
        let a = Connection::start(
            qa,
            config.slot_bytes,
            max_message,
            Box::new(move |m, _| {
                let _ = a_tx.lock().send(m);
            }),
            Box::new(move |r| {
                let _ = dead_tx.lock().send(r.to_owned());
            }),
            metrics.clone(),
            &rt,
        )
        .expect("a");
        let b = Connection::start(
            qb,
            config.slot_bytes,
            max_message,
            Box::new(move |m, _| {
                let _ = b_tx.lock().send(m);
            }),
            Box::new(|_| {}),
            metrics,
            &rt,
        )
        .expect("b");
        Pair {
            a,
            b,
            a_rx,
            b_rx,
            a_dead,
        }
    }

    fn recv(rx: &std::sync::mpsc::Receiver<Message>) -> Message {
        rx.recv_timeout(Duration::from_secs(5))
            .expect("a message in time")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_larger_than_every_slot_together_arrive_whole_and_in_order() {
        let fabric = FakeFabric::new("fake0");
        // 4 slots of 256 bytes: a 10 KB message needs ~44 fragments, so the sender must
        // reuse each slot many times, waiting for completions.
        let config = QpConfig {
            slot_bytes: 256,
            send_slots: 4,
            recv_slots: 4,
        };
        let p = pair(&fabric, config, 1 << 20);
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        for id in 1..=5u64 {
            let mut payload = big.clone();
            payload[0] = id as u8;
            p.a.sender()
                .send(Kind::BatchRequest, id, payload)
                .expect("send");
        }
        for id in 1..=5u64 {
            let m = recv(&p.b_rx);
            assert_eq!(m.request_id, id, "messages keep their order");
            assert_eq!(m.payload.len(), big.len());
            assert_eq!(m.payload[0], id as u8);
            assert_eq!(&m.payload[1..], &big[1..]);
        }
        // And the other way round.
        p.b.sender()
            .send(Kind::BatchResponse, 7, vec![9; 3000])
            .expect("send");
        assert_eq!(recv(&p.a_rx).payload, vec![9; 3000]);
    }

    // One runtime thread: the sender task cannot run until the test yields, so all 200
    // messages are queued before it drains them (on a second worker it could post each as
    // it came, and whether batching happened would depend on scheduling).
    #[tokio::test(flavor = "current_thread")]
    async fn queued_messages_share_doorbells() {
        let fabric = FakeFabric::new("fake0");
        let p = pair(&fabric, QpConfig::default(), 1 << 20);
        let before = fabric.stats();
        for id in 0..200u64 {
            p.a.sender()
                .send(Kind::BatchRequest, id, vec![1; 16])
                .expect("send");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut received = 0;
        while received < 200 {
            assert!(
                Instant::now() < deadline,
                "{received} of 200 messages arrived"
            );
            match p.b_rx.try_recv() {
                Ok(_) => received += 1,
                // Lets the sender task run; the completion thread delivers meanwhile.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        let after = fabric.stats();
        let wrs = after.send_wrs - before.send_wrs;
        let doorbells = after.doorbells - before.doorbells;
        assert_eq!(wrs, 200);
        assert!(
            doorbells < wrs / 4,
            "{doorbells} doorbells for {wrs} sends: batching did not happen"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_peer_is_noticed_at_the_next_send_and_reported_once() {
        let fabric = FakeFabric::new("fake0");
        let p = pair(&fabric, QpConfig::default(), 1 << 20);
        p.b.crash();
        p.a.sender()
            .send(Kind::Ping, 0, Vec::new())
            .expect("queued");
        let reason = p
            .a_dead
            .recv_timeout(Duration::from_secs(5))
            .expect("death reported");
        assert!(reason.contains("retry"), "{reason}");
        assert!(p.a.dead_reason().is_some());
        assert!(matches!(
            p.a.sender().send(Kind::BatchRequest, 1, vec![1]),
            Err(SendError::Dead(_))
        ));
        assert!(p.a_dead.recv_timeout(Duration::from_millis(200)).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_message_is_refused_before_anything_is_sent() {
        let fabric = FakeFabric::new("fake0");
        let p = pair(&fabric, QpConfig::default(), 1000);
        let before = fabric.stats();
        assert_eq!(
            p.a.sender().send(Kind::BatchRequest, 1, vec![0; 1001]),
            Err(SendError::TooLarge {
                len: 1001,
                max: 1000
            })
        );
        assert_eq!(fabric.stats(), before);
        // The connection is still usable.
        p.a.sender()
            .send(Kind::BatchRequest, 2, vec![0; 1000])
            .expect("fits");
        assert_eq!(recv(&p.b_rx).request_id, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_garbled_fragment_kills_the_connection_instead_of_being_guessed_at() {
        let fabric = FakeFabric::new("fake0");
        let config = QpConfig::default();
        let p = pair(&fabric, config, 1 << 20);
        // A fragment claiming a message far above the limit, posted below the sender.
        let big = frame::Header {
            kind: Kind::BatchRequest,
            request_id: 1,
            total_len: u32::MAX,
            offset: 0,
            len: 0,
            last: false,
        };
        // Route it through a's queue pair directly.
        let qp = p.a.sender.shared.qp.clone();
        let slot = p.a.sender.shared.free_send.lock().pop().expect("slot");
        let len = qp.write_send_slot(slot, &[&big.encode()]).expect("write");
        qp.post_send(&[SendWr { slot, len }]).expect("post");
        tokio::time::timeout(Duration::from_secs(5), async {
            while p.b.dead_reason().is_none() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("b dies");
        assert!(p.b.dead_reason().is_some_and(|r| r.contains("protocol")));
        assert!(p.b_rx.try_recv().is_err(), "nothing was delivered");
    }
}
