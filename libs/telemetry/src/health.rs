//! The readiness state a component reports to Kubernetes through `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The reason a fresh [`Health`] reports until the component calls [`Health::set_ready`].
pub const STARTING_REASON: &str = "starting";

/// A cheap-to-clone handle on whether this component should receive traffic.
///
/// Why: Kubernetes routes clients and counts pod disruption budgets by readiness, so a
/// storage node that is still loading its ranges, or a processing node that lost its commit
/// manager, must say so — and say why, which `/readyz` returns in its 503 body. The component
/// keeps one clone and flips it; the HTTP server holds another and reads it.
/// Liveness (`/healthz`) is deliberately not part of this state: a not-ready process is
/// still alive and must not be restarted for it.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Read without locking on the fast path ([`Health::is_ready`]).
    ready: AtomicBool,
    /// Why not ready; written under the same lock as `ready` so the two never disagree
    /// for a reader holding the lock.
    reason: Mutex<String>,
}

impl Health {
    /// A handle that starts not ready with reason [`STARTING_REASON`]: nothing is ready before
    /// it has said so.
    pub fn new() -> Self {
        Health {
            inner: Arc::new(Inner {
                ready: AtomicBool::new(false),
                reason: Mutex::new(STARTING_REASON.to_owned()),
            }),
        }
    }

    /// Marks the component ready to serve traffic.
    pub fn set_ready(&self) {
        let mut reason = self.lock_reason();
        reason.clear();
        self.inner.ready.store(true, Ordering::Release);
    }

    /// Marks the component not ready and records why, for operators reading `/readyz`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        let mut current = self.lock_reason();
        *current = reason.into();
        self.inner.ready.store(false, Ordering::Release);
    }

    /// Whether the component currently reports ready.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// `None` when ready, else the reason last given to [`Health::set_not_ready`].
    pub fn not_ready_reason(&self) -> Option<String> {
        let reason = self.lock_reason();
        if self.inner.ready.load(Ordering::Acquire) {
            None
        } else {
            Some(reason.clone())
        }
    }

    /// The reason string is plain data, so a panic while holding the lock cannot leave it
    /// inconsistent; carry on rather than propagate the poison.
    fn lock_reason(&self) -> MutexGuard<'_, String> {
        self.inner
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_not_ready_then_flips_both_ways() {
        let health = Health::new();
        assert!(!health.is_ready());
        assert_eq!(health.not_ready_reason().as_deref(), Some(STARTING_REASON));

        let seen_by_server = health.clone();
        health.set_ready();
        assert!(seen_by_server.is_ready());
        assert_eq!(seen_by_server.not_ready_reason(), None);

        health.set_not_ready("draining");
        assert!(!seen_by_server.is_ready());
        assert_eq!(
            seen_by_server.not_ready_reason().as_deref(),
            Some("draining")
        );
    }
}
