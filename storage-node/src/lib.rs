//! The shmdb storage node: a strongly consistent, in-memory, range-partitioned and
//! synchronously replicated record store.
//!
//! It is the bottom of the system (DESIGN.md, "Storage node"): processing nodes and commit
//! managers keep every piece of shared state here and detect write-write conflicts with its
//! conditional writes (`get` is the load-link, `put_if` the store-conditional; stamps are
//! never reused, so the check is ABA-safe). The node serves the ranges the partition map
//! gives it: as primary it orders, applies and replicates every write of a range to all
//! backups before acknowledging it; as backup it applies its primary's log and refuses
//! anything from a lower epoch. The placement manager drives it through the admin service
//! (install map, split, report).

pub mod admin;
pub mod config;
pub mod error;
pub mod framed;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod range;
mod replica_stream;
pub mod replication;
pub mod server;
pub mod service;
pub mod stamp;
pub mod stream;

pub use config::NodeConfig;
pub use node::Node;
pub use server::{RunningNode, StartError, start};

/// Largest gRPC message a node sends or accepts (batches, snapshots chunks, scans).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
