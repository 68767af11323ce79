//! How long a publish should wait for more commits: group commit for short transactions.
//!
//! Why: a publish is one store write, and only one is in flight at a time. When clients run
//! short transactions (start, then commit right away), the clients a publish acknowledges come
//! back with their next commit a few network round trips later — usually just after the next
//! publish was taken, carrying the commits that arrived while the first was in flight. The
//! clients then split into two waves that ride every other publish each, and every store write
//! carries half of the load. Waiting, before taking a publish, until the clients acknowledged
//! by the previous one have come back merges the waves: one store write per round of every
//! client.
//!
//! The wait is only taken while the load looks short: when, by the time the following
//! publish became durable, nine in ten of the clients a publish acknowledged had already
//! finished another transaction. Long transactions (milliseconds of work) never come back
//! that fast, so for them nothing waits and commit latency is unchanged; the manager also
//! bounds every wait (`ManagerConfig::group_wait`).

/// Counts the transactions finished since the last durable publish that acknowledged commits.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupGauge {
    /// Tids above this were issued after that publish became durable (own tids increase).
    fresh_above: u64,
    /// Commits that publish acknowledged: the clients expected back.
    returning: u64,
    /// Transactions issued after it that asked to commit or abort since.
    returned: u64,
    /// Whether nine in ten of the clients acknowledged by the publish before it came back
    /// before it became durable.
    short_load: bool,
}

impl GroupGauge {
    /// A running transaction asked to commit or abort.
    pub(crate) fn finished(&mut self, tid: u64) {
        if tid > self.fresh_above {
            self.returned += 1;
        }
    }

    /// A publish that acknowledged `acked` commits became durable while `issued` was the
    /// newest tid. Publishes without commits (interval and lease publishes) change nothing.
    pub(crate) fn durable(&mut self, acked: u64, issued: u64) {
        if acked == 0 {
            return;
        }
        self.short_load = self.returning > 0 && self.returned * 10 >= self.returning * 9;
        self.fresh_above = issued;
        self.returning = acked;
        self.returned = 0;
    }

    /// How many more returning clients a publish about to be taken should wait for.
    pub(crate) fn waiting_for(&self) -> u64 {
        let expected = self.returning * 9 / 10;
        if self.short_load {
            expected.saturating_sub(self.returned)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GroupGauge;

    #[test]
    fn waits_for_acknowledged_clients_once_the_load_is_short() {
        let mut gauge = GroupGauge::default();
        gauge.durable(10, 100);
        // Nothing is known about the load after the first publish: no wait.
        assert_eq!(gauge.waiting_for(), 0);
        for tid in 101..=110 {
            gauge.finished(tid);
        }
        // All ten came back before the next publish became durable: a short load.
        gauge.durable(20, 110);
        assert_eq!(gauge.waiting_for(), 18);
        for tid in 111..=127 {
            gauge.finished(tid);
        }
        assert_eq!(gauge.waiting_for(), 1);
        gauge.finished(128);
        assert_eq!(gauge.waiting_for(), 0);
    }

    #[test]
    fn long_transactions_are_not_waited_for() {
        let mut gauge = GroupGauge::default();
        gauge.durable(10, 100);
        // Only 8 of 10 clients finished another transaction in time: not a short load.
        for tid in 101..=108 {
            gauge.finished(tid);
        }
        gauge.durable(10, 110);
        assert_eq!(gauge.waiting_for(), 0);
    }

    #[test]
    fn older_transactions_and_empty_publishes_do_not_count() {
        let mut gauge = GroupGauge::default();
        gauge.durable(4, 100);
        // Tids issued before the publish became durable finishing now are not its clients.
        for tid in 97..=100 {
            gauge.finished(tid);
        }
        // A publish without commits keeps the count going.
        gauge.durable(0, 105);
        for tid in 101..=103 {
            gauge.finished(tid);
        }
        gauge.durable(4, 110);
        assert_eq!(gauge.waiting_for(), 0, "3 of 4 is not nine in ten");
        for tid in 111..=114 {
            gauge.finished(tid);
        }
        gauge.durable(4, 120);
        assert_eq!(gauge.waiting_for(), 3);
    }
}
