//! Storage-node settings, from flags or environment variables.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shmdb_rdma_transport::{RdmaDevice, TransportKind};

/// How a storage node is run. Every field is a flag and an environment variable, so the same
/// binary is configured the same way by `shmdb up`, a StatefulSet or a test.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeConfig {
    /// This node's id in the partition map.
    #[arg(long, env = "SHMDB_NODE_ID")]
    pub node_id: u64,
    /// gRPC listen address (data path, replication, admin).
    #[arg(long, env = "SHMDB_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach this node (defaults to `listen`).
    #[arg(long, env = "SHMDB_ADVERTISE")]
    pub advertise: Option<String>,
    /// HTTP listen address for /metrics, /healthz and /readyz.
    #[arg(long, env = "SHMDB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bytes of record data the node may hold; writes beyond fail with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SHMDB_MEMORY_LIMIT", default_value_t = 1 << 30)]
    pub memory_limit: u64,
    /// Largest value accepted, in bytes.
    #[arg(long, env = "SHMDB_MAX_VALUE_BYTES", default_value_t = 1 << 20)]
    pub max_value_bytes: usize,
    /// How long a write waits for its replicas before it is reported unavailable.
    #[arg(long, env = "SHMDB_REPLICATION_TIMEOUT", value_parser = humantime_ms, default_value = "5000")]
    pub replication_timeout: Duration,
    /// Most log entries sent to a follower in one replication request.
    #[arg(long, env = "SHMDB_REPLICATION_BATCH", default_value_t = 1024)]
    pub replication_batch: usize,
    /// Data-path transport offered to clients: `auto` serves RDMA when the machine has an
    /// RDMA device and framed TCP always, `tcp` framed TCP, `grpc` only gRPC, `rdma` refuses
    /// to start without a device. gRPC is always served (replication, admin, discovery of
    /// the framed port, and clients of either kind).
    #[arg(long, env = "SHMDB_TRANSPORT", default_value_t = TransportKind::Auto)]
    pub transport: TransportKind,
    /// Listen address of the framed TCP data path (every transport but `grpc`); by default
    /// the gRPC listen IP with a port the system picks. Clients learn the port over gRPC
    /// (`FramedEndpoint`) and connect to it on the host they reach the node by.
    #[arg(long, env = "SHMDB_FRAMED_LISTEN")]
    pub framed_listen: Option<SocketAddr>,
    /// An RDMA device to serve on instead of discovering one (tests pass an in-memory
    /// fabric); not a flag.
    #[arg(skip)]
    pub rdma_device: Option<Arc<dyn RdmaDevice>>,
}

/// Parses a duration given in milliseconds.
fn humantime_ms(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("expected milliseconds: {e}"))
}

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// Most items one scan returns when the request sets no limit.
pub const MAX_SCAN_LIMIT: usize = 10_000;

/// Most records one filtered scan request examines before it answers with a continuation:
/// a filter that admits nothing must not hold a range's lock over all of its keys.
pub const MAX_SCAN_EXAMINED: usize = 16_384;

/// Most conditions in one scan filter, and the longest value one may compare.
pub const MAX_FILTER_CONDITIONS: usize = 32;
/// See [`MAX_FILTER_CONDITIONS`].
pub const MAX_FILTER_VALUE_BYTES: usize = 64 * 1024;

impl NodeConfig {
    /// A configuration for tests and the embedded cluster: listen on `listen`, defaults
    /// elsewhere.
    pub fn local(node_id: u64, listen: SocketAddr) -> Self {
        NodeConfig {
            node_id,
            listen,
            advertise: None,
            metrics_listen: None,
            memory_limit: 1 << 30,
            max_value_bytes: 1 << 20,
            replication_timeout: Duration::from_secs(5),
            replication_batch: 1024,
            transport: TransportKind::Auto,
            framed_listen: None,
            rdma_device: None,
        }
    }
}
