//! Placement planning: turns the partition map and the cluster state into ordered steps.
//!
//! The planner is deliberately a pure function: the placement manager (in `shmdb up` or in
//! the operator) gathers the cluster state, calls [`plan`], and hands the steps to an executor
//! that performs each step's node-side actions over RPC and then installs the map that
//! [`apply`] computes for that step. Keeping decisions and effects apart lets property tests
//! check the decisions exhaustively, and lets the local cluster and the operator share them.
//!
//! A plan is ordered by urgency: promotions for ranges whose primary died, removal of dead
//! replicas, restoring the replication factor, draining, trimming surplus copies, splits, and
//! finally balancing replicas and primaries. Every step is valid against the map produced by
//! the steps before it, so any prefix of a plan may be executed and the rest re-planned.

mod apply;
mod build;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use shmdb_proto::storage as pb;

use crate::map::{NodeId, PartitionMap, RangeId};

pub use apply::{PlanError, apply, apply_plan};

/// What the placement manager knows about one range, gathered from the replicas' reports.
///
/// Sizes drive split and balance decisions; `applied_lsn` decides which backup is promoted
/// when a primary dies (the most advanced one loses nothing that any survivor has).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RangeLoad {
    /// Bytes of live data in the range.
    pub bytes: u64,
    /// Number of keys in the range.
    pub keys: u64,
    /// Operations per second, exponentially averaged.
    pub op_rate: f64,
    /// A key near the middle of the range, where a split would halve it; `None` when the
    /// primary did not report one (or the range was just split and must be measured again).
    pub split_key: Option<Vec<u8>>,
    /// The log position each replica reports having applied; a missing node counts as 0.
    pub applied_lsn: BTreeMap<NodeId, u64>,
}

impl RangeLoad {
    /// Folds one node's report of this range into the load.
    ///
    /// Sizes come from the primary's report, because it has applied every acknowledged
    /// write; a backup's report only fills them in while nothing better is known (so that a
    /// range with a dead primary still has a size for balancing). A fenced copy may have
    /// diverged, so its position is not recorded and it is never preferred for promotion.
    pub fn record(&mut self, node: NodeId, stats: &pb::RangeStats) {
        if stats.fenced {
            return;
        }
        self.applied_lsn.insert(node, stats.applied_lsn);
        let from_primary = stats.role == pb::ReplicaRole::Primary as i32;
        if from_primary || (self.bytes == 0 && self.keys == 0) {
            self.bytes = stats.bytes;
            self.keys = stats.keys;
            self.op_rate = stats.op_rate;
            self.split_key = (!stats.split_key.is_empty()).then(|| stats.split_key.to_vec());
        }
    }

    /// The load each half is assumed to carry right after a split, until the halves report.
    ///
    /// The split key is cleared so that a plan never splits a range it has just created:
    /// splits converge, one level per round of reports.
    pub fn halved(&self) -> RangeLoad {
        RangeLoad {
            bytes: self.bytes / 2,
            keys: self.keys / 2,
            op_rate: self.op_rate / 2.0,
            split_key: None,
            applied_lsn: self.applied_lsn.clone(),
        }
    }
}

/// Everything the planner looks at: the current map and what is known about the nodes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterState {
    /// The partition map currently installed.
    pub map: PartitionMap,
    /// Nodes that are reachable and healthy now; every other node of the map is treated as
    /// dead, and its copies as gone.
    pub live: BTreeSet<NodeId>,
    /// Nodes marked for removal: they must end up holding nothing, without any range ever
    /// losing its last up-to-date copy on the way.
    pub draining: BTreeSet<NodeId>,
    /// Per-range sizes and replica positions; a missing range counts as empty.
    pub loads: BTreeMap<RangeId, RangeLoad>,
}

/// Knobs of the planner, from the database's range settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlannerConfig {
    /// A range larger than this (in bytes) is split at its reported split key; 0 never splits.
    pub split_bytes: u64,
    /// The most steps one plan may hold, so one round of execution stays short and the
    /// manager re-plans with fresh reports; 0 means unlimited. Urgent steps come first, so
    /// a cap never starves recovery.
    pub max_steps: usize,
}

/// One change of the partition map, together with the node-side work it stands for.
///
/// The executor performs the node-side actions of a step, then installs the map [`apply`]
/// returns for it; each variant documents what that map looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The primary of `range` is dead: `new_primary` (a live backup, the most advanced one)
    /// becomes primary at a new epoch, and the old primary leaves the replica list. Other dead
    /// replicas and learners of the range follow as `RemoveReplica` steps, because a map alone
    /// cannot tell which nodes are dead.
    PromoteBackup {
        /// The range whose primary is lost.
        range: RangeId,
        /// The backup that takes over.
        new_primary: NodeId,
    },
    /// `node` stops holding `range`: a dead, draining or surplus backup, or any learner.
    /// Removing a backup raises the epoch; removing a learner does not, since learners are
    /// outside the acknowledgement set.
    RemoveReplica {
        /// The range.
        range: RangeId,
        /// The backup or learner that goes.
        node: NodeId,
    },
    /// `node` starts receiving a copy of `range` (snapshot, then the log tail) without being
    /// in the acknowledgement set yet; the epoch stays.
    AddLearner {
        /// The range.
        range: RangeId,
        /// The node that receives the copy.
        node: NodeId,
    },
    /// The learner `node` has caught up and joins the replicas (at the end) at a new epoch.
    /// The executor waits for the catch-up before installing the map.
    PromoteLearner {
        /// The range.
        range: RangeId,
        /// The learner that becomes a backup.
        node: NodeId,
    },
    /// The live backup `to` becomes the primary of `range` at a new epoch, e.g. before its
    /// old primary is drained or moved away.
    TransferPrimary {
        /// The range.
        range: RangeId,
        /// The backup that becomes primary.
        to: NodeId,
    },
    /// `range` becomes `left = [start, at)` and `right = [at, end)`, both held by the same
    /// replicas and learners at the parent's epoch + 1; the ids are fresh, never reused.
    Split {
        /// The range that is split.
        range: RangeId,
        /// The first key of the right half; strictly inside the range.
        at: Vec<u8>,
        /// Id of the left half.
        left: RangeId,
        /// Id of the right half.
        right: RangeId,
    },
}

impl Step {
    /// The range the step changes (the parent, for a split), so an executor can serialize
    /// the steps of one range and run the others in parallel.
    pub fn range(&self) -> RangeId {
        match self {
            Step::PromoteBackup { range, .. }
            | Step::RemoveReplica { range, .. }
            | Step::AddLearner { range, .. }
            | Step::PromoteLearner { range, .. }
            | Step::TransferPrimary { range, .. }
            | Step::Split { range, .. } => *range,
        }
    }
}

impl fmt::Display for Step {
    /// One line per step, for logs and events.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::PromoteBackup { range, new_primary } => {
                write!(f, "range {range}: promote backup {new_primary} to primary")
            }
            Step::RemoveReplica { range, node } => write!(f, "range {range}: remove node {node}"),
            Step::AddLearner { range, node } => {
                write!(f, "range {range}: add learner on node {node}")
            }
            Step::PromoteLearner { range, node } => {
                write!(f, "range {range}: promote learner {node} to backup")
            }
            Step::TransferPrimary { range, to } => {
                write!(f, "range {range}: transfer primary to node {to}")
            }
            Step::Split {
                range,
                at,
                left,
                right,
            } => write!(
                f,
                "range {range}: split at {} into {left} and {right}",
                hex(at)
            ),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The result of planning: what to do, and what cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Steps in execution order; each is valid against the map the previous ones produce.
    pub steps: Vec<Step>,
    /// Ranges with no live replica: nothing can restore them from the cluster, so they are
    /// left untouched (their nodes may come back) and reported for an operator to see.
    pub lost: Vec<RangeId>,
}

/// Plans the steps that take the cluster from its current map to a healthy, balanced one.
///
/// Deterministic and free of I/O, so it can be re-run at any time (e.g. after each executed
/// prefix) and tested exhaustively. Planning again on the map the full plan produces, with
/// the same nodes, yields nothing (splits converge because fresh halves have no split key).
/// A map that does not validate yields an empty plan: nothing sound can be derived from it.
pub fn plan(state: &ClusterState, config: &PlannerConfig) -> Plan {
    build::plan(state, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(role: pb::ReplicaRole, lsn: u64, bytes: u64) -> pb::RangeStats {
        pb::RangeStats {
            role: role as i32,
            applied_lsn: lsn,
            bytes,
            keys: bytes / 10,
            split_key: b"mid".to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn reports_fold_into_a_load() {
        let mut load = RangeLoad::default();
        load.record(2, &stats(pb::ReplicaRole::Backup, 5, 90));
        assert_eq!(load.bytes, 90, "a backup's size is better than none");
        load.record(1, &stats(pb::ReplicaRole::Primary, 7, 100));
        load.record(3, &stats(pb::ReplicaRole::Backup, 6, 80));
        assert_eq!(load.bytes, 100, "the primary's size wins");
        assert_eq!(load.split_key.as_deref(), Some(&b"mid"[..]));
        let mut fenced = stats(pb::ReplicaRole::Backup, 50, 1);
        fenced.fenced = true;
        load.record(4, &fenced);
        assert_eq!(load.applied_lsn, [(1, 7), (2, 5), (3, 6)].into());
        let half = load.halved();
        assert_eq!((half.bytes, half.keys, half.split_key), (50, 5, None));
    }

    #[test]
    fn steps_name_their_range() {
        let step = Step::Split {
            range: 4,
            at: vec![0, 0xab],
            left: 5,
            right: 6,
        };
        assert_eq!(step.range(), 4);
        assert_eq!(step.to_string(), "range 4: split at 00ab into 5 and 6");
    }
}
