//! Recovery of a failed processing node's unfinished transactions from the transaction log.
//!
//! For each tid: no log entry means the transaction wrote nothing (the write set is logged
//! before any record), and an abort flag is put in its place so it cannot log later; a
//! commit flag means it committed (the node died between the flag and telling the manager);
//! otherwise the abort flag is written over the entry read, conditionally on it, and then
//! every key of its write set loses the version tagged with the tid (also when an earlier
//! run left the flag but stopped before all versions were gone). Only then may the manager
//! report the tid aborted (the abort invariant). Every step is conditional or idempotent, so
//! running recovery twice, or while the node comes back, does no harm.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use bytes::Bytes;
use shmdb_commit_client::{Recovery, RecoveryError, RecoveryReport, RecoveryRequest};
use shmdb_placement::tables;
use shmdb_store_client::{CondOutcome, Expect, KeyRange, StoreClient};
use tracing::info;

use crate::keys;
use crate::txn::abort::remove_version;
use crate::txn::error::TxnError;
use crate::txn::log::{LogEntry, LogStatus, now_micros, read_write_set};
use crate::txn::transaction::StoreKey;

/// Log entries read per scan page when looking tids up across the whole log.
const LOG_PAGE: usize = 1024;
/// Reads and conditional writes of one log entry before recovery gives up (the manager
/// retries the whole recovery later): each retry means the node wrote the entry meanwhile,
/// which a live node does at most three times per transaction.
const CLAIM_ATTEMPTS: usize = 8;

/// Log-based recovery, run by the commit manager for processing nodes that stopped
/// heartbeating.
#[derive(Debug, Clone)]
pub struct LogRecovery {
    store: StoreClient,
}

impl LogRecovery {
    /// Recovery over a store.
    pub fn new(store: StoreClient) -> Self {
        LogRecovery { store }
    }

    /// Recovers one transaction; returns whether it turned out committed.
    ///
    /// The node may still be alive (paused past its heartbeat timeout), so recovery first
    /// *claims* the log entry — the abort flag, written conditionally on the entry it read
    /// (or on there being none) — and only then reverts: the node's own log write and commit
    /// flag are conditional too, so after the claim it can no longer commit, and a commit
    /// flag that won the race is seen and reported instead of reverted.
    pub async fn recover_tid(&self, node: u64, tid: u64) -> Result<bool, TxnError> {
        let key = Bytes::from(keys::txlog_key(node, tid));
        for _ in 0..CLAIM_ATTEMPTS {
            let found = self.store.get(tables::TXLOG, key.clone()).await?;
            let (entry, expect) = match found {
                // Never logged: it wrote nothing. The flag keeps it from logging later.
                None => (
                    LogEntry {
                        status: LogStatus::Running,
                        time_micros: now_micros(),
                        keys: Vec::new(),
                        spill: 0,
                    },
                    Expect::Absent,
                ),
                Some(found) => (LogEntry::decode(&found.value)?, Expect::Stamp(found.stamp)),
            };
            match entry.status {
                LogStatus::Committed => return Ok(true),
                // Claimed before (by an earlier run, or by the node's own abort): the
                // versions may not all be gone yet if that run stopped halfway.
                LogStatus::Aborted => {
                    let write_set = read_write_set(&self.store, node, tid, &entry, true).await?;
                    self.revert(tid, &write_set).await?;
                    return Ok(false);
                }
                LogStatus::Running => {}
            }
            let flag = entry.with_status(LogStatus::Aborted);
            match self
                .store
                .put_if(
                    tables::TXLOG,
                    key.clone(),
                    Bytes::from(flag.encode()),
                    expect,
                )
                .await
            {
                Ok(CondOutcome::Written { .. }) => {
                    let write_set = read_write_set(&self.store, node, tid, &flag, false).await?;
                    self.revert(tid, &write_set).await?;
                    info!(node, tid, "recovered transaction: writes reverted");
                    return Ok(false);
                }
                // The node wrote meanwhile (logged, committed or aborted): look again.
                Ok(_) => continue,
                Err(e) if e.is_ambiguous() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(TxnError::Commit(format!(
            "could not claim the log entry of tid {tid} of node {node}: it kept changing"
        )))
    }

    async fn revert(&self, tid: u64, keys: &[StoreKey]) -> Result<(), TxnError> {
        for store_key in keys {
            remove_version(&self.store, store_key, tid).await?;
        }
        Ok(())
    }

    /// The nodes that logged `tids`, found with one scan of the whole log (for tids a
    /// restarted commit manager cannot attribute). A tid missing from the answer was never
    /// logged: it wrote nothing.
    async fn find_nodes(&self, tids: &[u64]) -> Result<HashMap<u64, u64>, TxnError> {
        let wanted: HashSet<u64> = tids.iter().copied().collect();
        let mut found = HashMap::new();
        let mut range = KeyRange::all();
        loop {
            let page = self
                .store
                .scan_page(tables::TXLOG, &range, LOG_PAGE)
                .await?;
            for item in &page.items {
                if let Ok((node, tid)) = keys::decode_txlog_key(&item.key)
                    && wanted.contains(&tid)
                {
                    found.insert(tid, node);
                }
            }
            match page.resume {
                Some(resume) if found.len() < wanted.len() => range.start = resume,
                _ => return Ok(found),
            }
        }
    }
}

#[async_trait]
impl Recovery for LogRecovery {
    async fn recover(&self, request: RecoveryRequest) -> Result<RecoveryReport, RecoveryError> {
        let mut report = RecoveryReport::default();
        let nodes = match request.node {
            Some(_) => HashMap::new(),
            None => self
                .find_nodes(&request.tids)
                .await
                .map_err(|e| RecoveryError(e.to_string()))?,
        };
        for tid in request.tids {
            let node = request.node.or_else(|| nodes.get(&tid).copied());
            let Some(node) = node else {
                continue; // never logged: wrote nothing
            };
            if self
                .recover_tid(node, tid)
                .await
                .map_err(|e| RecoveryError(e.to_string()))?
            {
                report.committed.push(tid);
            }
        }
        Ok(report)
    }
}
