//! The partition map and the placement planner of shmdb's storage layer.
//!
//! The partition map is the routing table of the whole system: storage nodes use it to know
//! which ranges they serve and in which role, clients use it to send each operation to the
//! primary of its range, and the placement manager (embedded in `shmdb up`, or the
//! Kubernetes operator) evolves it. The planner turns "what the map is" plus "which nodes are
//! alive, how big the ranges are, which nodes must go" into an ordered list of steps. It is
//! made of pure functions so that its invariants (replication factor restored, balance,
//! never dropping the last up-to-date copy) can be checked by property tests, and so that
//! the local cluster and the operator run exactly the same decisions.

pub mod keys;
pub mod map;
pub mod planner;
pub mod tables;

pub use keys::{decode_range_key, range_key, table_end, table_start};
pub use map::{MapError, NodeId, PartitionMap, RangeDesc, RangeId};
pub use planner::{
    ClusterState, Plan, PlanError, PlannerConfig, RangeLoad, Step, apply, apply_plan, plan,
};
