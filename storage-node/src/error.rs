//! Errors of storage-node operations, each with the wire code a client acts on.

use shmdb_proto::storage::{ErrorCode, OpError};

/// Why one operation was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpFailure {
    /// This node is not the serving primary of the key's range: nothing was applied.
    #[error("not the primary of this key's range (map version {map_version})")]
    WrongOwner {
        /// This node's map version, so the client knows whether its map is older.
        map_version: u64,
    },
    /// Replication failed or the range was fenced: the write may or may not survive.
    #[error("range unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
        /// This node's map version.
        map_version: u64,
    },
    /// The table is not in this node's partition map.
    #[error("unknown table {0}")]
    UnknownTable(u64),
    /// Malformed input (oversized key or value, inverted scan, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The write would exceed the node's memory limit.
    #[error("memory limit reached: {0}")]
    ResourceExhausted(String),
    /// An increment found a value that is not an 8-byte counter.
    #[error("value at key is not an 8-byte counter")]
    NotACounter,
}

impl OpFailure {
    /// The wire form of this failure.
    pub fn to_proto(&self) -> OpError {
        let (code, map_version) = match self {
            OpFailure::WrongOwner { map_version } => (ErrorCode::WrongOwner, *map_version),
            OpFailure::Unavailable { map_version, .. } => (ErrorCode::Unavailable, *map_version),
            OpFailure::UnknownTable(_) => (ErrorCode::UnknownTable, 0),
            OpFailure::InvalidArgument(_) => (ErrorCode::InvalidArgument, 0),
            OpFailure::ResourceExhausted(_) => (ErrorCode::ResourceExhausted, 0),
            OpFailure::NotACounter => (ErrorCode::NotACounter, 0),
        };
        OpError {
            code: code as i32,
            message: self.to_string(),
            map_version,
        }
    }

    /// The gRPC status for request-level failures (admin and replication RPCs).
    pub fn to_status(&self) -> tonic::Status {
        match self {
            OpFailure::WrongOwner { .. } => tonic::Status::failed_precondition(self.to_string()),
            OpFailure::Unavailable { .. } => tonic::Status::unavailable(self.to_string()),
            OpFailure::UnknownTable(_) => tonic::Status::not_found(self.to_string()),
            OpFailure::InvalidArgument(_) | OpFailure::NotACounter => {
                tonic::Status::invalid_argument(self.to_string())
            }
            OpFailure::ResourceExhausted(_) => tonic::Status::resource_exhausted(self.to_string()),
        }
    }
}
