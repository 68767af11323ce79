//! The seam to transaction recovery: what the commit manager asks for before it aborts the
//! transactions of a processing node that stopped heartbeating.
//!
//! Recovery itself (scanning the transaction log, reverting the versions a dead node wrote)
//! belongs to the processing node (DESIGN.md, "Recovery of a processing node's
//! transactions"), whose log format the commit manager must not know. So the manager only
//! defines this trait, requires an implementation at construction, and obeys the abort
//! invariant around it: a tid is marked aborted only after [`Recovery::recover`] returned
//! `Ok` for it. The processing node's log-based implementation is what every binary plugs
//! in; [`NoWritesRecovery`] serves the manager's own tests and benchmarks, whose clients
//! write nothing.

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

/// Recovery for clients that never write to the store (the commit manager's own tests and
/// benchmarks): there is nothing to revert, so every tid may be aborted at once. Logged at
/// warn level because in a real deployment it would leave a dead node's writes behind.
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
