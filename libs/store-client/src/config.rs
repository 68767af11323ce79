//! Settings of a [`StoreClient`](crate::StoreClient): where to find the map and how long to try.

use std::time::Duration;

use crate::grpc::DataPath;

/// How a [`StoreClient`](crate::StoreClient) finds the cluster and how hard it retries.
#[derive(Debug, Clone)]
pub struct StoreClientConfig {
    /// Storage-node addresses (`host:port`) to fetch the partition map from before any map is
    /// known; later refreshes also ask every node of the cached map.
    pub seeds: Vec<String>,
    /// Bound on one round trip to one node; a slower answer counts as a timeout (the
    /// request may have been applied).
    pub request_timeout: Duration,
    /// Bound on opening a connection to a node (gRPC transport only).
    pub connect_timeout: Duration,
    /// Bound on a whole call, retries included: transient failures (moving ranges, failover)
    /// are retried until then, and the call ends with `DeadlineExceeded` (or `Ambiguous`).
    pub deadline: Duration,
    /// First retry backoff; doubled per retry (with jitter) up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Largest retry backoff, so a long failover is polled at a steady rate.
    pub backoff_max: Duration,
    /// Largest number of items asked of a node in one scan request, so one response stays
    /// well below message-size limits.
    pub scan_page_limit: u32,
    /// How [`StoreClient::connect`](crate::StoreClient::connect) carries batches and scans:
    /// multiplexed streams (default, measured cheaper per request) or unary calls; the
    /// default follows `SHMDB_STORAGE_DATA_PATH` when set.
    pub data_path: DataPath,
}

impl Default for StoreClientConfig {
    fn default() -> Self {
        StoreClientConfig {
            seeds: Vec::new(),
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(2),
            backoff_max: Duration::from_millis(200),
            scan_page_limit: 1024,
            data_path: DataPath::from_env(),
        }
    }
}

impl StoreClientConfig {
    /// Defaults with these seed addresses.
    pub fn with_seeds<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Self {
        StoreClientConfig {
            seeds: seeds.into_iter().map(Into::into).collect(),
            ..StoreClientConfig::default()
        }
    }
}
