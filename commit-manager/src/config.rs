//! Commit-manager settings, from flags or environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use crate::records::MAX_PUBLISH_SLOTS;

/// How a commit manager is run. Every field is a flag and an environment variable, so the
/// same binary is configured the same way by `shmdb up`, a StatefulSet or a test.
#[derive(Debug, Clone, clap::Args)]
pub struct ManagerConfig {
    /// This manager's id; stable across restarts (the StatefulSet ordinal + 1). A restarted
    /// manager resumes from the state published under its id.
    #[arg(long, env = "SHMDB_MANAGER_ID")]
    pub manager_id: u64,
    /// gRPC listen address.
    #[arg(long, env = "SHMDB_COMMIT_LISTEN", default_value = "127.0.0.1:7300")]
    pub listen: SocketAddr,
    /// Address processing nodes use to reach this manager (defaults to `listen`).
    #[arg(long, env = "SHMDB_COMMIT_ADVERTISE")]
    pub advertise: Option<String>,
    /// HTTP listen address for /metrics, /healthz and /readyz.
    #[arg(long, env = "SHMDB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Storage-node addresses to fetch the partition map from (comma-separated).
    #[arg(
        long,
        env = "SHMDB_STORE_SEEDS",
        value_delimiter = ',',
        required = true
    )]
    pub store_seeds: Vec<String>,
    /// Tids leased from the store's counter at a time. Larger blocks mean fewer counter
    /// increments per second; a crash leaves at most about two blocks' worth of tids to be
    /// recovered after the heartbeat timeout.
    #[arg(long, env = "SHMDB_TID_BLOCK", default_value_t = 1000)]
    pub tid_block: u64,
    /// How often the manager publishes its state and merges the other managers' (ms).
    /// Snapshots may lag another manager's commits by about this much.
    #[arg(long = "publish-interval-ms", env = "SHMDB_PUBLISH_INTERVAL_MS", value_parser = millis, default_value = "5")]
    pub publish_interval: Duration,
    /// A running tid not listed in any heartbeat of its node for this long is recovered and
    /// aborted (ms).
    #[arg(long = "heartbeat-timeout-ms", env = "SHMDB_HEARTBEAT_TIMEOUT_MS", value_parser = millis, default_value = "3000")]
    pub heartbeat_timeout: Duration,
    /// Largest distance between the newest tid and the base. Bounds every snapshot to
    /// window/8 bytes; a start beyond it fails with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SHMDB_TID_WINDOW", default_value_t = 1 << 21)]
    pub window: u64,
    /// Largest count of one StartBatch.
    #[arg(
        long = "max-start-batch",
        env = "SHMDB_MAX_START_BATCH",
        default_value_t = 4096
    )]
    pub max_batch: u32,
    /// Longest a publish waits for the clients the previous publish acknowledged to come
    /// back with their next commit, while the load consists of short transactions (µs; 0 =
    /// never wait). Keeps such clients in one group per store write instead of two waves
    /// riding every other write; long transactions are never waited for.
    #[arg(long = "group-wait-us", env = "SHMDB_GROUP_WAIT_US", value_parser = micros, default_value = "0")]
    pub group_wait: Duration,
    /// How many state records this manager writes round-robin (1 to 4): up to this many
    /// publishes are in flight at once, each conditional on its own record's previous stamp,
    /// so the next group of commits is written while the previous write is still under way.
    /// 1 (the default) writes one record at a time: on a machine where the store write is
    /// short and the cores are busy, more publishes in flight only make smaller groups
    /// (BENCHMARKS.md, "Commit manager"); try 2 where the store write is long and the CPU
    /// idle while it waits (replicas on other hosts).
    #[arg(long, env = "SHMDB_PUBLISH_SLOTS", default_value_t = 1)]
    pub publish_slots: usize,
    /// How long a start may wait for a tid block before failing (ms).
    #[arg(long = "start-wait-ms", env = "SHMDB_START_WAIT_MS", value_parser = millis, default_value = "5000")]
    pub start_wait: Duration,
}

/// Parses a duration given in milliseconds.
fn millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("expected milliseconds: {e}"))
}

/// Parses a duration given in microseconds.
fn micros(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_micros)
        .map_err(|e| format!("expected microseconds: {e}"))
}

impl ManagerConfig {
    /// A configuration for tests and the embedded cluster: a free port on 127.0.0.1, the
    /// given store seeds, defaults elsewhere.
    pub fn local(manager_id: u64, store_seeds: Vec<String>) -> ManagerConfig {
        ManagerConfig {
            manager_id,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            metrics_listen: None,
            store_seeds,
            tid_block: 1000,
            publish_interval: Duration::from_millis(5),
            heartbeat_timeout: Duration::from_secs(3),
            window: 1 << 21,
            max_batch: 4096,
            group_wait: Duration::ZERO,
            publish_slots: 1,
            start_wait: Duration::from_secs(5),
        }
    }

    /// Rejects settings that cannot work, before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.manager_id == 0 {
            return Err("--manager-id must be at least 1".into());
        }
        if self.tid_block == 0 || self.tid_block > i64::MAX as u64 {
            return Err("--tid-block must be positive".into());
        }
        if self.publish_interval.is_zero() {
            return Err("--publish-interval-ms must be positive".into());
        }
        if self.heartbeat_timeout.is_zero() {
            return Err("--heartbeat-timeout-ms must be positive".into());
        }
        if self.window == 0 {
            return Err("--window must be positive".into());
        }
        if self.max_batch == 0 {
            return Err("--max-start-batch must be positive".into());
        }
        if self.publish_slots == 0 || self.publish_slots > MAX_PUBLISH_SLOTS {
            return Err(format!(
                "--publish-slots must be between 1 and {MAX_PUBLISH_SLOTS}"
            ));
        }
        if self.store_seeds.is_empty() {
            return Err("--store-seeds must name at least one storage node".into());
        }
        Ok(())
    }
}
