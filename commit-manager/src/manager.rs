//! A running commit manager: the [`Core`] state machine plus the background work that ties
//! it to the store — leasing tid blocks, publishing state (group commit, up to one write in
//! flight per record slot, see [`crate::records`]), merging the other managers' state, and
//! recovering transactions of silent processing nodes.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use prost::Message;
use shmdb_placement::tables;
use shmdb_proto::commit::ManagerState;
use shmdb_store_client::{CondOutcome, Expect, KeyRange, StoreClient, StoreError};
use shmdb_telemetry::Health;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::ManagerConfig;
use crate::core::{Core, CoreConfig, CoreStatus, FlushBatch, PeerState, RecoveryGroup, StartGrant};
use crate::error::{ManagerError, Refusal, StartError};
use crate::metrics::{CoreStatusCounters, ManagerMetrics};
use crate::records::{MAX_PUBLISH_SLOTS, newest_per_manager, record_order, slot_key};
pub use crate::records::{STATE_PREFIX, state_key};
use shmdb_commit_client::{Recovery, RecoveryRequest};

/// Key of the tid counter in table `COMMIT`.
pub const COUNTER_KEY: &[u8] = b"tid-counter";

/// Times the publisher yields to other tasks before taking a group of commits.
const GROUP_YIELDS: usize = 3;

/// Most managers one merge reads.
const MAX_MANAGERS: usize = 1024;

/// How often start-up claims the record slots before giving up (see [`claim_slots`]).
const CLAIM_ROUNDS: u32 = 3;

/// How often one slot is read and written back before the claim round is given up: a write
/// back fails only when an older instance wrote the slot in between, and that instance is
/// fenced off at its next write to a slot already claimed.
const CLAIM_ATTEMPTS_PER_SLOT: u32 = 50;

/// How far publishes have got, watched by commits waiting to be acknowledged.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// Every publish up to this sequence number is durable.
    seq: u64,
    /// Set when the manager stopped serving for good (fenced).
    fatal: Option<Arc<str>>,
}

/// Why a commit or abort did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FinishError {
    /// Refused for this tid; nothing changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The manager stopped serving (fenced); whether a pending commit became durable is
    /// unknown to the caller.
    #[error("commit manager not serving: {0}")]
    NotServing(String),
}

/// A commit manager bound to the store. Shared by the gRPC service, in-process callers and
/// its background tasks.
pub struct Manager {
    cfg: ManagerConfig,
    core: Mutex<Core>,
    store: StoreClient,
    recovery: Arc<dyn Recovery>,
    metrics: ManagerMetrics,
    health: Health,
    address: String,
    flush_wake: Notify,
    /// Woken by every commit or abort, for a publisher waiting for a group.
    group_wake: Notify,
    lease_wake: Notify,
    tids_ready: Notify,
    durable: watch::Sender<Durable>,
    /// What the next write of each record slot must expect: the stamp of our last write
    /// there (every slot is claimed at start-up, so none is absent afterwards).
    slots: Mutex<Vec<Expect>>,
    counters: Mutex<CoreStatusCounters>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("manager_id", &self.cfg.manager_id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Manager {
    /// Registers (first start) or restores (restart) this manager in the store, reads the
    /// other managers once, leases a first tid block and starts the background tasks. The
    /// manager is ready to serve when this returns.
    ///
    /// Restoring reads every record slot and takes the newest; before anything is served,
    /// every slot is claimed (see [`crate::records`], "Why a stale instance stays fenced
    /// off"), so an older instance still running under this id can no longer publish.
    pub async fn open(
        cfg: ManagerConfig,
        address: String,
        store: StoreClient,
        recovery: Arc<dyn Recovery>,
        metrics: ManagerMetrics,
        health: Health,
    ) -> Result<Arc<Manager>, ManagerError> {
        cfg.validate().map_err(ManagerError::Config)?;
        let core_cfg = CoreConfig {
            manager_id: cfg.manager_id,
            window: cfg.window,
            heartbeat_timeout: cfg.heartbeat_timeout,
            max_batch: cfg.max_batch,
        };
        let mut round = 0;
        let (core, slots) = loop {
            round += 1;
            match claim_slots(&store, core_cfg.clone(), &address).await {
                Ok(claimed) => break claimed,
                Err(ClaimError::Lost) if round < CLAIM_ROUNDS => {
                    tracing::warn!(
                        manager = cfg.manager_id,
                        round,
                        "another instance wrote this manager's state during start-up; reading it again"
                    );
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(round))).await;
                }
                Err(ClaimError::Lost) => return Err(ManagerError::Fenced(cfg.manager_id)),
                Err(ClaimError::Failed(e)) => return Err(e),
            }
        };
        let (stop, _) = watch::channel(false);
        let manager = Arc::new(Manager {
            cfg,
            core: Mutex::new(core),
            store,
            recovery,
            metrics,
            health,
            address,
            flush_wake: Notify::new(),
            group_wake: Notify::new(),
            lease_wake: Notify::new(),
            tids_ready: Notify::new(),
            durable: watch::channel(Durable::default()).0,
            slots: Mutex::new(slots),
            counters: Mutex::new(CoreStatusCounters::default()),
            stop,
            tasks: Mutex::new(Vec::new()),
        });
        // The first record of this incarnation (the claims only copied the old one).
        manager.publish_once(0).await?;
        manager.merge_once().await?;
        manager.lease_until_satisfied().await;
        manager.publish_once(1 % manager.cfg.publish_slots).await?;
        manager.spawn_tasks();
        manager.health.set_ready();
        Ok(manager)
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    /// The manager id.
    pub fn id(&self) -> u64 {
        self.cfg.manager_id
    }

    /// The metrics.
    pub fn metrics(&self) -> &ManagerMetrics {
        &self.metrics
    }

    /// The readiness handle served on /readyz.
    pub fn health(&self) -> &Health {
        &self.health
    }

    fn fatal(&self) -> Option<Arc<str>> {
        self.durable.borrow().fatal.clone()
    }

    /// Begins `count` transactions of `node` sharing one snapshot; waits (up to the start
    /// wait) for a tid block when none is ready.
    pub async fn start_batch(&self, node: u64, count: u32) -> Result<StartGrant, StartError> {
        let deadline = tokio::time::Instant::now() + self.cfg.start_wait;
        loop {
            if let Some(reason) = self.fatal() {
                return Err(StartError::NotServing(reason.to_string()));
            }
            let ready = self.tids_ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let (result, lease) = {
                let mut core = self.core.lock();
                let result = core.start_batch(node, count, Instant::now());
                (result, core.needs_lease(self.cfg.tid_block))
            };
            if lease {
                self.lease_wake.notify_one();
            }
            match result {
                Err(StartError::NoTids) => {
                    if tokio::time::timeout_at(deadline, ready).await.is_err() {
                        return Err(StartError::LeaseTimeout(self.cfg.start_wait));
                    }
                }
                other => return other,
            }
        }
    }

    /// Commits `tid`; returns once the commit is durable in the store.
    pub async fn commit(&self, tid: u64) -> Result<(), FinishError> {
        let (mut commits, _) = self.finish_batch(&[tid], &[]).await?;
        commits
            .pop()
            .unwrap_or(Ok(()))
            .map_err(FinishError::Refused)
    }

    /// Aborts `tid` (its writes must already be undone).
    pub async fn abort(&self, tid: u64) -> Result<(), FinishError> {
        let (_, mut aborts) = self.finish_batch(&[], &[tid]).await?;
        aborts.pop().unwrap_or(Ok(())).map_err(FinishError::Refused)
    }

    /// Commits and aborts many transactions; each gets its own outcome. Returns once every
    /// accepted commit is durable. A tid named twice is refused as a duplicate the second
    /// time.
    pub async fn finish_batch(
        &self,
        commits: &[u64],
        aborts: &[u64],
    ) -> Result<(Vec<Result<(), Refusal>>, Vec<Result<(), Refusal>>), FinishError> {
        if let Some(reason) = self.fatal() {
            return Err(FinishError::NotServing(reason.to_string()));
        }
        let mut seen: HashSet<u64> = HashSet::with_capacity(commits.len() + aborts.len());
        let mut wait = None;
        let (commit_outcomes, abort_outcomes) = {
            let mut core = self.core.lock();
            let commit_outcomes: Vec<Result<(), Refusal>> = commits
                .iter()
                .map(|&tid| {
                    if !seen.insert(tid) {
                        return Err(Refusal::Duplicate(tid));
                    }
                    core.commit(tid).map(|seq| wait = Some(seq))
                })
                .collect();
            let abort_outcomes: Vec<Result<(), Refusal>> = aborts
                .iter()
                .map(|&tid| {
                    if !seen.insert(tid) {
                        return Err(Refusal::Duplicate(tid));
                    }
                    core.abort(tid)
                })
                .collect();
            (commit_outcomes, abort_outcomes)
        };
        for refusal in commit_outcomes
            .iter()
            .chain(abort_outcomes.iter())
            .filter_map(|r| r.as_ref().err())
        {
            self.metrics
                .finish_refusals
                .with_label_values(&[refusal_label(refusal)])
                .inc();
        }
        self.group_wake.notify_waiters();
        if let Some(seq) = wait {
            self.flush_wake.notify_one();
            self.wait_durable(seq).await?;
        }
        Ok((commit_outcomes, abort_outcomes))
    }

    async fn wait_durable(&self, seq: u64) -> Result<(), FinishError> {
        let mut rx = self.durable.subscribe();
        let reached = rx
            .wait_for(|d| d.seq >= seq || d.fatal.is_some())
            .await
            .map(|d| d.fatal.clone());
        match reached {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => Err(FinishError::NotServing(reason.to_string())),
            Err(_) => Err(FinishError::NotServing("manager stopped".into())),
        }
    }

    /// A heartbeat of `node`: refreshes its listed tids, returns those not running here.
    pub fn heartbeat(&self, node: u64, running: &[u64]) -> Vec<u64> {
        self.core.lock().heartbeat(node, running, Instant::now())
    }

    /// Whether `tid` is not finished here (running, committing or recovering).
    pub fn is_running(&self, tid: u64) -> bool {
        self.core.lock().is_running(tid)
    }

    /// The current state, for status RPCs and tests.
    pub fn status(&self) -> CoreStatus {
        self.core.lock().status()
    }

    /// Why the manager does not serve, if it does not.
    pub fn not_ready_reason(&self) -> Option<String> {
        self.fatal().map(|r| r.to_string())
    }

    // ---------------------------------------------------------------------------------
    // Background work
    // ---------------------------------------------------------------------------------

    fn spawn_tasks(self: &Arc<Self>) {
        let mut tasks = self.tasks.lock();
        tasks.push(tokio::spawn(self.clone().publisher()));
        tasks.push(tokio::spawn(self.clone().merger()));
        tasks.push(tokio::spawn(self.clone().leaser()));
        tasks.push(tokio::spawn(self.clone().expirer()));
    }

    /// Resolves once [`Manager::stop`] was called: long-lived sessions end with it, as their
    /// connections would in a crash.
    pub async fn stopped(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Stops the background tasks (the gRPC server is stopped by its owner). Pending commits
    /// are not acknowledged: their callers see the manager as unreachable, as after a crash.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }

    /// Publishes whenever commits or leased blocks wait, and at least every interval (so
    /// the running list, floor and lav proposal others read stay fresh). One store write per
    /// group: commits arriving while the writes are in flight ride the next one. With K
    /// record slots (`--publish-slots`) up to K writes are in flight, one per slot, each
    /// conditional on its slot's previous stamp: the next group goes as soon as a slot is
    /// free instead of waiting for the previous write to return.
    async fn publisher(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut backoff = Duration::from_millis(1);
        let mut free: VecDeque<usize> = (0..self.cfg.publish_slots).collect();
        let mut flights = FuturesUnordered::new();
        loop {
            let done = if free.is_empty() {
                tokio::select! {
                    Some(done) = flights.next() => Some(done),
                    _ = stop.wait_for(|s| *s) => return,
                }
            } else {
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return,
                    Some(done) = flights.next(), if !flights.is_empty() => Some(done),
                    _ = self.flush_wake.notified() => None,
                    _ = tokio::time::sleep(self.cfg.publish_interval) => None,
                }
            };
            if let Some((slot, result)) = done {
                match result {
                    Ok(()) => backoff = Duration::from_millis(1),
                    Err(ManagerError::Fenced(id)) => {
                        tracing::error!(
                            manager = id,
                            "fenced: another instance owns this manager id; stopping"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, slot, "publishing the manager state failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                        self.flush_wake.notify_one();
                    }
                }
                free.push_back(slot);
                self.metrics.publishes_in_flight.set(flights.len() as i64);
                continue;
            }
            // Let the handlers already running on this runtime register their commits
            // first: a larger group per store write, for the cost of a few task switches.
            for _ in 0..GROUP_YIELDS {
                tokio::task::yield_now().await;
            }
            self.gather_group().await;
            let Some(slot) = free.pop_front() else {
                continue;
            };
            match self.prepare_publish() {
                Ok(batch) => flights.push(self.write_publish(slot, batch)),
                Err(_) => return,
            }
            self.metrics.publishes_in_flight.set(flights.len() as i64);
        }
    }

    /// Waits (at most the group wait) until the clients acknowledged by the last publish
    /// have come back with their next commit, while the load consists of short
    /// transactions (see the core's `group` module for why).
    async fn gather_group(&self) {
        if self.cfg.group_wait.is_zero() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.cfg.group_wait;
        let mut waited = false;
        loop {
            let woken = self.group_wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.core.lock().group_waiting_for() == 0 {
                if waited {
                    self.metrics
                        .group_waits
                        .with_label_values(&["complete"])
                        .inc();
                }
                return;
            }
            waited = true;
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                self.metrics
                    .group_waits
                    .with_label_values(&["timeout"])
                    .inc();
                return;
            }
        }
    }

    /// One publish into record slot `slot`, waited for (start-up uses it; the publisher
    /// overlaps [`Manager::write_publish`]s instead).
    async fn publish_once(&self, slot: usize) -> Result<(), ManagerError> {
        let batch = self.prepare_publish()?;
        self.write_publish(slot, batch).await.1
    }

    /// Takes the pending commits and blocks into the next record, unless fenced.
    fn prepare_publish(&self) -> Result<FlushBatch, ManagerError> {
        if self.fatal().is_some() {
            return Err(ManagerError::Fenced(self.cfg.manager_id));
        }
        Ok(self.core.lock().prepare_flush(&self.address, unix_ms()))
    }

    /// Writes a prepared record into `slot` (conditional on that slot's stamp), then makes
    /// its commits — and those of every earlier outstanding publish — visible and
    /// acknowledges them. Returns the slot with the outcome, for the publisher to free it.
    async fn write_publish(
        &self,
        slot: usize,
        batch: FlushBatch,
    ) -> (usize, Result<(), ManagerError>) {
        let expect = self.slots.lock()[slot];
        let value = Bytes::from(batch.state.encode_to_vec());
        let started = Instant::now();
        let key = slot_key(self.cfg.manager_id, slot);
        let written = self.store.put_if(tables::COMMIT, key, value, expect).await;
        self.metrics
            .publish_seconds
            .observe(started.elapsed().as_secs_f64());
        let stamp = match written {
            Ok(CondOutcome::Written { stamp }) => stamp,
            Ok(CondOutcome::Conflict { .. }) | Ok(CondOutcome::Checked) => {
                self.metrics
                    .publish_failures
                    .with_label_values(&["fenced"])
                    .inc();
                self.core.lock().flush_failed(batch);
                self.fence();
                return (slot, Err(ManagerError::Fenced(self.cfg.manager_id)));
            }
            Err(e) if e.is_ambiguous() => {
                self.metrics
                    .publish_failures
                    .with_label_values(&["ambiguous"])
                    .inc();
                match self.resolve_ambiguous_publish(slot, &batch, expect).await {
                    Ok(Some(stamp)) => stamp,
                    Ok(None) => {
                        self.core.lock().flush_failed(batch);
                        return (slot, Err(ManagerError::Store(e)));
                    }
                    Err(err) => {
                        self.core.lock().flush_failed(batch);
                        return (slot, Err(err));
                    }
                }
            }
            Err(e) => {
                self.metrics
                    .publish_failures
                    .with_label_values(&["store"])
                    .inc();
                self.core.lock().flush_failed(batch);
                return (slot, Err(ManagerError::Store(e)));
            }
        };
        self.slots.lock()[slot] = Expect::Stamp(stamp);
        self.core.lock().flush_succeeded(&batch);
        self.durable.send_modify(|d| d.seq = d.seq.max(batch.seq));
        if batch.blocks > 0 {
            self.tids_ready.notify_waiters();
        }
        (slot, Ok(()))
    }

    /// After an ambiguous publish: re-read the slot. Our record there means it was applied
    /// (returns its stamp); the previous stamp still there means it was not (`None`); anything
    /// else means another instance wrote it (fenced).
    async fn resolve_ambiguous_publish(
        &self,
        slot: usize,
        batch: &FlushBatch,
        expect: Expect,
    ) -> Result<Option<u64>, ManagerError> {
        let found = self
            .store
            .get(tables::COMMIT, slot_key(self.cfg.manager_id, slot))
            .await?;
        let Some(found) = found else {
            if expect == Expect::Absent {
                return Ok(None);
            }
            self.fence();
            return Err(ManagerError::Fenced(self.cfg.manager_id));
        };
        if let Ok(state) = ManagerState::decode(found.value.as_ref())
            && state.incarnation == batch.state.incarnation
            && state.seq == batch.state.seq
        {
            return Ok(Some(found.stamp));
        }
        if expect == Expect::Stamp(found.stamp) {
            return Ok(None);
        }
        self.fence();
        Err(ManagerError::Fenced(self.cfg.manager_id))
    }

    fn fence(&self) {
        let reason: Arc<str> = Arc::from(format!(
            "fenced: another instance wrote the state of manager {}",
            self.cfg.manager_id
        ));
        self.health.set_not_ready(reason.to_string());
        self.durable.send_modify(|d| d.fatal = Some(reason.clone()));
        self.tids_ready.notify_waiters();
    }

    /// Every interval: read every manager's published state and merge it.
    async fn merger(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut tick = tokio::time::interval(self.cfg.publish_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.merge_once().await {
                tracing::warn!(error = %e, "merging the other managers' state failed; keeping the last view");
            }
        }
    }

    /// One merge round: every manager's newest record (of its slots). If any record cannot
    /// be read the whole round is skipped: ignoring a manager would ignore its floor and let
    /// the base pass its running transactions.
    async fn merge_once(&self) -> Result<(), ManagerError> {
        let ticket = self.core.lock().merge_start();
        let counter = match read_counter(&self.store).await {
            Ok(counter) => Some(counter),
            Err(e) => {
                tracing::debug!(error = %e, "reading the tid counter failed; merging without it");
                None
            }
        };
        let items = self
            .store
            .scan(
                tables::COMMIT,
                KeyRange::prefix(Bytes::from_static(STATE_PREFIX)),
                MAX_MANAGERS * MAX_PUBLISH_SLOTS,
            )
            .await?;
        let mut states = Vec::with_capacity(items.len());
        for item in items {
            let state =
                ManagerState::decode(item.value.as_ref()).map_err(|e| ManagerError::BadState {
                    manager: 0,
                    message: format!("key {:?}: {e}", item.key),
                })?;
            states.push(state);
        }
        // Each manager's record slots hold its last few publishes: its newest is its state.
        let states = newest_per_manager(states);
        let mut peers = Vec::with_capacity(states.len());
        for state in &states {
            let peer = PeerState::from_state(state).map_err(|e| ManagerError::BadState {
                manager: state.manager_id,
                message: e.to_string(),
            })?;
            peers.push(peer);
        }
        let status = {
            let mut core = self.core.lock();
            core.apply_merge(ticket, counter, &peers);
            core.status()
        };
        self.metrics.observe(&status, &mut self.counters.lock());
        self.flush_wake.notify_one();
        Ok(())
    }

    /// Keeps a spare tid block leased, so starts rarely wait.
    async fn leaser(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = self.lease_wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.publish_interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.lease_until_satisfied().await;
        }
    }

    /// Leases blocks until the core has enough tids in sight. An increment whose outcome is
    /// unknown is simply not used: the block it may have taken is skipped (never issued by
    /// anyone), which is safe; using a block we are not sure we own would not be.
    async fn lease_until_satisfied(&self) {
        let block = self.cfg.tid_block;
        let mut failures = 0u32;
        while self.core.lock().needs_lease(block) && failures < 3 {
            self.core.lock().lease_started();
            let _finished = LeaseGuard(&self.core);
            let leased = self
                .store
                .increment(
                    tables::COMMIT,
                    Bytes::from_static(COUNTER_KEY),
                    block as i64,
                )
                .await;
            match leased {
                Ok((value, _)) if value > 0 && value as u64 >= block => {
                    let end = value as u64;
                    self.core.lock().add_leased(crate::core::TidBlock {
                        start: end - block + 1,
                        end,
                    });
                    self.metrics.leases.with_label_values(&["ok"]).inc();
                    self.flush_wake.notify_one();
                }
                Ok((value, _)) => {
                    tracing::error!(value, "the tid counter holds an impossible value");
                    self.metrics
                        .leases
                        .with_label_values(&["bad_counter"])
                        .inc();
                    failures += 1;
                }
                Err(e) if e.is_ambiguous() => {
                    tracing::warn!(error = %e, "tid lease outcome unknown; skipping that block");
                    self.metrics.leases.with_label_values(&["ambiguous"]).inc();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leasing a tid block failed");
                    self.metrics.leases.with_label_values(&["failed"]).inc();
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Periodically expires tids no heartbeat vouched for, and recovers them.
    async fn expirer(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let period = (self.cfg.heartbeat_timeout / 4)
            .clamp(Duration::from_millis(5), Duration::from_millis(250));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let groups = self.core.lock().expire(Instant::now());
            for group in groups {
                let me = self.clone();
                let handle = tokio::spawn(async move { me.recover_group(group).await });
                self.tasks.lock().push(handle);
            }
            self.tasks.lock().retain(|t| !t.is_finished());
        }
    }

    /// Recovers one group, retrying until recovery succeeds; only then are its tids aborted
    /// (or, for those with a commit flag, committed).
    async fn recover_group(self: Arc<Self>, group: RecoveryGroup) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let request = RecoveryRequest {
                manager_id: self.cfg.manager_id,
                node: group.node,
                tids: group.tids.clone(),
                lav: self.core.lock().lav(),
            };
            tracing::info!(node = ?group.node, tids = group.tids.len(), "recovering transactions of a silent processing node");
            match self.recovery.recover(request).await {
                Ok(report) => {
                    let committed: HashSet<u64> = report.committed.into_iter().collect();
                    let wait = self.core.lock().recovered(&group, &committed);
                    if wait.is_some() {
                        self.flush_wake.notify_one();
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(node = ?group.node, error = %e, "recovery failed; the tids stay recovering and are retried");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Why claiming the record slots at start-up did not succeed.
#[derive(Debug)]
enum ClaimError {
    /// A slot kept changing between our read and our write-back (another instance kept
    /// writing it): start over after a pause.
    Lost,
    /// The store failed otherwise, or a record cannot be decoded.
    Failed(ManagerError),
}

impl From<StoreError> for ClaimError {
    fn from(e: StoreError) -> ClaimError {
        ClaimError::Failed(ManagerError::Store(e))
    }
}

/// Claims every record slot `0..MAX_PUBLISH_SLOTS` of this manager, then builds the core
/// from the newest record (or registers the manager when it has none). Returns the core and
/// what each slot's next write must expect.
///
/// Each slot is read and at once written back verbatim, conditional on the stamp just read
/// (an absent slot gets a copy of slot 0's record; an absent slot 0 means a new manager,
/// and gets its registration record, which is then its first durable publish). A conflict
/// means an older instance wrote the slot in between: read it again and retry. Once a slot
/// is claimed, an older instance can no longer write it (stamps are never reused), so it is
/// fenced at its next write there and the remaining slots stop changing; when every slot is
/// claimed, what was written back is the final content of every slot, and its newest record
/// holds every commit an older instance acknowledged. See [`crate::records`] for why copies
/// (not the new incarnation's state) are written.
async fn claim_slots(
    store: &StoreClient,
    core_cfg: CoreConfig,
    address: &str,
) -> Result<(Core, Vec<Expect>), ClaimError> {
    let id = core_cfg.manager_id;
    let bad = |message: String| {
        ClaimError::Failed(ManagerError::BadState {
            manager: id,
            message,
        })
    };
    let mut slots = Vec::with_capacity(MAX_PUBLISH_SLOTS);
    let mut records: Vec<(ManagerState, Bytes)> = Vec::with_capacity(MAX_PUBLISH_SLOTS);
    let mut registration: Option<(Core, FlushBatch)> = None;
    for slot in 0..MAX_PUBLISH_SLOTS {
        let key = slot_key(id, slot);
        let mut attempts = 0;
        let stamp = loop {
            attempts += 1;
            if attempts > CLAIM_ATTEMPTS_PER_SLOT {
                return Err(ClaimError::Lost);
            }
            let found = store.get(tables::COMMIT, key.clone()).await?;
            let mut fresh = None;
            let (value, expect) = match (found, records.first()) {
                (Some(found), _) => (found.value, Expect::Stamp(found.stamp)),
                (None, Some((_, first))) => (first.clone(), Expect::Absent),
                (None, None) => {
                    let counter = read_counter(store).await?;
                    let mut core = Core::new(core_cfg.clone(), counter);
                    let batch = core.prepare_flush(address, unix_ms());
                    let value = Bytes::from(batch.state.encode_to_vec());
                    fresh = Some((core, batch));
                    (value, Expect::Absent)
                }
            };
            match store
                .put_if(tables::COMMIT, key.clone(), value.clone(), expect)
                .await
            {
                Ok(CondOutcome::Written { stamp }) => {
                    let state = ManagerState::decode(value.as_ref())
                        .map_err(|e| bad(format!("slot {slot}: {e}")))?;
                    if fresh.is_some() {
                        registration = fresh;
                    }
                    records.push((state, value));
                    break stamp;
                }
                // Written by someone else since our read, or unknown whether our write was
                // applied: read the slot again.
                Ok(CondOutcome::Conflict { .. }) | Ok(CondOutcome::Checked) => {}
                Err(e) if e.is_ambiguous() => {}
                Err(e) => return Err(e.into()),
            }
        };
        slots.push(Expect::Stamp(stamp));
    }
    if let Some((mut core, batch)) = registration {
        tracing::info!(manager = id, "registered commit manager");
        core.flush_succeeded(&batch);
        return Ok((core, slots));
    }
    let Some((state, _)) = records.iter().max_by_key(|(state, _)| record_order(state)) else {
        return Err(bad("no record claimed".into()));
    };
    let mut core = Core::new(core_cfg, 0);
    core.restore(state, Instant::now())
        .map_err(|e| bad(e.to_string()))?;
    tracing::info!(
        manager = id,
        incarnation = core.incarnation(),
        restored_seq = state.seq,
        reserved = state.reserved,
        base = state.base,
        running = core.status().running,
        "restored commit manager state from its newest record"
    );
    Ok((core, slots))
}

impl Drop for Manager {
    fn drop(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

/// Marks the lease under way as finished when dropped (after its block was added).
struct LeaseGuard<'a>(&'a Mutex<Core>);

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().lease_finished();
    }
}

fn refusal_label(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::UnknownTid(_) => "unknown_tid",
        Refusal::Finished(_) => "finished",
        Refusal::AlreadyCommitted(_) => "already_committed",
        Refusal::AlreadyAborted(_) => "already_aborted",
        Refusal::Recovering(_) => "recovering",
        Refusal::Duplicate(_) => "duplicate",
    }
}

/// The tid counter's value (0 when it was never incremented).
async fn read_counter(store: &StoreClient) -> Result<u64, StoreError> {
    let found = store
        .get(tables::COMMIT, Bytes::from_static(COUNTER_KEY))
        .await?;
    Ok(found
        .and_then(|v| <[u8; 8]>::try_from(v.value.as_ref()).ok())
        .map_or(0, |b| i64::from_le_bytes(b).max(0) as u64))
}
