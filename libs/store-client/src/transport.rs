//! The seam between the store client and the wire: one request to one storage node.
//!
//! Everything above this trait (routing, batching, retries, ambiguity rules) is written once
//! against it; gRPC implements it today and an RDMA transport can implement it later
//! without touching any caller. Tests implement it with an in-memory fake cluster.

use async_trait::async_trait;
use shmdb_proto::storage as pb;

/// Why a request to a node produced no answer, classified by what it means for the data.
///
/// The distinction matters because the client must never retry a non-idempotent write that
/// might already have been applied: `Unreachable` proves nothing was sent, while `Lost` and
/// `Timeout` leave the outcome unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Nothing was sent (the connection could not be established): the request was
    /// definitely not applied and may be retried freely.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The request was (or may have been) sent but no answer arrived (connection reset,
    /// stream error): it may have been applied.
    #[error("lost: {0}")]
    Lost(String),
    /// No answer within the request timeout: it may have been applied.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The node refused the request as a whole before serving it (unimplemented, message
    /// too large, malformed): not applied, and sending it again will not help.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl TransportError {
    /// Whether the request may have reached the node and been applied; decides whether a
    /// non-idempotent write may be retried.
    pub fn may_have_been_applied(&self) -> bool {
        matches!(self, TransportError::Lost(_) | TransportError::Timeout(_))
    }

    /// Whether sending the request again (after a map refresh) can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, TransportError::Rejected(_))
    }
}

/// One round trip to one storage node, addressed by the `host:port` the partition map gives.
///
/// Implementations own connection management (pooling, reconnecting after a node restart);
/// they never retry on their own, because only the caller knows whether a retry is safe.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends a batch of independent operations to the node at `addr`.
    async fn batch(
        &self,
        addr: &str,
        req: pb::BatchRequest,
    ) -> Result<pb::BatchResponse, TransportError>;

    /// Scans one range served by the node at `addr`.
    async fn scan(
        &self,
        addr: &str,
        req: pb::ScanRequest,
    ) -> Result<pb::ScanResponse, TransportError>;

    /// Fetches the node's current partition map (version 0 when it has none yet).
    async fn get_map(&self, addr: &str) -> Result<pb::PartitionMap, TransportError>;
}
