//! Why a start, commit or abort was refused, in terms callers can act on.

use std::time::Duration;

/// Why a commit or abort of one tid was refused. Refusals change no state: a refused
/// request can be inspected and retried (or not) by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The tid was never issued by this manager (another manager issued it, or nobody).
    #[error("tid {0} is not running at this commit manager: it was never issued here")]
    UnknownTid(u64),
    /// The tid was issued here and has finished, but so long ago that whether it committed
    /// is no longer kept (if it committed, its versions are visible through the base).
    #[error("tid {0} finished long ago; its outcome is no longer kept")]
    Finished(u64),
    /// The tid already committed (also the answer to an abort after a commit).
    #[error("tid {0} already committed")]
    AlreadyCommitted(u64),
    /// The tid already aborted, by its node or by recovery after its heartbeats stopped.
    #[error("tid {0} already aborted")]
    AlreadyAborted(u64),
    /// The tid's processing node stopped heartbeating and recovery is reverting its writes;
    /// it ends aborted (or committed, if its log holds a commit flag).
    #[error("tid {0} is being recovered after its processing node stopped heartbeating")]
    Recovering(u64),
    /// The tid appears more than once in one batch.
    #[error("tid {0} appears more than once in the batch")]
    Duplicate(u64),
}

impl Refusal {
    /// The tid the refusal is about.
    pub fn tid(&self) -> u64 {
        match *self {
            Refusal::UnknownTid(t)
            | Refusal::Finished(t)
            | Refusal::AlreadyCommitted(t)
            | Refusal::AlreadyAborted(t)
            | Refusal::Recovering(t)
            | Refusal::Duplicate(t) => t,
        }
    }
}

/// Why a start was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The window of outstanding tids is full: an old transaction keeps the base from
    /// moving, and handing out more tids would grow every snapshot without limit.
    #[error(
        "window of {window} outstanding tids is full (base {base}, next tid {next_tid}): {holder}; \
         finish or abort that transaction, or wait for its node's heartbeat timeout"
    )]
    WindowFull {
        /// The configured window.
        window: u64,
        /// The current base.
        base: u64,
        /// The tid that would have been handed out.
        next_tid: u64,
        /// Who holds the base down, in words (tid, node and age, or the other manager).
        holder: String,
    },
    /// No leased tid block is ready yet (at start-up, or the store is slow to answer the
    /// lease). Transient: the manager waits for one before answering.
    #[error("no tid block leased yet")]
    NoTids,
    /// The request asked for a batch size outside `1 ..= max`.
    #[error("start batch count {count} is outside 1..={max}")]
    BadCount {
        /// The count asked for.
        count: u32,
        /// The largest allowed.
        max: u32,
    },
    /// The manager cannot serve: it lost its store identity to another instance, or the
    /// store did not let it publish for too long.
    #[error("commit manager not serving: {0}")]
    NotServing(String),
    /// No tid block could be leased within the start deadline.
    #[error("no tid block could be leased within {0:?} (is the store reachable?)")]
    LeaseTimeout(Duration),
}

/// Why a commit manager could not be started or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The store did not answer as needed (start-up restore, registration).
    #[error("store: {0}")]
    Store(#[from] shmdb_store_client::StoreError),
    /// The manager's published state in the store cannot be read.
    #[error("published state of manager {manager}: {message}")]
    BadState {
        /// The manager whose record is malformed.
        manager: u64,
        /// What is wrong with it.
        message: String,
    },
    /// Another instance wrote this manager's state: two processes share one manager id.
    #[error("manager {0} is fenced: another instance with the same id wrote its state")]
    Fenced(u64),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Metrics could not be registered or served.
    #[error("telemetry: {0}")]
    Telemetry(String),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
}
