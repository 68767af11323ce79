//! Recovery of a failed processing node's unfinished transactions from the transaction log.
//!
//! For each tid: no log entry means the transaction wrote nothing (the write set is logged
//! before any record); a commit flag means it committed (the node died between the flag and
//! telling the manager); an abort flag means its writes were already reverted; otherwise
//! every key of its write set loses the version tagged with the tid, and the abort flag is
//! written. Only then may the manager report the tid aborted (the abort invariant). Every
//! step is conditional or idempotent, so running recovery twice, or while the node comes
//! back, does no harm.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use bytes::Bytes;
use shmdb_commit_manager::{Recovery, RecoveryError, RecoveryReport, RecoveryRequest};
use shmdb_placement::tables;
use shmdb_store_client::{KeyRange, StoreClient};
use tracing::info;

use crate::keys;
use crate::txn::abort::remove_version;
use crate::txn::error::TxnError;
use crate::txn::log::{LogEntry, LogStatus, now_micros};

/// Log entries read per scan page when looking tids up across the whole log.
const LOG_PAGE: usize = 1024;

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
    pub async fn recover_tid(&self, node: u64, tid: u64) -> Result<bool, TxnError> {
        let key = Bytes::from(keys::txlog_key(node, tid));
        let Some(found) = self.store.get(tables::TXLOG, key.clone()).await? else {
            return Ok(false);
        };
        let entry = LogEntry::decode(&found.value)?;
        match entry.status {
            LogStatus::Committed => return Ok(true),
            LogStatus::Aborted => return Ok(false),
            LogStatus::Running => {}
        }
        for store_key in &entry.keys {
            remove_version(&self.store, store_key, tid).await?;
        }
        let flag = LogEntry {
            status: LogStatus::Aborted,
            time_micros: now_micros(),
            keys: entry.keys,
        };
        self.store
            .put(tables::TXLOG, key, Bytes::from(flag.encode()))
            .await?;
        info!(node, tid, "recovered transaction: writes reverted");
        Ok(false)
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
