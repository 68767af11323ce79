//! Property tests of the placement planner: random maps, failures, drains and loads.
//!
//! Every plan is replayed step by step to check that it is valid as a sequence, that no range
//! ever loses its last up-to-date copy, and that the end state is healthy and balanced.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shmdb_placement::{
    ClusterState, NodeId, PartitionMap, Plan, PlannerConfig, RangeDesc, RangeId, RangeLoad, Step,
    apply, apply_plan, plan, range_key,
};

/// One range as drawn: its lower bound and how it is held and loaded.
#[derive(Debug, Clone)]
struct RangeSpec {
    table: u64,
    replicas: Vec<usize>,
    learners: Vec<usize>,
    epoch: u64,
    bootstrap: bool,
    load: Option<(u64, u8, Vec<u64>)>,
}

/// A drawn cluster, before it is turned into a `ClusterState`.
#[derive(Debug, Clone)]
struct Spec {
    nodes: usize,
    rf: u32,
    ranges: Vec<RangeSpec>,
    live: Vec<bool>,
    draining: Vec<bool>,
    split_bytes: u64,
}

fn range_spec() -> impl Strategy<Value = RangeSpec> {
    (
        0u64..1_000,
        prop::collection::vec(0usize..8, 1..=4),
        prop::collection::vec(0usize..8, 0..=2),
        0u64..5,
        any::<bool>(),
        prop::option::weighted(
            0.9,
            (0u64..1_000, 0u8..3, prop::collection::vec(0u64..4, 8)),
        ),
    )
        .prop_map(
            |(table, replicas, learners, epoch, bootstrap, load)| RangeSpec {
                table,
                replicas,
                learners,
                epoch,
                bootstrap,
                load,
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        1usize..=8,
        1u32..=3,
        prop::collection::vec(range_spec(), 1..=40),
        prop::collection::vec(prop::bool::weighted(0.8), 8),
        prop::collection::vec(prop::bool::weighted(0.2), 8),
        prop_oneof![Just(0u64), 0u64..1_000],
    )
        .prop_map(|(nodes, rf, ranges, live, draining, split_bytes)| Spec {
            nodes,
            rf,
            ranges,
            live,
            draining,
            split_bytes,
        })
}

/// Node ids are spread out so nothing can rely on them being dense.
fn node_id(i: usize) -> NodeId {
    (i as NodeId + 1) * 10
}

/// Builds the state. With `keep_every_range`, each range keeps a live replica and at least
/// one live node is not draining; otherwise anything goes (ranges may be lost).
fn build(spec: &Spec, keep_every_range: bool) -> ClusterState {
    let nodes: BTreeMap<NodeId, String> = (0..spec.nodes)
        .map(|i| (node_id(i), format!("sn-{i}:7000")))
        .collect();
    let mut bounds: Vec<u64> = spec.ranges.iter().skip(1).map(|r| r.table + 1).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut ranges = Vec::new();
    let mut loads = BTreeMap::new();
    for (i, rs) in spec.ranges.iter().take(bounds.len() + 1).enumerate() {
        let start = if i == 0 {
            Vec::new()
        } else {
            range_key(bounds[i - 1], b"")
        };
        let end = bounds.get(i).map(|t| range_key(*t, b""));
        let mut replicas: Vec<NodeId> = Vec::new();
        for r in &rs.replicas {
            let n = node_id(r % spec.nodes);
            if !replicas.contains(&n) {
                replicas.push(n);
            }
        }
        let mut learners: Vec<NodeId> = Vec::new();
        for l in &rs.learners {
            let n = node_id(l % spec.nodes);
            if !replicas.contains(&n) && !learners.contains(&n) {
                learners.push(n);
            }
        }
        let id = i as RangeId * 3 + 5;
        if let Some((bytes, split, lsns)) = &rs.load {
            let split_key = match split {
                0 => None,
                1 => Some([start.as_slice(), &[0x80, 1]].concat()),
                _ => Some(start.clone()),
            };
            let applied_lsn = replicas
                .iter()
                .chain(&learners)
                .enumerate()
                .map(|(j, n)| (*n, lsns[j % lsns.len()]))
                .collect();
            loads.insert(
                id,
                RangeLoad {
                    bytes: *bytes,
                    keys: bytes / 10,
                    op_rate: *bytes as f64 / 7.0,
                    split_key,
                    applied_lsn,
                },
            );
        }
        ranges.push(RangeDesc {
            id,
            start,
            end,
            epoch: rs.epoch,
            replicas,
            learners,
            bootstrap: rs.bootstrap,
        });
    }
    let map = PartitionMap {
        version: 1,
        nodes,
        ranges,
        tables: BTreeMap::new(),
        replication_factor: spec.rf,
    };
    map.validate().expect("generated map is valid");
    let mut live: BTreeSet<NodeId> = (0..spec.nodes)
        .filter(|i| spec.live[*i])
        .map(node_id)
        .collect();
    let mut draining: BTreeSet<NodeId> = (0..spec.nodes)
        .filter(|i| spec.draining[*i])
        .map(node_id)
        .collect();
    if keep_every_range {
        for r in &map.ranges {
            if !r.replicas.iter().any(|n| live.contains(n)) {
                live.insert(r.replicas[r.id as usize % r.replicas.len()]);
            }
        }
        if live.iter().all(|n| draining.contains(n)) {
            let keep = *live.iter().next().expect("some node is live");
            draining.remove(&keep);
        }
    }
    ClusterState {
        map,
        live,
        draining,
        loads,
    }
}

fn config(spec: &Spec, max_steps: usize) -> PlannerConfig {
    PlannerConfig {
        split_bytes: spec.split_bytes,
        max_steps,
    }
}

fn eligible(state: &ClusterState) -> BTreeSet<NodeId> {
    state
        .live
        .iter()
        .filter(|n| !state.draining.contains(n))
        .copied()
        .collect()
}

fn target(state: &ClusterState) -> usize {
    (state.map.replication_factor as usize).min(eligible(state).len())
}

fn lost(state: &ClusterState) -> Vec<RangeId> {
    state
        .map
        .ranges
        .iter()
        .filter(|r| !r.replicas.iter().any(|n| state.live.contains(n)))
        .map(|r| r.id)
        .collect()
}

/// Replays plans step by step, tracking which copies of each range are known up to date.
struct Replay {
    state: ClusterState,
    lost: BTreeSet<RangeId>,
    lost_ranges: Vec<RangeDesc>,
    /// Per range: nodes holding an up-to-date copy (live replicas at the start, promoted
    /// learners since; inherited by split halves).
    good: BTreeMap<RangeId, BTreeSet<NodeId>>,
}

impl Replay {
    fn new(state: &ClusterState) -> Self {
        let lost: BTreeSet<RangeId> = lost(state).into_iter().collect();
        let good = state
            .map
            .ranges
            .iter()
            .map(|r| {
                let live = r
                    .replicas
                    .iter()
                    .filter(|n| state.live.contains(n))
                    .copied()
                    .collect();
                (r.id, live)
            })
            .collect();
        let lost_ranges = state
            .map
            .ranges
            .iter()
            .filter(|r| lost.contains(&r.id))
            .cloned()
            .collect();
        Replay {
            state: state.clone(),
            lost,
            lost_ranges,
            good,
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let map = &self.state.map;
        prop_assert!(
            !self.lost.contains(&step.range()),
            "touches lost range: {step}"
        );
        if let Step::PromoteBackup { range, new_primary } = step {
            let r = map.range(*range).expect("promoted range exists");
            let primary = r.primary().expect("a primary");
            prop_assert!(
                !self.state.live.contains(&primary),
                "primary is live: {step}"
            );
            let lsn = |n: &NodeId| {
                self.state
                    .loads
                    .get(range)
                    .and_then(|l| l.applied_lsn.get(n))
                    .copied()
                    .unwrap_or(0)
            };
            let best = r
                .replicas
                .iter()
                .filter(|n| self.state.live.contains(n))
                .max_by_key(|n| (lsn(n), Reverse(**n)))
                .copied();
            prop_assert_eq!(Some(*new_primary), best, "not the most advanced backup");
        }
        let next = apply(map, step);
        prop_assert!(next.is_ok(), "{step} does not apply: {next:?}");
        let next = next.expect("checked");
        prop_assert_eq!(next.version, map.version + 1);
        match step {
            Step::PromoteLearner { range, node } => {
                self.good.entry(*range).or_default().insert(*node);
            }
            Step::RemoveReplica { range, node } => {
                self.good.entry(*range).or_default().remove(node);
            }
            Step::Split {
                range, left, right, ..
            } => {
                let parent = self.good.remove(range).unwrap_or_default();
                self.good.insert(*left, parent.clone());
                self.good.insert(*right, parent);
                if let Some(load) = self.state.loads.remove(range) {
                    self.state.loads.insert(*left, load.halved());
                    self.state.loads.insert(*right, load.halved());
                }
            }
            _ => {}
        }
        for r in &next.ranges {
            if self.lost.contains(&r.id) {
                continue;
            }
            let good = self.good.get(&r.id).cloned().unwrap_or_default();
            prop_assert!(
                r.replicas.iter().any(|n| good.contains(n)),
                "after {step}, range {} has no up-to-date replica: {r:?}",
                r.id
            );
        }
        self.state.map = next;
        Ok(())
    }

    fn run(&mut self, plan: &Plan) -> Result<(), TestCaseError> {
        for step in &plan.steps {
            self.step(step)?;
        }
        Ok(())
    }

    /// The end state: healthy, balanced, drained, lost ranges untouched.
    fn check_final(&self) -> Result<(), TestCaseError> {
        let state = &self.state;
        let map = &state.map;
        prop_assert!(map.validate().is_ok());
        for lost in &self.lost_ranges {
            prop_assert_eq!(Some(lost), map.range(lost.id), "lost range changed");
        }
        let target = target(state);
        if target == 0 {
            return Ok(());
        }
        let eligible = eligible(state);
        let mut counts: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
        for r in &map.ranges {
            if self.lost.contains(&r.id) {
                continue;
            }
            prop_assert_eq!(r.replicas.len(), target, "range {:?}", r);
            prop_assert!(r.learners.is_empty(), "learners left: {:?}", r);
            for n in &r.replicas {
                prop_assert!(eligible.contains(n), "replica on {} in {:?}", n, r);
                *counts.entry(*n).or_default() += 1;
            }
        }
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        prop_assert!(max <= min + 1, "unbalanced: {counts:?}");
        Ok(())
    }
}

/// Plans once, replays, checks the end state and that re-planning finds nothing to do.
fn check_full_plan(state: &ClusterState, config: PlannerConfig) -> Result<(), TestCaseError> {
    let plan = plan(state, &config);
    prop_assert_eq!(&plan.lost, &lost(state));
    prop_assert!(apply_plan(&state.map, &plan.steps).is_ok());
    let mut replay = Replay::new(state);
    replay.run(&plan)?;
    replay.check_final()?;
    let again = shmdb_placement::plan(&replay.state, &config);
    prop_assert_eq!(again.steps, Vec::new(), "not idempotent");
    prop_assert_eq!(again.lost, plan.lost);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn full_plan_heals_drains_and_balances(spec in spec()) {
        let state = build(&spec, true);
        prop_assert!(lost(&state).is_empty());
        check_full_plan(&state, config(&spec, 0))?;
    }

    #[test]
    fn lost_ranges_are_reported_and_left_alone(spec in spec()) {
        let state = build(&spec, false);
        check_full_plan(&state, config(&spec, 0))?;
    }

    #[test]
    fn capped_plans_converge_to_the_same_health(spec in spec(), cap in 1usize..=6) {
        let state = build(&spec, true);
        let mut replay = Replay::new(&state);
        let config = config(&spec, cap);
        let full = plan(&state, &PlannerConfig { max_steps: 0, ..config });
        let first = plan(&state, &config);
        prop_assert!(full.steps.starts_with(&first.steps), "a capped plan is a prefix");
        let mut rounds = 0;
        loop {
            let plan = plan(&replay.state, &config);
            prop_assert!(plan.steps.len() <= cap);
            if plan.steps.is_empty() {
                break;
            }
            replay.run(&plan)?;
            rounds += 1;
            prop_assert!(rounds < 2_000, "capped planning does not converge");
        }
        replay.check_final()?;
    }

    #[test]
    fn plan_is_deterministic(spec in spec()) {
        let state = build(&spec, false);
        let config = config(&spec, 0);
        prop_assert_eq!(plan(&state, &config), plan(&state, &config));
    }
}

#[test]
fn recovery_comes_first_under_a_cap() {
    // Three nodes, RF 2; node 1 dies and held the primary of every range; node 3 drains.
    let nodes: BTreeMap<NodeId, String> = (1..=4).map(|i| (i, format!("sn-{i}"))).collect();
    let mut map = PartitionMap::bootstrap(nodes, 2, 6);
    for r in &mut map.ranges {
        r.replicas = vec![1, 2];
    }
    let state = ClusterState {
        map,
        live: [2, 3, 4].into(),
        draining: [3].into(),
        loads: BTreeMap::new(),
    };
    let full = plan(
        &state,
        &PlannerConfig {
            split_bytes: 0,
            max_steps: 0,
        },
    );
    let capped = plan(
        &state,
        &PlannerConfig {
            split_bytes: 0,
            max_steps: 6,
        },
    );
    assert_eq!(capped.steps.len(), 6);
    assert_eq!(capped.steps, full.steps[..6]);
    assert!(
        capped
            .steps
            .iter()
            .all(|s| matches!(s, Step::PromoteBackup { new_primary: 2, .. })),
        "{:?}",
        capped.steps
    );
}
