//! Cancel requests: PostgreSQL cancels a running statement through a *second* connection
//! that presents the backend key (pid, secret) the first one was given at startup. The
//! registry maps keys to the sessions' cancel flags.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use parking_lot::Mutex;

/// The backend keys of the live connections of one server.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    next_pid: AtomicI32,
    keys: Mutex<HashMap<i32, (i32, Arc<AtomicBool>)>>,
}

/// A registered key; dropping it unregisters the connection, so a key is never valid after
/// its connection is gone (and a reused pid cannot cancel a stranger).
#[derive(Debug)]
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    /// The "process id" reported in BackendKeyData (a connection number here).
    pub pid: i32,
    /// The random secret reported in BackendKeyData.
    pub secret: i32,
}

impl CancelRegistry {
    /// Registers a connection's cancel flag and returns its key.
    pub fn register(self: &Arc<Self>, flag: Arc<AtomicBool>) -> CancelKey {
        let pid = self
            .next_pid
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            .max(1);
        let secret: i32 = rand::random();
        self.keys.lock().insert(pid, (secret, flag));
        CancelKey {
            registry: self.clone(),
            pid,
            secret,
        }
    }

    /// Handles a cancel request: sets the flag if the key matches. Returns whether it did;
    /// the client is told nothing either way (as in PostgreSQL).
    pub fn cancel(&self, pid: i32, secret: &[u8]) -> bool {
        let keys = self.keys.lock();
        match keys.get(&pid) {
            Some((expected, flag)) if secret == expected.to_be_bytes() => {
                flag.store(true, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Live connections (for metrics and tests).
    pub fn len(&self) -> usize {
        self.keys.lock().len()
    }

    /// Whether no connection is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry.keys.lock().remove(&self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_key_cancels() {
        let registry = Arc::new(CancelRegistry::default());
        let flag = Arc::new(AtomicBool::new(false));
        let key = registry.register(flag.clone());
        assert!(!registry.cancel(key.pid, &key.secret.wrapping_add(1).to_be_bytes()));
        assert!(!flag.load(Ordering::Relaxed));
        assert!(registry.cancel(key.pid, &key.secret.to_be_bytes()));
        assert!(flag.load(Ordering::Relaxed));
        let pid = key.pid;
        let secret = key.secret;
        drop(key);
        assert!(!registry.cancel(pid, &secret.to_be_bytes()));
        assert!(registry.is_empty());
    }
}
