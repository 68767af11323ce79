//! Writers that prove no acknowledged write is lost: each owns keys and increments them with
//! get + put_if (load-link/store-conditional), remembering every acknowledged value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use shmdb_store_client::{CondOutcome, Expect, StoreClient};
use tokio::task::JoinHandle;

fn decode(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|b| b.get(..8))
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// What one writer ends with: the last acknowledged value of each key, and violations.
type WriterOutcome = (BTreeMap<(u64, Bytes), u64>, Vec<String>);

/// Running writers.
pub struct Writers {
    stop: Arc<AtomicBool>,
    /// Increments acknowledged so far.
    pub acked: Arc<AtomicU64>,
    last_error: Arc<parking_lot::Mutex<String>>,
    tasks: Vec<JoinHandle<WriterOutcome>>,
}

impl Writers {
    /// `writers` writers with `keys` keys each, spread over `tables`.
    pub fn start(client: &StoreClient, tables: &[u64], writers: usize, keys: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let last_error = Arc::new(parking_lot::Mutex::new(String::new()));
        let tasks = (0..writers)
            .map(|w| {
                let client = client.clone();
                let stop = stop.clone();
                let acked = acked.clone();
                let last_error = last_error.clone();
                let mine: Vec<(u64, Bytes)> = (0..keys)
                    .map(|k| {
                        (
                            tables[(w * keys + k) % tables.len()],
                            Bytes::from(format!("w{w}-k{k}")),
                        )
                    })
                    .collect();
                tokio::spawn(async move {
                    let mut known: BTreeMap<(u64, Bytes), u64> =
                        mine.iter().map(|k| (k.clone(), 0)).collect();
                    let mut violations = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (table, key) = mine[i % mine.len()].clone();
                        i += 1;
                        let value = known[&(table, key.clone())];
                        let Ok(current) = client.get(table, key.clone()).await else {
                            continue;
                        };
                        let seen = decode(current.as_ref().map(|v| v.value.as_ref()));
                        if seen != value {
                            violations.push(format!("{key:?}: read {seen}, {value} acknowledged"));
                            break;
                        }
                        let expect = current.map_or(Expect::Absent, |v| Expect::Stamp(v.stamp));
                        let next = Bytes::from((value + 1).to_le_bytes().to_vec());
                        match client.put_if(table, key.clone(), next, expect).await {
                            Ok(CondOutcome::Written { .. }) => {
                                known.insert((table, key), value + 1);
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(other) => {
                                violations.push(format!("{key:?}: sole writer got {other:?}"));
                                break;
                            }
                            Err(e) if e.is_ambiguous() => {
                                // Learn whether it was applied by re-reading.
                                loop {
                                    *last_error.lock() =
                                        format!("resolving ambiguous put_if of {key:?}: {e}");
                                    if let Ok(v) = client.get(table, key.clone()).await {
                                        let now = decode(v.as_ref().map(|v| v.value.as_ref()));
                                        if now == value + 1 {
                                            known.insert((table, key.clone()), now);
                                        } else if now != value {
                                            violations.push(format!(
                                                "{key:?}: {now} after ambiguous {value}+1"
                                            ));
                                        }
                                        break;
                                    }
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            }
                            Err(e) => *last_error.lock() = format!("put_if: {e}"),
                        }
                    }
                    (known, violations)
                })
            })
            .collect();
        Writers {
            stop,
            acked,
            last_error,
            tasks,
        }
    }

    /// Waits until `more` further increments are acknowledged.
    pub async fn progress(&self, more: u64, timeout: Duration) {
        let target = self.acked.load(Ordering::Relaxed) + more;
        let deadline = tokio::time::Instant::now() + timeout;
        while self.acked.load(Ordering::Relaxed) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "writes stalled at {}; last error: {}",
                self.acked.load(Ordering::Relaxed),
                self.last_error.lock()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the writers, then checks with `reader` that every key holds exactly the last
    /// acknowledged value. Returns the number of acknowledged increments.
    pub async fn stop_and_verify(self, reader: &StoreClient) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = BTreeMap::new();
        for task in self.tasks {
            let (known, violations) = task.await.expect("writer");
            assert!(violations.is_empty(), "{violations:?}");
            all.extend(known);
        }
        for ((table, key), value) in &all {
            let stored = reader.get(*table, key.clone()).await.expect("final read");
            let stored = decode(stored.as_ref().map(|v| v.value.as_ref()));
            assert_eq!(
                stored, *value,
                "key {key:?} of table {table}: acknowledged writes lost"
            );
        }
        self.acked.load(Ordering::Relaxed)
    }
}
