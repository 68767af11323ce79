//! A counting workload for failure tests: writers that each own keys and increment them with
//! load-link/store-conditional, so the final values prove that no acknowledged write was lost
//! and none was applied twice.
//!
//! Each writer is the only writer of its keys and loops over them: `get` → `(value, stamp)`,
//! then `put_if(value + 1, stamp)`. It keeps, per key, the value it knows to be stored (every
//! acknowledged increment, plus every ambiguous one that a re-read showed applied). Because
//! nobody else writes the key, every read must return exactly that value, and a conditional
//! write must never conflict; anything else is a violation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use shmdb_store_client::{CondOutcome, Expect, KeyRange, StoreClient};
use tokio::task::JoinHandle;

/// How writers treat a write whose outcome the client reports as unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// Resolve it by re-reading the key (a failure was injected: ambiguity is expected).
    Resolve,
    /// Also resolve it, but count it as an error (nothing was injected that could explain it).
    Forbid,
}

/// A key owned by one writer, with the value known to be stored.
pub struct Slot {
    /// Table id.
    pub table: u64,
    /// Key within the table.
    pub key: Bytes,
    /// The counter value known to be stored (0 = the key was never written).
    pub value: AtomicU64,
}

/// What one writer saw.
#[derive(Debug, Default)]
pub struct WriterReport {
    /// Increments the client acknowledged.
    pub acked: u64,
    /// Ambiguous increments that a re-read showed applied.
    pub ambiguous_applied: u64,
    /// Ambiguous increments that a re-read showed not applied.
    pub ambiguous_not_applied: u64,
    /// Calls that returned an error (and, for `Forbid`, ambiguous outcomes).
    pub errors: Vec<String>,
    /// Reads or writes that contradict the writer's knowledge: lost or doubled writes.
    pub violations: Vec<String>,
}

/// Writers running against a cluster.
pub struct Load {
    /// Every key of every writer.
    pub slots: Arc<Vec<Slot>>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    writers: Vec<JoinHandle<WriterReport>>,
}

/// Encodes a counter value followed by `pad` filler bytes (to give ranges some size).
fn encode(value: u64, pad: usize) -> Bytes {
    let mut out = Vec::with_capacity(8 + pad);
    out.extend_from_slice(&value.to_le_bytes());
    out.resize(8 + pad, b'.');
    Bytes::from(out)
}

/// The counter value of a stored value (0 for an absent key).
pub fn decode(value: Option<&[u8]>) -> Result<u64, String> {
    match value {
        None => Ok(0),
        Some(bytes) => bytes
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| format!("value of {} bytes is not a counter", bytes.len())),
    }
}

impl Load {
    /// Starts `writers` writers with `keys_per_writer` keys each, spread round-robin over
    /// `tables`; values carry `pad` filler bytes.
    pub fn start(
        client: &StoreClient,
        tables: &[u64],
        writers: usize,
        keys_per_writer: usize,
        pad: usize,
        ambiguity: Ambiguity,
    ) -> Load {
        let slots: Arc<Vec<Slot>> = Arc::new(
            (0..writers * keys_per_writer)
                .map(|i| Slot {
                    table: tables[i % tables.len()],
                    key: Bytes::from(format!("key-{i:05}")),
                    value: AtomicU64::new(0),
                })
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let writers = (0..writers)
            .map(|w| {
                let mine: Vec<usize> = (0..slots.len()).filter(|i| i % writers == w).collect();
                tokio::spawn(write_loop(
                    client.clone(),
                    slots.clone(),
                    mine,
                    pad,
                    ambiguity,
                    stop.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        Load {
            slots,
            stop,
            acked,
            writers,
        }
    }

    /// Increments acknowledged so far, over all writers.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` further increments are acknowledged; panics after `timeout`.
    pub async fn wait_progress(&self, more: u64, timeout: Duration, what: &str) {
        let target = self.acked() + more;
        let deadline = tokio::time::Instant::now() + timeout;
        while self.acked() < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "writes did not progress {what}: {} of {target} acknowledged",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the writers after their current step and collects what they saw.
    pub async fn stop(self) -> Vec<WriterReport> {
        self.stop.store(true, Ordering::Relaxed);
        let mut reports = Vec::new();
        for writer in self.writers {
            reports.push(writer.await.expect("writer task"));
        }
        reports
    }
}

/// Sums up the writers' reports; panics on any violation, and on any error unless
/// `errors_allowed`.
pub fn summarize(reports: &[WriterReport], errors_allowed: bool) -> WriterReport {
    let mut total = WriterReport::default();
    for r in reports {
        total.acked += r.acked;
        total.ambiguous_applied += r.ambiguous_applied;
        total.ambiguous_not_applied += r.ambiguous_not_applied;
        total.errors.extend(r.errors.iter().cloned());
        total.violations.extend(r.violations.iter().cloned());
    }
    assert!(
        total.violations.is_empty(),
        "writers saw lost or doubled writes: {:#?}",
        total.violations
    );
    assert!(
        errors_allowed || total.errors.is_empty(),
        "writers saw failures: {:#?}",
        total.errors
    );
    total
}

async fn write_loop(
    client: StoreClient,
    slots: Arc<Vec<Slot>>,
    mine: Vec<usize>,
    pad: usize,
    ambiguity: Ambiguity,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> WriterReport {
    let mut report = WriterReport::default();
    let mut next = 0;
    while !stop.load(Ordering::Relaxed) && report.violations.is_empty() {
        let slot = &slots[mine[next % mine.len()]];
        next += 1;
        increment(&client, slot, pad, ambiguity, &mut report, &acked).await;
    }
    report
}

/// One load-link/store-conditional increment of `slot`.
async fn increment(
    client: &StoreClient,
    slot: &Slot,
    pad: usize,
    ambiguity: Ambiguity,
    report: &mut WriterReport,
    acked: &AtomicU64,
) {
    let key = String::from_utf8_lossy(&slot.key).into_owned();
    let known = slot.value.load(Ordering::Relaxed);
    let current = match client.get(slot.table, slot.key.clone()).await {
        Ok(current) => current,
        Err(e) => {
            report.errors.push(format!("get {key}: {e}"));
            return;
        }
    };
    match decode(current.as_ref().map(|v| v.value.as_ref())) {
        Ok(seen) if seen == known => {}
        Ok(seen) => {
            report.violations.push(format!(
                "{key}: read {seen}, but {known} is stored (stamp {:?})",
                current.as_ref().map(|v| v.stamp)
            ));
            return;
        }
        Err(e) => {
            report.violations.push(format!("{key}: {e}"));
            return;
        }
    }
    let expect = current.map_or(Expect::Absent, |v| Expect::Stamp(v.stamp));
    match client
        .put_if(slot.table, slot.key.clone(), encode(known + 1, pad), expect)
        .await
    {
        Ok(CondOutcome::Written { .. }) => {
            slot.value.store(known + 1, Ordering::Relaxed);
            report.acked += 1;
            acked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(other) => report.violations.push(format!(
            "{key}: put_if over the stamp just read answered {other:?}"
        )),
        Err(e) if e.is_ambiguous() => {
            if ambiguity == Ambiguity::Forbid {
                report.errors.push(format!("put_if {key}: {e}"));
            }
            resolve(client, slot, known, report).await;
        }
        // Any other error promises that the write was not applied; the next read checks it.
        Err(e) => report.errors.push(format!("put_if {key}: {e}")),
    }
}

/// Learns whether an ambiguous increment from `known` was applied, by re-reading the key.
async fn resolve(client: &StoreClient, slot: &Slot, known: u64, report: &mut WriterReport) {
    let key = String::from_utf8_lossy(&slot.key).into_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match client.get(slot.table, slot.key.clone()).await {
            Ok(current) => {
                match decode(current.as_ref().map(|v| v.value.as_ref())) {
                    Ok(v) if v == known + 1 => {
                        slot.value.store(v, Ordering::Relaxed);
                        report.ambiguous_applied += 1;
                    }
                    Ok(v) if v == known => report.ambiguous_not_applied += 1,
                    Ok(v) => report.violations.push(format!(
                        "{key}: after an ambiguous increment of {known}, read {v}"
                    )),
                    Err(e) => report.violations.push(format!("{key}: {e}")),
                }
                return;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(key, error = %e, "re-read after an ambiguous write failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                report.violations.push(format!(
                    "{key}: could not re-read after an ambiguous write: {e}"
                ));
                return;
            }
        }
    }
}

/// Checks through the client that every key holds exactly its known value, and that a
/// scan of every table returns exactly the written keys, in order, with those values.
pub async fn verify_store(client: &StoreClient, slots: &[Slot]) {
    for slot in slots {
        let key = String::from_utf8_lossy(&slot.key).into_owned();
        let got = client
            .get(slot.table, slot.key.clone())
            .await
            .unwrap_or_else(|e| panic!("final read of {key}: {e}"));
        let value = decode(got.as_ref().map(|v| v.value.as_ref()))
            .unwrap_or_else(|e| panic!("final read of {key}: {e}"));
        assert_eq!(
            value,
            slot.value.load(Ordering::Relaxed),
            "{key}: the stored count differs from the acknowledged one"
        );
    }
    let mut tables: Vec<u64> = slots.iter().map(|s| s.table).collect();
    tables.sort_unstable();
    tables.dedup();
    for table in tables {
        let mut expected: Vec<(Bytes, u64)> = slots
            .iter()
            .filter(|s| s.table == table && s.value.load(Ordering::Relaxed) > 0)
            .map(|s| (s.key.clone(), s.value.load(Ordering::Relaxed)))
            .collect();
        expected.sort();
        let items = client
            .scan(table, KeyRange::all(), usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("scan of table {table}: {e}"));
        let got: Vec<(Bytes, u64)> = items
            .iter()
            .map(|item| {
                let value = decode(Some(&item.value)).expect("counter value");
                (item.key.clone(), value)
            })
            .collect();
        assert_eq!(got, expected, "scan of table {table}");
    }
}

/// The number of keys the writers created.
pub fn written_keys(slots: &[Slot]) -> u64 {
    slots
        .iter()
        .filter(|s| s.value.load(Ordering::Relaxed) > 0)
        .count() as u64
}
