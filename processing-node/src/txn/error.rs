//! Why a transaction operation failed, typed so the SQL layer can map each to its SQLSTATE.

use shmdb_store_client::StoreError;

use crate::error::{DecodeError, RecordError};

/// A failed transaction operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TxnError {
    /// A write-write conflict (first committer wins): the transaction was rolled back and may
    /// be retried (SQLSTATE 40001).
    #[error("could not serialize access due to concurrent update")]
    SerializationFailure,
    /// A primary key or unique index value already exists (SQLSTATE 23505).
    #[error("duplicate key value violates unique constraint \"{constraint}\"")]
    UniqueViolation {
        /// The primary key ("pkey") or the index id.
        constraint: String,
    },
    /// The row to update or delete does not exist in the snapshot.
    #[error("row not found")]
    NotFound,
    /// The transaction already ended (or failed and must be rolled back).
    #[error("transaction is {0}")]
    Finished(&'static str),
    /// The storage layer failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The commit managers failed or refused.
    #[error("commit manager: {0}")]
    Commit(String),
    /// The outcome of the commit is unknown (the commit manager stopped answering after the
    /// request may have reached it).
    #[error("the outcome of the commit is unknown: {0}")]
    CommitAmbiguous(String),
    /// The commit manager took this node for dead (its heartbeats stopped for the timeout)
    /// and recovery aborted the transaction while it was committing: nothing of it stays.
    /// Retrying is safe (SQLSTATE 40001).
    #[error("the transaction was aborted by recovery: this node missed its heartbeat timeout")]
    Recovered,
    /// A stored record or log entry could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The caller broke the API contract (wrong column count, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl From<DecodeError> for TxnError {
    fn from(e: DecodeError) -> Self {
        TxnError::Corrupt(e.to_string())
    }
}

impl From<RecordError> for TxnError {
    fn from(e: RecordError) -> Self {
        TxnError::Corrupt(e.to_string())
    }
}

impl TxnError {
    /// Whether retrying the whole transaction may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TxnError::SerializationFailure)
    }
}
