//! The bank workload: accounts with a fixed total, random transfers between them, and
//! read-only snapshots that must always see the total.
//!
//! Shared by the bank tests and by the `bank_worker` example (a processing node in its own
//! process, so a test can SIGKILL it), which includes this file by path: it may use only
//! the crate's own dependencies.

#![allow(dead_code)]

use std::ops::Bound;
use std::sync::Arc;

use rand::Rng;
use shmdb_processing_node::Datum;
use shmdb_processing_node::txn::{Engine, TableDef, TxnError};

/// Accounts in the bank.
pub const ACCOUNTS: i64 = 100;
/// Every account's starting balance.
pub const INITIAL: i64 = 1_000;

/// `bank(id int primary key, balance int)`.
pub fn table() -> TableDef {
    TableDef {
        id: 20,
        columns: 2,
        primary_key: vec![0],
        indexes: Vec::new(),
    }
}

/// The total every snapshot must see.
pub fn total() -> i64 {
    ACCOUNTS * INITIAL
}

/// Creates the accounts in one transaction.
pub async fn create(engine: &Arc<Engine>) -> Result<(), TxnError> {
    let table = table();
    let mut tx = engine.begin().await?;
    for id in 0..ACCOUNTS {
        tx.insert(&table, vec![Datum::Int(id), Datum::Int(INITIAL)])
            .await?;
    }
    tx.commit().await
}

/// A transfer of `amount` from one account to another, by transaction `tid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// The transaction that tried it.
    pub tid: u64,
    /// The debited account.
    pub from: i64,
    /// The credited account.
    pub to: i64,
    /// How much moved.
    pub amount: i64,
}

/// How a transfer attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// `commit` returned `Ok`: it must be reflected in the final balances.
    Committed,
    /// A write-write conflict: rolled back, retried by the caller.
    Conflict,
    /// Failed before `commit` was called: nothing was written.
    NotCommitted(String),
    /// `commit` failed otherwise: the transaction log says what happened.
    Unknown(String),
}

/// What happens during an attempt, for callers that report progress as it happens (the
/// worker process prints each event before the next step, so a kill loses nothing said).
#[derive(Debug, Clone)]
pub enum Event {
    /// A transaction began.
    Begin(u64),
    /// It is about to commit this transfer.
    Try(Transfer),
    /// How it ended.
    Done(Transfer, Fate),
}

fn balance_of(row: &Option<Vec<Datum>>) -> Option<i64> {
    match row.as_ref().and_then(|r| r.get(1)) {
        Some(Datum::Int(v)) => Some(*v),
        _ => None,
    }
}

/// One transfer attempt between two distinct random accounts: begin, read both balances in
/// one round trip, write both, commit. `None` if no transaction could be begun.
pub async fn transfer_once(
    engine: &Arc<Engine>,
    rng: &mut impl Rng,
    report: &mut impl FnMut(Event),
) -> Option<(Transfer, Fate)> {
    let table = table();
    let from = rng.random_range(0..ACCOUNTS);
    let mut to = rng.random_range(0..ACCOUNTS - 1);
    if to >= from {
        to += 1;
    }
    let amount = rng.random_range(1..=100);
    let mut tx = engine.begin().await.ok()?;
    let transfer = Transfer {
        tid: tx.tid(),
        from,
        to,
        amount,
    };
    report(Event::Begin(transfer.tid));
    let before_commit = async {
        let rows = tx
            .get_many(&table, &[vec![Datum::Int(from)], vec![Datum::Int(to)]])
            .await?;
        let (Some(a), Some(b)) = (balance_of(&rows[0]), balance_of(&rows[1])) else {
            return Err(TxnError::NotFound);
        };
        tx.update(
            &table,
            &[Datum::Int(from)],
            vec![Datum::Int(from), Datum::Int(a - amount)],
        )
        .await?;
        tx.update(
            &table,
            &[Datum::Int(to)],
            vec![Datum::Int(to), Datum::Int(b + amount)],
        )
        .await?;
        Ok(())
    }
    .await;
    let fate = match before_commit {
        Ok(()) => {
            report(Event::Try(transfer));
            match tx.commit().await {
                Ok(()) => Fate::Committed,
                Err(TxnError::SerializationFailure) => Fate::Conflict,
                Err(e) => Fate::Unknown(e.to_string()),
            }
        }
        Err(e) => {
            let _ = tx.rollback().await;
            if e.is_retryable() {
                Fate::Conflict
            } else {
                Fate::NotCommitted(e.to_string())
            }
        }
    };
    report(Event::Done(transfer, fate.clone()));
    Some((transfer, fate))
}

/// What one worker did.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Transfers whose commit was acknowledged.
    pub committed: Vec<Transfer>,
    /// Transfers whose commit failed in a way that leaves the outcome to the log.
    pub unknown: Vec<(Transfer, String)>,
    /// Attempts lost to write-write conflicts.
    pub conflicts: u64,
    /// Attempts that failed before commit (or could not begin).
    pub failures: u64,
    /// The last few failure messages, for diagnosis.
    pub failure_messages: Vec<String>,
}

impl Ledger {
    /// Books an attempt.
    pub fn record(&mut self, transfer: Transfer, fate: Fate) {
        match fate {
            Fate::Committed => self.committed.push(transfer),
            Fate::Conflict => self.conflicts += 1,
            Fate::NotCommitted(message) => {
                self.failures += 1;
                if self.failure_messages.len() < 8 {
                    self.failure_messages.push(message);
                }
            }
            Fate::Unknown(message) => self.unknown.push((transfer, message)),
        }
    }

    /// Adds another worker's book to this one.
    pub fn merge(&mut self, other: Ledger) {
        self.committed.extend(other.committed);
        self.unknown.extend(other.unknown);
        self.conflicts += other.conflicts;
        self.failures += other.failures;
        for message in other.failure_messages {
            if self.failure_messages.len() < 8 {
                self.failure_messages.push(message);
            }
        }
    }
}

/// Runs transfers until `deadline`, booking each attempt.
pub async fn run_worker(engine: Arc<Engine>, seed: u64, deadline: tokio::time::Instant) -> Ledger {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ledger = Ledger::default();
    while tokio::time::Instant::now() < deadline {
        match transfer_once(&engine, &mut rng, &mut |_| {}).await {
            Some((transfer, fate)) => ledger.record(transfer, fate),
            None => {
                ledger.failures += 1;
                // The commit manager refused to begin: give it a moment.
                tokio::task::yield_now().await;
            }
        }
    }
    ledger
}

/// The balances every account should hold after `transfers` (in any order: sums commute).
pub fn expected_balances<'a>(transfers: impl IntoIterator<Item = &'a Transfer>) -> Vec<i64> {
    let mut balances = vec![INITIAL; ACCOUNTS as usize];
    for t in transfers {
        balances[t.from as usize] -= t.amount;
        balances[t.to as usize] += t.amount;
    }
    balances
}

/// A read-only snapshot of every balance, in account order.
pub async fn balances(engine: &Arc<Engine>) -> Result<Vec<i64>, TxnError> {
    let mut tx = engine.begin().await?;
    let rows = tx
        .scan(&table(), Bound::Unbounded, Bound::Unbounded, 0)
        .await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| balance_of(&Some(r.clone())).unwrap_or(i64::MIN))
        .collect())
}

/// What the snapshot readers saw.
#[derive(Debug, Default, Clone)]
pub struct ReaderReport {
    /// Snapshots read.
    pub snapshots: u64,
    /// Snapshots whose sum or account count was wrong: (sum, accounts seen).
    pub bad: Vec<(i64, usize)>,
    /// Snapshot reads that failed (store or manager errors).
    pub errors: u64,
}

/// Reads snapshots of every account until `deadline`, checking each sums to the total.
pub async fn run_reader(engine: Arc<Engine>, deadline: tokio::time::Instant) -> ReaderReport {
    let mut report = ReaderReport::default();
    while tokio::time::Instant::now() < deadline {
        match balances(&engine).await {
            Ok(b) => {
                report.snapshots += 1;
                let sum: i64 = b.iter().sum();
                if sum != total() || b.len() != ACCOUNTS as usize {
                    report.bad.push((sum, b.len()));
                }
            }
            Err(_) => report.errors += 1,
        }
    }
    report
}

/// Seconds of load: `SHMDB_BANK_SECS` if set (CI can shorten or lengthen every bank run),
/// else `default`; `scale` divides it for the failure variants.
pub fn load_duration(default_secs: f64, scale: f64) -> std::time::Duration {
    let secs = std::env::var("SHMDB_BANK_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(default_secs);
    std::time::Duration::from_secs_f64((secs / scale).max(0.5))
}

/// What a bank run did: each processing node's merged ledger and the readers' report.
#[derive(Debug, Default)]
pub struct Run {
    /// (processing node id, its workers' merged ledger).
    pub ledgers: Vec<(u64, Ledger)>,
    /// Every reader's snapshots.
    pub readers: ReaderReport,
}

impl Run {
    /// Acknowledged commits over every node.
    pub fn committed(&self) -> usize {
        self.ledgers.iter().map(|(_, l)| l.committed.len()).sum()
    }

    /// Conflicts over every node.
    pub fn conflicts(&self) -> u64 {
        self.ledgers.iter().map(|(_, l)| l.conflicts).sum()
    }
}

/// Runs `workers` transfer tasks and one snapshot reader per engine for `duration`.
pub async fn run(engines: &[Arc<Engine>], workers: usize, duration: std::time::Duration) -> Run {
    let deadline = tokio::time::Instant::now() + duration;
    let mut worker_tasks = Vec::new();
    let mut reader_tasks = Vec::new();
    for (e, engine) in engines.iter().enumerate() {
        let mut tasks = Vec::new();
        for w in 0..workers {
            let seed = (e * 1000 + w) as u64;
            tasks.push(tokio::spawn(run_worker(engine.clone(), seed, deadline)));
        }
        worker_tasks.push((engine.node_id(), tasks));
        reader_tasks.push(tokio::spawn(run_reader(engine.clone(), deadline)));
    }
    let mut out = Run::default();
    for (node, tasks) in worker_tasks {
        let mut ledger = Ledger::default();
        for task in tasks {
            ledger.merge(task.await.unwrap_or_default());
        }
        out.ledgers.push((node, ledger));
    }
    for task in reader_tasks {
        let report = task.await.unwrap_or_default();
        out.readers.snapshots += report.snapshots;
        out.readers.errors += report.errors;
        out.readers.bad.extend(report.bad);
    }
    out
}
