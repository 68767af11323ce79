//! The manager every binary runs: recovery of silent processing nodes is the processing
//! node's transaction-log recovery, over the same store the manager publishes to.
//!
//! Why here and not in each binary: the `commit-manager` binary (what the operator's
//! StatefulSet runs) and `shmdb up`'s child processes must recover the same way; a binary
//! that forgot to plug recovery in would leave a dead node's writes in the store.

use std::sync::Arc;

use shmdb_processing_node::txn::recover::LogRecovery;
use shmdb_store_client::{StoreClient, StoreClientConfig};

use crate::config::ManagerConfig;
use crate::error::ManagerError;
use crate::server::{RunningManager, start_with_store};

/// Connects to the store named by `config.store_seeds` and serves, recovering silent
/// processing nodes' transactions from their log.
pub async fn start_with_log_recovery(
    config: ManagerConfig,
) -> Result<RunningManager, ManagerError> {
    config.validate().map_err(ManagerError::Config)?;
    let store =
        StoreClient::connect(StoreClientConfig::with_seeds(config.store_seeds.clone())).await?;
    let recovery = Arc::new(LogRecovery::new(store.clone()));
    start_with_store(config, store, recovery).await
}
