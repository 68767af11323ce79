//! Transaction-core throughput: transactions/s and abort rate of a read-modify-write mix
//! over 10,000 rows with one and two processing-node engines, and the three buffering
//! strategies on a read-heavy and an update-heavy mix with their cache hit ratios.
//!
//! Storage nodes run as child processes (the local cluster's `processes` mode, so the
//! store's work is not on the benchmark's runtime), the commit manager and the engines in
//! this process, each engine with its own commit client. Build the storage-node binary in
//! the same profile first:
//!
//! ```text
//! cargo build --release -p shmdb-storage-node
//! cargo bench -p shmdb-processing-node --bench txn
//! ```
//!
//! `SHMDB_BENCH_SECS` sets the seconds per measurement (default 8), `SHMDB_BENCH_STORAGE`
//! the storage nodes (default 1, replication factor 1), `SHMDB_BENCH_INPROCESS=1` runs the
//! storage nodes inside this process instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shmdb::cluster::{ClusterOptions, LocalCluster};
use shmdb_commit_manager::{CommitClient, CommitClientConfig, ManagerConfig, RunningManager};
use shmdb_processing_node::Datum;
use shmdb_processing_node::txn::buffer::BufferStats;
use shmdb_processing_node::txn::recover::LogRecovery;
use shmdb_processing_node::txn::{BufferStrategy, Engine, EngineConfig, TableDef, TxnError};
use shmdb_store_client::{StoreClient, StoreClientConfig};

/// Rows in the table.
const ROWS: i64 = 10_000;

/// `bench(id int primary key, value int)`.
fn table() -> TableDef {
    TableDef {
        id: 50,
        columns: 2,
        primary_key: vec![0],
        indexes: Vec::new(),
    }
}

/// What a transaction does.
#[derive(Debug, Clone, Copy)]
enum Mix {
    /// Read 4 random rows in one round trip, update 2 of them.
    ReadModifyWrite,
    /// 95% read-only transactions reading 10 random rows, 5% read-modify-write.
    ReadHeavy,
    /// Every transaction reads 10 random rows and updates 2 of them (TPC-C-like: reads
    /// many, writes some).
    UpdateHeavy,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::ReadModifyWrite => "read-modify-write (read 4, update 2)",
            Mix::ReadHeavy => "read-heavy (95% read 10; 5% read 4, update 2)",
            Mix::UpdateHeavy => "update-heavy (read 10, update 2)",
        }
    }

    /// (rows read, rows updated) of the next transaction.
    fn next(self, rng: &mut StdRng) -> (usize, usize) {
        match self {
            Mix::ReadModifyWrite => (4, 2),
            Mix::ReadHeavy if rng.random_bool(0.95) => (10, 0),
            Mix::ReadHeavy => (4, 2),
            Mix::UpdateHeavy => (10, 2),
        }
    }
}

/// One measurement's result.
#[derive(Debug, Default)]
struct Outcome {
    commits: u64,
    aborts: u64,
    errors: u64,
    seconds: f64,
    buffer: BufferStats,
}

struct Bench {
    // Kept for its lifetime: the storage nodes stop when it is dropped.
    _storage: LocalCluster,
    store: StoreClient,
    manager: RunningManager,
    next_node: AtomicU64,
}

impl Bench {
    async fn start() -> anyhow::Result<Bench> {
        let nodes: u32 = env_or("SHMDB_BENCH_STORAGE", 1);
        let mut options = ClusterOptions::ephemeral(nodes, 1);
        options.processes = std::env::var("SHMDB_BENCH_INPROCESS").is_err();
        let storage = LocalCluster::start(&options).await?;
        let store = StoreClient::connect(StoreClientConfig::with_seeds(storage.seeds())).await?;
        let manager = shmdb_commit_manager::start_with_store(
            ManagerConfig::local(1, storage.seeds()),
            store.clone(),
            Arc::new(LogRecovery::new(store.clone())),
        )
        .await?;
        Ok(Bench {
            _storage: storage,
            store,
            manager,
            next_node: AtomicU64::new(1),
        })
    }

    /// A new engine (a new processing node id, its own commit client).
    fn engine(&self, buffer: BufferStrategy) -> anyhow::Result<Arc<Engine>> {
        let node = self.next_node.fetch_add(1, Ordering::Relaxed);
        let commit = CommitClient::new(CommitClientConfig::new(
            [self.manager.addr.to_string()],
            node,
        ))?;
        let mut config = EngineConfig::new(node);
        config.buffer = buffer;
        Ok(Engine::new(config, self.store.clone(), Arc::new(commit)))
    }

    async fn load(&self) -> anyhow::Result<()> {
        let engine = self.engine(BufferStrategy::TransactionBuffer)?;
        let t = table();
        for chunk in (0..ROWS).collect::<Vec<_>>().chunks(500) {
            let mut tx = engine.begin().await?;
            for id in chunk {
                tx.insert(&t, vec![Datum::Int(*id), Datum::Int(0)]).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Runs `tasks` concurrent transaction loops on each engine for `secs`.
    async fn measure(&self, engines: &[Arc<Engine>], tasks: usize, mix: Mix, secs: f64) -> Outcome {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let aborts = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let before: Vec<BufferStats> = engines.iter().map(|e| e.buffer_stats()).collect();
        let started = Instant::now();
        let mut handles = Vec::new();
        for (e, engine) in engines.iter().enumerate() {
            for k in 0..tasks {
                let engine = engine.clone();
                let (stop, commits, aborts, errors) = (
                    stop.clone(),
                    commits.clone(),
                    aborts.clone(),
                    errors.clone(),
                );
                handles.push(tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64((e * 1000 + k) as u64);
                    while !stop.load(Ordering::Relaxed) {
                        match one(&engine, mix, &mut rng).await {
                            Ok(()) => commits.fetch_add(1, Ordering::Relaxed),
                            Err(TxnError::SerializationFailure) => {
                                aborts.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for handle in handles {
            let _ = handle.await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut buffer = BufferStats::default();
        for (engine, before) in engines.iter().zip(before) {
            let now = engine.buffer_stats();
            buffer.hits += now.hits - before.hits;
            buffer.misses += now.misses - before.misses;
            buffer.validated += now.validated - before.validated;
        }
        Outcome {
            commits: commits.load(Ordering::Relaxed),
            aborts: aborts.load(Ordering::Relaxed),
            errors: errors.load(Ordering::Relaxed),
            seconds,
            buffer,
        }
    }
}

/// One transaction of the mix on distinct random rows.
async fn one(engine: &Arc<Engine>, mix: Mix, rng: &mut StdRng) -> Result<(), TxnError> {
    let (reads, updates) = mix.next(rng);
    let mut ids: Vec<i64> = Vec::with_capacity(reads);
    while ids.len() < reads {
        let id = rng.random_range(0..ROWS);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let t = table();
    let mut tx = engine.begin().await?;
    let pks: Vec<Vec<Datum>> = ids.iter().map(|id| vec![Datum::Int(*id)]).collect();
    let result = async {
        let rows = tx.get_many(&t, &pks).await?;
        for (id, row) in ids.iter().zip(rows).take(updates) {
            let Some(Datum::Int(v)) = row.map(|r| r[1].clone()) else {
                return Err(TxnError::NotFound);
            };
            tx.update(
                &t,
                &[Datum::Int(*id)],
                vec![Datum::Int(*id), Datum::Int(v + 1)],
            )
            .await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => tx.commit().await,
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn row(label: &str, o: &Outcome, with_buffer: bool) {
    let attempts = (o.commits + o.aborts).max(1);
    let hit = if with_buffer {
        format!(
            "{:.1}% ({} hits, {} validated, {} misses)",
            100.0 * o.buffer.hit_ratio(),
            o.buffer.hits,
            o.buffer.validated,
            o.buffer.misses
        )
    } else {
        "–".to_string()
    };
    println!(
        "| {label} | {:.0} | {:.1}% | {} | {hit} |",
        o.commits as f64 / o.seconds,
        100.0 * o.aborts as f64 / attempts as f64,
        o.errors
    );
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let secs: f64 = if smoke {
        0.5
    } else {
        env_or("SHMDB_BENCH_SECS", 8.0)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let bench = Bench::start().await?;
        bench.load().await?;
        println!(
            "transaction core, {ROWS} rows, {secs} s per line, storage {}",
            if std::env::var("SHMDB_BENCH_INPROCESS").is_ok() {
                "in-process"
            } else {
                "child processes"
            }
        );
        println!();
        println!(
            "| {} | txn/s | aborts | errors | hit ratio |",
            Mix::ReadModifyWrite.name()
        );
        println!("|---|---:|---:|---:|---|");
        for (engines, tasks) in [(1usize, 16usize), (1, 32), (2, 8), (2, 16)] {
            let list: Vec<Arc<Engine>> = (0..engines)
                .map(|_| bench.engine(BufferStrategy::TransactionBuffer))
                .collect::<Result<_, _>>()?;
            let o = bench
                .measure(&list, tasks, Mix::ReadModifyWrite, secs)
                .await;
            row(
                &format!("{engines} engine(s) × {tasks} concurrent"),
                &o,
                false,
            );
        }
        let strategies = [
            ("transaction buffer", BufferStrategy::TransactionBuffer),
            (
                "shared record buffer",
                BufferStrategy::SharedRecordBuffer { capacity: 20_000 },
            ),
            (
                "version-set sync, 1-record units",
                BufferStrategy::VersionSetSync {
                    capacity: 20_000,
                    unit_shift: 0,
                },
            ),
            (
                "version-set sync, 256-record units",
                BufferStrategy::VersionSetSync {
                    capacity: 20_000,
                    unit_shift: 1,
                },
            ),
        ];
        for mix in [Mix::ReadHeavy, Mix::UpdateHeavy] {
            println!();
            println!(
                "| {} — 2 engines × 16 concurrent | txn/s | aborts | errors | hit ratio |",
                mix.name()
            );
            println!("|---|---:|---:|---:|---|");
            for (label, strategy) in strategies {
                let list = vec![bench.engine(strategy)?, bench.engine(strategy)?];
                // Warm the shared buffers first, as a running node's would be.
                bench.measure(&list, 16, mix, secs / 4.0).await;
                let o = bench.measure(&list, 16, mix, secs).await;
                row(
                    label,
                    &o,
                    !matches!(strategy, BufferStrategy::TransactionBuffer),
                );
            }
        }
        anyhow::Ok(())
    })
}
