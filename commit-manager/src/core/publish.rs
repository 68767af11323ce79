//! Publishing this manager's state, merging the others', and restoring after a restart.

use std::time::Instant;

use shmdb_proto::commit::{ManagerState, TidBlock as PbBlock};
use shmdb_snapshot::{DecodeError, Snapshot};

use super::{ClusterView, Core, PeerSummary, Phase, TidBlock, Txn};
use crate::bits::CommitBits;

/// Own committed tids kept in the published record below the point where every manager's
/// base has passed them (1 KB of bitset): a commit whose answer was lost in a crash and is
/// retried at the restarted manager still gets a definite "already committed" as long as
/// fewer than this many tids were committed in between.
const COMMITTED_RETENTION: u64 = 8192;

/// What a merge captured before reading the counter and the other managers (see
/// [`Core::merge_start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeTicket {
    reserved: u64,
    proposal: u64,
    lease_attempts: u64,
    lease_in_flight: bool,
}

/// One publish in flight: the record to write and what becomes true once it is durable.
#[derive(Debug, Clone)]
pub struct FlushBatch {
    /// Commits acknowledged once this publish is durable wait for this sequence number.
    pub seq: u64,
    /// The commits taken into this publish (earlier ones' commits are in its record too).
    pub commits: Vec<u64>,
    /// How many leased blocks it records (issued from once it is durable).
    pub blocks: usize,
    /// The record.
    pub state: ManagerState,
}

/// What the core remembers of a prepared publish until it, or a later one, is durable.
///
/// Why kept here and not only in the [`FlushBatch`] the writer holds: with several record
/// slots, publish N+1 may be durable before N returns (or after N failed). Its record holds
/// N's commits too, so they must become visible and acknowledged with it; the core finds
/// them here.
#[derive(Debug)]
pub(crate) struct Flight {
    seq: u64,
    /// The commits taken into it.
    commits: Vec<u64>,
    /// The leased blocks its record names (the reserving list when it was prepared).
    blocks: Vec<TidBlock>,
    /// Its write failed (not applied); a later publish must carry its commits.
    failed: bool,
}

/// Another manager's published state, decoded for merging.
#[derive(Debug, Clone)]
pub struct PeerState {
    /// Its id.
    pub manager_id: u64,
    /// Every tid of it below this has finished; it issues nothing below it again.
    pub floor: u64,
    /// A base it used (all tids ≤ it finished).
    pub base: u64,
    /// The smallest base among its running transactions.
    pub local_lav: u64,
    /// The lav it proposed (also a valid base: all tids ≤ it finished).
    pub lav_proposal: u64,
    /// Its committed tids above its prune point.
    pub committed: Snapshot,
    /// Its publish sequence number.
    pub seq: u64,
}

impl PeerState {
    /// Decodes a published record.
    pub fn from_state(state: &ManagerState) -> Result<PeerState, DecodeError> {
        Ok(PeerState {
            manager_id: state.manager_id,
            floor: state.floor,
            base: state.base,
            local_lav: state.local_lav,
            lav_proposal: state.lav_proposal,
            committed: Snapshot::decode(&state.committed)?,
            seq: state.seq,
        })
    }
}

impl Core {
    /// Takes the pending commits and leased blocks into a record to publish. The caller
    /// writes it and then calls [`Core::flush_succeeded`] or [`Core::flush_failed`]. Several
    /// may be in flight at once (one per record slot); each record is complete, so it makes
    /// every earlier one's commits durable too.
    pub fn prepare_flush(&mut self, address: &str, unix_ms: u64) -> FlushBatch {
        let seq = self.flush_seq;
        self.flush_seq += 1;
        let commits = std::mem::take(&mut self.pending);
        for &tid in &commits {
            self.own_committed.set(tid);
        }
        let blocks = self.reserving.len();
        let floor = self.own_floor();
        let base = self.refresh_base();
        let local_lav = self.local_lav();
        self.state_seq += 1;
        let mut running_tids = Vec::with_capacity(self.txns.len());
        let mut running_nodes = Vec::with_capacity(self.txns.len());
        for tid in &self.order {
            if let Some(txn) = self.txns.get(tid) {
                running_tids.push(*tid);
                running_nodes.push(txn.node.unwrap_or(0));
            }
        }
        let published_blocks = self
            .history
            .iter()
            .filter(|b| b.end >= floor)
            .chain(self.reserving.iter())
            .map(|b| PbBlock {
                start: b.start,
                end: b.end,
            })
            .collect();
        let committed = self
            .own_committed
            .published_from(self.own_committed.start().max(1))
            .to_bytes();
        let state = ManagerState {
            manager_id: self.cfg.manager_id,
            incarnation: self.incarnation,
            seq: self.state_seq,
            reserved: self.reserved,
            blocks: published_blocks,
            issued: self.issued,
            floor,
            base,
            local_lav,
            lav_proposal: self.proposal,
            committed: committed.into(),
            running_tids,
            running_nodes,
            address: address.to_owned(),
            published_unix_ms: unix_ms,
        };
        self.flights.push_back(Flight {
            seq,
            commits: commits.clone(),
            blocks: self.reserving.clone(),
            failed: false,
        });
        FlushBatch {
            seq,
            commits,
            blocks,
            state,
        }
    }

    /// The publish is durable: its commits, and those of every earlier publish still
    /// outstanding (its record contains them), become visible; the blocks it names may be
    /// issued from. A publish that returns after a later one was already durable changes
    /// nothing: everything it carried was applied with that later one.
    pub fn flush_succeeded(&mut self, batch: &FlushBatch) {
        self.stats.publishes += 1;
        if batch.seq <= self.durable_seq {
            return;
        }
        self.durable_seq = batch.seq;
        let mut acked = 0u64;
        let mut changed = false;
        let mut named = Vec::new();
        while self.flights.front().is_some_and(|f| f.seq <= batch.seq) {
            let Some(flight) = self.flights.pop_front() else {
                break;
            };
            acked += flight.commits.len() as u64;
            for tid in flight.commits {
                if self.txns.remove(&tid).is_some() {
                    self.stats.commits += 1;
                }
                changed |= self.all_committed.set(tid);
            }
            // Each flight names the reserving list of its time; the last one (this batch's)
            // names every block of the earlier ones that is not active yet.
            named = flight.blocks;
        }
        self.group.durable(acked, self.issued);
        if changed {
            self.commits_version += 1;
        }
        if !named.is_empty() {
            let (durable, still): (Vec<TidBlock>, Vec<TidBlock>) = self
                .reserving
                .iter()
                .partition(|block| named.contains(block));
            self.reserving = still;
            for block in durable {
                if self.active.is_empty() {
                    self.next_tid = block.start;
                }
                self.active.push_back(block);
                self.history.push_back(block);
            }
        }
        self.published_base = self.published_base.max(batch.state.base);
        self.published_proposal = batch.state.lav_proposal;
        // Own commits at or below every published base (ours included, which the next
        // publish carries again) are visible to everyone through the base: stop publishing.
        let prune = self
            .view
            .base_min
            .min(self.published_base)
            .saturating_sub(COMMITTED_RETENTION);
        if prune > self.prune_point {
            self.prune_point = prune;
            self.own_committed.prune_below(prune.saturating_add(1));
            self.known_from = self.known_from.max(self.own_committed.start());
        }
        let keep_from = self.known_from.min(self.own_floor());
        while self.history.front().is_some_and(|b| b.end < keep_from) {
            self.history.pop_front();
        }
    }

    /// The publish failed (it was not applied, or it is unknown whether it was and the caller
    /// will retry). Its commits stay outstanding: the next publish that becomes durable —
    /// one already in flight, prepared after it, or a new one — makes them durable, since
    /// its record contains them (sequence numbers are never reused, so commits waiting for
    /// this one are acknowledged by any later one).
    pub fn flush_failed(&mut self, batch: FlushBatch) {
        if let Some(flight) = self.flights.iter_mut().find(|f| f.seq == batch.seq) {
            flight.failed = true;
        }
    }

    /// Whether anything waits for a publish: commits not yet taken into one, leased blocks
    /// not yet durable, or commits of a failed publish that no later publish in flight
    /// carries.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
            || !self.reserving.is_empty()
            || self.flights.back().is_some_and(|f| f.failed)
    }

    /// Publishes prepared and not yet made durable (by themselves or a later one).
    pub fn publishes_outstanding(&self) -> usize {
        self.flights.len()
    }

    /// The sequence number of the publish that will make current pending commits durable.
    pub fn next_flush_seq(&self) -> u64 {
        self.flush_seq
    }

    /// What a merge must capture before it reads the tid counter and the other managers.
    pub fn merge_start(&self) -> MergeTicket {
        MergeTicket {
            reserved: self.reserved,
            proposal: self.published_proposal,
            lease_attempts: self.lease_attempts,
            lease_in_flight: self.lease_in_flight,
        }
    }

    /// Applies what a merge read: the tid counter (`None` if it could not be read) and every
    /// manager's published state, both read after `ticket` was taken.
    ///
    /// The counter caps the base (a manager that registers later leases above it) and, when
    /// no lease of ours was under way meanwhile, lets an idle manager move its floor past
    /// blocks others leased: a manager that has started nothing since the last merge drops
    /// the unissued rest of its block once others have leased beyond it, so that it does not
    /// hold every other manager's base at its old block.
    pub fn apply_merge(&mut self, ticket: MergeTicket, counter: Option<u64>, peers: &[PeerState]) {
        let cap = ticket.reserved.max(counter.unwrap_or(0));
        let proposal_before = ticket.proposal;
        let quiet = !ticket.lease_in_flight && self.lease_attempts == ticket.lease_attempts;
        if let Some(counter) = counter.filter(|_| quiet) {
            self.known_counter = self.known_counter.max(counter);
            if self.starts_since_merge == 0
                && self.reserving.is_empty()
                && !self.active.is_empty()
                && counter > self.reserved
            {
                self.active.clear();
            }
        }
        self.starts_since_merge = 0;
        let me = self.cfg.manager_id;
        let others = peers.iter().filter(|p| p.manager_id != me);
        let mut view = ClusterView {
            floor_min: u64::MAX,
            base_max: 0,
            base_min: u64::MAX,
            lav_min: u64::MAX,
            cap,
            peers: Vec::new(),
        };
        for peer in others.clone() {
            view.floor_min = view.floor_min.min(peer.floor);
            view.base_max = view.base_max.max(peer.base).max(peer.lav_proposal);
            view.base_min = view.base_min.min(peer.base);
            view.lav_min = view.lav_min.min(peer.local_lav);
            view.peers.push(PeerSummary {
                manager_id: peer.manager_id,
                floor: peer.floor,
                base: peer.base,
                local_lav: peer.local_lav,
                seq: peer.seq,
            });
        }
        self.view = view;
        let base = self.refresh_base();
        // Keep the window anchored at the base before merging: peers' sets may start far
        // above an empty window's start.
        self.all_committed.prune_below(base.saturating_add(1));
        let mut changed = false;
        for peer in others {
            changed |= self.all_committed.merge(&peer.committed);
        }
        if changed {
            self.commits_version += 1;
        }
        // Hand out only a lav that was published before this read and that every manager
        // read now still allows; propose the current minimum for the next round.
        let now_min = self.local_lav().min(self.view.lav_min);
        self.lav = self.lav.max(proposal_before.min(now_min));
        self.proposal = now_min;
        self.stats.merges += 1;
    }

    /// Rebuilds the state of a restarted manager from its newest published record (the
    /// newest of its record slots, see [`crate::records`]): the same
    /// committed set, no tid of its old blocks handed out again, and every tid that may have
    /// been running (listed, or issued after the last publish) kept as running until a
    /// heartbeat claims it or recovery ends it.
    pub fn restore(&mut self, state: &ManagerState, now: Instant) -> Result<(), DecodeError> {
        let committed = Snapshot::decode(&state.committed)?;
        let known_from = committed.base().saturating_add(1);
        let mut own = CommitBits::new(known_from);
        own.merge(&committed);
        self.own_committed = own.clone();
        self.all_committed = own;
        self.known_from = known_from;
        self.prune_point = committed.base();
        self.commits_version += 1;
        self.incarnation = state.incarnation + 1;
        self.state_seq = 0;
        self.flights.clear();
        self.reserved = self.reserved.max(state.reserved);
        self.issued = self.reserved;
        self.base = self.base.max(state.base);
        self.published_base = state.base;
        self.published_proposal = state.lav_proposal;
        self.proposal = state.lav_proposal.min(state.local_lav);
        self.active.clear();
        self.reserving.clear();
        self.history = state
            .blocks
            .iter()
            .map(|b| TidBlock {
                start: b.start,
                end: b.end,
            })
            .collect();
        let listed: std::collections::HashMap<u64, u64> = state
            .running_tids
            .iter()
            .copied()
            .zip(state.running_nodes.iter().copied())
            .collect();
        self.txns.clear();
        self.order.clear();
        let mut blocks: Vec<TidBlock> = self.history.iter().copied().collect();
        blocks.sort_by_key(|b| b.start);
        for block in blocks {
            for tid in block.start.max(state.floor)..=block.end {
                if self.own_committed.contains(tid) {
                    continue;
                }
                let node = match listed.get(&tid) {
                    Some(&node) => Some(node).filter(|&n| n != 0),
                    None if tid > state.issued => None,
                    // Issued before the last publish, not running then, not committed:
                    // aborted.
                    None => continue,
                };
                self.txns.insert(
                    tid,
                    Txn {
                        node,
                        base: state.local_lav,
                        confirmed: now,
                        phase: Phase::Running,
                    },
                );
                self.order.push_back(tid);
            }
        }
        self.cached = None;
        Ok(())
    }

    /// The incarnation this instance publishes under.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
}
