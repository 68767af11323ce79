//! Beginning transactions: issuing tids under the window bound.

use std::sync::Arc;
use std::time::Instant;

use super::{Core, Phase, SharedSnapshot, Txn};
use crate::error::StartError;

/// What a start (or a batch of starts) gets: tids sharing one snapshot and lav.
#[derive(Debug, Clone)]
pub struct StartGrant {
    /// The tids, ascending.
    pub tids: Vec<u64>,
    /// Their snapshot (every tid of the batch is above its base and not in it).
    pub snapshot: Arc<SharedSnapshot>,
    /// The lowest active version at the time of the start.
    pub lav: u64,
}

impl Core {
    /// Begins one transaction for `node`: its tid, snapshot and lav.
    ///
    /// The hot path of the whole database: amortised O(1) — one hash insert, and the shared
    /// snapshot is rebuilt only when the base or the committed set changed since the last
    /// start.
    pub fn start(
        &mut self,
        node: u64,
        now: Instant,
    ) -> Result<(u64, Arc<SharedSnapshot>, u64), StartError> {
        let base = self.check_window(1)?;
        self.heard_from(node, now);
        let tid = self.issue(node, base, now);
        Ok((tid, self.snapshot(), self.lav))
    }

    /// Begins `count` transactions for `node` that share one snapshot.
    pub fn start_batch(
        &mut self,
        node: u64,
        count: u32,
        now: Instant,
    ) -> Result<StartGrant, StartError> {
        if count == 0 || count > self.cfg.max_batch {
            return Err(StartError::BadCount {
                count,
                max: self.cfg.max_batch,
            });
        }
        let base = self.check_window(count)?;
        self.heard_from(node, now);
        let tids = (0..count).map(|_| self.issue(node, base, now)).collect();
        Ok(StartGrant {
            tids,
            snapshot: self.snapshot(),
            lav: self.lav,
        })
    }

    /// Whether `count` tids can be issued now; returns the base they will get.
    fn check_window(&mut self, count: u32) -> Result<u64, StartError> {
        if self.tids_left() < u64::from(count) {
            self.wanted = self.wanted.max(u64::from(count));
            return Err(StartError::NoTids);
        }
        self.wanted = 0;
        let base = self.refresh_base();
        let last = self.next_tid.saturating_add(u64::from(count) - 1);
        if last.saturating_sub(base) > self.cfg.window {
            self.stats.window_refusals += 1;
            return Err(StartError::WindowFull {
                window: self.cfg.window,
                base,
                next_tid: self.next_tid,
                holder: self.base_holder(),
            });
        }
        Ok(base)
    }

    /// Tids left in the durable blocks.
    pub(crate) fn tids_left(&self) -> u64 {
        self.active
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if i == 0 {
                    b.end - self.next_tid + 1
                } else {
                    b.end - b.start + 1
                }
            })
            .sum()
    }

    /// Notes that `node` is alive (it just started a transaction).
    fn heard_from(&mut self, node: u64, now: Instant) {
        self.nodes
            .entry(node)
            .and_modify(|n| n.last_heard = now)
            .or_insert(super::NodeLiveness {
                last_heard: now,
                last_heartbeat: None,
            });
    }

    /// Hands out the next tid (the caller checked that one is left).
    fn issue(&mut self, node: u64, base: u64, now: Instant) -> u64 {
        let tid = self.next_tid;
        let exhausted = self.active.front().is_some_and(|b| tid >= b.end);
        if exhausted {
            self.active.pop_front();
            self.next_tid = self.active.front().map_or(0, |b| b.start);
        } else {
            self.next_tid = tid + 1;
        }
        self.issued = tid;
        self.starts_since_merge += 1;
        self.txns.insert(
            tid,
            Txn {
                node: Some(node),
                base,
                confirmed: now,
                phase: Phase::Running,
            },
        );
        self.order.push_back(tid);
        self.stats.starts += 1;
        tid
    }
}
