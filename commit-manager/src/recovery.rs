//! The seam to transaction recovery: what the commit manager asks for before it aborts the
//! transactions of a processing node that stopped heartbeating.
//!
//! Recovery itself (scanning the transaction log, reverting the versions a dead node wrote)
//! belongs to the processing node (DESIGN.md, "Recovery of a processing node's
//! transactions"), whose log format the commit manager must not know. So the manager only
//! defines this trait, requires an implementation at construction, and obeys the abort
//! invariant around it: a tid is marked aborted only after [`Recovery::recover`] returned
//! `Ok` for it. Until the processing node plugs in the log-based implementation, binaries
//! use [`NoWritesRecovery`], which is only correct while no processing node writes.

use async_trait::async_trait;

/// What to recover: the tids a processing node left behind at one manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRequest {
    /// The commit manager asking.
    pub manager_id: u64,
    /// The processing node that ran them. `None` only for tids a restarted manager may have
    /// issued after its last publish and no heartbeat has claimed since: their node is
    /// unknown, so the implementation must look them up by tid across the log.
    pub node: Option<u64>,
    /// The tids, ascending. Each may have written versions, a commit flag or nothing.
    pub tids: Vec<u64>,
    /// The manager's current lav: log entries below it are not needed to find these tids.
    pub lav: u64,
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Tids whose log entry carries a commit flag: the node died between writing the flag
    /// and telling the manager. They are reported committed instead of aborted.
    pub committed: Vec<u64>,
}

/// Why recovery could not finish; the manager keeps the tids recovering and retries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("recovery failed: {0}")]
pub struct RecoveryError(pub String);

/// Reverts the writes of transactions whose processing node stopped heartbeating.
///
/// Contract: when `recover` returns `Ok`, every version written by a tid of the request that
/// is not listed in [`RecoveryReport::committed`] has been removed from the store (and its
/// log entry carries the abort flag), so the manager may report those tids aborted. It may be
/// called again for the same tids (after an error, or after a manager restart) and must then
/// do no harm.
#[async_trait]
pub trait Recovery: Send + Sync + 'static {
    /// Recovers the given transactions.
    async fn recover(&self, request: RecoveryRequest) -> Result<RecoveryReport, RecoveryError>;
}

/// Stands in until the processing node's log-based recovery exists: assumes the node left
/// no writes (true while no processing node writes to the store), logs each call, and lets
/// every tid be aborted.
///
/// Why ship it at all: the commit manager must keep `lav` moving when a node dies, and the
/// trait being required at construction makes replacing this a one-line change rather than
/// a silent default.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoWritesRecovery;

#[async_trait]
impl Recovery for NoWritesRecovery {
    async fn recover(&self, request: RecoveryRequest) -> Result<RecoveryReport, RecoveryError> {
        tracing::warn!(
            manager = request.manager_id,
            node = ?request.node,
            tids = ?request.tids,
            "aborting transactions of a silent processing node without reverting writes \
             (no transaction-log recovery is plugged in)"
        );
        Ok(RecoveryReport::default())
    }
}
