//! Why a start, commit or abort was refused, in terms callers can act on.

use std::time::Duration;

pub use shmdb_commit_client::Refusal;

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
