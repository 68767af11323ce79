//! What a processing node needs to talk to the commit managers, apart from the managers
//! themselves.
//!
//! - [`CommitClient`]: batching concurrent starts and finishes into few RPCs, failing over
//!   between managers, heartbeating running transactions.
//! - [`Recovery`]: the seam through which a commit manager asks for a silent processing
//!   node's transactions to be reverted. The manager calls it; the processing node, which
//!   owns the transaction-log format, implements it.
//!
//! Both live here rather than in the commit-manager crate so the dependency runs one way:
//! the commit-manager binary links the processing node's log recovery, and the processing
//! node links only this client, never the manager.

pub mod client;
pub mod recovery;
pub mod refusal;

pub use client::{CommitClient, CommitClientConfig, CommitError, Started};
pub use recovery::{NoWritesRecovery, Recovery, RecoveryError, RecoveryReport, RecoveryRequest};
pub use refusal::Refusal;
