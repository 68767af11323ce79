//! Transactions per second over gRPC: 64 concurrent clients (tasks) doing start + commit in
//! a loop through `CommitClient`s, whose request batching coalesces concurrent calls into
//! `StartBatch` / `FinishBatch` RPCs. The manager, a one-node storage cluster (its state is
//! published there, one write per group of commits) and the clients share this process.
//!
//! Run: `cargo bench -p shmdb-commit-manager --bench grpc_batched`
//! (optional arguments: seconds to measure, concurrent clients, CommitClient instances).
//! Environment: `BENCH_UNARY` (unary batches instead of sessions), `BENCH_IN_FLIGHT` (unary
//! calls in flight per kind), `BENCH_GROUP_WAIT_US` (the manager's group wait),
//! `BENCH_SPLIT` (storage node in its own process, clients on their own runtime),
//! `BENCH_INPROC` (the same load through `Manager` without gRPC), `BENCH_PUBLISH_SLOTS` (the
//! manager's record slots, i.e. publishes in flight; default 1 = one write at a time), `BENCH_RF`
//! (storage nodes and replication factor, default 1).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmdb::cluster::{ClusterOptions, LocalCluster};
use shmdb_commit_manager::{CommitClient, CommitClientConfig, ManagerConfig, NoWritesRecovery};
use shmdb_store_client::{StoreClient, StoreClientConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let seconds: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let tasks: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(Duration::from_secs(seconds), tasks, clients))
}

async fn bench(measure: Duration, tasks: usize, clients: usize) -> anyhow::Result<()> {
    // BENCH_SPLIT: the storage node in its own process and the clients on their own runtime
    // (threads), as deployed, instead of every task queueing on one runtime's two workers.
    let split = std::env::var("BENCH_SPLIT").is_ok();
    // BENCH_RF=n: n storage nodes with replication factor n, so every publish waits for a
    // replicated write (a longer store round trip, as with replicas on other hosts).
    let rf: u32 = std::env::var("BENCH_RF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut options = ClusterOptions::ephemeral(rf, rf);
    options.processes = split;
    let cluster = LocalCluster::start(&options).await?;
    let client_runtime = if split {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?,
        )
    } else {
        None
    };
    let client_handle = client_runtime
        .as_ref()
        .map_or_else(tokio::runtime::Handle::current, |rt| rt.handle().clone());
    let store = StoreClient::connect(StoreClientConfig::with_seeds(cluster.seeds())).await?;
    let mut cfg = ManagerConfig::local(1, cluster.seeds());
    if let Some(us) = std::env::var("BENCH_GROUP_WAIT_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.group_wait = Duration::from_micros(us);
    }
    if let Some(slots) = std::env::var("BENCH_PUBLISH_SLOTS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.publish_slots = slots;
    }
    let slots = cfg.publish_slots;
    let manager =
        shmdb_commit_manager::start_with_store(cfg, store, Arc::new(NoWritesRecovery)).await?;
    let addr = manager.addr.to_string();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let in_flight: usize = std::env::var("BENCH_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CommitClientConfig::new([""], 0).max_in_flight);
    let entered = client_handle.enter();
    let pool: Vec<CommitClient> = (0..clients)
        .map(|i| {
            let mut cfg = CommitClientConfig::new([addr.clone()], i as u64 + 1);
            cfg.max_in_flight = in_flight;
            cfg.sessions = std::env::var("BENCH_UNARY").is_err();
            CommitClient::new(cfg)
        })
        .collect::<Result<_, _>>()?;
    drop(entered);
    let inproc = std::env::var("BENCH_INPROC").is_ok();
    for t in 0..tasks {
        if inproc {
            let m = manager.manager.clone();
            let done = done.clone();
            let stop = stop.clone();
            handles.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let g = m.start_batch(t as u64, 1).await?;
                    m.commit(g.tids[0]).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }));
            continue;
        }
        let client = pool[t % clients].clone();
        let done = done.clone();
        let stop = stop.clone();
        handles.push(client_handle.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = client.start().await?;
                client.commit(started.tid).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    let publish_time = &manager.manager.metrics().publish_seconds;
    let (write_sum_before, write_count_before) = (
        publish_time.get_sample_sum(),
        publish_time.get_sample_count(),
    );
    let before = manager.manager.status();
    let count_before = done.load(Ordering::Relaxed);
    let began = Instant::now();
    tokio::time::sleep(measure).await;
    let count = done.load(Ordering::Relaxed) - count_before;
    let elapsed = began.elapsed().as_secs_f64();
    let after = manager.manager.status();
    let write_us = (publish_time.get_sample_sum() - write_sum_before) * 1e6
        / (publish_time.get_sample_count() - write_count_before).max(1) as f64;
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await??;
    }
    let publishes = after.stats.publishes - before.stats.publishes;
    let waits = &manager.manager.metrics().group_waits;
    let (complete, timeout) = (
        waits.with_label_values(&["complete"]).get(),
        waits.with_label_values(&["timeout"]).get(),
    );
    println!(
        "grpc: {tasks} concurrent clients over {clients} CommitClients, {slots} publish slots, RF {rf}: {:.0} transactions/s (start+commit) over {elapsed:.1} s; {publishes} publishes ({:.0} commits per store write, {write_us:.0} µs per write), snapshot {} bytes; group waits: {complete} complete, {timeout} timed out",
        count as f64 / elapsed,
        (after.stats.commits - before.stats.commits) as f64 / publishes.max(1) as f64,
        after.snapshot_bytes
    );
    drop(pool);
    if let Some(runtime) = client_runtime {
        runtime.shutdown_background();
    }
    manager.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}
