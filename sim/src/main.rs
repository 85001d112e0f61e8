//! `sim run --seed S` replays one seed; `sim sweep --seeds A..B` runs many.
//! A failing seed prints the command that replays it and writes its
//! history to `target/sim-failures/`.

use shadowstore_base::ids::NodeId;
use std::process::ExitCode;
use std::time::Instant;

use sim::run::RunConfig;
use sim::run::RunReport;
use sim::run::run_seed;

const USAGE: &str = "usage: sim run --seed S [--nodes N] [--verbose] [--planted-bug NAME]
       sim sweep --seeds A..B [--time-budget SECONDS] [--jobs N] [--planted-bug NAME]
       sim placement-eval --trace FILE... [--output text|json] [--plots DIR] [--max-steps N] [--jobs N] [--frontier] [--react-every-minute]
       sim demand-memory [--pairs N] [--forecasters K] [--store DIR]";

fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn report_failure(r: &RunReport, replay_flags: &str) {
    // Beside the build profile's directory (`target/release/sim` writes to
    // `target/sim-failures`), whatever the working directory: tests run
    // from the crate's directory.
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("sim-failures")))
        .unwrap_or_else(|| std::path::PathBuf::from("target/sim-failures"));
    let path = dir.join(format!("seed-{}.history", r.seed));
    let mut text = format!(
        "seed {} nodes {} failure: {:?}\nmessage fault rates (per mille): {:?}; dropped/delayed/duplicated {:?}\nfaults:\n",
        r.seed, r.nodes, r.failure, r.message_rates, r.messages_faulted
    );
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
    eprintln!("reproduce: cargo run -p sim --release -- run --seed {}{replay_flags}", r.seed);
}

struct SweepSummary {
    ran: u64,
    failed: Vec<u64>,
    sim_s: f64,
    wall_s: f64,
}

/// Runs every seed of `seeds` in its own `sim run` process, `jobs` at a
/// time, until `budget_s` wall seconds have passed. A fresh process per
/// seed is what makes a sweep's result exactly what `sim run --seed S`
/// replays: state a run leaves in the process (see docs/TESTING.md) cannot
/// reach the next seed.
fn sweep(seeds: std::ops::Range<u64>, budget_s: f64, jobs: usize, planted: Option<&str>) -> SweepSummary {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;
    let start = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let results: Mutex<(u64, Vec<u64>, f64)> = Mutex::new((0, Vec::new(), 0.0));
    let exe = std::env::current_exe();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    if start.elapsed().as_secs_f64() >= budget_s {
                        return;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        return;
                    }
                    let mut cmd = match &exe {
                        Ok(exe) => std::process::Command::new(exe),
                        Err(e) => {
                            eprintln!("sim sweep: cannot find its own executable: {e}");
                            return;
                        }
                    };
                    cmd.args(["run", "--seed", &seed.to_string()]);
                    if let Some(p) = planted {
                        cmd.args(["--planted-bug", p]);
                    }
                    let (ok, line, err) = match cmd.output() {
                        Ok(out) => (
                            out.status.success(),
                            String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string(),
                            String::from_utf8_lossy(&out.stderr).into_owned(),
                        ),
                        Err(e) => (false, String::new(), format!("seed {seed}: could not start: {e}\n")),
                    };
                    // "... sim 28.2 s wall ..." in the run's summary line.
                    let sim_s: f64 = line
                        .split_once(" sim ")
                        .and_then(|(_, rest)| rest.split_whitespace().next())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0.0);
                    let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                    r.0 += 1;
                    r.2 += sim_s;
                    println!("{line}");
                    if !ok {
                        r.1.push(seed);
                        eprint!("{err}");
                    }
                }
            });
        }
    });
    let (ran, mut failed, sim_s) = results.into_inner().unwrap_or_else(|p| p.into_inner());
    failed.sort();
    SweepSummary { ran, failed, sim_s, wall_s: start.elapsed().as_secs_f64() }
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
    // `--planted-bug NAME` turns on a deliberate node bug (checker proofs).
    let planted = value(&args, "--planted-bug").map(String::from);
    if let Some(name) = &planted
        && !shadowstore_node::planted::set(name, true)
    {
        eprintln!("sim: no planted bug called {name:?}; known: {:?}", shadowstore_node::planted::NAMES);
        return ExitCode::from(2);
    }
    let replay_flags = planted.map(|p| format!(" --planted-bug {p}")).unwrap_or_default();
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
                for op in &r.shadow_ops {
                    println!("  operator: {op}");
                }
            }
            println!(
                "seed {} nodes {} ops {} ({} indeterminate) faults {} messages dropped/delayed/duplicated {:?} \
                 quarantined {} shadow actions {} ({} done) sim {:.1} s wall {:.1} s trace {:016x} {}",
                r.seed,
                r.nodes,
                r.ops,
                r.indeterminate,
                r.faults.len(),
                r.messages_faulted,
                r.replicas_quarantined,
                r.shadow_ops.len(),
                r.shadow_ops.iter().filter(|o| !o.contains("refused") && !o.contains("no answer")).count(),
                r.sim_ms as f64 / 1000.0,
                wall_s,
                r.trace_hash,
                if r.failure.is_none() { "ok" } else { "FAILED" }
            );
            if let Some(f) = &r.failure {
                eprintln!("seed {seed} failed: {f}");
                report_failure(&r, &replay_flags);
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
            let jobs = match value(&args, "--jobs").map(str::parse::<usize>) {
                None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                Some(Ok(j)) if j > 0 => j,
                Some(_) => {
                    eprintln!("sim sweep: --jobs takes a positive number");
                    return ExitCode::from(2);
                }
            };
            let planted = value(&args, "--planted-bug");
            let summary = sweep(a..b, budget_s, jobs, planted);
            let failed = summary.failed;
            println!(
                "{} seeds in {:.0} s: {:.1} seeds/min, {:.2} simulated s per wall s; {} failed {:?}",
                summary.ran,
                summary.wall_s,
                summary.ran as f64 * 60.0 / summary.wall_s,
                summary.sim_s / summary.wall_s,
                failed.len(),
                failed
            );
            if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Some("placement-eval") => placement_eval(&args),
        Some("demand-memory") => demand_memory(&args),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Resident set size of this process, bytes (Linux).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// `sim demand-memory`: the meta leader's demand history for N
/// (resource, region) pairs, as counted and as the process's RSS grew.
fn demand_memory(args: &[String]) -> ExitCode {
    use shadowstore_placement::demand::{DemandHistory, DemandKey, MinuteReport};
    let pairs = match value(args, "--pairs").map(str::parse::<usize>) {
        None => 10_000,
        Some(Ok(n)) if (1..=shadowstore_placement::demand::history::PAIRS_MAX).contains(&n) => n,
        Some(_) => {
            eprintln!("sim demand-memory: --pairs takes 1..={}", shadowstore_placement::demand::history::PAIRS_MAX);
            return ExitCode::from(2);
        }
    };
    let before = rss_bytes().unwrap_or(0);
    let mut history = DemandHistory::new();
    // The rings are allocated whole when a pair is first seen; one report
    // per pair, then every slot touched once, is the steady-state size.
    for pair in 0..pairs {
        let key = DemandKey { resource: format!("resource-{pair:06}"), region: "eu-west".to_string() };
        for minute in [0u64, 14 * 24 * 60 - 1] {
            history.ingest(&MinuteReport {
                minute_start_ms: minute * 60_000,
                key: key.clone(),
                reads: 100,
                peak_bucket_reads: 20,
                shed_reads: 0,
            });
        }
    }
    let after = rss_bytes().unwrap_or(0);
    println!(
        "{pairs} pairs: {:.1} MB counted ({} B per pair), RSS grew {:.1} MB",
        history.memory_bytes() as f64 / 1e6,
        history.memory_bytes() / pairs,
        after.saturating_sub(before) as f64 / 1e6
    );
    // A meta voter's history on disk (sled in DIR): the journal of one
    // minute for every pair, a snapshot of every pair, and a load.
    if let Some(dir) = value(args, "--store") {
        if let Err(error) = demand_store(std::path::Path::new(dir), pairs) {
            eprintln!("sim demand-memory: --store {dir}: {error}");
            return ExitCode::FAILURE;
        }
    }
    // Forecasters as the meta leader runs them (5-minute steps, 30-minute
    // horizon), each fed its whole fitting window (two weeks) of a
    // daily-seasonal series so every buffer is full.
    let forecasters = match value(args, "--forecasters").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(k)) if k <= 1_000 => k,
        Some(_) => {
            eprintln!("sim demand-memory: --forecasters takes 0..=1000");
            return ExitCode::from(2);
        }
    };
    if forecasters > 0 {
        use shadowstore_placement::forecast::{Forecaster, ForecasterConfig};
        let config = ForecasterConfig::for_step(300, 1_800);
        let steps = config.history_steps_max;
        // Forecaster k's demand at step t: a daily cycle plus a little noise.
        let demand = |k: usize, t: usize| {
            let phase = (t % 288) as f64 / 288.0 * std::f64::consts::TAU;
            100.0 + 50.0 * phase.sin() + ((t * 7 + k) % 13) as f64
        };
        let started = Instant::now();
        let before = rss_bytes().unwrap_or(0);
        let mut kept = Vec::with_capacity(forecasters);
        for k in 0..forecasters {
            let mut forecaster = Forecaster::new(config.clone()).expect("default config is valid");
            for t in 0..steps {
                forecaster.observe(demand(k, t));
            }
            let _ = forecaster.forecast();
            kept.push(forecaster);
        }
        let after = rss_bytes().unwrap_or(0);
        let seconds = started.elapsed().as_secs_f64();
        let refits = forecasters * steps.div_ceil(config.refit_every_steps);
        // Steady state: one more refit period per forecaster, on a full
        // fitting window (one refit plus the cheap steps between refits).
        let steady_started = Instant::now();
        for (k, forecaster) in kept.iter_mut().enumerate() {
            for t in steps..steps + config.refit_every_steps {
                forecaster.observe(demand(k, t));
            }
        }
        let steady_ms = steady_started.elapsed().as_secs_f64() * 1e3 / forecasters as f64;
        let period_h = (config.refit_every_steps as u64 * config.step_s) as f64 / 3600.0;
        println!(
            "{forecasters} forecasters fed {steps} steps each: RSS grew {:.1} MB ({:.0} KB each), {seconds:.1} s \
             ({:.1} s each; {refits} refits, {:.1} ms per refit if refits were all of it)",
            after.saturating_sub(before) as f64 / 1e6,
            after.saturating_sub(before) as f64 / forecasters as f64 / 1e3,
            seconds / forecasters as f64,
            seconds * 1e3 / refits as f64,
        );
        println!(
            "steady state: {steady_ms:.1} ms of CPU per forecaster per {period_h:.1} h refit period \
             ({:.1} ms per hour; {:.1}% of one core for 10,000 forecasters)",
            steady_ms / period_h,
            steady_ms / period_h * 10_000.0 / 3_600_000.0 * 100.0
        );
        drop(kept);
        // A new meta leader's start: a forecaster warm-started from the
        // whole fitting window, then its first step (which refits).
        let warm_started = Instant::now();
        for k in 0..forecasters {
            let history: Vec<f64> = (0..steps).map(|t| demand(k, t)).collect();
            let mut forecaster = Forecaster::warm_start(config.clone(), &history).expect("default config is valid");
            forecaster.observe(demand(k, steps));
            let _ = forecaster.forecast();
        }
        let warm_ms = warm_started.elapsed().as_secs_f64() * 1e3 / forecasters as f64;
        let per_pass = shadowstore_node::placement::forecasters::WARM_STARTS_PER_PASS_MAX;
        println!(
            "warm start from {steps} steps and its first step: {warm_ms:.1} ms of CPU per forecaster \
             ({per_pass} per planning pass: {:.1} s)",
            warm_ms * per_pass as f64 / 1e3
        );
    }
    ExitCode::SUCCESS
}

/// Times the demand store (`node/src/demand/store.rs`) for `pairs` pairs
/// on sled in `dir`.
fn demand_store(dir: &std::path::Path, pairs: usize) -> std::io::Result<()> {
    use shadowstore_node::placement::history::History;
    use shadowstore_node::storage::StorageEngine;
    use shadowstore_node::storage::sled_engine::SledEngine;
    use shadowstore_placement::demand::{DemandKey, MinuteReport};
    let engine = SledEngine::open(dir, 64 << 20)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let state = History::open(engine.clone());
    let reports: Vec<MinuteReport> = (0..pairs)
        .map(|pair| MinuteReport {
            minute_start_ms: 14 * 24 * 3_600_000,
            key: DemandKey { resource: format!("resource-{pair:06}"), region: "eu-west".to_string() },
            reads: 100,
            peak_bucket_reads: 20,
            shed_reads: 0,
        })
        .collect();
    let started = Instant::now();
    state.ingest(&reports, NodeId::new(1), 0);
    let journal_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    runtime.block_on(state.snapshot());
    runtime.block_on(StorageEngine::sync(engine.clone()))?;
    let snapshot_ms = started.elapsed().as_secs_f64() * 1e3;
    let on_disk = engine.size_on_disk_bytes();
    drop(state);
    let started = Instant::now();
    let loaded = History::open(engine);
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "store: journal of one minute for {pairs} pairs {journal_ms:.0} ms; snapshot of every pair and sync \
         {snapshot_ms:.0} ms; {:.1} MB on disk; load {load_ms:.0} ms ({:.1} MB counted after load)",
        on_disk as f64 / 1e6,
        loaded.memory_bytes() as f64 / 1e6
    );
    Ok(())
}

/// `sim placement-eval`: see sim/src/placement_eval/mod.rs and
/// docs/PLACEMENT.md.
fn placement_eval(args: &[String]) -> ExitCode {
    use sim::placement_eval::{EvalOptions, evaluate, load, report};
    // Every argument after --trace up to the next flag is a trace file.
    let mut traces = Vec::new();
    let mut in_traces = false;
    for arg in &args[1..] {
        if arg == "--trace" {
            in_traces = true;
        } else if arg.starts_with("--") {
            in_traces = false;
        } else if in_traces {
            traces.push(std::path::PathBuf::from(arg));
        }
    }
    if traces.is_empty() {
        eprintln!("sim placement-eval: --trace takes one or more CSV files\n{USAGE}");
        return ExitCode::from(2);
    }
    let json = match value(args, "--output") {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            eprintln!("sim placement-eval: --output takes text or json, not {other:?}");
            return ExitCode::from(2);
        }
    };
    let max_steps = match value(args, "--max-steps").map(str::parse::<usize>) {
        None => None,
        Some(Ok(n)) if n >= sim::placement_eval::trace::TRACE_STEPS_MIN => Some(n),
        Some(_) => {
            eprintln!(
                "sim placement-eval: --max-steps takes a number >= {}",
                sim::placement_eval::trace::TRACE_STEPS_MIN
            );
            return ExitCode::from(2);
        }
    };
    let jobs = match value(args, "--jobs").map(str::parse::<usize>) {
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        Some(Ok(j)) if j > 0 => j,
        Some(_) => {
            eprintln!("sim placement-eval: --jobs takes a positive number");
            return ExitCode::from(2);
        }
    };
    let plots_dir = Some(std::path::PathBuf::from(value(args, "--plots").unwrap_or("target/placement-eval")));
    let mut loaded = Vec::new();
    for path in &traces {
        match load(path) {
            Ok(trace) => loaded.push(trace),
            Err(error) => {
                eprintln!("sim placement-eval: {error}");
                return ExitCode::from(2);
            }
        }
    }
    let frontier = args.iter().any(|a| a == "--frontier");
    let react_every_minute = args.iter().any(|a| a == "--react-every-minute");
    let options = EvalOptions { traces, max_steps, plots_dir: plots_dir.clone(), jobs, frontier, react_every_minute };
    let started = Instant::now();
    let results = evaluate(&loaded, &options);
    let summary = report::summarise(&results);
    if json {
        let document = serde_json::json!({ "traces": results, "summary": summary });
        match serde_json::to_string_pretty(&document) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("sim placement-eval: serialising the report: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report::text(&results, &summary));
        if let Some(dir) = plots_dir {
            println!("\nplots in {}", dir.display());
        }
    }
    eprintln!("placement-eval: {} traces in {:.0} s", loaded.len(), started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
