//! Heartbeats of processing nodes, expiry of transactions nobody vouches for, and the
//! results of their recovery.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use super::{Core, NodeLiveness, Phase};

/// Transactions to recover together: all those of a processing node that fell silent for
/// the timeout, or single ones its heartbeats stopped listing (a lost start answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryGroup {
    /// The node that ran them; `None` for tids restored after a manager restart that no
    /// heartbeat claimed (the manager crashed before it published their node).
    pub node: Option<u64>,
    /// The tids, ascending.
    pub tids: Vec<u64>,
}

impl Core {
    /// A heartbeat of `node` listing the tids it still runs here. Refreshes each listed tid;
    /// returns those this manager does not consider running for the node (finished,
    /// recovering, another node's, or never issued here) so the node gives them up.
    ///
    /// A tid restored after a restart without a known node is adopted by the first node that
    /// lists it.
    pub fn heartbeat(&mut self, node: u64, tids: &[u64], now: Instant) -> Vec<u64> {
        self.nodes.insert(
            node,
            NodeLiveness {
                last_heard: now,
                last_heartbeat: Some(now),
            },
        );
        let mut not_running = Vec::new();
        for &tid in tids {
            match self.txns.get_mut(&tid) {
                Some(txn)
                    if txn.phase != Phase::Recovering && txn.node.is_none_or(|n| n == node) =>
                {
                    txn.node = Some(node);
                    txn.confirmed = now;
                }
                _ => not_running.push(tid),
            }
        }
        not_running
    }

    /// Marks tids as recovering and returns them grouped by node:
    /// - every running tid of a node not heard from (no start, no heartbeat) for the
    ///   timeout — the node is considered dead, and all its tids go in one group;
    /// - a running tid its live node has heartbeated for a full timeout without listing
    ///   (the node never got the start's answer, or forgot the tid);
    /// - a tid restored after a restart that no heartbeat claimed within the timeout.
    ///
    /// Committing tids are left alone: their outcome is decided and only waits for the
    /// publish.
    pub fn expire(&mut self, now: Instant) -> Vec<RecoveryGroup> {
        let timeout = self.cfg.heartbeat_timeout;
        let dead: HashSet<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| now.saturating_duration_since(n.last_heard) >= timeout)
            .map(|(&id, _)| id)
            .collect();
        self.nodes.retain(|id, _| !dead.contains(id));
        let mut groups: BTreeMap<Option<u64>, Vec<u64>> = BTreeMap::new();
        for (&tid, txn) in self.txns.iter_mut() {
            if txn.phase != Phase::Running {
                continue;
            }
            let unconfirmed =
                |since: Instant| since.saturating_duration_since(txn.confirmed) >= timeout;
            let expired = match txn.node {
                Some(node) if dead.contains(&node) => true,
                Some(node) => match self.nodes.get(&node) {
                    Some(live) => live.last_heartbeat.is_some_and(unconfirmed),
                    None => unconfirmed(now),
                },
                None => unconfirmed(now),
            };
            if expired {
                txn.phase = Phase::Recovering;
                groups.entry(txn.node).or_default().push(tid);
            }
        }
        groups
            .into_iter()
            .map(|(node, mut tids)| {
                tids.sort_unstable();
                RecoveryGroup { node, tids }
            })
            .collect()
    }

    /// Applies the outcome of a recovery: tids whose log showed a commit flag become pending
    /// commits (durable with the next publish); every other tid of the group is aborted —
    /// only now, after its writes were reverted (the abort invariant). Returns the publish
    /// sequence number the commits wait for, if there are any.
    pub fn recovered(&mut self, group: &RecoveryGroup, committed: &HashSet<u64>) -> Option<u64> {
        let mut wait = None;
        for &tid in &group.tids {
            let Some(txn) = self.txns.get_mut(&tid) else {
                continue;
            };
            if txn.phase != Phase::Recovering {
                continue;
            }
            if committed.contains(&tid) {
                txn.phase = Phase::Committing;
                self.pending.push(tid);
                self.stats.recovered_commits += 1;
                wait = Some(self.flush_seq);
            } else {
                self.txns.remove(&tid);
                self.stats.recovered_aborts += 1;
            }
        }
        wait
    }
}
