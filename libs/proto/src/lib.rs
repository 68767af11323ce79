//! The wire contracts of shmdb: every message and service that crosses a process boundary.
//!
//! The `.proto` files under `proto/` are the source of truth; this crate only compiles them
//! (with protox, so builds need no system `protoc`) and re-exports the generated code, so
//! that storage nodes, commit managers, processing nodes and the operator all speak exactly
//! the same version of each contract.

#![allow(missing_docs)]

/// Storage-node data path, replication and admin contracts.
pub mod storage {
    tonic::include_proto!("shmdb.storage.v1");
}

/// Commit-manager contract: start, commit, abort, heartbeats and status.
pub mod commit {
    tonic::include_proto!("shmdb.commit.v1");
}

/// RDMA connection setup: queue-pair endpoints exchanged over gRPC.
pub mod rdma {
    tonic::include_proto!("shmdb.rdma.v1");
}
