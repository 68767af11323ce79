//! Exponential retry backoff with jitter, so clients retrying together spread out.

use std::time::Duration;

/// The delays between retries of one call.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            next: initial.min(max),
            max,
        }
    }

    /// The next delay: between half and all of the current step, which then doubles.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        let half = step / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_stays_within_bounds() {
        let mut b = Backoff::new(Duration::from_millis(2), Duration::from_millis(10));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(1) && delays[0] <= Duration::from_millis(2));
        for d in &delays[3..] {
            assert!(*d >= Duration::from_millis(5) && *d <= Duration::from_millis(10));
        }
    }
}
