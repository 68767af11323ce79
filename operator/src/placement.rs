//! The placement manager inside the operator: one task per database, leader-elected with a
//! coordination.k8s.io Lease, its partition map in a ConfigMap with compare-and-swap.
//!
//! The executor is `shmdb_placement_manager::PlacementManager`, the one `shmdb up` runs
//! locally; this module only supplies what Kubernetes adds: the map store
//! ([`ConfigMapMapStore`]), leadership ([`LeaseLock`]), node addresses from the storage
//! StatefulSet's pod DNS names, and the drains the storage autoscaler asks for.

mod lease;
mod map_store;
mod supervisor;

pub use lease::LeaseLock;
pub use map_store::{ConfigMapMapStore, MAP_KEY};
pub use supervisor::{AddressFn, PlacementSnapshot, PlacementSupervisor, StorageTarget};
