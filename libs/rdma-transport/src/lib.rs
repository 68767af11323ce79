//! The RDMA data path between store clients (processing nodes, commit managers) and storage
//! nodes, with a clean fallback to gRPC over TCP.
//!
//! DESIGN.md puts the storage layer one network hop below every transaction step: the
//! Tell paper measured 3.2x the throughput over InfiniBand/RDMA compared with 10 Gb
//! Ethernet, because every get and conditional put is a round trip. This crate implements
//! the store client's [`Transport`](shmdb_store_client::Transport) over reliable-connected
//! queue pairs:
//!
//! - [`verbs`] is the seam to the NIC: a small object-safe trait over the handful of verbs we
//!   use (queue pairs with registered send/receive buffers, one doorbell per posted chain of
//!   work requests, completion polling). [`ibverbs`] implements it with rdma-sys (cargo
//!   feature `rdma`); [`fake`] implements it in memory so the protocol above it is tested on
//!   machines without RDMA hardware.
//! - [`frame`] cuts protobuf messages into fragments that fit the registered buffers and
//!   reassembles them; [`connection`] runs one queue pair (buffer reuse, doorbell batching,
//!   completion handling, failure).
//! - [`client`] is [`RdmaTransport`]; [`server`] is the storage node's side, reached through
//!   the `RdmaConnect` gRPC service that exchanges queue-pair numbers, LIDs/GIDs and buffer
//!   geometry over the existing gRPC channel.
//! - [`device`] discovers RDMA devices and [`select`] turns `--transport auto|tcp|rdma` into
//!   a decision, logged, that fails clearly when `rdma` is asked for without a device.
//! - [`conformance`] is the transport conformance suite, run against every [`Transport`]
//!   available on the machine.
//!
//! [`Transport`]: shmdb_store_client::Transport

pub mod client;
pub mod conformance;
pub mod connection;
pub mod device;
pub mod fake;
pub mod frame;
#[cfg(feature = "rdma")]
pub mod ibverbs;
pub mod metrics;
pub mod select;
pub mod server;
pub mod verbs;

pub use client::{RdmaConfig, RdmaTransport};
pub use device::{DeviceInfo, Discovery, discover};
pub use metrics::TransportMetrics;
pub use select::{SelectError, Selected, client_transport, resolve};
pub use server::{RdmaServer, RequestHandler};
pub use shmdb_store_client::TransportKind;
pub use verbs::{Completion, QpEndpoint, QueuePair, RdmaDevice, SendWr, VerbsError};
