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

/// Which transport a component uses for the storage data path, as chosen by
/// `--transport auto|tcp|grpc|rdma`.
///
/// Lives here, next to [`Transport`], so every binary parses the flag the same way; the
/// RDMA implementation and the device discovery that resolves `Auto` live in the
/// `shmdb-rdma-transport` crate, which depends on this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportKind {
    /// RDMA when the machine has an RDMA device (and the binary was built with RDMA
    /// support), `Tcp` otherwise; the choice is logged.
    #[default]
    Auto,
    /// Framed TCP ([`FramedTransport`](crate::FramedTransport)): length-prefixed protobuf
    /// frames on plain TCP connections, gRPC streams to nodes that offer no framed endpoint.
    /// (`SHMDB_STORAGE_DATA_PATH=stream|unary` makes it gRPC, for comparisons.)
    Tcp,
    /// gRPC over TCP only (streams, or unary calls with `SHMDB_STORAGE_DATA_PATH=unary`); a
    /// storage node run with it serves no framed endpoint.
    Grpc,
    /// RDMA only: starting without a usable RDMA device is an error, not a silent fallback.
    Rdma,
}

impl TransportKind {
    /// The flag spelling (`auto`, `tcp`, `grpc`, `rdma`).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Auto => "auto",
            TransportKind::Tcp => "tcp",
            TransportKind::Grpc => "grpc",
            TransportKind::Rdma => "rdma",
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--transport` value that is none of `auto`, `tcp`, `grpc`, `rdma`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?}: expected auto, tcp, grpc or rdma")]
pub struct UnknownTransport(pub String);

impl std::str::FromStr for TransportKind {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(TransportKind::Auto),
            "tcp" | "framed" => Ok(TransportKind::Tcp),
            "grpc" => Ok(TransportKind::Grpc),
            "rdma" => Ok(TransportKind::Rdma),
            _ => Err(UnknownTransport(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    #[test]
    fn transport_kinds_parse_from_their_flag_spelling_and_reject_others() {
        for kind in [
            TransportKind::Auto,
            TransportKind::Tcp,
            TransportKind::Grpc,
            TransportKind::Rdma,
        ] {
            assert_eq!(kind.as_str().parse::<TransportKind>(), Ok(kind));
            assert_eq!(kind.to_string().parse::<TransportKind>(), Ok(kind));
        }
        assert_eq!(" RDMA ".parse::<TransportKind>(), Ok(TransportKind::Rdma));
        assert_eq!("framed".parse::<TransportKind>(), Ok(TransportKind::Tcp));
        let err = "infiniband".parse::<TransportKind>().err();
        assert_eq!(err, Some(UnknownTransport("infiniband".into())));
        assert!(
            err.map(|e| e.to_string())
                .is_some_and(|t| t.contains("auto, tcp, grpc or rdma"))
        );
    }
}
