//! The map after a step: the single definition of what each step does to the partition map.

use crate::map::{MapError, NodeId, PartitionMap, RangeDesc, RangeId};

use super::Step;

/// A step that cannot be applied to the map it was given.
///
/// Typed so that an executor can tell a stale plan (the map moved on underneath it: re-plan)
/// from a planner bug, and so tests can assert the exact reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The step names a range the map does not have (e.g. already split).
    #[error("unknown range {0}")]
    UnknownRange(RangeId),
    /// The step adds a node the map does not know.
    #[error("range {range}: unknown node {node}")]
    UnknownNode {
        /// The range of the step.
        range: RangeId,
        /// The node missing from the map.
        node: NodeId,
    },
    /// The step removes, promotes or transfers to a node that holds no copy of the range.
    #[error("range {range}: node {node} holds no copy")]
    NotInRange {
        /// The range of the step.
        range: RangeId,
        /// The node that is not a replica or learner.
        node: NodeId,
    },
    /// A learner would be added on a node that already holds or receives the range.
    #[error("range {range}: node {node} already holds a copy")]
    AlreadyInRange {
        /// The range of the step.
        range: RangeId,
        /// The node already involved.
        node: NodeId,
    },
    /// The step would leave the range without any replica.
    #[error("range {range}: node {node} is its last replica")]
    LastReplica {
        /// The range of the step.
        range: RangeId,
        /// Its only replica.
        node: NodeId,
    },
    /// The step removes the primary; the primary must be transferred away first.
    #[error("range {range}: node {node} is the primary and cannot be removed")]
    RemovePrimary {
        /// The range of the step.
        range: RangeId,
        /// Its primary.
        node: NodeId,
    },
    /// A promotion or transfer names the node that is already the primary.
    #[error("range {range}: node {node} is already the primary")]
    AlreadyPrimary {
        /// The range of the step.
        range: RangeId,
        /// Its primary.
        node: NodeId,
    },
    /// A backup promotion or primary transfer names a node that is only a learner: it is
    /// not up to date, so it may not serve.
    #[error("range {range}: node {node} is a learner, not a backup")]
    NotABackup {
        /// The range of the step.
        range: RangeId,
        /// The learner.
        node: NodeId,
    },
    /// A learner promotion names a node that is not a learner of the range.
    #[error("range {range}: node {node} is not a learner")]
    NotALearner {
        /// The range of the step.
        range: RangeId,
        /// The node that is not a learner.
        node: NodeId,
    },
    /// The split key is not strictly inside the range, so one half would be empty.
    #[error("range {range}: split key is not strictly inside the range")]
    SplitKeyOutside {
        /// The range of the step.
        range: RangeId,
    },
    /// A split would reuse a range id (ids are never reused, so caches cannot confuse them).
    #[error("range {range}: new range id {id} is already used or not fresh")]
    RangeIdNotFresh {
        /// The range of the step.
        range: RangeId,
        /// The offending id.
        id: RangeId,
    },
    /// The map version or a range epoch cannot grow any further.
    #[error("map version or range epoch overflow")]
    Overflow,
    /// The resulting map is invalid (only possible when the input map already was).
    #[error("invalid map: {0}")]
    Map(#[from] MapError),
}

/// Computes the partition map after `step`: version + 1, the touched ranges no longer
/// `bootstrap`, and a map that passes [`PartitionMap::validate`].
///
/// This is the one place that defines the effect of a step, used by the planner to simulate
/// its own plan and by the executor to produce the map it installs, so the two cannot drift.
pub fn apply(map: &PartitionMap, step: &Step) -> Result<PartitionMap, PlanError> {
    let mut out = map.clone();
    out.version = out.version.checked_add(1).ok_or(PlanError::Overflow)?;
    let range_id = step.range();
    let idx = out
        .ranges
        .iter()
        .position(|r| r.id == range_id)
        .ok_or(PlanError::UnknownRange(range_id))?;
    let max_id = map.max_range_id();
    let range = &mut out.ranges[idx];
    match step {
        Step::PromoteBackup { new_primary, .. } => {
            let node = *new_primary;
            let pos = backup_position(range, node)?;
            range.replicas.remove(pos);
            range.replicas[0] = node;
            bump_epoch(range)?;
        }
        Step::RemoveReplica { node, .. } => {
            let node = *node;
            if let Some(pos) = range.learners.iter().position(|n| *n == node) {
                range.learners.remove(pos);
            } else {
                let pos = range.replicas.iter().position(|n| *n == node).ok_or(
                    PlanError::NotInRange {
                        range: range.id,
                        node,
                    },
                )?;
                if range.replicas.len() == 1 {
                    return Err(PlanError::LastReplica {
                        range: range.id,
                        node,
                    });
                }
                if pos == 0 {
                    return Err(PlanError::RemovePrimary {
                        range: range.id,
                        node,
                    });
                }
                range.replicas.remove(pos);
                bump_epoch(range)?;
            }
        }
        Step::AddLearner { node, .. } => {
            let node = *node;
            if !map.nodes.contains_key(&node) {
                return Err(PlanError::UnknownNode {
                    range: range.id,
                    node,
                });
            }
            if range.involves(node) {
                return Err(PlanError::AlreadyInRange {
                    range: range.id,
                    node,
                });
            }
            range.learners.push(node);
        }
        Step::PromoteLearner { node, .. } => {
            let node = *node;
            let pos =
                range
                    .learners
                    .iter()
                    .position(|n| *n == node)
                    .ok_or(PlanError::NotALearner {
                        range: range.id,
                        node,
                    })?;
            range.learners.remove(pos);
            range.replicas.push(node);
            bump_epoch(range)?;
        }
        Step::TransferPrimary { to, .. } => {
            let node = *to;
            let pos = backup_position(range, node)?;
            range.replicas.remove(pos);
            range.replicas.insert(0, node);
            bump_epoch(range)?;
        }
        Step::Split {
            at, left, right, ..
        } => {
            let inside = at.as_slice() > range.start.as_slice()
                && range.end.as_deref().is_none_or(|end| at.as_slice() < end);
            if !inside {
                return Err(PlanError::SplitKeyOutside { range: range.id });
            }
            for id in [*left, *right] {
                if id <= max_id || left == right {
                    return Err(PlanError::RangeIdNotFresh {
                        range: range.id,
                        id,
                    });
                }
            }
            let epoch = range.epoch.checked_add(1).ok_or(PlanError::Overflow)?;
            let left_half = RangeDesc {
                id: *left,
                start: range.start.clone(),
                end: Some(at.clone()),
                epoch,
                replicas: range.replicas.clone(),
                learners: range.learners.clone(),
                bootstrap: false,
            };
            let right_half = RangeDesc {
                id: *right,
                start: at.clone(),
                end: range.end.clone(),
                epoch,
                replicas: range.replicas.clone(),
                learners: range.learners.clone(),
                bootstrap: false,
            };
            out.ranges.splice(idx..=idx, [left_half, right_half]);
        }
    }
    if let Some(range) = out.ranges.get_mut(idx) {
        range.bootstrap = false;
    }
    out.validate()?;
    Ok(out)
}

/// Applies `steps` in order, stopping at the first one that does not apply.
///
/// Lets an executor (or a test) check a whole plan, or a prefix of it, before acting on it.
pub fn apply_plan(map: &PartitionMap, steps: &[Step]) -> Result<PartitionMap, PlanError> {
    let mut out = map.clone();
    for step in steps {
        out = apply(&out, step)?;
    }
    Ok(out)
}

/// Where `node` sits among the backups of `range` (never 0: the primary is not a backup).
fn backup_position(range: &RangeDesc, node: NodeId) -> Result<usize, PlanError> {
    match range.replicas.iter().position(|n| *n == node) {
        Some(0) => Err(PlanError::AlreadyPrimary {
            range: range.id,
            node,
        }),
        Some(pos) => Ok(pos),
        None if range.learners.contains(&node) => Err(PlanError::NotABackup {
            range: range.id,
            node,
        }),
        None => Err(PlanError::NotInRange {
            range: range.id,
            node,
        }),
    }
}

fn bump_epoch(range: &mut RangeDesc) -> Result<(), PlanError> {
    range.epoch = range.epoch.checked_add(1).ok_or(PlanError::Overflow)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::keys::range_key;

    /// Two ranges split at table 10: range 1 on [1, 2] with learner 3, range 2 on [2].
    fn map() -> PartitionMap {
        let nodes: BTreeMap<NodeId, String> =
            (1..=4).map(|i| (i, format!("node-{i}:7000"))).collect();
        PartitionMap {
            version: 7,
            nodes,
            ranges: vec![
                RangeDesc {
                    id: 1,
                    start: Vec::new(),
                    end: Some(range_key(10, b"")),
                    epoch: 3,
                    replicas: vec![1, 2],
                    learners: vec![3],
                    bootstrap: true,
                },
                RangeDesc {
                    id: 2,
                    start: range_key(10, b""),
                    end: None,
                    epoch: 5,
                    replicas: vec![2],
                    learners: Vec::new(),
                    bootstrap: true,
                },
            ],
            tables: BTreeMap::new(),
            replication_factor: 2,
        }
    }

    fn err(step: Step) -> PlanError {
        match apply(&map(), &step) {
            Ok(m) => panic!("{step} applied: {m:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn promote_backup_drops_the_old_primary_and_bumps_epoch() {
        let out = apply(
            &map(),
            &Step::PromoteBackup {
                range: 1,
                new_primary: 2,
            },
        )
        .expect("applies");
        assert_eq!(out.version, 8);
        let r = out.range(1).expect("range 1");
        assert_eq!(r.replicas, vec![2]);
        assert_eq!(r.learners, vec![3]);
        assert_eq!(r.epoch, 4);
        assert!(!r.bootstrap);
        assert!(out.range(2).expect("range 2").bootstrap, "untouched");
    }

    #[test]
    fn learner_lifecycle() {
        let m = apply(&map(), &Step::AddLearner { range: 2, node: 4 }).expect("add");
        assert_eq!(m.range(2).expect("r").learners, vec![4]);
        assert_eq!(m.range(2).expect("r").epoch, 5);
        let m = apply(&m, &Step::PromoteLearner { range: 2, node: 4 }).expect("promote");
        assert_eq!(m.range(2).expect("r").replicas, vec![2, 4]);
        assert_eq!(m.range(2).expect("r").epoch, 6);
        let m = apply(&m, &Step::TransferPrimary { range: 2, to: 4 }).expect("transfer");
        assert_eq!(m.range(2).expect("r").replicas, vec![4, 2]);
        assert_eq!(m.range(2).expect("r").epoch, 7);
        let m = apply(&m, &Step::RemoveReplica { range: 2, node: 2 }).expect("remove");
        assert_eq!(m.range(2).expect("r").replicas, vec![4]);
        assert_eq!(m.range(2).expect("r").epoch, 8);
        let m = apply(&m, &Step::RemoveReplica { range: 1, node: 3 }).expect("remove learner");
        assert!(m.range(1).expect("r").learners.is_empty());
        assert_eq!(
            m.range(1).expect("r").epoch,
            3,
            "learner removal keeps the epoch"
        );
        assert_eq!(m.version, 12);
    }

    #[test]
    fn split_makes_two_fresh_halves() {
        let at = range_key(20, b"m");
        let out = apply(
            &map(),
            &Step::Split {
                range: 2,
                at: at.clone(),
                left: 3,
                right: 4,
            },
        )
        .expect("split");
        assert_eq!(out.ranges.len(), 3);
        let (l, r) = (&out.ranges[1], &out.ranges[2]);
        assert_eq!((l.id, r.id), (3, 4));
        assert_eq!(l.start, range_key(10, b""));
        assert_eq!(l.end.as_deref(), Some(at.as_slice()));
        assert_eq!(r.start, at);
        assert_eq!(r.end, None);
        assert_eq!((l.epoch, r.epoch), (6, 6));
        assert_eq!(l.replicas, vec![2]);
        assert!(!l.bootstrap && !r.bootstrap);
        assert!(out.range(2).is_none());
        assert_eq!(out.find(&range_key(30, b"")).map(|r| r.id), Some(4));
    }

    #[test]
    fn unknown_range_and_node() {
        assert_eq!(
            err(Step::AddLearner { range: 9, node: 1 }),
            PlanError::UnknownRange(9)
        );
        assert_eq!(
            err(Step::AddLearner { range: 1, node: 9 }),
            PlanError::UnknownNode { range: 1, node: 9 }
        );
        assert_eq!(
            err(Step::RemoveReplica { range: 1, node: 4 }),
            PlanError::NotInRange { range: 1, node: 4 }
        );
        assert_eq!(
            err(Step::TransferPrimary { range: 1, to: 4 }),
            PlanError::NotInRange { range: 1, node: 4 }
        );
    }

    #[test]
    fn removing_the_last_replica_or_the_primary_is_refused() {
        assert_eq!(
            err(Step::RemoveReplica { range: 2, node: 2 }),
            PlanError::LastReplica { range: 2, node: 2 }
        );
        assert_eq!(
            err(Step::RemoveReplica { range: 1, node: 1 }),
            PlanError::RemovePrimary { range: 1, node: 1 }
        );
    }

    #[test]
    fn only_learners_are_promoted_and_only_backups_lead() {
        assert_eq!(
            err(Step::PromoteLearner { range: 1, node: 2 }),
            PlanError::NotALearner { range: 1, node: 2 }
        );
        assert_eq!(
            err(Step::PromoteBackup {
                range: 1,
                new_primary: 3
            }),
            PlanError::NotABackup { range: 1, node: 3 }
        );
        assert_eq!(
            err(Step::TransferPrimary { range: 1, to: 3 }),
            PlanError::NotABackup { range: 1, node: 3 }
        );
        assert_eq!(
            err(Step::PromoteBackup {
                range: 1,
                new_primary: 1
            }),
            PlanError::AlreadyPrimary { range: 1, node: 1 }
        );
        assert_eq!(
            err(Step::TransferPrimary { range: 1, to: 1 }),
            PlanError::AlreadyPrimary { range: 1, node: 1 }
        );
    }

    #[test]
    fn learners_are_added_once() {
        assert_eq!(
            err(Step::AddLearner { range: 1, node: 3 }),
            PlanError::AlreadyInRange { range: 1, node: 3 }
        );
        assert_eq!(
            err(Step::AddLearner { range: 1, node: 2 }),
            PlanError::AlreadyInRange { range: 1, node: 2 }
        );
    }

    #[test]
    fn split_key_must_be_strictly_inside_and_ids_fresh() {
        let split = |at: Vec<u8>, left, right| Step::Split {
            range: 1,
            at,
            left,
            right,
        };
        assert_eq!(
            err(split(Vec::new(), 3, 4)),
            PlanError::SplitKeyOutside { range: 1 }
        );
        assert_eq!(
            err(split(range_key(10, b""), 3, 4)),
            PlanError::SplitKeyOutside { range: 1 }
        );
        assert_eq!(
            err(split(range_key(11, b""), 3, 4)),
            PlanError::SplitKeyOutside { range: 1 }
        );
        assert_eq!(
            err(split(range_key(5, b""), 2, 4)),
            PlanError::RangeIdNotFresh { range: 1, id: 2 }
        );
        assert_eq!(
            err(split(range_key(5, b""), 5, 5)),
            PlanError::RangeIdNotFresh { range: 1, id: 5 }
        );
    }

    #[test]
    fn overflow_and_invalid_input_are_errors() {
        let mut m = map();
        m.version = u64::MAX;
        assert_eq!(
            apply(&m, &Step::AddLearner { range: 2, node: 1 }),
            Err(PlanError::Overflow)
        );
        let mut m = map();
        m.ranges[1].epoch = u64::MAX;
        assert_eq!(
            apply(&m, &Step::AddLearner { range: 2, node: 1 })
                .and_then(|m| apply(&m, &Step::PromoteLearner { range: 2, node: 1 })),
            Err(PlanError::Overflow)
        );
        let mut m = map();
        m.ranges[1].start = range_key(11, b"");
        assert!(matches!(
            apply(&m, &Step::AddLearner { range: 2, node: 1 }),
            Err(PlanError::Map(MapError::Tiling(_)))
        ));
    }

    #[test]
    fn apply_plan_stops_at_the_first_bad_step() {
        let steps = [
            Step::AddLearner { range: 2, node: 1 },
            Step::PromoteLearner { range: 2, node: 1 },
            Step::PromoteLearner { range: 2, node: 1 },
        ];
        assert_eq!(
            apply_plan(&map(), &steps),
            Err(PlanError::NotALearner { range: 2, node: 1 })
        );
        let out = apply_plan(&map(), &steps[..2]).expect("prefix applies");
        assert_eq!(out.version, 9);
    }
}
