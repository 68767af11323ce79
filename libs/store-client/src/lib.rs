//! The storage client of shmdb: the one data path from processing nodes, commit managers,
//! tests and benchmarks to the storage nodes.
//!
//! Storage nodes serve ranges of the ordered (table, key) space, and only a range's current
//! primary may serve an operation on it; ranges split, move and fail over under the placement
//! manager's control. Routing by the cached partition map, batching operations per primary,
//! refreshing the map and retrying transient failures all live here, in one place, so that
//! every caller gets the same failure semantics: a failed conditional write is a typed
//! [`CondOutcome::Conflict`]; a write that ends with any error other than
//! [`StoreError::Ambiguous`] was not applied; and a write that may have been applied without
//! the client being able to tell (a lost answer followed by a conflict, an increment whose
//! answer was lost) is reported as `Ambiguous` instead of being retried into a duplicate.
//!
//! The network sits behind the [`Transport`] trait: [`FramedTransport`] (length-prefixed
//! protobuf frames on plain TCP connections, the default), [`GrpcTransport`] (batches and
//! scans multiplexed over long-lived gRPC streams or as unary calls), see [`DataPath`];
//! RDMA in `shmdb-rdma-transport`. Tests plug in an in-memory cluster at the same seam.

mod backoff;
mod client;
mod config;
mod error;
pub mod framed;
mod grpc;
mod map_cache;
mod op;
mod scan;
mod session;
mod transport;

pub use client::StoreClient;
pub use config::StoreClientConfig;
pub use error::StoreError;
pub use framed::metrics::FramedMetrics;
pub use framed::{FramedConfig, FramedTransport, tcp_transport};
pub use grpc::{DATA_PATH_ENV, DataPath, GrpcConfig, GrpcTransport, UnknownDataPath};
pub use op::{CondOutcome, Expect, Op, OpOutcome, Versioned};
pub use scan::{Item, KeyRange, ScanPage};
pub use transport::{Transport, TransportError, TransportKind, UnknownTransport};

/// The wire types a [`Transport`] implementation speaks, re-exported so implementations (and
/// test doubles) need not depend on the proto crate themselves.
pub use shmdb_proto::storage as proto;
