//! The commit manager of shmdb: the one place every transaction touches at start and end.
//!
//! It hands out tids (increasing u64s that are also the version numbers a transaction
//! writes), snapshot descriptors (base + committed set above it, see [`shmdb_snapshot`]) and
//! the lowest active version (`lav`) that garbage collection must not cross; it learns when
//! transactions commit or abort, and recovers the transactions of processing nodes that stop
//! heartbeating. See DESIGN.md, "Commit manager" and "Several commit managers".
//!
//! # Layers
//! - [`core`]: the synchronous state machine (no I/O; the benchmark drives it directly).
//! - [`Manager`]: the core bound to the store — leasing tid blocks from the atomic counter,
//!   publishing state (group commit), merging the other managers' state, recovery.
//! - [`CommitService`] / [`start`]: the gRPC server (`commit.proto`).
//! - [`CommitClient`] (re-exported from `shmdb-commit-client`): what processing nodes use —
//!   batching, failover, heartbeats.
//! - [`start_with_log_recovery`]: what the binaries run — a manager whose [`Recovery`] is the
//!   processing node's transaction-log recovery.
//!
//! # Durability: commits are acknowledged after a store write
//! A commit becomes visible to snapshots, and is acknowledged, only once a *publish* that
//! contains it is durable: each manager writes its state record (committed tids above a
//! prune point, running tids with their nodes, floor, base, lav proposal, tid blocks) under
//! `manager/<id>` in table `COMMIT`, with one conditional put per group of commits — commits
//! arriving while a put is in flight ride the next one, so the cost is one store round trip
//! per group, not per commit. Because of this, a manager restarted after SIGKILL forgets no
//! acknowledged commit, and no snapshot ever showed a commit that a crash could undo. Aborts
//! need no durability (the transaction's writes are already gone): an abort lost in a crash
//! reappears as a running tid and is recovered (a no-op) and aborted again.
//!
//! # Tids are never reused
//! Tids come in blocks from one atomic counter (`tid-counter`, `increment` by the block
//! size). A block is issued from only after a durable publish names it, and a restarted
//! manager never issues from its old blocks again: every tid of them that may have been
//! handed out is kept as running until a heartbeat claims it or recovery ends it. An
//! increment whose outcome is unknown (`Ambiguous`) is not used: the block it may have taken
//! is skipped, which only leaves a hole no one issues from.
//!
//! # Several managers
//! Each manager publishes its *floor* (every own tid below it finished, none below it will be
//! issued) and reads every manager's record each interval (default 5 ms). The base of a
//! snapshot is `min(own floor, others' floors) − 1`, capped by this manager's reserved
//! ceiling at the time of the read (a manager registering later leases above it), and raised
//! to any base another manager published (a fact: all tids ≤ it finished). The committed set
//! is the union of everyone's published commits, so another manager's commit shows up within
//! about one interval — never as an anomaly, only as a slightly older snapshot.
//!
//! # lav
//! `lav` is a lower bound on the base of every snapshot any manager handed out to a running
//! transaction or will hand out: the smallest base among running transactions cluster-wide
//! (each manager publishes its own as `local_lav`). A manager hands out a lav value only
//! after it published it as a proposal and a later read of every manager showed all their
//! `local_lav`s at or above it; managers raise their bases to published proposals, so one
//! that registers in between cannot start a transaction below it.
//!
//! # Recovery of silent processing nodes
//! Processing nodes heartbeat the tids they run. A tid no heartbeat listed for the timeout
//! is handed to the [`Recovery`] implementation given at construction (with its node), and
//! aborted only after recovery returned — the abort invariant. The transaction log and the
//! reverting of writes belong to the processing node; the trait lives in the client crate
//! both sides share, and the binaries plug in the processing node's `LogRecovery`.
//!
//! # Limits (documented choices)
//! - A transaction can only be finished at the manager that issued it; if that manager dies,
//!   its running transactions wait for it to come back under the same id (clients retry
//!   commits until their deadline, then report the outcome as ambiguous). New transactions
//!   fail over to another manager at once.
//! - A manager id that is gone for good holds the base at its last floor until it is started
//!   again (or until a takeover tool, not built yet, finishes its tids).

pub mod config;
pub mod core;
pub mod error;
pub mod log_recovery;
pub mod manager;
pub mod metrics;
pub mod records;
pub mod server;
pub mod service;
pub mod session;

mod bits;

pub use config::ManagerConfig;
pub use error::{ManagerError, Refusal, StartError};
pub use log_recovery::start_with_log_recovery;
pub use manager::{FinishError, Manager};
pub use server::{RunningManager, start, start_with_store};
pub use service::CommitService;
pub use shmdb_commit_client::{
    CommitClient, CommitClientConfig, CommitError, NoWritesRecovery, Recovery, RecoveryError,
    RecoveryReport, RecoveryRequest, Started,
};
