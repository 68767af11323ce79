//! The planning passes, run against a simulated map that every emitted step is applied to.
//!
//! Each pass looks at the map as the earlier passes left it, so the plan is valid as a
//! sequence by construction: a step enters the plan only if [`apply`] accepts it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::map::{NodeId, PartitionMap, RangeDesc, RangeId};

use super::{ClusterState, Plan, PlannerConfig, RangeLoad, Step, apply};

/// Runs every pass in urgency order, stopping once `max_steps` steps are planned.
pub(super) fn plan(state: &ClusterState, config: &PlannerConfig) -> Plan {
    if state.map.validate().is_err() {
        return Plan::default();
    }
    let mut b = Builder::new(state, config.max_steps);
    b.promote_backups();
    b.remove_dead();
    b.restore_replication();
    b.drain();
    b.trim();
    b.split(config.split_bytes);
    b.balance_replicas();
    b.balance_primaries();
    b.finish()
}

/// The plan under construction and the map it leads to.
struct Builder<'a> {
    map: PartitionMap,
    live: &'a BTreeSet<NodeId>,
    /// Live, not draining, known to the map: where copies may be placed.
    eligible: BTreeSet<NodeId>,
    /// Ranges with no live replica; never touched.
    lost: BTreeSet<RangeId>,
    loads: BTreeMap<RangeId, RangeLoad>,
    /// How many replicas every range should end with.
    target: usize,
    steps: Vec<Step>,
    /// Step counts at which a unit of work (e.g. a whole move) is complete: safe cut points.
    cuts: Vec<usize>,
    /// Steps beyond this many are not needed (0: no cap): planning stops once one is refused.
    limit: usize,
    /// Set when a step was refused (over the cap, or, by a bug, invalid); planning stops.
    stopped: bool,
}

impl<'a> Builder<'a> {
    fn new(state: &'a ClusterState, limit: usize) -> Self {
        let eligible: BTreeSet<NodeId> = state
            .live
            .iter()
            .copied()
            .filter(|n| state.map.nodes.contains_key(n) && !state.draining.contains(n))
            .collect();
        let lost = state
            .map
            .ranges
            .iter()
            .filter(|r| !r.replicas.iter().any(|n| state.live.contains(n)))
            .map(|r| r.id)
            .collect();
        let target = (state.map.replication_factor as usize).min(eligible.len());
        Builder {
            map: state.map.clone(),
            live: &state.live,
            eligible,
            lost,
            loads: state.loads.clone(),
            target,
            steps: Vec::new(),
            cuts: Vec::new(),
            limit,
            stopped: false,
        }
    }

    /// Applies `step` to the simulated map and records it; false if it does not apply.
    fn push(&mut self, step: Step) -> bool {
        if self.stopped || (self.limit > 0 && self.steps.len() >= self.limit) {
            self.stopped = true;
            return false;
        }
        match apply(&self.map, &step) {
            Ok(map) => {
                self.map = map;
                self.steps.push(step);
                true
            }
            Err(e) => {
                debug_assert!(self.stopped, "planner emitted an invalid step {step}: {e}");
                self.stopped = true;
                false
            }
        }
    }

    /// Marks the end of a unit of work: cutting the plan here leaves nothing half done
    /// (unless a step of the unit was refused, in which case it is not a unit end).
    fn cut(&mut self) {
        if !self.stopped && self.cuts.last() != Some(&self.steps.len()) {
            self.cuts.push(self.steps.len());
        }
    }

    /// Ids of the ranges that may be worked on, in key order.
    fn workable(&self) -> Vec<RangeId> {
        self.map
            .ranges
            .iter()
            .filter(|r| !self.lost.contains(&r.id))
            .map(|r| r.id)
            .collect()
    }

    fn range(&self, id: RangeId) -> Option<RangeDesc> {
        self.map.range(id).cloned()
    }

    fn bytes(&self, id: RangeId) -> u64 {
        self.loads.get(&id).map_or(0, |l| l.bytes)
    }

    fn is_eligible(&self, node: NodeId) -> bool {
        self.eligible.contains(&node)
    }

    /// Per eligible node: how many workable ranges it holds or receives, and their bytes.
    fn node_loads(&self) -> BTreeMap<NodeId, (usize, u64)> {
        let mut out: BTreeMap<NodeId, (usize, u64)> =
            self.eligible.iter().map(|n| (*n, (0, 0))).collect();
        for r in &self.map.ranges {
            if self.lost.contains(&r.id) {
                continue;
            }
            let bytes = self.bytes(r.id);
            for n in r.replicas.iter().chain(&r.learners) {
                if let Some(entry) = out.get_mut(n) {
                    entry.0 += 1;
                    entry.1 = entry.1.saturating_add(bytes);
                }
            }
        }
        out
    }

    /// Per eligible node: how many workable ranges it is the primary of.
    fn primary_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut out: BTreeMap<NodeId, usize> = self.eligible.iter().map(|n| (*n, 0)).collect();
        for r in &self.map.ranges {
            if self.lost.contains(&r.id) {
                continue;
            }
            if let Some(count) = r.primary().and_then(|p| out.get_mut(&p)) {
                *count += 1;
            }
        }
        out
    }

    /// The eligible node that should receive a new copy of `range`: fewest copies, then
    /// fewest bytes, then lowest id.
    fn least_loaded_for(&self, range: &RangeDesc) -> Option<NodeId> {
        self.node_loads()
            .into_iter()
            .filter(|(n, _)| !range.involves(*n))
            .min_by_key(|(n, (count, bytes))| (*count, *bytes, *n))
            .map(|(n, _)| n)
    }

    /// The backup of `range` that should take over as primary: fewest primaries, then id.
    fn best_new_primary(&self, range: &RangeDesc) -> Option<NodeId> {
        let primaries = self.primary_counts();
        range
            .replicas
            .iter()
            .skip(1)
            .filter(|n| self.is_eligible(**n))
            .min_by_key(|n| (primaries.get(n).copied().unwrap_or(0), **n))
            .copied()
    }

    /// Goal 1: every range whose primary is dead gets its most advanced live backup promoted.
    fn promote_backups(&mut self) {
        for id in self.workable() {
            if self.stopped {
                return;
            }
            let Some(range) = self.range(id) else {
                continue;
            };
            if range.primary().is_some_and(|p| self.live.contains(&p)) {
                continue;
            }
            let lsn = |n: &NodeId| {
                self.loads
                    .get(&id)
                    .and_then(|l| l.applied_lsn.get(n))
                    .copied()
                    .unwrap_or(0)
            };
            let best = range
                .replicas
                .iter()
                .filter(|n| self.live.contains(n))
                .max_by_key(|n| (lsn(n), Reverse(**n)))
                .copied();
            if let Some(new_primary) = best {
                self.push(Step::PromoteBackup {
                    range: id,
                    new_primary,
                });
                self.cut();
            }
        }
    }

    /// Goal 2: dead backups and dead learners leave their ranges, so writes stop waiting on
    /// them and their slots can be refilled.
    fn remove_dead(&mut self) {
        for id in self.workable() {
            if self.stopped {
                return;
            }
            let Some(range) = self.range(id) else {
                continue;
            };
            for node in range.replicas.iter().chain(&range.learners) {
                if !self.live.contains(node) {
                    self.push(Step::RemoveReplica {
                        range: id,
                        node: *node,
                    });
                    self.cut();
                }
            }
        }
    }

    /// Gives range `id` `need` more replicas on eligible nodes, promoting its eligible
    /// learners first (their copy is under way) and then adding learners where there is room.
    fn add_copies(&mut self, id: RangeId, need: usize) {
        let mut promote = Vec::new();
        for _ in 0..need {
            let Some(range) = self.range(id) else { return };
            let loads = self.node_loads();
            let existing = range
                .learners
                .iter()
                .filter(|n| self.is_eligible(**n) && !promote.contains(*n))
                .min_by_key(|n| (loads.get(n).copied().unwrap_or_default(), **n))
                .copied();
            if let Some(node) = existing {
                promote.push(node);
                continue;
            }
            let Some(node) = self.least_loaded_for(&range) else {
                break;
            };
            if !self.push(Step::AddLearner { range: id, node }) {
                return;
            }
            promote.push(node);
        }
        for node in promote {
            self.push(Step::PromoteLearner { range: id, node });
        }
    }

    /// Goal 3: ranges with fewer replicas than the target get new ones.
    fn restore_replication(&mut self) {
        for id in self.workable() {
            if self.stopped {
                return;
            }
            let Some(range) = self.range(id) else {
                continue;
            };
            let need = self.target.saturating_sub(range.replicas.len());
            if need > 0 {
                self.add_copies(id, need);
                self.cut();
            }
        }
    }

    /// Goal 4: copies on draining nodes are replaced, then removed (the primary moves first).
    fn drain(&mut self) {
        if self.target == 0 {
            // Nowhere to move to: removing anything could only lose copies.
            return;
        }
        for id in self.workable() {
            if self.stopped {
                return;
            }
            let Some(range) = self.range(id) else {
                continue;
            };
            let draining: Vec<NodeId> = range
                .replicas
                .iter()
                .filter(|n| !self.is_eligible(**n))
                .copied()
                .collect();
            if draining.is_empty() {
                continue;
            }
            let eligible = range.replicas.len() - draining.len();
            self.add_copies(id, self.target.saturating_sub(eligible));
            let Some(range) = self.range(id) else {
                continue;
            };
            if range.primary().is_some_and(|p| !self.is_eligible(p))
                && let Some(to) = self.best_new_primary(&range)
            {
                self.push(Step::TransferPrimary { range: id, to });
            }
            for node in draining {
                self.push(Step::RemoveReplica { range: id, node });
            }
            self.cut();
        }
    }

    /// Ranges above the target shed their most loaded copies; leftover learners are either
    /// promoted (when their node is among the copies kept) or removed.
    fn trim(&mut self) {
        if self.target == 0 {
            return;
        }
        for id in self.workable() {
            if self.stopped {
                return;
            }
            let Some(range) = self.range(id) else {
                continue;
            };
            if range.learners.is_empty() && range.replicas.len() <= self.target {
                continue;
            }
            let loads = self.node_loads();
            let key = |n: &NodeId| (loads.get(n).copied().unwrap_or_default(), *n);
            // Candidates to keep, least loaded first; learners off eligible nodes never stay.
            let mut members: Vec<NodeId> = range
                .replicas
                .iter()
                .chain(range.learners.iter().filter(|n| self.is_eligible(**n)))
                .copied()
                .collect();
            members.sort_by_key(|n| key(n));
            let keep: BTreeSet<NodeId> = members.iter().take(self.target).copied().collect();
            for node in &range.learners {
                if !keep.contains(node) {
                    self.push(Step::RemoveReplica {
                        range: id,
                        node: *node,
                    });
                }
            }
            for node in &range.learners {
                if keep.contains(node) {
                    self.push(Step::PromoteLearner {
                        range: id,
                        node: *node,
                    });
                }
            }
            let Some(range) = self.range(id) else {
                continue;
            };
            if range.primary().is_some_and(|p| !keep.contains(&p)) {
                let primaries = self.primary_counts();
                let to = range
                    .replicas
                    .iter()
                    .filter(|n| keep.contains(n))
                    .min_by_key(|n| (primaries.get(n).copied().unwrap_or(0), **n))
                    .copied();
                if let Some(to) = to {
                    self.push(Step::TransferPrimary { range: id, to });
                }
            }
            for node in &range.replicas {
                if !keep.contains(node) {
                    self.push(Step::RemoveReplica {
                        range: id,
                        node: *node,
                    });
                }
            }
            self.cut();
        }
    }

    /// Goal 5: ranges above `split_bytes` with a usable split key are halved.
    fn split(&mut self, split_bytes: u64) {
        if split_bytes == 0 {
            return;
        }
        for id in self.workable() {
            if self.stopped {
                return;
            }
            let Some(range) = self.range(id) else {
                continue;
            };
            let Some(load) = self.loads.get(&id) else {
                continue;
            };
            if load.bytes <= split_bytes {
                continue;
            }
            let Some(at) = load.split_key.clone() else {
                continue;
            };
            let inside = at.as_slice() > range.start.as_slice()
                && range.end.as_deref().is_none_or(|end| at.as_slice() < end);
            if !inside {
                continue;
            }
            let half = load.halved();
            let left = self.map.max_range_id().saturating_add(1);
            let right = left.saturating_add(1);
            if self.push(Step::Split {
                range: id,
                at,
                left,
                right,
            }) {
                self.loads.remove(&id);
                self.loads.insert(left, half.clone());
                self.loads.insert(right, half);
            }
            self.cut();
        }
    }

    /// Goal 6: move copies from the fullest to the emptiest eligible node until the counts
    /// differ by at most one (each move lowers the sum of squared counts, so this ends).
    fn balance_replicas(&mut self) {
        if self.target == 0 || self.eligible.len() < 2 {
            return;
        }
        while !self.stopped {
            let loads = self.node_loads();
            let Some((&src, &(src_count, _))) = loads
                .iter()
                .max_by_key(|(n, (count, bytes))| (*count, *bytes, Reverse(**n)))
            else {
                return;
            };
            let Some((&dst, &(dst_count, _))) = loads
                .iter()
                .min_by_key(|(n, (count, bytes))| (*count, *bytes, **n))
            else {
                return;
            };
            if src_count <= dst_count + 1 {
                return;
            }
            // Smallest range first: it is the cheapest to copy.
            let candidate = self
                .map
                .ranges
                .iter()
                .filter(|r| !self.lost.contains(&r.id))
                .filter(|r| r.replicas.contains(&src) && !r.involves(dst))
                .min_by_key(|r| (self.bytes(r.id), r.primary() == Some(src), r.id))
                .map(|r| r.id);
            let Some(id) = candidate else { return };
            self.move_replica(id, src, dst);
        }
    }

    /// Moves the copy of `id` on `src` to `dst`: the new copy is complete before the old one
    /// goes, and the primary role travels with it.
    fn move_replica(&mut self, id: RangeId, src: NodeId, dst: NodeId) {
        self.push(Step::AddLearner {
            range: id,
            node: dst,
        });
        self.push(Step::PromoteLearner {
            range: id,
            node: dst,
        });
        if self.map.range(id).and_then(RangeDesc::primary) == Some(src) {
            self.push(Step::TransferPrimary { range: id, to: dst });
        }
        self.push(Step::RemoveReplica {
            range: id,
            node: src,
        });
        self.cut();
    }

    /// Nice to have: hand primaries from nodes leading many ranges to backups on nodes
    /// leading few, as long as that narrows the gap by two or more (so this ends too).
    fn balance_primaries(&mut self) {
        if self.target < 2 {
            return;
        }
        while !self.stopped {
            let primaries = self.primary_counts();
            let count = |n: &NodeId| primaries.get(n).copied().unwrap_or(0);
            let mut best: Option<(usize, RangeId, NodeId)> = None;
            for r in &self.map.ranges {
                if self.lost.contains(&r.id) {
                    continue;
                }
                let Some(p) = r.primary() else { continue };
                for q in r.replicas.iter().skip(1).filter(|q| self.is_eligible(**q)) {
                    let gap = count(&p).saturating_sub(count(q));
                    if gap >= 2 && best.is_none_or(|(g, _, _)| gap > g) {
                        best = Some((gap, r.id, *q));
                    }
                }
            }
            let Some((_, id, to)) = best else { return };
            self.push(Step::TransferPrimary { range: id, to });
            self.cut();
        }
    }

    /// The plan; when the cap stopped planning, cut at the last safe point (or mid-unit when
    /// even the first unit is longer than the cap: any prefix is still valid, and re-planning
    /// picks the work up from the map it leaves).
    fn finish(mut self) -> Plan {
        if self.stopped
            && let Some(&at) = self.cuts.last().filter(|c| **c > 0)
        {
            self.steps.truncate(at);
        }
        Plan {
            steps: self.steps,
            lost: self.lost.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::range_key;
    use crate::planner::apply_plan;

    fn nodes(ids: &[NodeId]) -> BTreeMap<NodeId, String> {
        ids.iter().map(|i| (*i, format!("sn-{i}:7000"))).collect()
    }

    /// One range per replica list, split at tables 1, 2, ...
    fn map(node_ids: &[NodeId], rf: u32, replicas: &[&[NodeId]]) -> PartitionMap {
        let count = replicas.len();
        let ranges = replicas
            .iter()
            .enumerate()
            .map(|(i, reps)| RangeDesc {
                id: i as RangeId + 1,
                start: if i == 0 {
                    Vec::new()
                } else {
                    range_key(i as u64, b"")
                },
                end: (i + 1 < count).then(|| range_key(i as u64 + 1, b"")),
                epoch: 1,
                replicas: reps.to_vec(),
                learners: Vec::new(),
                bootstrap: false,
            })
            .collect();
        PartitionMap {
            version: 1,
            nodes: nodes(node_ids),
            ranges,
            tables: BTreeMap::new(),
            replication_factor: rf,
        }
    }

    fn state(map: PartitionMap, live: &[NodeId], draining: &[NodeId]) -> ClusterState {
        ClusterState {
            map,
            live: live.iter().copied().collect(),
            draining: draining.iter().copied().collect(),
            loads: BTreeMap::new(),
        }
    }

    fn full(state: &ClusterState) -> Plan {
        plan(state, &PlannerConfig::default())
    }

    #[test]
    fn dead_primary_is_replaced_by_the_most_advanced_backup() {
        let mut s = state(map(&[1, 2, 3, 4], 3, &[&[1, 2, 3]]), &[2, 3, 4], &[]);
        s.loads.insert(
            1,
            RangeLoad {
                applied_lsn: [(1, 9), (2, 5), (3, 7)].into(),
                ..RangeLoad::default()
            },
        );
        let p = full(&s);
        assert_eq!(
            p.steps,
            vec![
                Step::PromoteBackup {
                    range: 1,
                    new_primary: 3
                },
                Step::AddLearner { range: 1, node: 4 },
                Step::PromoteLearner { range: 1, node: 4 },
            ]
        );
        let out = apply_plan(&s.map, &p.steps).expect("valid plan");
        assert_eq!(out.ranges[0].replicas, vec![3, 2, 4]);
    }

    #[test]
    fn equal_positions_promote_the_lowest_id() {
        let s = state(map(&[1, 2, 3], 3, &[&[1, 3, 2]]), &[2, 3], &[]);
        let p = full(&s);
        assert_eq!(
            p.steps[0],
            Step::PromoteBackup {
                range: 1,
                new_primary: 2
            }
        );
    }

    #[test]
    fn dead_backups_and_learners_are_removed() {
        let mut m = map(&[1, 2, 3], 2, &[&[1, 2]]);
        m.ranges[0].learners = vec![3];
        let s = state(m, &[1], &[]);
        assert_eq!(
            full(&s).steps,
            vec![
                Step::RemoveReplica { range: 1, node: 2 },
                Step::RemoveReplica { range: 1, node: 3 },
            ]
        );
    }

    #[test]
    fn draining_a_single_copy_copies_it_first() {
        let s = state(map(&[1, 2], 1, &[&[1]]), &[1, 2], &[1]);
        assert_eq!(
            full(&s).steps,
            vec![
                Step::AddLearner { range: 1, node: 2 },
                Step::PromoteLearner { range: 1, node: 2 },
                Step::TransferPrimary { range: 1, to: 2 },
                Step::RemoveReplica { range: 1, node: 1 },
            ]
        );
    }

    #[test]
    fn ranges_without_a_live_replica_are_reported_not_touched() {
        let s = state(map(&[1, 2, 3], 2, &[&[1, 2], &[2, 3]]), &[3], &[]);
        let p = full(&s);
        assert_eq!(p.lost, vec![1]);
        assert!(p.steps.iter().all(|st| st.range() == 2), "{:?}", p.steps);
    }

    #[test]
    fn oversized_ranges_split_once_with_fresh_ids() {
        let mut s = state(map(&[1], 1, &[&[1], &[1]]), &[1], &[]);
        s.loads.insert(
            2,
            RangeLoad {
                bytes: 100,
                split_key: Some(range_key(5, b"k")),
                ..RangeLoad::default()
            },
        );
        s.loads.insert(
            1,
            RangeLoad {
                bytes: 100,
                // Outside range 1 ([start, table 1)): ignored.
                split_key: Some(range_key(3, b"")),
                ..RangeLoad::default()
            },
        );
        let config = PlannerConfig {
            split_bytes: 10,
            max_steps: 0,
        };
        let p = plan(&s, &config);
        assert_eq!(
            p.steps,
            vec![Step::Split {
                range: 2,
                at: range_key(5, b"k"),
                left: 3,
                right: 4
            }]
        );
        let never = PlannerConfig {
            split_bytes: 0,
            max_steps: 0,
        };
        assert!(plan(&s, &never).steps.is_empty());
    }

    #[test]
    fn a_new_node_receives_its_share() {
        let s = state(
            map(&[1, 2, 3], 1, &[&[1], &[1], &[1], &[2], &[2], &[2]]),
            &[1, 2, 3],
            &[],
        );
        let out = apply_plan(&s.map, &full(&s).steps).expect("valid plan");
        let on = |n: NodeId| out.ranges.iter().filter(|r| r.involves(n)).count();
        assert_eq!((on(1), on(2), on(3)), (2, 2, 2));
    }

    #[test]
    fn primaries_are_spread() {
        let s = state(
            map(&[1, 2], 2, &[&[1, 2], &[1, 2], &[1, 2], &[1, 2]]),
            &[1, 2],
            &[],
        );
        let out = apply_plan(&s.map, &full(&s).steps).expect("valid plan");
        let led = |n: NodeId| out.ranges.iter().filter(|r| r.primary() == Some(n)).count();
        assert_eq!((led(1), led(2)), (2, 2));
    }

    #[test]
    fn an_interrupted_move_is_finished_not_undone() {
        // Range 1 was being moved from node 1 (loaded) to node 3 (empty).
        let mut m = map(&[1, 2, 3], 1, &[&[1], &[1], &[2]]);
        m.ranges[0].learners = vec![3];
        let s = state(m, &[1, 2, 3], &[]);
        let p = full(&s);
        assert_eq!(
            p.steps,
            vec![
                Step::PromoteLearner { range: 1, node: 3 },
                Step::TransferPrimary { range: 1, to: 3 },
                Step::RemoveReplica { range: 1, node: 1 },
            ]
        );
    }

    #[test]
    fn nothing_is_planned_for_an_invalid_map() {
        let mut m = map(&[1, 2], 2, &[&[1, 2]]);
        m.ranges[0].replicas = vec![1, 1];
        assert_eq!(full(&state(m, &[2], &[])), Plan::default());
    }

    #[test]
    fn a_cap_cuts_between_moves() {
        let s = state(map(&[1, 2], 1, &[&[1], &[1], &[1], &[1]]), &[1, 2], &[]);
        let config = PlannerConfig {
            split_bytes: 0,
            max_steps: 7,
        };
        // Each move of a primary is four steps: one whole move fits in seven.
        assert_eq!(plan(&s, &config).steps.len(), 4);
        let tiny = PlannerConfig {
            split_bytes: 0,
            max_steps: 2,
        };
        assert_eq!(plan(&s, &tiny).steps.len(), 2);
    }
}
