//! `shadowctl bench idle`: what idle groups cost.
//!
//! Creates `--resources` resources (each a 3-replica Raft group), waits
//! `--settle` seconds for them to go idle (quiesce), then samples the CPU
//! time and resident memory of the demo cluster's node processes from
//! /proc over `--duration` seconds. Memory per group is the growth of the
//! nodes' total RSS since before the groups were created, divided by the
//! number of groups created.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::bail;
use shadowstore_client::Client;
use shadowstore_client::ClientOptions;

use crate::bench::BenchArgs;
use crate::demo;
use crate::output::Output;
use crate::procstat::{clock_ticks_per_s, cpu_ticks, dir_bytes, total_rss};

const CREATE_CONCURRENCY: usize = 32;

/// `shadowctl bench churn`: disk space after write/overwrite/delete churn.
pub async fn churn(target: &crate::Target, args: &BenchArgs, out: Output) -> anyhow::Result<()> {
    let nodes = demo::read_pids(&args.demo_dir).into_iter().filter(|p| demo::alive(*p)).count();
    if nodes == 0 {
        bail!("no running demo cluster in {}", args.demo_dir.display());
    }
    let data_dirs: Vec<std::path::PathBuf> =
        (1..=nodes).map(|i| args.demo_dir.join(format!("node{i}")).join("data")).collect();
    let client = Client::connect_with(
        &target.endpoints,
        target.options(ClientOptions {
            total_deadline: Duration::from_secs(120),
            attempt_timeout: Duration::from_secs(60),
            ..Default::default()
        })?,
    )
    .await
    .context("cannot reach the cluster")?;
    let resource = "bench-churn";
    let info = match client.create_resource(resource, 3).await {
        Ok(i) => i,
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            client.list_resources().await?.into_iter().find(|r| r.name == resource).context("resource vanished")?
        }
        Err(e) => return Err(e.into()),
    };
    let disk_before: u64 = data_dirs.iter().map(|d| dir_bytes(d)).sum();
    let mut written = 0u64;
    for round in 0..args.rounds {
        for v in 0..args.variants {
            let value: Vec<u8> =
                (0..args.value_size).map(|i| (i as u64 * 31 + round as u64 * 7 + v as u64) as u8).collect();
            client.put(resource, &format!("v{v}"), value).await?;
            written += args.value_size as u64;
        }
        eprintln!("round {} of {} written", round + 1, args.rounds);
    }
    for v in (0..args.variants).step_by(2) {
        client.delete(resource, &format!("v{v}")).await?;
    }
    let disk_peak: u64 = data_dirs.iter().map(|d| dir_bytes(d)).sum();
    eprintln!("deleted half of the variants; waiting {} s for expiry and garbage collection", args.settle);
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let d = client.describe_resource(resource).await?;
    let superseded: usize = d.variants.iter().flat_map(|v| v.versions.iter()).filter(|x| x.superseded).count();
    let live_logical: u64 = d
        .variants
        .iter()
        .flat_map(|v| v.versions.iter())
        .filter(|x| !x.superseded && x.storage == "erasure-coded")
        .map(|x| x.size_bytes)
        .sum();
    let (k, m) = (info.data_shards as u64, info.parity_shards as u64);
    let live_encoded = live_logical * (k + m) / k;
    let disk_after: u64 = data_dirs.iter().map(|d| dir_bytes(d)).sum();
    let ratio = disk_after as f64 / live_encoded.max(1) as f64;
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({"written_logical_bytes": written, "live_logical_bytes": live_logical,
                "live_encoded_bytes": live_encoded, "disk_bytes_before": disk_before, "disk_bytes_peak": disk_peak,
                "disk_bytes_after": disk_after, "superseded_versions_left": superseded,
                "disk_over_live_encoded": ratio})
        ),
        Output::Text => {
            println!(
                "churn: {} rounds x {} variants x {} B written ({:.0} MB logical), half the variants deleted",
                args.rounds,
                args.variants,
                args.value_size,
                written as f64 / 1e6
            );
            println!(
                "  live: {:.1} MB logical, {:.1} MB encoded ({k}+{m}); superseded versions left: {superseded}",
                live_logical as f64 / 1e6,
                live_encoded as f64 / 1e6
            );
            println!(
                "  disk (all nodes' data dirs): {:.1} MB before, {:.1} MB after writing, {:.1} MB after {} s",
                disk_before as f64 / 1e6,
                disk_peak as f64 / 1e6,
                disk_after as f64 / 1e6,
                args.settle
            );
            println!("  disk / live encoded bytes: {ratio:.2}");
        }
    }
    Ok(())
}

pub async fn run(target: &crate::Target, args: &BenchArgs, out: Output) -> anyhow::Result<()> {
    let pids: Vec<i32> = demo::read_pids(&args.demo_dir).into_iter().filter(|p| demo::alive(*p)).collect();
    if pids.is_empty() {
        bail!(
            "no running demo cluster in {}; start one with `shadowctl demo --detach --no-workload`",
            args.demo_dir.display()
        );
    }
    let client = Client::connect_with(
        &target.endpoints,
        target.options(ClientOptions { total_deadline: Duration::from_secs(60), ..ClientOptions::default() })?,
    )
    .await
    .context("cannot reach the cluster")?;
    let rss_before = total_rss(&pids)?;
    let existing = client.list_resources().await?.len();
    let n = args.resources;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CREATE_CONCURRENCY {
        let client = client.clone();
        let next = next.clone();
        let created = created.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                match client.create_resource(&format!("idle-{i}"), 3).await {
                    Ok(_) => {
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.code() == tonic::Code::AlreadyExists => {}
                    Err(e) => return Err(e).with_context(|| format!("creating idle-{i}")),
                }
                if i % 1000 == 999 {
                    eprintln!("created {} groups in {:.0?}", i + 1, started.elapsed());
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("create task panicked")??;
    }
    let create_s = started.elapsed().as_secs_f64();
    let n = created.load(Ordering::Relaxed);
    eprintln!("created {n} groups in {create_s:.1} s; settling {} s", args.settle);
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let t0: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_, _>>()?;
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let t1: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_, _>>()?;
    let wall = w0.elapsed().as_secs_f64();
    let per_node_pct: Vec<f64> =
        t0.iter().zip(&t1).map(|(a, b)| (b - a) as f64 / clock_ticks_per_s() / wall * 100.0).collect();
    let total_pct: f64 = per_node_pct.iter().sum();
    let rss_after = total_rss(&pids)?;
    let groups = existing + n;
    if n == 0 {
        bail!("no new groups were created (idle-0.. exist already); use a fresh cluster");
    }
    let per_group = (rss_after.saturating_sub(rss_before)) as f64 / n.max(1) as f64;
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({"groups": groups, "created": n, "create_s": create_s, "measured_s": wall,
                "cpu_percent_of_one_core_total": total_pct, "cpu_percent_per_node": per_node_pct,
                "rss_bytes_before": rss_before, "rss_bytes_after": rss_after,
                "rss_bytes_per_group": per_group, "rss_bytes_per_replica": per_group / 3.0})
        ),
        Output::Text => {
            println!(
                "idle: {groups} groups ({n} created in {create_s:.1} s) on {} nodes, measured {wall:.1} s",
                pids.len()
            );
            let per: Vec<String> = per_node_pct.iter().map(|p| format!("{p:.2}%")).collect();
            println!("  CPU: {total_pct:.2}% of one core in total (per node: {})", per.join(", "));
            println!(
                "  RSS: {:.1} MiB before, {:.1} MiB after: {:.1} KiB per group ({:.1} KiB per replica)",
                rss_before as f64 / 1048576.0,
                rss_after as f64 / 1048576.0,
                per_group / 1024.0,
                per_group / 3072.0
            );
        }
    }
    Ok(())
}
