//! The errors a store-client call can end with, and what each one promises about the data.

use crate::transport::TransportError;

/// Why an operation failed after the client gave up or the node refused it for good.
///
/// The contract every caller relies on: for a write, any error other than
/// [`StoreError::Ambiguous`] means the write was **not** applied; `Ambiguous` means it may or
/// may not have been, and the caller must re-read before deciding. Transient node answers
/// (wrong owner, unavailable, transport failures) never surface directly: the client retries
/// them until the call's deadline. A failed conditional write is not an error at all but a
/// [`CondOutcome::Conflict`](crate::CondOutcome::Conflict).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A write may or may not have been applied (an attempt was lost, timed out or hit an
    /// unavailable range, and what followed cannot tell whether it took effect).
    #[error("outcome unknown, the write may have been applied: {reason}")]
    Ambiguous {
        /// What happened, attempt by attempt as far as known.
        reason: String,
    },
    /// The table does not exist (final: the node's map is at least as new as ours).
    #[error("unknown table {0}")]
    UnknownTable(u64),
    /// The request can never succeed as given (key too long, value too large, inverted range).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The storage node is at its memory limit.
    #[error("storage memory exhausted: {0}")]
    ResourceExhausted(String),
    /// `increment` on a value that is not an 8-byte counter.
    #[error("value is not an 8-byte counter")]
    NotACounter,
    /// The call's deadline passed while the operation kept failing transiently; for a write,
    /// no attempt may have been applied (otherwise the error is `Ambiguous`).
    #[error("deadline exceeded; last error: {last_error}")]
    DeadlineExceeded {
        /// The last transient failure seen, to tell a dead node from a moving range.
        last_error: String,
    },
    /// No usable partition map could be obtained from any seed or known node.
    #[error("no partition map available from any storage node")]
    NoMap,
    /// A node refused the whole request at the transport level (never applied).
    #[error("transport: {0}")]
    Transport(TransportError),
    /// A node answered something the contract does not allow (a bug on one side); reads
    /// only: for a write this is reported as `Ambiguous`.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl StoreError {
    /// Whether the same call may succeed if issued again later: true for deadline, missing
    /// map and retryable transport failures. `Ambiguous` is not retryable as such: the caller
    /// must first re-read to learn whether its write took effect.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::DeadlineExceeded { .. } | StoreError::NoMap => true,
            StoreError::Transport(e) => e.is_retryable(),
            StoreError::Ambiguous { .. }
            | StoreError::UnknownTable(_)
            | StoreError::InvalidArgument(_)
            | StoreError::ResourceExhausted(_)
            | StoreError::NotACounter
            | StoreError::Protocol(_) => false,
        }
    }

    /// Whether a write that ended with this error may have been applied.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, StoreError::Ambiguous { .. })
    }
}
