//! `shmdb bench`: benchmarks that compare shmdb with the floor of its own transport, in one
//! run, so that ratios stay meaningful on a shared, noisy machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use shmdb_proto::storage::{EchoRequest, storage_client::StorageClient};
use shmdb_store_client::{
    CondOutcome, DataPath, Expect, FramedConfig, FramedMetrics, FramedTransport, GrpcConfig,
    GrpcTransport, Op, StoreClient, StoreClientConfig, Transport,
};

use crate::cluster::{ClusterOptions, LocalCluster};

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Storage-layer latency (get, put_if at RF 1 and RF 3) against a plain echo RPC with the
    /// same payload, and batched and concurrent throughput, over unary gRPC calls,
    /// multiplexed gRPC streams and framed TCP side by side.
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
    /// Tasks issuing single-get requests at once in the concurrent-requests phase (the
    /// per-request overhead a transaction workload pays).
    #[arg(long, default_value_t = 32)]
    pub concurrent_tasks: usize,
    /// Sessions per storage node of the streaming transport; several values (`1,2`) measure
    /// each side by side.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub streams_per_node: Vec<usize>,
    /// Data paths compared side by side (`unary`, `stream`, `framed`).
    #[arg(long, value_delimiter = ',', default_value = "unary,stream,framed")]
    pub data_paths: Vec<DataPath>,
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

/// A data path under test: unary calls, or streams with this many sessions per node.
#[derive(Clone, Copy)]
struct Path {
    data_path: DataPath,
    streams: usize,
    /// Whether several stream counts are compared (they are named with their count then).
    several: bool,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.data_path {
            DataPath::Stream if self.several => write!(f, "stream ×{}", self.streams),
            path => write!(f, "{path}"),
        }
    }
}

async fn client(cluster: &LocalCluster, path: Path) -> anyhow::Result<StoreClient> {
    let config = StoreClientConfig::with_seeds(cluster.seeds());
    let grpc = GrpcConfig {
        connect_timeout: config.connect_timeout,
        request_timeout: config.request_timeout,
        data_path: path.data_path,
        streams_per_node: path.streams,
        ..GrpcConfig::default()
    };
    let transport: Arc<dyn Transport> = match path.data_path {
        DataPath::Framed => Arc::new(FramedTransport::new(
            FramedConfig {
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
                ..FramedConfig::default()
            },
            grpc,
            FramedMetrics::new()?,
        )),
        DataPath::Unary | DataPath::Stream => Arc::new(GrpcTransport::new(grpc)),
    };
    let client = StoreClient::with_transport(config, transport)
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

/// CPU seconds (user + system) used so far by this process and the storage-node child
/// processes: the cost side of a phase, read from /proc (Linux; 0 where unavailable).
struct CpuProbe {
    pids: Vec<u32>,
}

impl CpuProbe {
    fn new(clusters: &[&LocalCluster]) -> CpuProbe {
        let mut pids = Vec::new();
        for cluster in clusters {
            for node in cluster.nodes.lock().iter() {
                if let crate::cluster::StorageProcess::Child { child, .. } = node
                    && let Some(pid) = child.id()
                {
                    pids.push(pid);
                }
            }
        }
        CpuProbe { pids }
    }

    fn seconds(&self) -> f64 {
        let mut total = process_cpu("self");
        for pid in &self.pids {
            total += process_cpu(&pid.to_string());
        }
        total
    }
}

/// utime + stime of one process from /proc/<pid>/stat, in seconds (USER_HZ is 100 on Linux).
fn process_cpu(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// One measured operation: its latency histogram and the CPU it cost.
struct Row {
    name: String,
    latency: Histogram<u64>,
    cpu_seconds: f64,
    requests: u64,
}

impl Row {
    fn new(name: impl Into<String>) -> anyhow::Result<Row> {
        Ok(Row {
            name: name.into(),
            latency: histogram()?,
            cpu_seconds: 0.0,
            requests: 0,
        })
    }

    /// Adds the CPU spent since `cpu` on `samples` requests.
    fn finish(&mut self, probe: &CpuProbe, cpu: f64, samples: usize) {
        self.cpu_seconds += probe.seconds() - cpu;
        self.requests += samples as u64;
    }

    fn cpu_us_per_request(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.requests.max(1) as f64
    }
}

/// Times `samples` sequential calls of `op` into `row`, with the CPU they cost.
async fn sample<F, Fut>(
    row: &mut Row,
    probe: &CpuProbe,
    samples: usize,
    mut op: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cpu = probe.seconds();
    for _ in 0..samples {
        let t = Instant::now();
        op().await?;
        row.latency.record(t.elapsed().as_micros() as u64)?;
    }
    row.finish(probe, cpu, samples);
    Ok(())
}

/// One put_if that must succeed, advancing the expected stamp.
async fn put_if_next(
    client: &StoreClient,
    key: &Bytes,
    payload: &Bytes,
    stamp: &mut u64,
) -> anyhow::Result<()> {
    match client
        .put_if(TABLE, key.clone(), payload.clone(), Expect::Stamp(*stamp))
        .await?
    {
        CondOutcome::Written { stamp: new } => {
            *stamp = new;
            Ok(())
        }
        other => bail!("unexpected put_if outcome {other:?}"),
    }
}

/// Latency of sequential operations, batched and concurrent throughput, over unary calls
/// and streams; returns a Markdown report.
pub async fn storage(settings: &StorageBench) -> anyhow::Result<String> {
    let rf1 = cluster(1, 1, settings.in_process).await?;
    let rf3 = cluster(3, 3, settings.in_process).await?;
    let probe = CpuProbe::new(&[&rf1, &rf3]);
    let several = settings.streams_per_node.len() > 1;
    let mut paths = Vec::new();
    for &data_path in &settings.data_paths {
        match data_path {
            DataPath::Stream => {
                paths.extend(settings.streams_per_node.iter().map(|&streams| Path {
                    data_path,
                    streams,
                    several,
                }))
            }
            DataPath::Unary | DataPath::Framed => paths.push(Path {
                data_path,
                streams: 1,
                several,
            }),
        }
    }
    if paths.is_empty() {
        bail!("--data-paths: nothing to measure");
    }
    let mut c1 = Vec::new();
    let mut c3 = Vec::new();
    for &path in &paths {
        c1.push(client(&rf1, path).await?);
        c3.push(client(&rf3, path).await?);
    }
    let payload = Bytes::from(vec![0x5a; settings.payload]);
    let primary = rf1.seeds().first().cloned().context("no node")?;
    let mut echo_client = StorageClient::connect(format!("http://{primary}")).await?;

    // One key per data path, so the two never conflict.
    let keys: Vec<Bytes> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| Bytes::from(format!("bench-key-{i}-{p}")))
        .collect();
    let mut stamps1 = Vec::new();
    let mut stamps3 = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        for (clients, stamps) in [(&c1, &mut stamps1), (&c3, &mut stamps3)] {
            clients[i].put(TABLE, key.clone(), payload.clone()).await?;
            let stamp = clients[i]
                .get(TABLE, key.clone())
                .await?
                .context("key vanished")?
                .stamp;
            stamps.push(stamp);
        }
    }

    let seeds3 = rf3.seeds();
    let mut fan_client = StorageClient::connect(format!("http://{}", seeds3[0])).await?;
    let fan_out: Vec<String> = seeds3[1..].to_vec();
    let mut echo = Row::new("tonic echo (transport floor)")?;
    let mut fan = Row::new("echo fanned out to 2 more nodes (floor of RF 3)")?;
    let mut get = Vec::new();
    let mut put1 = Vec::new();
    let mut put3 = Vec::new();
    for path in &paths {
        get.push(Row::new(format!("get (RF 1), {path}"))?);
        put1.push(Row::new(format!("put_if (RF 1), {path}"))?);
        put3.push(Row::new(format!("put_if (RF 3), {path}"))?);
    }
    let samples = settings.samples;
    for _ in 0..settings.rounds {
        for (row, client, forward) in [
            (&mut echo, &mut echo_client, Vec::new()),
            (&mut fan, &mut fan_client, fan_out.clone()),
        ] {
            let cpu = probe.seconds();
            for _ in 0..samples {
                let t = Instant::now();
                client
                    .echo(EchoRequest {
                        payload: payload.clone(),
                        forward: forward.clone(),
                    })
                    .await?;
                row.latency.record(t.elapsed().as_micros() as u64)?;
            }
            row.finish(&probe, cpu, samples);
        }
        for i in 0..paths.len() {
            let (client, key) = (&c1[i], &keys[i]);
            sample(&mut get[i], &probe, samples, || async move {
                client.get(TABLE, key.clone()).await?;
                Ok(())
            })
            .await?;
        }
        for i in 0..paths.len() {
            let (client, key, payload) = (&c1[i], &keys[i], &payload);
            let stamp = &mut stamps1[i];
            let cpu = probe.seconds();
            for _ in 0..samples {
                let t = Instant::now();
                put_if_next(client, key, payload, stamp).await?;
                put1[i].latency.record(t.elapsed().as_micros() as u64)?;
            }
            put1[i].finish(&probe, cpu, samples);
        }
        for i in 0..paths.len() {
            let (client, key, payload) = (&c3[i], &keys[i], &payload);
            let stamp = &mut stamps3[i];
            let cpu = probe.seconds();
            for _ in 0..samples {
                let t = Instant::now();
                put_if_next(client, key, payload, stamp).await?;
                put3[i].latency.record(t.elapsed().as_micros() as u64)?;
            }
            put3[i].finish(&probe, cpu, samples);
        }
    }
    let base = echo.latency.value_at_quantile(0.5).max(1) as f64;
    let mut out = String::new();
    out.push_str(&format!(
        "Sequential latency, {} B payload, {} samples per operation ({} rounds interleaved), storage nodes as {}:\n\n",
        settings.payload,
        settings.samples * settings.rounds,
        settings.rounds,
        if settings.in_process { "in-process servers" } else { "child processes" },
    ));
    out.push_str(
        "| operation | p50 µs | p99 µs | p50 / echo p50 | CPU µs/request (client+server) |\n|---|---:|---:|---:|---:|\n",
    );
    let rows = [&echo, &fan]
        .into_iter()
        .chain(&get)
        .chain(&put1)
        .chain(&put3);
    for row in rows {
        let h = &row.latency;
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.0} |\n",
            row.name,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.5) as f64 / base,
            row.cpu_us_per_request(),
        ));
    }
    out.push_str(&format!(
        "\nThroughput (RF 1, 1 node; batched: {} ops/request, {} requests in flight; concurrent: 1 get/request, {} tasks; {} s each):\n\n",
        settings.batch_size, settings.batch_concurrency, settings.concurrent_tasks, settings.batch_seconds
    ));
    out.push_str(
        "| phase | data path | ops/s | CPU µs/op (client+server) |\n|---|---|---:|---:|\n",
    );
    for (name, phase) in [
        ("batched put", Phase::Batched { write: true }),
        ("batched get", Phase::Batched { write: false }),
        ("concurrent get", Phase::Concurrent),
    ] {
        for (i, path) in paths.iter().enumerate() {
            let cpu = probe.seconds();
            let started = Instant::now();
            let ops = match phase {
                Phase::Batched { write } => batched(&c1[i], settings, write).await?,
                Phase::Concurrent => concurrent(&c1[i], settings).await?,
            };
            let elapsed = started.elapsed().as_secs_f64();
            let cpu_per_op = (probe.seconds() - cpu) * 1e6 / (ops * elapsed).max(1.0);
            out.push_str(&format!(
                "| {name} | {path} | {ops:.0} | {cpu_per_op:.1} |\n"
            ));
        }
    }
    rf1.shutdown().await;
    rf3.shutdown().await;
    Ok(out)
}

/// A throughput phase.
#[derive(Clone, Copy)]
enum Phase {
    Batched { write: bool },
    Concurrent,
}

/// Runs `tasks` copies of `step` (given the task number and its round) in a loop for
/// `seconds`; each step returns the operations it did. Operations per second.
async fn timed_tasks<F, Fut>(tasks: usize, seconds: u64, step: F) -> anyhow::Result<f64>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = Vec::new();
    for task in 0..tasks {
        let (done, stop, step) = (done.clone(), stop.clone(), step.clone());
        workers.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                done.fetch_add(step(task, round).await?, Ordering::Relaxed);
                round += 1;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Single-get requests from many tasks at once for `batch_seconds`: ops per second.
async fn concurrent(client: &StoreClient, settings: &StorageBench) -> anyhow::Result<f64> {
    let client = client.clone();
    timed_tasks(
        settings.concurrent_tasks,
        settings.batch_seconds,
        move |worker, i| {
            let client = client.clone();
            async move {
                let key = Bytes::from(format!("b{:02}-{:06}", worker % 8, i % 1000));
                client.get(TABLE, key).await?;
                anyhow::Ok(1)
            }
        },
    )
    .await
}

async fn batched(
    client: &StoreClient,
    settings: &StorageBench,
    write: bool,
) -> anyhow::Result<f64> {
    let client = client.clone();
    let value = Bytes::from(vec![1u8; settings.payload]);
    let size = settings.batch_size;
    timed_tasks(
        settings.batch_concurrency,
        settings.batch_seconds,
        move |worker, round| {
            let client = client.clone();
            let value = value.clone();
            async move {
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
                anyhow::Ok(results.len() as u64)
            }
        },
    )
    .await
}
