//! `shmdb bench`: benchmarks that compare shmdb with the floor of its own transport, in one
//! run, so that ratios stay meaningful on a shared, noisy machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use shmdb_proto::storage::{EchoRequest, storage_client::StorageClient};
use shmdb_store_client::{CondOutcome, Expect, Op, StoreClient, StoreClientConfig};

use crate::cluster::{ClusterOptions, LocalCluster};

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Storage-layer latency (get, put_if at RF 1 and RF 3) against a plain echo RPC with the
    /// same payload, and batched throughput.
    Storage(StorageBench),
}

/// Settings of `shmdb bench storage`.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageBench {
    /// Value payload in bytes (the echo carries the same).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Sequential samples per operation per round.
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
    /// Rounds; operations are interleaved round by round so noise hits all alike.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds of batched throughput measurement.
    #[arg(long, default_value_t = 5)]
    pub batch_seconds: u64,
    /// Operations per batch request.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Batch requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub batch_concurrency: usize,
    /// Run storage nodes inside this process instead of as child processes.
    #[arg(long)]
    pub in_process: bool,
}

/// Runs a benchmark and prints its report.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Storage(settings) => {
            let report = storage(&settings).await?;
            print!("{report}");
            Ok(())
        }
    }
}

const TABLE: u64 = shmdb_placement::tables::KV;

async fn cluster(nodes: u32, rf: u32, in_process: bool) -> anyhow::Result<LocalCluster> {
    let mut options = ClusterOptions::ephemeral(nodes, rf);
    options.processes = !in_process;
    options.ranges = 1;
    options.split_bytes = 0;
    LocalCluster::start(&options).await
}

async fn client(cluster: &LocalCluster) -> anyhow::Result<StoreClient> {
    let client = StoreClient::connect(StoreClientConfig::with_seeds(cluster.seeds()))
        .await
        .context("connecting the store client")?;
    // Wait until every replica has its copy and writes commit.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client
            .put(
                TABLE,
                Bytes::from_static(b"__ready"),
                Bytes::from_static(b"1"),
            )
            .await
            .is_ok()
        {
            return Ok(client);
        }
        if Instant::now() > deadline {
            bail!("cluster did not become writable");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram")
}

/// Latency of sequential operations and batched throughput; returns a Markdown report.
pub async fn storage(settings: &StorageBench) -> anyhow::Result<String> {
    let rf1 = cluster(1, 1, settings.in_process).await?;
    let rf3 = cluster(3, 3, settings.in_process).await?;
    let c1 = client(&rf1).await?;
    let c3 = client(&rf3).await?;
    let payload = Bytes::from(vec![0x5a; settings.payload]);
    let primary = rf1.seeds().first().cloned().context("no node")?;
    let mut echo_client = StorageClient::connect(format!("http://{primary}")).await?;

    let key = Bytes::from_static(b"bench-key");
    c1.put(TABLE, key.clone(), payload.clone()).await?;
    let mut stamp1 = c1
        .get(TABLE, key.clone())
        .await?
        .context("key vanished")?
        .stamp;
    c3.put(TABLE, key.clone(), payload.clone()).await?;
    let mut stamp3 = c3
        .get(TABLE, key.clone())
        .await?
        .context("key vanished")?
        .stamp;

    let seeds3 = rf3.seeds();
    let mut fan_client = StorageClient::connect(format!("http://{}", seeds3[0])).await?;
    let fan_out: Vec<String> = seeds3[1..].to_vec();
    let mut fan = histogram()?;
    let mut echo = histogram()?;
    let mut get = histogram()?;
    let mut put1 = histogram()?;
    let mut put3 = histogram()?;
    for _ in 0..settings.rounds {
        for _ in 0..settings.samples {
            let t = Instant::now();
            echo_client
                .echo(EchoRequest {
                    payload: payload.clone(),
                    forward: Vec::new(),
                })
                .await?;
            echo.record(t.elapsed().as_micros() as u64)?;
        }
        for _ in 0..settings.samples {
            let t = Instant::now();
            fan_client
                .echo(EchoRequest {
                    payload: payload.clone(),
                    forward: fan_out.clone(),
                })
                .await?;
            fan.record(t.elapsed().as_micros() as u64)?;
        }
        for _ in 0..settings.samples {
            let t = Instant::now();
            c1.get(TABLE, key.clone()).await?;
            get.record(t.elapsed().as_micros() as u64)?;
        }
        for _ in 0..settings.samples {
            let t = Instant::now();
            match c1
                .put_if(TABLE, key.clone(), payload.clone(), Expect::Stamp(stamp1))
                .await?
            {
                CondOutcome::Written { stamp } => stamp1 = stamp,
                other => bail!("unexpected put_if outcome {other:?}"),
            }
            put1.record(t.elapsed().as_micros() as u64)?;
        }
        for _ in 0..settings.samples {
            let t = Instant::now();
            match c3
                .put_if(TABLE, key.clone(), payload.clone(), Expect::Stamp(stamp3))
                .await?
            {
                CondOutcome::Written { stamp } => stamp3 = stamp,
                other => bail!("unexpected put_if outcome {other:?}"),
            }
            put3.record(t.elapsed().as_micros() as u64)?;
        }
    }
    let base = echo.value_at_quantile(0.5).max(1) as f64;
    let mut out = String::new();
    out.push_str(&format!(
        "Sequential latency, {} B payload, {} samples per operation ({} rounds interleaved), storage nodes as {}:\n\n",
        settings.payload,
        settings.samples * settings.rounds,
        settings.rounds,
        if settings.in_process { "in-process servers" } else { "child processes" },
    ));
    out.push_str("| operation | p50 µs | p99 µs | p50 / echo p50 |\n|---|---:|---:|---:|\n");
    for (name, h) in [
        ("tonic echo (transport floor)", &echo),
        ("echo fanned out to 2 more nodes (floor of RF 3)", &fan),
        ("get (RF 1)", &get),
        ("put_if (RF 1)", &put1),
        ("put_if (RF 3)", &put3),
    ] {
        out.push_str(&format!(
            "| {name} | {} | {} | {:.2} |\n",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.5) as f64 / base
        ));
    }
    for (name, write) in [("put", true), ("get", false)] {
        let ops = batched(&c1, settings, write).await?;
        out.push_str(&format!(
            "\nBatched {name} throughput (RF 1, 1 node, {} ops/request, {} requests in flight, {} s): {:.0} ops/s\n",
            settings.batch_size, settings.batch_concurrency, settings.batch_seconds, ops
        ));
    }
    rf1.shutdown().await;
    rf3.shutdown().await;
    Ok(out)
}

async fn batched(
    client: &StoreClient,
    settings: &StorageBench,
    write: bool,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let value = Bytes::from(vec![1u8; settings.payload]);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..settings.batch_concurrency {
        let client = client.clone();
        let done = done.clone();
        let stop = stop.clone();
        let value = value.clone();
        let size = settings.batch_size;
        workers.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ops = (0..size)
                    .map(|i| {
                        let key = Bytes::from(format!(
                            "b{worker:02}-{:06}",
                            (round as usize * size + i) % 100_000
                        ));
                        if write {
                            Op::put(TABLE, key, value.clone())
                        } else {
                            Op::get(TABLE, key)
                        }
                    })
                    .collect();
                let results = client.batch(ops).await?;
                done.fetch_add(results.len() as u64, Ordering::Relaxed);
                round += 1;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(settings.batch_seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
