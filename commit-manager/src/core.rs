//! The commit manager's state machine: tids, running transactions, committed sets, base,
//! lav and the window — synchronous, I/O-free, and cheap per start and commit.
//!
//! Everything that talks to the store (leasing blocks, publishing, merging) lives in
//! [`crate::manager`]; it feeds this state machine with what it learned and takes from it
//! what must be written. Keeping the core free of I/O is what lets one core do millions of
//! start/commit pairs per second and lets unit tests drive every rule directly.
//!
//! The rules, with the names used in the code (see also the crate documentation):
//! - *own floor*: every tid this manager issued below it has finished, and it never issues a
//!   tid below it again — `min(oldest unfinished own tid, next tid it could issue)`.
//! - *base*: `min(own floor − 1, every other manager's published floor − 1, cap)`, raised to
//!   any base another manager published (those are facts: all tids ≤ it finished), never
//!   lowered. `cap` is this manager's reserved ceiling when it last read the others: a
//!   manager that registers later leases only above it.
//! - *lav*: the min of every manager's `local_lav` (smallest base among its running
//!   transactions), handed out only after it was published as a proposal and a later read
//!   of every manager confirmed it — so a manager that registers in between raises its bases
//!   to it before starting anything.

mod finish;
mod group;
mod heartbeat;
mod publish;
mod start;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shmdb_snapshot::Snapshot;

use crate::bits::CommitBits;

pub use heartbeat::RecoveryGroup;
use publish::Flight;
pub use publish::{FlushBatch, MergeTicket, PeerState};
pub use start::StartGrant;

/// A block of tids `[start, end]` leased from the store's counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TidBlock {
    /// First tid of the block.
    pub start: u64,
    /// Last tid of the block (inclusive).
    pub end: u64,
}

impl TidBlock {
    fn contains(&self, tid: u64) -> bool {
        self.start <= tid && tid <= self.end
    }
}

/// Settings of the state machine (a subset of [`crate::ManagerConfig`]).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// This manager's id.
    pub manager_id: u64,
    /// Largest distance between the next tid and the base before starts are refused.
    pub window: u64,
    /// A running tid not listed in a heartbeat for this long is recovered and aborted.
    pub heartbeat_timeout: Duration,
    /// Largest `count` of one start batch.
    pub max_batch: u32,
}

/// An immutable snapshot shared by every start that got it, with its encoding made once.
///
/// Why: a start must not copy a bitset; all starts between two changes of the committed set
/// or the base get the same `Arc`, and the gRPC layer encodes it once for all of them.
#[derive(Debug)]
pub struct SharedSnapshot {
    snapshot: Snapshot,
    encoded: OnceLock<Bytes>,
}

impl SharedSnapshot {
    fn new(snapshot: Snapshot) -> SharedSnapshot {
        SharedSnapshot {
            snapshot,
            encoded: OnceLock::new(),
        }
    }

    /// The descriptor.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The descriptor's encoding, made on first use and shared afterwards.
    pub fn encoded(&self) -> Bytes {
        self.encoded
            .get_or_init(|| Bytes::from(self.snapshot.to_bytes()))
            .clone()
    }
}

/// Where a transaction is in its life at this manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Started (or restored after a restart) and not finished.
    Running,
    /// Commit requested; becomes committed when the next publish is durable.
    Committing,
    /// Its node stopped heartbeating; recovery is reverting its writes.
    Recovering,
}

/// A running transaction of this manager.
#[derive(Debug, Clone)]
pub(crate) struct Txn {
    /// The processing node running it; `None` for a tid restored after a restart whose node
    /// was not yet published (no heartbeat has claimed it since).
    pub(crate) node: Option<u64>,
    /// The base of its snapshot (a lower bound for tids restored after a restart).
    pub(crate) base: u64,
    /// When it was started or last listed in a heartbeat of its node.
    pub(crate) confirmed: Instant,
    pub(crate) phase: Phase,
}

/// When a processing node was last heard from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeLiveness {
    /// Its last start or heartbeat.
    pub(crate) last_heard: Instant,
    /// Its last heartbeat, if it ever sent one.
    pub(crate) last_heartbeat: Option<Instant>,
}

/// Hashes tids by one multiplication: tids are dense integers, so SipHash buys nothing and
/// costs a noticeable share of a start/commit pair.
#[derive(Default, Clone, Copy)]
pub(crate) struct TidHasher(u64);

impl Hasher for TidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type TidMap<V> = HashMap<u64, V, BuildHasherDefault<TidHasher>>;

/// What other managers published, as of the last merge.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterView {
    /// Smallest published floor of the other managers (`u64::MAX` when there are none).
    pub(crate) floor_min: u64,
    /// Largest base or lav proposal any manager published (all tids ≤ it finished).
    pub(crate) base_max: u64,
    /// Smallest published base of the other managers (`u64::MAX` when none): own committed
    /// tids at or below it and below our own published base need not be published any more.
    pub(crate) base_min: u64,
    /// Smallest published local lav of the other managers (`u64::MAX` when none).
    pub(crate) lav_min: u64,
    /// Our reserved ceiling when the last merge began: managers not seen by it lease above.
    pub(crate) cap: u64,
    /// The other managers, for status.
    pub(crate) peers: Vec<PeerSummary>,
}

/// One other manager as of the last merge, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSummary {
    /// Its id.
    pub manager_id: u64,
    /// Its published floor.
    pub floor: u64,
    /// Its published base.
    pub base: u64,
    /// Its published local lav.
    pub local_lav: u64,
    /// Its publish sequence number.
    pub seq: u64,
}

/// Counters kept by the core (the service mirrors them into Prometheus).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Transactions started.
    pub starts: u64,
    /// Transactions whose commit became durable.
    pub commits: u64,
    /// Transactions aborted by their node.
    pub aborts: u64,
    /// Transactions aborted after recovery.
    pub recovered_aborts: u64,
    /// Transactions found committed by recovery.
    pub recovered_commits: u64,
    /// Starts refused because the window was full.
    pub window_refusals: u64,
    /// Merge rounds applied.
    pub merges: u64,
    /// Publishes that became durable.
    pub publishes: u64,
}

/// A point-in-time view of the core, for status RPCs, metrics and tests.
#[derive(Debug, Clone)]
pub struct CoreStatus {
    /// This manager's id.
    pub manager_id: u64,
    /// The next tid a start would get (0 while no block is ready).
    pub next_tid: u64,
    /// The highest tid handed out.
    pub issued: u64,
    /// The base a start would get now.
    pub base: u64,
    /// The lav a start would get now.
    pub lav: u64,
    /// Transactions not finished (running, committing or recovering).
    pub running: u64,
    /// The configured window.
    pub window: u64,
    /// Encoded size of the snapshot a start would get now.
    pub snapshot_bytes: u64,
    /// Counters.
    pub stats: CoreStats,
    /// The other managers as of the last merge.
    pub peers: Vec<PeerSummary>,
}

/// The state machine. See the module documentation for the rules.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    /// Durable blocks to issue from; `next_tid` lies in the front one.
    active: VecDeque<TidBlock>,
    next_tid: u64,
    /// Leased blocks not yet recorded in a durable publish (never issued from before).
    reserving: Vec<TidBlock>,
    /// The highest tid of any block this manager leased (or the counter value it registered
    /// at): every tid it may issue later is above it or in `active`/`reserving`.
    reserved: u64,
    /// The highest tid-counter value read while no lease of ours was under way: with no
    /// block held, every future own tid is above it.
    known_counter: u64,
    /// Leases begun, and whether one is under way (see [`Core::lease_started`]).
    lease_attempts: u64,
    lease_in_flight: bool,
    /// Starts since the last merge (an idle manager gives up its unissued block).
    starts_since_merge: u64,
    /// Own blocks that may still matter (end ≥ own floor or ≥ committed prune point).
    history: VecDeque<TidBlock>,
    /// The highest tid handed out.
    issued: u64,
    txns: TidMap<Txn>,
    /// Processing nodes heard from (by a start or a heartbeat), for expiry.
    nodes: TidMap<NodeLiveness>,
    /// Own unfinished tids in issue order; finished ones are dropped lazily from the front.
    order: VecDeque<u64>,
    /// Commits waiting for the next publish.
    pending: Vec<u64>,
    /// The largest start batch that found too few tids since the last lease (leases cover it).
    wanted: u64,
    /// Sequence number the next publish will have; a commit is durable once a publish with
    /// this or a later sequence number is (every record contains all earlier ones' commits).
    flush_seq: u64,
    /// The highest sequence number of a publish known durable.
    durable_seq: u64,
    /// Publishes prepared and not yet made durable by themselves or a later one, in sequence
    /// order (several are in flight when the manager writes more than one record slot).
    flights: VecDeque<Flight>,
    /// Own committed tids (what this manager publishes).
    own_committed: CommitBits,
    /// Own and merged committed tids above the base (what snapshots are cut from).
    all_committed: CommitBits,
    /// Bumped whenever `all_committed` changes, to invalidate the cached snapshot.
    commits_version: u64,
    base: u64,
    view: ClusterView,
    lav: u64,
    /// The lav proposal the next publish carries.
    proposal: u64,
    /// The proposal carried by the last durable publish.
    published_proposal: u64,
    /// The base carried by the last durable publish.
    published_base: u64,
    /// Own committed tids ≤ this are no longer published.
    prune_point: u64,
    /// Below this tid the outcome of own tids is no longer known (committed bits pruned).
    known_from: u64,
    incarnation: u64,
    state_seq: u64,
    cached: Option<(u64, u64, Arc<SharedSnapshot>)>,
    stats: CoreStats,
    /// Fresh transactions, for the publisher's group wait.
    group: group::GroupGauge,
}

impl Core {
    /// A manager registering for the first time; `counter` is the tid counter's value read
    /// before registering (it will lease only above it).
    pub fn new(cfg: CoreConfig, counter: u64) -> Core {
        Core {
            cfg,
            active: VecDeque::new(),
            next_tid: 0,
            reserving: Vec::new(),
            reserved: counter,
            known_counter: counter,
            lease_attempts: 0,
            lease_in_flight: false,
            starts_since_merge: 0,
            history: VecDeque::new(),
            issued: counter,
            txns: TidMap::default(),
            nodes: TidMap::default(),
            order: VecDeque::new(),
            pending: Vec::new(),
            wanted: 0,
            flush_seq: 1,
            durable_seq: 0,
            flights: VecDeque::new(),
            own_committed: CommitBits::new(counter.saturating_add(1)),
            all_committed: CommitBits::new(0),
            commits_version: 0,
            base: 0,
            view: ClusterView {
                floor_min: u64::MAX,
                base_max: 0,
                base_min: u64::MAX,
                lav_min: u64::MAX,
                cap: 0,
                peers: Vec::new(),
            },
            lav: 0,
            proposal: 0,
            published_proposal: 0,
            published_base: 0,
            prune_point: counter,
            known_from: counter.saturating_add(1),
            incarnation: 1,
            state_seq: 0,
            cached: None,
            stats: CoreStats::default(),
            group: group::GroupGauge::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// The next tid this manager could hand out, were a block ready: every future own tid
    /// is at least this.
    fn next_unissued(&self) -> u64 {
        if !self.active.is_empty() {
            return self.next_tid;
        }
        self.reserving
            .iter()
            .map(|b| b.start)
            .min()
            .unwrap_or(self.reserved.max(self.known_counter).saturating_add(1))
    }

    /// Drops finished tids from the front of `order`; returns the oldest unfinished one.
    fn oldest_running(&mut self) -> Option<u64> {
        while let Some(&tid) = self.order.front() {
            if self.txns.contains_key(&tid) {
                return Some(tid);
            }
            self.order.pop_front();
        }
        None
    }

    /// Every own tid below it has finished and no own tid below it will be issued again.
    pub(crate) fn own_floor(&mut self) -> u64 {
        let next = self.next_unissued();
        match self.oldest_running() {
            Some(tid) => tid.min(next),
            None => next,
        }
    }

    /// Recomputes the base from the own floor and the cluster view (never lowering it).
    pub(crate) fn refresh_base(&mut self) -> u64 {
        let own = self.own_floor();
        let computed = own
            .saturating_sub(1)
            .min(self.view.floor_min.saturating_sub(1))
            .min(self.view.cap);
        let base = computed.max(self.view.base_max).max(self.base);
        if base != self.base {
            self.base = base;
            self.all_committed.prune_below(base.saturating_add(1));
        }
        base
    }

    /// The smallest base among own unfinished transactions, or the base when none run.
    pub(crate) fn local_lav(&mut self) -> u64 {
        let base = self.refresh_base();
        match self.oldest_running() {
            Some(tid) => self.txns.get(&tid).map_or(base, |t| t.base.min(base)),
            None => base,
        }
    }

    /// The snapshot a start gets now, shared with every start until the base or the
    /// committed set changes.
    pub fn snapshot(&mut self) -> Arc<SharedSnapshot> {
        let base = self.refresh_base();
        if let Some((b, v, snap)) = &self.cached
            && *b == base
            && *v == self.commits_version
        {
            return snap.clone();
        }
        let snap = Arc::new(SharedSnapshot::new(self.all_committed.snapshot_above(base)));
        self.cached = Some((base, self.commits_version, snap.clone()));
        snap
    }

    /// The lav handed out with starts.
    pub fn lav(&self) -> u64 {
        self.lav
    }

    /// Whether another block should be leased now: fewer tids in sight than one block (or
    /// than the last start batch that found too few), so starts rarely wait for a lease —
    /// and few tids are left behind for recovery when the manager crashes.
    pub fn needs_lease(&self, block: u64) -> bool {
        let left = self.tids_left()
            + self
                .reserving
                .iter()
                .map(|b| b.end - b.start + 1)
                .sum::<u64>();
        left < block.max(1).max(self.wanted)
    }

    /// Notes that a lease (counter increment) begins: until [`Core::lease_finished`], a
    /// counter value read concurrently must not move the floor (our block may lie below it).
    pub fn lease_started(&mut self) {
        self.lease_attempts += 1;
        self.lease_in_flight = true;
    }

    /// Notes that the lease under way ended (its block, if any, was added).
    pub fn lease_finished(&mut self) {
        self.lease_in_flight = false;
    }

    /// Records a freshly leased block; it is issued from only after the next durable publish
    /// names it, so a restart can never hand its tids out again.
    pub fn add_leased(&mut self, block: TidBlock) {
        self.reserved = self.reserved.max(block.end);
        self.reserving.push(block);
    }

    /// Whether a transaction is known (any phase), for tests and the service.
    pub fn is_running(&self, tid: u64) -> bool {
        self.txns.contains_key(&tid)
    }

    /// Counters.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// A point-in-time view for status and metrics.
    pub fn status(&mut self) -> CoreStatus {
        let base = self.refresh_base();
        let snapshot_bytes = self.snapshot().snapshot().encoded_len() as u64;
        CoreStatus {
            manager_id: self.cfg.manager_id,
            next_tid: if self.active.is_empty() {
                0
            } else {
                self.next_tid
            },
            issued: self.issued,
            base,
            lav: self.lav,
            running: self.txns.len() as u64,
            window: self.cfg.window,
            snapshot_bytes,
            stats: self.stats.clone(),
            peers: self.view.peers.clone(),
        }
    }

    /// Who keeps the base down, for the window-full error.
    fn base_holder(&mut self) -> String {
        let own = self.own_floor();
        if own.saturating_sub(1) <= self.view.floor_min.saturating_sub(1) {
            if let Some(tid) = self.oldest_running()
                && let Some(txn) = self.txns.get(&tid)
            {
                let node = txn.node.map_or_else(
                    || "an unknown processing node".to_owned(),
                    |n| format!("processing node {n}"),
                );
                return format!(
                    "transaction {tid} of {node} (phase {:?}, last heard of {:.1} s ago) holds the base",
                    txn.phase,
                    txn.confirmed.elapsed().as_secs_f64()
                );
            }
            return "this manager's own floor holds the base".to_owned();
        }
        match self.view.peers.iter().min_by_key(|p| p.floor) {
            Some(peer) => format!(
                "an old transaction at commit manager {} (floor {}) holds the base",
                peer.manager_id, peer.floor
            ),
            None => "the cluster view holds the base".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
