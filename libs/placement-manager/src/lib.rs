//! The placement manager: keeps the partition map, watches storage-node health, and
//! executes the planner's steps against the storage nodes.
//!
//! The planner (`shmdb-placement`) decides; this crate acts. It probes every storage node
//! (`Report`), turns the answers into the planner's cluster state, and runs each planned
//! step: the node-side action (split, waiting for a learner to catch up), then the new map,
//! stored with compare-and-swap in a [`MapStore`] before it is pushed to the nodes. The
//! embedded local cluster (`shmdb up`) uses it with an in-memory store; the Kubernetes
//! operator uses the same executor with a store in the Kubernetes API, so both make exactly
//! the same moves.

pub mod manager;
pub mod store;

pub use manager::{ManagerConfig, ManagerError, PlacementManager, ReconcileOutcome};
pub use store::{FileMapStore, MapStore, MemoryMapStore, StoreError};
