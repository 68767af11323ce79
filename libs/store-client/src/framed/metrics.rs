//! Prometheus metrics of the framed TCP data path (`shmdb_transport_tcp_*`), kept by clients
//! and storage nodes alike: whether traffic really travels framed, how much, and how often
//! connections fail.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Written to the peer.
    Sent,
    /// Read from the peer.
    Received,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// The framed-transport metrics of one process (or one node of a shared process); cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct FramedMetrics {
    /// Bytes on the wire (length prefixes included) by direction.
    pub bytes: IntCounterVec,
    /// Frames by direction.
    pub frames: IntCounterVec,
    /// Writes to the socket (each carries every frame queued at the time): frames sent per
    /// write shows how much coalescing happens.
    pub writes: IntCounter,
    /// Connections that could not be opened or failed while open (reset, bad frame).
    pub connection_errors: IntCounter,
    /// Open framed connections.
    pub connections: IntGauge,
    /// Requests a client sent over gRPC because the node offers no framed endpoint.
    pub grpc_fallbacks: IntCounter,
    /// The children of `bytes` and `frames` by direction (sent, received), resolved once:
    /// a label lookup per frame would cost a hash and a lock.
    by_direction: [(IntCounter, IntCounter); 2],
}

impl FramedMetrics {
    /// The metrics, not registered anywhere (clients without a registry, tests). Fails only
    /// if a definition is invalid.
    pub fn new() -> Result<FramedMetrics, prometheus::Error> {
        let bytes = IntCounterVec::new(
            Opts::new(
                "shmdb_transport_tcp_bytes_total",
                "Framed TCP data-path bytes (length prefixes included) by direction",
            ),
            &["direction"],
        )?;
        let frames = IntCounterVec::new(
            Opts::new(
                "shmdb_transport_tcp_frames_total",
                "Framed TCP data-path frames by direction",
            ),
            &["direction"],
        )?;
        let by_direction = [Direction::Sent, Direction::Received].map(|d| {
            (
                bytes.with_label_values(&[d.label()]),
                frames.with_label_values(&[d.label()]),
            )
        });
        Ok(FramedMetrics {
            bytes,
            frames,
            by_direction,
            writes: IntCounter::new(
                "shmdb_transport_tcp_writes_total",
                "Socket writes of the framed TCP data path (each carries all frames queued)",
            )?,
            connection_errors: IntCounter::new(
                "shmdb_transport_tcp_connection_errors_total",
                "Framed TCP connections that could not be opened or failed while open",
            )?,
            connections: IntGauge::new(
                "shmdb_transport_tcp_connections",
                "Open framed TCP data-path connections",
            )?,
            grpc_fallbacks: IntCounter::new(
                "shmdb_transport_tcp_grpc_fallbacks_total",
                "Requests sent over gRPC because the storage node offers no framed endpoint",
            )?,
        })
    }

    /// The metrics, registered in `registry`.
    pub fn register(registry: &Registry) -> Result<FramedMetrics, prometheus::Error> {
        let metrics = FramedMetrics::new()?;
        registry.register(Box::new(metrics.bytes.clone()))?;
        registry.register(Box::new(metrics.frames.clone()))?;
        registry.register(Box::new(metrics.writes.clone()))?;
        registry.register(Box::new(metrics.connection_errors.clone()))?;
        registry.register(Box::new(metrics.connections.clone()))?;
        registry.register(Box::new(metrics.grpc_fallbacks.clone()))?;
        Ok(metrics)
    }

    /// Counts `frames` frames of `bytes` bytes in total; a sent batch is one write.
    pub fn count(&self, direction: Direction, frames: u64, bytes: usize) {
        let (bytes_counter, frames_counter) = self.children(direction);
        frames_counter.inc_by(frames);
        bytes_counter.inc_by(bytes as u64);
        if direction == Direction::Sent {
            self.writes.inc();
        }
    }

    /// Frames so far in `direction`.
    pub fn frames(&self, direction: Direction) -> u64 {
        self.children(direction).1.get()
    }

    /// Bytes so far in `direction`.
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.children(direction).0.get()
    }

    fn children(&self, direction: Direction) -> &(IntCounter, IntCounter) {
        match direction {
            Direction::Sent => &self.by_direction[0],
            Direction::Received => &self.by_direction[1],
        }
    }
}
