//! `shadowctl bench put|get`: closed-loop load from N concurrent clients.
//!
//! Each client task repeatedly writes (or reads) one variant of one of
//! `--resources` resources, for `--duration` seconds after a warm-up, and
//! records every latency. Tasks share `--connections` client instances
//! (each one HTTP/2 connection per node). Prints throughput and latency
//! percentiles; docs/BENCHMARKS.md records results with their command
//! lines.

use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::bail;
use clap::Args;
use clap::ValueEnum;
use shadowstore_client::Client;
use shadowstore_client::ClientOptions;
use shadowstore_client::ReadOptions;

use crate::output::Output;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Put,
    Get,
    /// Create `--resources` groups, let them go idle, then measure the CPU
    /// and memory of the node processes of a `shadowctl demo` cluster.
    Idle,
    /// Write, overwrite and delete erasure-coded values, let expiry and
    /// garbage collection run, then compare the demo nodes' disk usage with
    /// the encoded bytes still live.
    Churn,
    /// Time a shadow replica of `--variants` erasure-coded values of
    /// `--value-size` bytes to ready, compare reads at the shadow's node
    /// and at a primary's, and the resource's read throughput with 0, 1
    /// and 2 shadows at full weight (needs four or more nodes).
    Shadow,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    pub workload: Workload,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Resources the load is spread over (bench-0, bench-1, ...).
    #[arg(long, default_value_t = 8)]
    pub resources: usize,
    /// Client instances (connections per node) shared by the tasks.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Gets: accept reads at most this many ms stale instead of linearizable.
    #[arg(long)]
    max_staleness_ms: Option<u64>,
    /// Idle: the `shadowctl demo` directory whose node processes to measure.
    #[arg(long, default_value = ".demo")]
    pub demo_dir: std::path::PathBuf,
    /// Idle and churn: seconds to wait before measuring.
    #[arg(long, default_value_t = 20)]
    pub settle: u64,
    /// Churn: variants written per round; shadow: blobs written before
    /// the shadow is added.
    #[arg(long, default_value_t = 16)]
    pub variants: usize,
    /// Churn: rounds of overwriting every variant.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Put and get: also report the demo nodes' peak RSS during the run
    /// (needs a `shadowctl demo` cluster in `--demo-dir`).
    #[arg(long)]
    pub peak_rss: bool,
}

/// What `tasks` concurrent loops of one operation measured.
pub struct Measured {
    /// Latencies of the successful operations, sorted.
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Runs `op(task)` in a loop on `tasks` concurrent tasks for `warmup` and
/// then `duration`, keeping what the measured part saw.
pub async fn timed<F, Fut>(tasks: usize, warmup: Duration, duration: Duration, op: F) -> anyhow::Result<Measured>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let start = Instant::now();
    let warm_end = start + warmup;
    let end = warm_end + duration;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut res = Measured { latencies_us: Vec::with_capacity(1 << 16), errors: 0, first_error: None };
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = op(t).await;
                let t1 = Instant::now();
                if t0 < warm_end || t1 > end {
                    continue;
                }
                match r {
                    Ok(()) => res.latencies_us.push((t1 - t0).as_micros().min(u32::MAX as u128) as u32),
                    Err(e) => {
                        res.errors += 1;
                        res.first_error.get_or_insert(e);
                    }
                }
            }
            res
        }));
    }
    let mut all = Measured { latencies_us: Vec::new(), errors: 0, first_error: None };
    for h in handles {
        let r = h.await.context("bench task panicked")?;
        all.latencies_us.extend(r.latencies_us);
        all.errors += r.errors;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    all.latencies_us.sort_unstable();
    Ok(all)
}

pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

/// Why a node sheds reads, as the benchmark reports it.
const SHED_CAUSE: &str = "nodes at their read capacity (read_capacity_rps) answered RESOURCE_EXHAUSTED and the client \
     retried after their hint, so these show as latency; the demo runs 50 reads/s per node for its placement story \
     (shadowctl demo --set read_capacity_rps=20000 lifts it)";

pub async fn run(target: &crate::Target, args: &BenchArgs, out: Output) -> anyhow::Result<()> {
    assert!(matches!(args.workload, Workload::Put | Workload::Get), "idle and churn run from crate::idle");
    if args.clients == 0 || args.resources == 0 || args.connections == 0 || args.duration == 0 {
        bail!("--clients, --resources, --connections and --duration must be positive");
    }
    if args.value_size == 0 || args.value_size > 1 << 30 {
        bail!("--value-size must be 1..=1073741824, got {}", args.value_size);
    }
    let options =
        target.options(ClientOptions { total_deadline: Duration::from_secs(10), ..ClientOptions::default() })?;
    // (Streamed values get time in proportion to their size on top.)
    let clients: Vec<Client> = (0..args.connections)
        .map(|_| Client::new_lazy(&target.endpoints, options.clone()))
        .collect::<Result<_, _>>()?;
    let setup = &clients[0];
    setup.cluster_status().await.context("cannot reach the cluster")?;
    let resources: Vec<String> = (0..args.resources).map(|i| format!("bench-{i}")).collect();
    for r in &resources {
        match setup.create_resource(r, 3).await {
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::AlreadyExists => {
                setup.wait_for_leader(r, Duration::from_secs(10)).await?
            }
            Err(e) => return Err(e).with_context(|| format!("creating {r}")),
        }
    }
    let value: bytes::Bytes = (0..args.value_size).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    if args.workload == Workload::Get {
        for t in 0..args.clients {
            let r = &resources[t % resources.len()];
            setup.put(r, &format!("v{t}"), value.clone()).await.with_context(|| format!("preparing {r}/v{t}"))?;
        }
    }
    let rss_pids = if args.peak_rss { crate::procstat::reset_peak_rss(&args.demo_dir)? } else { Vec::new() };
    let is_put = args.workload == Workload::Put;
    let sheds_before: u64 = clients.iter().map(Client::sheds).sum();
    let read = match args.max_staleness_ms {
        Some(ms) => ReadOptions::stale_ok(ms),
        None => ReadOptions::linearizable(),
    };
    let measured = timed(args.clients, Duration::from_secs(args.warmup), Duration::from_secs(args.duration), {
        let (clients, resources) = (clients.clone(), resources.clone());
        move |t| {
            let client = clients[t % clients.len()].clone();
            let resource = resources[t % resources.len()].clone();
            let (value, read) = (value.clone(), read.clone());
            async move {
                let variant = format!("v{t}");
                let r = if is_put {
                    client.put(&resource, &variant, value).await.map(|_| ())
                } else {
                    client.get_with(&resource, &variant, read).await.map(|_| ())
                };
                r.map_err(|e| e.to_string())
            }
        }
    })
    .await?;
    let Measured { latencies_us: all, errors, first_error } = measured;
    // Attempts shed during the run (warm-up included): retried by the
    // client after the node's hint, so they cost latency, not errors.
    let sheds = clients.iter().map(Client::sheds).sum::<u64>() - sheds_before;
    let peak_rss: Vec<u64> = rss_pids.iter().map(|p| crate::procstat::peak_rss_bytes(*p).unwrap_or(0)).collect();
    let ops = all.len() as f64;
    let secs = args.duration as f64;
    let throughput = ops / secs;
    let (p50, p99, p999, max) = (
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        all.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    let kind = match (args.workload, args.max_staleness_ms) {
        (Workload::Put, _) => "put".to_string(),
        (_, None) => "get (linearizable)".to_string(),
        (_, Some(ms)) => format!("get (stale <= {ms} ms)"),
    };
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({"workload": kind, "clients": args.clients, "value_size": args.value_size,
                "resources": args.resources, "connections": args.connections, "duration_s": args.duration,
                "ops": all.len(), "ops_per_s": throughput, "mb_per_s": throughput * args.value_size as f64 / 1e6,
                "errors": errors, "sheds": sheds, "shed_cause": (sheds > 0).then_some(SHED_CAUSE), "latency_ms": {"p50": p50, "p99": p99, "p999": p999, "max": max},
                "peak_rss_bytes_per_node": peak_rss})
        ),
        Output::Text => {
            println!(
                "{kind}: {} clients, {} B values, {} resources, {} connections, {} s",
                args.clients, args.value_size, args.resources, args.connections, args.duration
            );
            println!(
                "  {:.0} ops/s, {:.1} MB/s ({} ops, {errors} errors)",
                throughput,
                throughput * args.value_size as f64 / 1e6,
                all.len()
            );
            if !peak_rss.is_empty() {
                let mib: Vec<String> = peak_rss.iter().map(|b| format!("{:.0} MiB", *b as f64 / 1048576.0)).collect();
                println!("  node peak RSS during the run: {}", mib.join(", "));
            }
            println!("  latency ms: p50 {p50:.2}  p99 {p99:.2}  p99.9 {p999:.2}  max {max:.2}");
            if let Some(e) = first_error {
                println!("  first error: {e}");
            }
            if sheds > 0 {
                println!("  {sheds} attempts shed: {SHED_CAUSE}");
            }
        }
    }
    Ok(())
}
