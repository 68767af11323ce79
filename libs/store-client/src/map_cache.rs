//! The client's cached partition map and how it is refreshed from the storage nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use shmdb_placement::PartitionMap;

use crate::transport::Transport;

/// The newest partition map this client knows, shared by all clones of the client.
///
/// The map only moves forward (a fetched map older than the cached one is ignored), and
/// concurrent refreshes are coalesced: a caller that waited while another fetch ran uses
/// that fetch's result instead of asking every node again.
pub(crate) struct MapCache {
    current: parking_lot::RwLock<Arc<PartitionMap>>,
    seeds: Vec<String>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Completed fetches, to detect that one finished while we waited for the lock.
    fetches: AtomicU64,
}

impl MapCache {
    pub(crate) fn new(seeds: Vec<String>, initial: PartitionMap) -> Self {
        MapCache {
            current: parking_lot::RwLock::new(Arc::new(initial)),
            seeds,
            refresh_lock: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// The cached map (version 0 and empty when none is known yet).
    pub(crate) fn get(&self) -> Arc<PartitionMap> {
        self.current.read().clone()
    }

    /// Installs `map` if it is newer than the cached one.
    pub(crate) fn offer(&self, map: PartitionMap) -> bool {
        let mut current = self.current.write();
        if map.version > current.version {
            tracing::debug!(
                from = current.version,
                to = map.version,
                "partition map updated"
            );
            *current = Arc::new(map);
            true
        } else {
            false
        }
    }

    /// Fetches the map from every seed and every node of the cached map and keeps the newest.
    ///
    /// `coalesce` lets a caller that only needs "a fresh look" reuse a fetch that completed
    /// while it waited, and skip the fetch when the node that refused it knows no newer map
    /// than ours; `wanted` (the version a node told us about, 0 if none) also lets the fetch
    /// stop as soon as a map that new has arrived instead of waiting for slow nodes.
    pub(crate) async fn refresh(
        &self,
        transport: &dyn Transport,
        timeout: Duration,
        coalesce: bool,
        wanted: u64,
    ) -> Arc<PartitionMap> {
        let ticket = self.fetches.load(Ordering::Acquire);
        let _guard = self.refresh_lock.lock().await;
        let current = self.get();
        if coalesce {
            if self.fetches.load(Ordering::Acquire) != ticket {
                // Another fetch finished while we waited: its result is as fresh as ours.
                return current;
            }
            if wanted > 0 && current.version >= wanted {
                // The node that sent us away knows no newer map than ours: asking the
                // cluster again would not help, only waiting for the node to catch up will.
                return current;
            }
        }
        let mut candidates: Vec<&str> = self.seeds.iter().map(String::as_str).collect();
        for addr in current.nodes.values() {
            if !candidates.contains(&addr.as_str()) {
                candidates.push(addr);
            }
        }
        let mut pending: FuturesUnordered<_> = candidates
            .into_iter()
            .map(|addr| async move {
                let answer = tokio::time::timeout(timeout, transport.get_map(addr)).await;
                (addr, answer)
            })
            .collect();
        let mut best: Option<PartitionMap> = None;
        while let Some((addr, answer)) = pending.next().await {
            let proto = match answer {
                Ok(Ok(proto)) => proto,
                Ok(Err(e)) => {
                    tracing::debug!(addr, error = %e, "map fetch failed");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(addr, "map fetch timed out");
                    continue;
                }
            };
            if proto.version == 0 {
                continue;
            }
            match PartitionMap::from_proto(&proto) {
                Ok(map) => {
                    if best.as_ref().is_none_or(|b| map.version > b.version) {
                        best = Some(map);
                    }
                }
                Err(e) => tracing::debug!(addr, error = %e, "ignoring invalid partition map"),
            }
            if wanted > current.version && best.as_ref().is_some_and(|b| b.version >= wanted) {
                break;
            }
        }
        self.fetches.fetch_add(1, Ordering::AcqRel);
        if let Some(map) = best {
            self.offer(map);
        }
        self.get()
    }
}
