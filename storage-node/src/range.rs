//! One range's replica on this node: its records, its log and its replication progress.
//!
//! All of a range's state sits behind one lock (`Range::state`); the functions here run
//! under that lock and never block or await. Waiting for replication happens outside, on
//! the range's watch channels.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;

use bytes::Bytes;
use parking_lot::Mutex;
use shmdb_placement::{NodeId, RangeId};
use shmdb_proto::storage::{self as pb, log_entry::Effect};
use tokio::sync::watch;

use crate::memory::{MemoryBudget, record_cost};
use crate::stamp;

/// Most log entries a primary keeps for lagging followers.
pub const MAX_LOG_ENTRIES: u64 = 200_000;

/// A stored value and the stamp of the write that put it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The value bytes (shared, so snapshots and logs do not copy them).
    pub value: Bytes,
    /// Never reused for this key.
    pub stamp: u64,
}

/// What [`RangeState::scan_matching`] found.
#[derive(Debug, Default)]
pub struct ScanMatches {
    /// The accepted records, in key order.
    pub items: Vec<(Vec<u8>, Record)>,
    /// How many records were examined.
    pub examined: usize,
    /// The first key not examined, when the scan stopped before the end of the interval.
    pub next: Option<Vec<u8>>,
}

/// This node's part in a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Orders, applies and replicates every write; serves every read.
    Primary,
    /// Applies the primary's log; acknowledges every write.
    Backup,
    /// Receives a copy but is not yet in the acknowledgement set.
    Learner,
}

/// Whether the replica can be trusted and used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A consistent copy; a primary in this state serves requests.
    Serving,
    /// No trustworthy copy (new replica, or a deposed primary that may hold writes no one
    /// else has): serves nothing until a snapshot from the primary replaces it.
    NeedsSnapshot,
    /// The primary is handing the range over (graceful primary change or split): it takes
    /// no new writes and lets the replicas catch up.
    Quiescing,
    /// Gone from this node (split into children, or removed by the map).
    Retired,
}

/// What a conditional operation expects at its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// Exactly this stamp.
    Stamp(u64),
    /// No record.
    Absent,
}

impl Expectation {
    /// Decodes the wire form; a missing expectation is malformed input.
    pub fn from_proto(expect: Option<&pb::Expect>) -> Option<Self> {
        match expect?.kind? {
            pb::expect::Kind::Stamp(stamp) => Some(Expectation::Stamp(stamp)),
            pb::expect::Kind::Absent(_) => Some(Expectation::Absent),
        }
    }
}

/// The commit watermark that writers and readers wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitSignal {
    /// Every entry up to here is applied by every replica in the acknowledgement set.
    pub committed: u64,
    /// Raised whenever uncommitted entries are given up (fencing); a waiter that started in
    /// an older generation must report failure even if `committed` later passes its lsn.
    pub fence_gen: u64,
    /// The commit watermark of the history the latest fence ended. A waiter from the
    /// generation just before it whose entry is at or below this was committed — it only
    /// woke after the fence (a replica retired right after its last writes committed) —
    /// and must not be reported as possibly lost.
    pub committed_at_fence: u64,
}

impl CommitSignal {
    /// Whether an entry at `lsn`, written in fence generation `fence_gen`, is committed.
    pub fn commits(&self, lsn: u64, fence_gen: u64) -> bool {
        (self.fence_gen == fence_gen && self.committed >= lsn)
            || (self.fence_gen == fence_gen + 1 && self.committed_at_fence >= lsn)
    }
}

/// The log watermark that replication tasks wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogSignal {
    /// The newest lsn in the log.
    pub applied: u64,
    /// Raised on every configuration change (map install, role change, fencing, retirement)
    /// so that replication tasks re-check whether they should still run.
    pub config_gen: u64,
}

/// One range's replica, shared between request handlers and replication tasks.
#[derive(Debug)]
pub struct Range {
    /// The range id (fixed for the object's life).
    pub id: RangeId,
    /// Inclusive start range key (fixed: a split creates new range objects).
    pub start: Vec<u8>,
    /// Exclusive end range key, `None` = unbounded (fixed like `start`).
    pub end: Option<Vec<u8>>,
    /// All mutable state.
    pub state: Mutex<RangeState>,
    /// Commit watermark.
    pub commit_tx: watch::Sender<CommitSignal>,
    /// Log watermark.
    pub log_tx: watch::Sender<LogSignal>,
    /// Woken on every follower acknowledgement. A hand-over needs each backup's own
    /// position: the commit watermark may already cover entries that a backup promoted from
    /// learner never received (they were committed without it while it was a learner).
    pub acked: tokio::sync::Notify,
}

/// Mutable state of a range replica.
#[derive(Debug)]
pub struct RangeState {
    /// Range id.
    pub id: RangeId,
    /// Inclusive start range key.
    pub start: Vec<u8>,
    /// Exclusive end range key (`None` = unbounded).
    pub end: Option<Vec<u8>>,
    /// Current epoch.
    pub epoch: u64,
    /// This node's role.
    pub role: Role,
    /// The primary this replica follows (itself when primary).
    pub primary: NodeId,
    /// Replica list from the map, primary first.
    pub replicas: Vec<NodeId>,
    /// Learners from the map.
    pub learners: Vec<NodeId>,
    /// The records, keyed by range key.
    pub data: BTreeMap<Vec<u8>, Record>,
    /// Newest lsn applied here.
    pub applied_lsn: u64,
    /// Newest lsn known to be applied by every replica.
    pub committed_lsn: u64,
    /// Epoch of the entry at `applied_lsn`.
    pub last_entry_epoch: u64,
    /// Log entries with lsn in `(log_base, applied_lsn]`, kept for followers that lag.
    pub log: VecDeque<pb::LogEntry>,
    /// The lsn just before the first entry of `log`.
    pub log_base: u64,
    /// Whether the replica is usable.
    pub status: Status,
    /// On the primary: per follower, the lsn it has acknowledged.
    pub followers: HashMap<NodeId, u64>,
    /// Bytes charged for this range's records.
    pub bytes: u64,
    /// Operations served (for the op-rate report).
    pub ops: u64,
    /// Why the replica was fenced, for reports and logs.
    pub fenced_reason: Option<String>,
    /// On the primary: followers that have a replication task running.
    pub tasks: HashSet<NodeId>,
    /// On the primary: log positions held for followers receiving a snapshot.
    pub pins: HashMap<NodeId, u64>,
    /// The split key last reported and the applied lsn it was computed at (see
    /// [`RangeState::split_hint`]).
    pub split_hint: Option<(u64, Vec<u8>)>,
}

/// The result of one operation, before it is turned into the wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A record was found.
    Found(Record),
    /// No record at the key.
    Absent,
    /// A write was applied with this stamp.
    Written(u64),
    /// A conditional operation's expectation failed; the current stamp (0 = absent).
    Conflict(u64),
    /// A counter's new value.
    Counter(i64, u64),
    /// A check held.
    Checked,
}

/// Raised when a write does not fit in the memory budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    /// Bytes the write needed.
    pub needed: u64,
}

impl Range {
    /// Whether `range_key` belongs to this range; needs no lock.
    pub fn contains(&self, range_key: &[u8]) -> bool {
        range_key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| range_key < e)
    }

    /// A new range object around `state`.
    pub fn new(state: RangeState) -> Self {
        let commit = CommitSignal {
            committed: state.committed_lsn,
            fence_gen: 0,
            committed_at_fence: 0,
        };
        let log = LogSignal {
            applied: state.applied_lsn,
            config_gen: 0,
        };
        Range {
            id: state.id,
            start: state.start.clone(),
            end: state.end.clone(),
            state: Mutex::new(state),
            commit_tx: watch::channel(commit).0,
            log_tx: watch::channel(log).0,
            acked: tokio::sync::Notify::new(),
        }
    }

    /// Publishes the state's watermarks after a change made under the lock.
    pub fn publish(&self, state: &RangeState) {
        // A retired replica's watermarks are final. After a split its state is an empty
        // placeholder: publishing that would take the commit watermark back to 0, and a
        // write committed just before the split whose batch publishes late would then wait
        // for a commit that already happened.
        if state.status == Status::Retired {
            return;
        }
        self.log_tx.send_if_modified(|s| {
            let changed = s.applied != state.applied_lsn;
            s.applied = state.applied_lsn;
            changed
        });
        self.commit_tx.send_if_modified(|s| {
            let changed = s.committed != state.committed_lsn;
            s.committed = state.committed_lsn;
            changed
        });
    }

    /// Wakes replication tasks to re-read the configuration.
    pub fn bump_config(&self) {
        self.log_tx.send_modify(|s| s.config_gen += 1);
    }

    /// Fails every waiter on an uncommitted entry (the entries will not be acknowledged);
    /// `state` is the replica's state as the fence finds it (its commit watermark is kept).
    pub fn bump_fence(&self, state: &RangeState) {
        self.commit_tx.send_modify(|s| {
            s.fence_gen += 1;
            s.committed_at_fence = state.committed_lsn;
        });
    }
}

impl RangeState {
    /// A replica with no records.
    pub fn empty(
        id: RangeId,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        epoch: u64,
        role: Role,
        status: Status,
    ) -> Self {
        RangeState {
            id,
            start,
            end,
            epoch,
            role,
            primary: 0,
            replicas: Vec::new(),
            learners: Vec::new(),
            data: BTreeMap::new(),
            applied_lsn: 0,
            committed_lsn: 0,
            last_entry_epoch: 0,
            log: VecDeque::new(),
            log_base: 0,
            status,
            followers: HashMap::new(),
            bytes: 0,
            ops: 0,
            fenced_reason: None,
            tasks: HashSet::new(),
            pins: HashMap::new(),
            split_hint: None,
        }
    }

    /// Whether `range_key` belongs to this range.
    pub fn contains(&self, range_key: &[u8]) -> bool {
        range_key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| range_key < e)
    }

    /// Whether this replica may serve client requests.
    pub fn serves(&self) -> bool {
        self.role == Role::Primary && self.status == Status::Serving
    }

    /// The record at a key.
    pub fn get(&self, range_key: &[u8]) -> Option<&Record> {
        self.data.get(range_key)
    }

    /// The key's current stamp, 0 when absent.
    pub fn stamp_of(&self, range_key: &[u8]) -> u64 {
        self.data.get(range_key).map_or(0, |r| r.stamp)
    }

    /// Whether the key matches an expectation.
    pub fn matches(&self, range_key: &[u8], expect: Expectation) -> bool {
        match (self.data.get(range_key), expect) {
            (None, Expectation::Absent) => true,
            (Some(record), Expectation::Stamp(stamp)) => record.stamp == stamp,
            _ => false,
        }
    }

    /// The lsn of the write that produced the key's current state, so a reader can wait
    /// until it is replicated. Absence is always committed state unless a delete is pending,
    /// which the caller covers by waiting for `applied_lsn` on conditional operations.
    pub fn observed_lsn(&self, range_key: &[u8]) -> u64 {
        self.data.get(range_key).map_or(0, |r| stamp::lsn(r.stamp))
    }

    /// Applies a write as primary: assigns the next lsn and stamp, changes the records,
    /// appends the log entry. `value == None` deletes. Fails without any change if the
    /// memory budget cannot take the growth.
    pub fn write(
        &mut self,
        range_key: &[u8],
        value: Option<Bytes>,
        budget: &MemoryBudget,
    ) -> Result<u64, OverBudget> {
        let old_cost = self
            .data
            .get(range_key)
            .map_or(0, |r| record_cost(range_key.len(), r.value.len()));
        let new_cost = value
            .as_ref()
            .map_or(0, |v| record_cost(range_key.len(), v.len()));
        if new_cost > old_cost && !budget.try_charge(new_cost - old_cost) {
            return Err(OverBudget {
                needed: new_cost - old_cost,
            });
        }
        let lsn = self.applied_lsn + 1;
        let stamp = stamp::make(self.epoch, lsn);
        // With no one to replicate to, the entry would be dropped at once: skip building it.
        let logged = !self.unreplicated();
        let effect = match value {
            Some(value) => {
                self.data.insert(
                    range_key.to_vec(),
                    Record {
                        value: value.clone(),
                        stamp,
                    },
                );
                logged.then(|| {
                    Effect::Put(pb::PutEffect {
                        key: Bytes::copy_from_slice(range_key),
                        value,
                        stamp,
                    })
                })
            }
            None => {
                self.data.remove(range_key);
                logged.then(|| Effect::Delete(Bytes::copy_from_slice(range_key)))
            }
        };
        if old_cost > new_cost {
            budget.release(old_cost - new_cost);
        }
        self.bytes = self.bytes + new_cost - old_cost;
        self.push_log(pb::LogEntry {
            lsn,
            epoch: self.epoch,
            effect,
        });
        Ok(stamp)
    }

    /// A primary with no backups or learners: its writes are committed when applied.
    fn unreplicated(&self) -> bool {
        self.role == Role::Primary && self.replicas.len() <= 1 && self.learners.is_empty()
    }

    /// Appends a split entry as primary; the split itself happens once it is committed.
    pub fn append_split(&mut self, split: pb::SplitEffect) -> u64 {
        let lsn = self.applied_lsn + 1;
        self.push_log(pb::LogEntry {
            lsn,
            epoch: self.epoch,
            effect: Some(Effect::Split(split)),
        });
        lsn
    }

    /// Appends an entry the primary created (`write`, split) or received (backups).
    fn push_log(&mut self, entry: pb::LogEntry) {
        self.applied_lsn = entry.lsn;
        self.last_entry_epoch = entry.epoch;
        if self.unreplicated() {
            // Nobody to replicate to: the entry is committed at once and need not be kept.
            self.committed_lsn = self.applied_lsn;
            self.log_base = self.applied_lsn;
            self.log.clear();
        } else {
            self.log.push_back(entry);
        }
    }

    /// Applies a primary's log entry on a backup or learner. A split entry is only logged
    /// here; the caller performs the split. Returns the records' memory change.
    pub fn apply_entry(&mut self, entry: pb::LogEntry, budget: &MemoryBudget) {
        match &entry.effect {
            Some(Effect::Put(put)) => {
                let key = put.key.to_vec();
                let new_cost = record_cost(key.len(), put.value.len());
                let old = self.data.insert(
                    key,
                    Record {
                        value: put.value.clone(),
                        stamp: put.stamp,
                    },
                );
                let old_cost = old.map_or(0, |r| record_cost(put.key.len(), r.value.len()));
                self.account(budget, old_cost, new_cost);
            }
            Some(Effect::Delete(key)) => {
                if let Some(old) = self.data.remove(key.as_ref()) {
                    self.account(budget, record_cost(key.len(), old.value.len()), 0);
                }
            }
            Some(Effect::Split(_)) | None => {}
        }
        self.applied_lsn = entry.lsn;
        self.last_entry_epoch = entry.epoch;
        self.log.push_back(entry);
    }

    fn account(&mut self, budget: &MemoryBudget, old_cost: u64, new_cost: u64) {
        if new_cost >= old_cost {
            budget.force_charge(new_cost - old_cost);
        } else {
            budget.release(old_cost - new_cost);
        }
        self.bytes = self.bytes + new_cost - old_cost;
    }

    /// Moves the commit watermark and drops log entries every follower has.
    pub fn advance_committed(&mut self, committed: u64) {
        let committed = committed.min(self.applied_lsn);
        if committed > self.committed_lsn {
            self.committed_lsn = committed;
        }
    }

    /// Drops log entries at or below `upto` (never past the applied lsn).
    pub fn truncate_log(&mut self, upto: u64) {
        let upto = upto.min(self.applied_lsn);
        while let Some(front) = self.log.front() {
            if front.lsn > upto {
                break;
            }
            self.log.pop_front();
        }
        if upto > self.log_base {
            self.log_base = upto;
        }
    }

    /// On the primary: the commit watermark implied by the followers' acknowledgements.
    pub fn recompute_committed(&mut self) {
        let mut committed = self.applied_lsn;
        for backup in self.replicas.iter().skip(1) {
            committed = committed.min(self.followers.get(backup).copied().unwrap_or(0));
        }
        self.advance_committed(committed);
        let mut keep_from = self.committed_lsn;
        for learner in &self.learners {
            keep_from = keep_from.min(self.followers.get(learner).copied().unwrap_or(0));
        }
        for pin in self.pins.values() {
            keep_from = keep_from.min(*pin);
        }
        // A follower that stops answering must not make the log grow without bound: past
        // the cap it is sent a snapshot instead.
        keep_from = keep_from.max(self.applied_lsn.saturating_sub(MAX_LOG_ENTRIES));
        self.truncate_log(keep_from);
    }

    /// Log entries after `after`, at most `max`, if the log still holds them.
    pub fn entries_after(&self, after: u64, max: usize) -> Option<Vec<pb::LogEntry>> {
        if after < self.log_base {
            return None;
        }
        let skip = (after - self.log_base) as usize;
        Some(self.log.iter().skip(skip).take(max).cloned().collect())
    }

    /// The epoch of the log entry at `lsn`, if the log holds it.
    pub fn entry_epoch(&self, lsn: u64) -> Option<u64> {
        if lsn == self.applied_lsn {
            return Some(self.last_entry_epoch);
        }
        if lsn <= self.log_base {
            return None;
        }
        self.log
            .get((lsn - self.log_base - 1) as usize)
            .map(|e| e.epoch)
    }

    /// Records in `[from, to)` of range keys, at most `limit`.
    pub fn scan(&self, from: &[u8], to: Option<&[u8]>, limit: usize) -> Vec<(Vec<u8>, Record)> {
        let upper = match to {
            Some(to) => Bound::Excluded(to),
            None => Bound::Unbounded,
        };
        self.data
            .range::<[u8], _>((Bound::Included(from), upper))
            .take(limit)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    /// Like [`RangeState::scan`], but only the records whose value `keep` accepts, after
    /// examining at most `examine` records. Also answers the first key not examined when it
    /// stopped early (limit reached or examination budget spent), where a scan continues.
    pub fn scan_matching(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
        examine: usize,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> ScanMatches {
        let upper = match to {
            Some(to) => Bound::Excluded(to),
            None => Bound::Unbounded,
        };
        let mut found = ScanMatches::default();
        for (key, record) in self.data.range::<[u8], _>((Bound::Included(from), upper)) {
            if found.items.len() == limit || found.examined == examine {
                found.next = Some(key.clone());
                break;
            }
            found.examined += 1;
            if keep(&record.value) {
                found.items.push((key.clone(), record.clone()));
            }
        }
        found
    }

    /// A split key for reports, recomputed only after the range changed by about an eighth
    /// of its keys (at least 1024 writes). Finding the median walks half the B-tree under
    /// the range's lock, and the placement manager asks for it several times a second: on
    /// a range of 270,000 keys that walk cost a tenth of a storage node's CPU under TPC-C,
    /// while a split point a few writes stale splits the range just as well.
    pub fn split_hint(&mut self) -> Option<Vec<u8>> {
        let fresh_for = (self.data.len() as u64 / 8).max(1024);
        if let Some((lsn, key)) = &self.split_hint
            && self.applied_lsn.saturating_sub(*lsn) < fresh_for
            && self.data.contains_key(key)
        {
            return Some(key.clone());
        }
        let key = self.median_key()?;
        self.split_hint = Some((self.applied_lsn, key.clone()));
        Some(key)
    }

    /// The key at the middle of the range by count, where a split would halve it.
    pub fn median_key(&self) -> Option<Vec<u8>> {
        if self.data.len() < 2 {
            return None;
        }
        self.data.keys().nth(self.data.len() / 2).cloned()
    }

    /// Replaces the records with a snapshot taken at `lsn` by the primary.
    pub fn install_snapshot(
        &mut self,
        data: BTreeMap<Vec<u8>, Record>,
        bytes: u64,
        lsn: u64,
        epoch: u64,
        budget: &MemoryBudget,
    ) {
        budget.release(self.bytes);
        budget.force_charge(bytes);
        self.split_hint = None;
        self.data = data;
        self.bytes = bytes;
        self.applied_lsn = lsn;
        self.committed_lsn = lsn;
        self.last_entry_epoch = epoch;
        self.log.clear();
        self.log_base = lsn;
        self.epoch = self.epoch.max(epoch);
        self.status = Status::Serving;
        self.fenced_reason = None;
    }

    /// Splits off the right half `[at, end)` into a new state with id `right_id`; this state
    /// keeps `[start, at)` as `left_id`. Both continue at `new_epoch` from the current lsn.
    pub fn split_off(
        &mut self,
        at: &[u8],
        left_id: RangeId,
        right_id: RangeId,
        new_epoch: u64,
    ) -> RangeState {
        self.split_hint = None;
        let right_data = self.data.split_off(at);
        let right_bytes: u64 = right_data
            .iter()
            .map(|(k, r)| record_cost(k.len(), r.value.len()))
            .sum();
        let mut right = RangeState::empty(
            right_id,
            at.to_vec(),
            self.end.take(),
            new_epoch,
            self.role,
            self.status,
        );
        self.end = Some(at.to_vec());
        self.id = left_id;
        self.epoch = new_epoch;
        self.bytes -= right_bytes;
        self.log.clear();
        self.log_base = self.applied_lsn;
        self.committed_lsn = self.applied_lsn;
        self.followers.clear();
        self.tasks.clear();
        self.pins.clear();
        right.data = right_data;
        right.bytes = right_bytes;
        right.primary = self.primary;
        right.replicas = self.replicas.clone();
        right.learners = self.learners.clone();
        right.applied_lsn = self.applied_lsn;
        right.committed_lsn = self.applied_lsn;
        right.log_base = self.applied_lsn;
        right.last_entry_epoch = self.last_entry_epoch;
        right
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> RangeState {
        let mut s = RangeState::empty(1, Vec::new(), None, 3, Role::Primary, Status::Serving);
        s.replicas = vec![1];
        s
    }

    #[test]
    fn a_write_committed_before_a_fence_stays_committed_after_it() {
        let budget = MemoryBudget::new(0);
        let mut s = primary();
        s.replicas = vec![1, 2];
        let range = Range::new(RangeState::empty(
            1,
            Vec::new(),
            None,
            3,
            Role::Primary,
            Status::Serving,
        ));
        let generation = range.commit_tx.borrow().fence_gen;
        for _ in 0..3 {
            assert!(
                s.write(b"k", Some(Bytes::from_static(b"v")), &budget)
                    .is_ok()
            );
        }
        s.followers.insert(2, 2);
        s.recompute_committed();
        assert_eq!(s.committed_lsn, 2);
        range.publish(&s);
        // The replica is retired before the waiters of lsn 2 and 3 run.
        range.bump_fence(&s);
        let signal = *range.commit_tx.borrow();
        assert!(signal.commits(2, generation), "committed before the fence");
        assert!(!signal.commits(3, generation), "never acknowledged");
        // A second fence: nothing from two generations back can be vouched for.
        range.bump_fence(&s);
        let signal = *range.commit_tx.borrow();
        assert!(!signal.commits(2, generation));
        assert!(signal.commits(2, generation + 1));
    }

    #[test]
    fn a_retired_replica_keeps_its_published_watermarks() {
        let budget = MemoryBudget::new(0);
        let range = Range::new(primary());
        {
            let mut state = range.state.lock();
            assert!(
                state
                    .write(b"k", Some(Bytes::from_static(b"v")), &budget)
                    .is_ok()
            );
            range.publish(&state);
            // Split away: the parent's state becomes an empty, retired placeholder.
            *state = RangeState::empty(1, Vec::new(), None, 3, Role::Primary, Status::Retired);
            range.publish(&state);
        }
        assert_eq!(range.commit_tx.borrow().committed, 1);
        assert_eq!(range.log_tx.borrow().applied, 1);
    }

    #[test]
    fn write_assigns_growing_stamps_and_charges_memory() {
        let budget = MemoryBudget::new(0);
        let mut s = primary();
        let a = s.write(b"k", Some(Bytes::from_static(b"v1")), &budget);
        let b = s.write(b"k", Some(Bytes::from_static(b"v22")), &budget);
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("writes failed")
        };
        assert!(b > a);
        assert_eq!(stamp::lsn(b), 2);
        assert_eq!(budget.used(), record_cost(1, 3));
        assert_eq!(s.bytes, budget.used());
        assert!(s.write(b"k", None, &budget).is_ok());
        assert_eq!(budget.used(), 0);
        assert!(s.get(b"k").is_none());
        // Single replica: committed at once, no log kept.
        assert_eq!(s.committed_lsn, 3);
        assert!(s.log.is_empty());
    }

    #[test]
    fn over_budget_write_changes_nothing() {
        let budget = MemoryBudget::new(100);
        let mut s = primary();
        assert!(
            s.write(b"k", Some(Bytes::from(vec![0u8; 20])), &budget)
                .is_ok()
        );
        let before = s.applied_lsn;
        assert!(
            s.write(b"k2", Some(Bytes::from(vec![0u8; 20])), &budget)
                .is_err()
        );
        assert_eq!(s.applied_lsn, before);
        assert!(s.get(b"k2").is_none());
    }

    #[test]
    fn split_divides_records_and_bytes() {
        let budget = MemoryBudget::new(0);
        let mut s = primary();
        for k in [b"a", b"b", b"c", b"d"] {
            assert!(s.write(k, Some(Bytes::from_static(b"x")), &budget).is_ok());
        }
        let total = s.bytes;
        let right = s.split_off(b"c", 10, 11, 4);
        assert_eq!(s.data.len(), 2);
        assert_eq!(right.data.len(), 2);
        assert_eq!(s.bytes + right.bytes, total);
        assert_eq!(s.end.as_deref(), Some(&b"c"[..]));
        assert_eq!(right.start, b"c".to_vec());
        assert_eq!((s.id, right.id, s.epoch, right.epoch), (10, 11, 4, 4));
        assert_eq!(right.applied_lsn, 4);
    }

    #[test]
    fn split_hint_is_reused_until_the_range_changed_enough() {
        let budget = MemoryBudget::new(0);
        let mut s = primary();
        let key = |i: u32| format!("k{i:06}").into_bytes();
        for i in 0..4000 {
            assert!(
                s.write(&key(i), Some(Bytes::from_static(b"x")), &budget)
                    .is_ok()
            );
        }
        let first = s.split_hint();
        assert_eq!(first, s.median_key());
        // A few hundred writes at the end move the true median, not the hint.
        for i in 4000..4500 {
            assert!(
                s.write(&key(i), Some(Bytes::from_static(b"x")), &budget)
                    .is_ok()
            );
        }
        assert_ne!(s.median_key(), first);
        assert_eq!(s.split_hint(), first);
        // Past the threshold (1024 writes here) it is computed again.
        for i in 4500..5200 {
            assert!(
                s.write(&key(i), Some(Bytes::from_static(b"x")), &budget)
                    .is_ok()
            );
        }
        assert_eq!(s.split_hint(), s.median_key());
        // A hint whose key is gone, or a split, is never served.
        let hint = s.split_hint().unwrap_or_default();
        assert!(s.write(&hint, None, &budget).is_ok());
        assert_ne!(s.split_hint(), Some(hint));
        let _right = s.split_off(&key(2000), 10, 11, 4);
        assert_eq!(s.split_hint(), s.median_key());
    }
}
