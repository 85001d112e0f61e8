//! `sim run --seed S` replays one seed; `sim sweep --seeds A..B` runs many.
//! A failing seed prints the command that replays it and writes its
//! history to `target/sim-failures/`.

use std::process::ExitCode;
use std::time::Instant;

use sim::run::RunConfig;
use sim::run::RunReport;
use sim::run::run_seed;

const USAGE: &str =
    "usage: sim run --seed S [--nodes N] [--verbose]\n       sim sweep --seeds A..B [--time-budget SECONDS]";

fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn report_failure(r: &RunReport) {
    let dir = std::path::Path::new("target/sim-failures");
    let path = dir.join(format!("seed-{}.history", r.seed));
    let mut text = format!("seed {} nodes {} failure: {:?}\nfaults:\n", r.seed, r.nodes, r.failure);
    for f in &r.faults {
        text.push_str(&format!("  {:>6} ms {:?}\n", f.at_ms, f.fault));
    }
    text.push_str("operations (client, key, kind, invoke ms, complete ms, outcome[, server]):\n");
    for op in &r.history {
        text.push_str(&format!(
            "  c{} {:?} {:?} {} {:?} {:?}{}\n",
            op.client,
            op.key,
            op.kind,
            op.invoke_ms,
            op.complete_ms,
            op.outcome,
            op.served_by.map(|(n, a)| format!(" served by node {n} at applied {a}")).unwrap_or_default()
        ));
    }
    let written = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, text));
    match written {
        Ok(()) => eprintln!("history written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
    eprintln!("reproduce: cargo run -p sim --release -- run --seed {}", r.seed);
}

fn one(seed: u64, nodes: Option<usize>) -> (RunReport, f64) {
    let mut cfg = RunConfig::new(seed);
    cfg.nodes = nodes;
    let t = Instant::now();
    let r = run_seed(&cfg);
    (r, t.elapsed().as_secs_f64())
}

/// Log timestamps in simulated milliseconds.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let ms = turmoil::sim_elapsed().map(|d| d.as_millis()).unwrap_or(0);
        write!(w, "{ms:>6}ms")
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_timer(SimTime)
            .with_ansi(false)
            .init();
    }
    match args.first().map(String::as_str) {
        Some("run") => {
            let Some(seed) = value(&args, "--seed").and_then(|s| s.parse::<u64>().ok()) else {
                eprintln!("sim run: --seed takes a number\n{USAGE}");
                return ExitCode::from(2);
            };
            let nodes = match value(&args, "--nodes").map(str::parse::<usize>) {
                None => None,
                Some(Ok(n)) if (3..=7).contains(&n) => Some(n),
                Some(_) => {
                    eprintln!("sim run: --nodes takes 3 to 7");
                    return ExitCode::from(2);
                }
            };
            let (r, wall_s) = one(seed, nodes);
            if args.iter().any(|a| a == "--verbose") {
                for f in &r.faults {
                    println!("  {:>6} ms {:?}", f.at_ms, f.fault);
                }
            }
            println!(
                "seed {} nodes {} ops {} ({} indeterminate) faults {} sim {:.1} s wall {:.1} s trace {:016x} {}",
                r.seed,
                r.nodes,
                r.ops,
                r.indeterminate,
                r.faults.len(),
                r.sim_ms as f64 / 1000.0,
                wall_s,
                r.trace_hash,
                if r.failure.is_none() { "ok" } else { "FAILED" }
            );
            if let Some(f) = &r.failure {
                eprintln!("seed {seed} failed: {f}");
                report_failure(&r);
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Some("sweep") => {
            let range = value(&args, "--seeds").and_then(|s| {
                let (a, b) = s.split_once("..")?;
                Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
            });
            let Some((a, b)) = range.filter(|(a, b)| a < b) else {
                eprintln!("sim sweep: --seeds takes A..B with A < B (B excluded)\n{USAGE}");
                return ExitCode::from(2);
            };
            let budget_s = match value(&args, "--time-budget").map(str::parse::<f64>) {
                None => f64::INFINITY,
                Some(Ok(s)) if s > 0.0 => s,
                Some(_) => {
                    eprintln!("sim sweep: --time-budget takes a positive number of seconds");
                    return ExitCode::from(2);
                }
            };
            let start = Instant::now();
            let (mut ran, mut failed, mut sim_ms) = (0u64, Vec::new(), 0u64);
            for seed in a..b {
                if start.elapsed().as_secs_f64() >= budget_s {
                    break;
                }
                let (r, wall_s) = one(seed, None);
                ran += 1;
                sim_ms += r.sim_ms;
                println!(
                    "seed {seed}: {} nodes, {} ops, trace {:016x}, {:.1} s wall{}",
                    r.nodes,
                    r.ops,
                    r.trace_hash,
                    wall_s,
                    r.failure.as_ref().map(|f| format!(" FAILED: {f}")).unwrap_or_default()
                );
                if r.failure.is_some() {
                    report_failure(&r);
                    failed.push(seed);
                }
            }
            let wall = start.elapsed().as_secs_f64();
            println!(
                "{ran} seeds in {wall:.0} s: {:.1} seeds/min, {:.2} simulated s per wall s; {} failed {:?}",
                ran as f64 * 60.0 / wall,
                sim_ms as f64 / 1000.0 / wall,
                failed.len(),
                failed
            );
            if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
