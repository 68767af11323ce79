//! Ending transactions: commits wait for the next publish, aborts take effect at once.

use super::{Core, Phase};
use crate::error::Refusal;

impl Core {
    /// Requests the commit of `tid`. On success returns the sequence number of the publish
    /// that will make it durable: the caller acknowledges the commit once that publish has
    /// succeeded (a commit is visible to snapshots only from then on, so no reader can see a
    /// commit that a crash could still undo). A retried commit of a tid whose commit is still
    /// pending returns the same kind of ticket.
    pub fn commit(&mut self, tid: u64) -> Result<u64, Refusal> {
        match self.txns.get_mut(&tid).map(|t| t.phase) {
            Some(Phase::Running) => {
                if let Some(txn) = self.txns.get_mut(&tid) {
                    txn.phase = Phase::Committing;
                }
                self.pending.push(tid);
                self.group.finished(tid);
                Ok(self.flush_seq)
            }
            Some(Phase::Committing) => Ok(self.flush_seq),
            Some(Phase::Recovering) => Err(Refusal::Recovering(tid)),
            None => Err(self.finished_refusal(tid)),
        }
    }

    /// Aborts `tid`. The caller promises the abort invariant: every version the transaction
    /// wrote has already been removed from the store. Takes effect at once: an abort needs no
    /// durability, since a restarted manager treats an unpublished abort as a running tid and
    /// recovers it (undoing nothing) before aborting it again.
    pub fn abort(&mut self, tid: u64) -> Result<(), Refusal> {
        match self.txns.get(&tid).map(|t| t.phase) {
            Some(Phase::Running) => {
                self.txns.remove(&tid);
                self.group.finished(tid);
                self.stats.aborts += 1;
                Ok(())
            }
            Some(Phase::Committing) => Err(Refusal::AlreadyCommitted(tid)),
            Some(Phase::Recovering) => Err(Refusal::Recovering(tid)),
            None => Err(self.finished_refusal(tid)),
        }
    }

    /// How many more clients acknowledged by the last publish a publish about to be taken
    /// should wait for (0 when nothing is pending or the load is not short: see the `group`
    /// module of the core).
    pub fn group_waiting_for(&self) -> u64 {
        if self.pending.is_empty() {
            0
        } else {
            self.group.waiting_for()
        }
    }

    /// Why a tid that is not running cannot be finished: committed, aborted, or unknown.
    pub(crate) fn finished_refusal(&self, tid: u64) -> Refusal {
        if tid == 0 || tid > self.issued {
            return Refusal::UnknownTid(tid);
        }
        let own = self.history.iter().any(|b| b.contains(tid));
        let older_than_history = self.history.front().is_none_or(|b| tid < b.start);
        if own && tid >= self.known_from {
            if self.own_committed.contains(tid) {
                Refusal::AlreadyCommitted(tid)
            } else {
                Refusal::AlreadyAborted(tid)
            }
        } else if own || (tid < self.known_from && older_than_history) {
            // Ours (or possibly ours: blocks this old are forgotten) and finished, but the
            // outcome is no longer kept.
            Refusal::Finished(tid)
        } else {
            Refusal::UnknownTid(tid)
        }
    }
}
