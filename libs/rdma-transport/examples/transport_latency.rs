//! Get and put_if latency through the store client over a chosen transport, against a
//! running cluster: the measurement behind "RDMA transport: how to measure on RDMA
//! hardware" in BENCHMARKS.md.
//!
//! ```sh
//! transport_latency --seeds 10.0.0.5:7400 --transport rdma --samples 20000 --payload 64
//! ```
//!
//! It writes one key per run in table 1 (the kv table of `shmdb up`), then times sequential
//! gets and conditional puts (each expecting the stamp the previous one wrote), and prints
//! percentiles and the transport that carried them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use shmdb_rdma_transport::{RdmaConfig, TransportKind, TransportMetrics, client_transport};
use shmdb_store_client::{CondOutcome, Expect, GrpcConfig, StoreClient, StoreClientConfig};

/// Storage get/put_if latency over `--transport`.
#[derive(Debug, Parser)]
struct Args {
    /// Storage-node addresses to fetch the partition map from.
    #[arg(long, value_delimiter = ',', required = true)]
    seeds: Vec<String>,
    /// auto, tcp or rdma.
    #[arg(long, default_value_t = TransportKind::Auto)]
    transport: TransportKind,
    /// Sequential samples per operation.
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Table to write to (1 is the kv table of `shmdb up`).
    #[arg(long, default_value_t = 1)]
    table: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let metrics = TransportMetrics::new()?;
    let (transport, selected) = client_transport(
        args.transport,
        GrpcConfig::default(),
        RdmaConfig::default(),
        metrics.clone(),
    )?;
    let config = StoreClientConfig::with_seeds(args.seeds.clone());
    let client = StoreClient::with_transport(config, Arc::clone(&transport))
        .await
        .context("connecting to the seeds")?;
    let key = format!("transport-latency-{}", std::process::id());
    let value = vec![7u8; args.payload];
    let mut stamp = match client
        .put_if(args.table, key.clone(), value.clone(), Expect::Absent)
        .await?
    {
        CondOutcome::Written { stamp } => stamp,
        _ => bail!("key {key} exists already"),
    };
    let mut gets = Histogram::<u64>::new(3)?;
    let mut puts = Histogram::<u64>::new(3)?;
    for _ in 0..args.samples {
        let started = Instant::now();
        let found = client.get(args.table, key.clone()).await?;
        gets.record(started.elapsed().as_nanos() as u64)?;
        if found.map(|v| v.stamp) != Some(stamp) {
            bail!("read a stamp other than the last write's");
        }
        let started = Instant::now();
        match client
            .put_if(args.table, key.clone(), value.clone(), Expect::Stamp(stamp))
            .await?
        {
            CondOutcome::Written { stamp: new } => stamp = new,
            other => bail!("conditional put did not apply: {other:?}"),
        }
        puts.record(started.elapsed().as_nanos() as u64)?;
    }
    println!("transport: {}", selected.describe());
    println!(
        "rdma: {} doorbells, {} qp errors",
        metrics.doorbells.get(),
        metrics.qp_errors.get()
    );
    for (name, h) in [("get", &gets), ("put_if", &puts)] {
        let us = |q: f64| Duration::from_nanos(h.value_at_quantile(q)).as_secs_f64() * 1e6;
        println!(
            "{name:7} n={} p50={:.1}us p90={:.1}us p99={:.1}us p99.9={:.1}us",
            h.len(),
            us(0.5),
            us(0.9),
            us(0.99),
            us(0.999)
        );
    }
    Ok(())
}
