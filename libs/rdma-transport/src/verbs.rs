//! The verbs seam: the few ibverbs operations the transport uses, as an object-safe trait.
//!
//! Keeping the NIC behind this trait lets the queue-pair protocol (buffer reuse, doorbell
//! batching, completion handling, failure detection) be tested against an in-memory fake on
//! machines without RDMA hardware, while the rdma-sys implementation stays a thin mapping
//! of each method onto one verb.

use std::fmt::Debug;
use std::time::Duration;

/// A verbs operation that failed; every variant is fatal for the queue pair it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerbsError {
    /// The device could not be opened or a resource could not be created.
    #[error("rdma device: {0}")]
    Device(String),
    /// A queue-pair state transition (INIT, RTR, RTS) failed, e.g. the peer's address is
    /// unusable.
    #[error("queue pair setup: {0}")]
    Setup(String),
    /// Posting work requests failed (queue full, queue pair in the error state).
    #[error("post: {0}")]
    Post(String),
    /// Polling or waiting on the completion queue failed.
    #[error("completion queue: {0}")]
    Completion(String),
    /// A buffer slot index or length outside the registered memory.
    #[error("buffer: {0}")]
    Buffer(String),
}

/// What the other end needs to know to connect to a queue pair; exchanged over gRPC
/// (`shmdb.rdma.v1.QueuePairInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QpEndpoint {
    /// Queue-pair number.
    pub qp_num: u32,
    /// Port LID (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Port GID (RoCE addresses ports by GID).
    pub gid: [u8; 16],
    /// First packet sequence number this end sends with.
    pub psn: u32,
    /// Size of each registered receive buffer: the largest fragment the peer may send.
    pub slot_bytes: u32,
    /// Receive buffers this end keeps posted.
    pub recv_slots: u32,
    /// Device name, for logs.
    pub device: String,
}

/// Buffer geometry of a queue pair: registered memory is carved into fixed-size slots that
/// are reused for every request, so nothing is registered on the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpConfig {
    /// Bytes per slot (send and receive).
    pub slot_bytes: u32,
    /// Send slots; also the send-queue depth (a slot stays busy until its send completes).
    pub send_slots: u32,
    /// Receive slots kept posted.
    pub recv_slots: u32,
}

impl Default for QpConfig {
    fn default() -> Self {
        QpConfig {
            slot_bytes: 64 << 10,
            send_slots: 64,
            recv_slots: 64,
        }
    }
}

/// One send work request: transmit the first `len` bytes of send slot `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWr {
    /// Send slot holding the bytes.
    pub slot: u32,
    /// Bytes to send from the start of the slot.
    pub len: u32,
}

/// A completion-queue entry, reduced to what the protocol acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// A send from `slot` finished: the slot may be reused.
    Sent {
        /// The send slot.
        slot: u32,
    },
    /// A message of `len` bytes arrived in receive slot `slot`.
    Received {
        /// The receive slot.
        slot: u32,
        /// Bytes received.
        len: u32,
    },
    /// A work request failed (peer gone: retry exceeded; flushed after an earlier error;
    /// local protection error...). The queue pair is in the error state from here on.
    Failed {
        /// Whether the failed request was a send (else a receive).
        send: bool,
        /// The slot of the failed request.
        slot: u32,
        /// The device's status text.
        status: String,
    },
}

/// An RDMA device able to create reliable-connected queue pairs.
pub trait RdmaDevice: Send + Sync + Debug + 'static {
    /// Device name (`mlx5_0`, `rxe0`, `fake0`).
    fn name(&self) -> &str;

    /// Creates a queue pair with its own completion queue and registered slots, in the
    /// INIT state: receives may be posted before it is connected.
    fn create_qp(&self, config: QpConfig) -> Result<Box<dyn QueuePair>, VerbsError>;
}

/// A reliable-connected queue pair with its completion queue and registered buffer slots.
///
/// Methods take `&self`: the completion thread and the sender use the queue pair at once,
/// as they may with ibverbs (posting and polling are thread-safe per the verbs spec). The
/// protocol above guarantees that a slot is never written while a send from it is posted
/// and never read while a receive into it is posted.
pub trait QueuePair: Send + Sync {
    /// What the peer needs to connect to this queue pair.
    fn endpoint(&self) -> QpEndpoint;

    /// Connects to the peer (INIT → RTR → RTS): sends and receives may flow afterwards.
    fn connect(&self, remote: &QpEndpoint) -> Result<(), VerbsError>;

    /// The geometry this queue pair was created with.
    fn config(&self) -> QpConfig;

    /// Copies `parts`, one after the other, into send slot `slot` (a fragment header and its
    /// payload, without first joining them); returns the bytes written.
    fn write_send_slot(&self, slot: u32, parts: &[&[u8]]) -> Result<u32, VerbsError>;

    /// Appends the first `len` bytes of receive slot `slot` to `out`.
    fn read_recv_slot(&self, slot: u32, len: u32, out: &mut Vec<u8>) -> Result<(), VerbsError>;

    /// Posts receives into these slots (one call, one doorbell).
    fn post_recv(&self, slots: &[u32]) -> Result<(), VerbsError>;

    /// Posts these sends as one chain: one doorbell for all of them.
    fn post_send(&self, wrs: &[SendWr]) -> Result<(), VerbsError>;

    /// Moves up to `max` completions into `out` without blocking.
    fn poll(&self, out: &mut Vec<Completion>, max: usize) -> Result<(), VerbsError>;

    /// Blocks until a completion may be available, `timeout` passes, or [`QueuePair::wake`]
    /// is called; callers poll afterwards either way.
    fn wait(&self, timeout: Duration) -> Result<(), VerbsError>;

    /// Interrupts a [`QueuePair::wait`] (used when closing the connection).
    fn wake(&self);

    /// Tears the queue pair down now, as a crash would: the peer learns of it only when its
    /// next send to us fails.
    fn destroy(&self);
}
