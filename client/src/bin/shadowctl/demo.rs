//! `shadowctl demo`: a local cluster of real `shadowstore` processes on
//! loopback, with a short demo workload. While it runs (without
//! `--detach`), a demand generator reads the demo resource from two client
//! regions, with a three-minute surge above the resource's read capacity
//! every ten minutes, so `shadowctl demand show demo-catalog` and
//! `shadowctl placement plan` have something to show, and with four or
//! more nodes the planner's shadow is added on the cheapest node, synced,
//! shifted to step by step and retired (`shadowctl placement status`).
//!
//! Node i (1-based) listens for clients on 127.0.0.1:(base_port + i), for
//! other nodes on 127.0.0.1:(base_port + 50 + i) (its peer listener), and
//! keeps its data, config and log under `<dir>/node<i>`. Node 1 bootstraps the cluster, the
//! others join through it. Without `--detach` the cluster runs until Ctrl-C;
//! with it, `shadowctl demo down` stops it later (pids are kept in
//! `<dir>/pids`).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use clap::Args;
use clap::Subcommand;
use shadowstore_client::Client;
use shadowstore_client::ClientOptions;
use shadowstore_client::ClientTls;

use crate::output::Output;

#[derive(Args, Debug)]
pub struct DemoCmd {
    #[command(subcommand)]
    action: Option<DemoAction>,
    #[command(flatten)]
    args: DemoArgs,
}

#[derive(Subcommand, Debug)]
enum DemoAction {
    /// Stop a cluster started with --detach.
    Down {
        /// Also delete the cluster's data.
        #[arg(long)]
        purge: bool,
    },
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Number of node processes (3 to 40).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Directory for the nodes' data, configs and logs.
    #[arg(long, default_value = ".demo", global = true)]
    dir: PathBuf,
    /// Node i listens on base_port + i.
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
    /// Return once the cluster is up and leave it running.
    #[arg(long)]
    detach: bool,
    /// Skip the demo workload (the demand generator and the placement
    /// settings). The nodes still serve at most 50 reads/s each, the demo's
    /// read capacity, and shed the rest with RESOURCE_EXHAUSTED; `--set
    /// read_capacity_rps=20000` lifts it (for `shadowctl bench`).
    #[arg(long)]
    no_workload: bool,
    /// The node binary (default: `shadowstore` next to this executable).
    #[arg(long, env = "SHADOWSTORE_NODE_BIN")]
    node_binary: Option<PathBuf>,
    /// Extra node setting, as in the TOML file: `--set orphan_grace_ms=5000`
    /// (repeatable). It replaces the demo's own value of a key
    /// (`--set read_capacity_rps=20000` lifts the demo's 50 reads/s).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
}

const REGIONS: [&str; 3] = ["us-east", "us-west", "eu-west"];
/// Node i serves the peer service on base_port + this + i.
const PEER_PORT_OFFSET: u16 = 50;
/// Node i serves its operator HTTP (metrics, dashboard) on base_port +
/// this + i.
const HTTP_PORT_OFFSET: u16 = 90;
/// Nodes a demo runs at most: their peer ports stay below the HTTP ports.
const DEMO_NODES_MAX: u16 = HTTP_PORT_OFFSET - PEER_PORT_OFFSET;
/// Each demo node serves at most this many reads per second, so the
/// generator's surges exceed what the three replicas give.
const DEMO_READ_CAPACITY_RPS: u64 = 50;
/// The generator: a steady rate, and a surge for one minute in ten.
const DEMAND_BASE_RPS: u64 = 20;
const DEMAND_SURGE_RPS: u64 = 400;
const DEMAND_SURGE_EVERY_S: u64 = 600;
const DEMAND_SURGE_FOR_S: u64 = 180;

/// Placement settings the demo sets so the whole shadow loop shows within
/// about five minutes: plan every 5 s, shift in 10 s steps, retire a
/// shadow one minute after demand falls. (The defaults suit production:
/// plans every minute, 30 s steps, 30 min hysteresis.)
const DEMO_PLACEMENT: [(&str, &str); 6] = [
    ("planning_interval_ms", "5000"),
    ("hysteresis_ms", "60000"),
    ("dwell_ms", "10000"),
    ("gate_successes", "2"),
    ("gate_p99_ms", "1000"),
    ("drain_ms", "2000"),
];

/// Sets the demo's placement settings and gives every node a distinct
/// price per million requests (node i: i × 100 000 micro-units), so the
/// cheapest capable node visibly wins.
async fn configure_placement(client: &Client, nodes: u16) -> anyhow::Result<()> {
    for (key, value) in DEMO_PLACEMENT {
        client.set_placement_config(key, value, None, None).await.with_context(|| format!("setting {key}"))?;
    }
    let status = client.cluster_status().await?;
    for n in &status.nodes {
        let price = (nodes as u64 + 1 - n.node_id.min(nodes as u64)) * 100_000;
        client
            .set_placement_config("prices.million_requests_micros", &price.to_string(), Some(n.node_id), None)
            .await
            .with_context(|| format!("pricing node {}", n.node_id))?;
    }
    Ok(())
}

/// Reads the demo resource until the process ends: `DEMAND_BASE_RPS`, and
/// `DEMAND_SURGE_RPS` for the first minute of every ten. Reads alternate
/// between two client regions; shed reads are not retried.
async fn generate_demand(endpoints: Vec<String>, tls: Option<ClientTls>) {
    let clients: Vec<Client> = ["eu-west", "us-east"]
        .iter()
        .filter_map(|region| {
            let options = ClientOptions {
                total_deadline: Duration::from_millis(500),
                region: Some(region.to_string()),
                tls: tls.clone(),
                ..ClientOptions::default()
            };
            Client::new_lazy(endpoints.clone(), options).ok()
        })
        .collect();
    if clients.is_empty() {
        return;
    }
    // Paced by a 10 ms tick: each tick issues the reads the rate owes so
    // far, so the rate holds even where a 2.5 ms sleep would not.
    const TICK_MS: u64 = 10;
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
    let (mut owed, mut n) = (0.0f64, 0u64);
    loop {
        tick.tick().await;
        let elapsed_s = started.elapsed().as_secs();
        let rps =
            if elapsed_s % DEMAND_SURGE_EVERY_S < DEMAND_SURGE_FOR_S { DEMAND_SURGE_RPS } else { DEMAND_BASE_RPS };
        owed += rps as f64 * TICK_MS as f64 / 1000.0;
        while owed >= 1.0 {
            owed -= 1.0;
            let client = clients[(n % clients.len() as u64) as usize].clone();
            n += 1;
            tokio::spawn(async move {
                let options = shadowstore_client::ReadOptions { max_staleness_ms: Some(5_000), ..Default::default() };
                let _ = client.get_with("demo-catalog", "en/mobile", options).await;
            });
        }
    }
}

const READY_WAIT: Duration = Duration::from_secs(60);

fn node_binary(args: &DemoArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.node_binary {
        return Ok(p.clone());
    }
    let me = std::env::current_exe().context("cannot locate shadowctl's own executable")?;
    let candidate = me.with_file_name("shadowstore");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "cannot find the node binary at {}; build it with `cargo build --release` or pass --node-binary",
        candidate.display()
    )
}

fn pids_file(dir: &Path) -> PathBuf {
    dir.join("pids")
}

pub fn alive(pid: i32) -> bool {
    // An exited child of ours (the foreground demo's nodes) stays a zombie,
    // which signal 0 still finds, until it is reaped: reap it first. For any
    // other process this fails with ECHILD and changes nothing.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    // Signal 0 checks existence and permission without sending anything.
    unsafe { libc::kill(pid, 0) == 0 }
}

pub fn read_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(pids_file(dir))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn stop(pids: &[i32]) {
    for &p in pids {
        unsafe {
            libc::kill(p, libc::SIGTERM);
        }
    }
    for _ in 0..100 {
        if pids.iter().all(|&p| !alive(p)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for &p in pids {
        if alive(p) {
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
    }
}

fn peer_addr(args: &DemoArgs, i: u16) -> String {
    format!("127.0.0.1:{}", args.base_port + PEER_PORT_OFFSET + i)
}

fn http_addr(args: &DemoArgs, i: u16) -> String {
    format!("127.0.0.1:{}", args.base_port + HTTP_PORT_OFFSET + i)
}

fn endpoints(args: &DemoArgs) -> Vec<String> {
    (1..=args.nodes).map(|i| format!("127.0.0.1:{}", args.base_port + i)).collect()
}

/// Whether `--set insecure=true` asked for plaintext nodes.
fn insecure(args: &DemoArgs) -> bool {
    args.settings.iter().any(|kv| kv.split_once('=').is_some_and(|(k, v)| k.trim() == "insecure" && v.trim() == "true"))
}

fn certs_dir(args: &DemoArgs) -> PathBuf {
    args.dir.join("certs")
}

/// The demo's certificates (a fresh node and client set each start, the
/// CA kept), and the admin client's TLS; none with `--set insecure=true`.
fn make_certs(args: &DemoArgs) -> anyhow::Result<Option<ClientTls>> {
    if insecure(args) {
        return Ok(None);
    }
    let dir = certs_dir(args);
    shadowstore_client::certs::local_set(&dir)
        .with_context(|| format!("cannot make the demo's certificates in {}", dir.display()))?;
    Ok(Some(ClientTls::from_dir(&dir, "admin")?))
}

fn write_config(args: &DemoArgs, i: u16) -> anyhow::Result<PathBuf> {
    let dir = args.dir.join(format!("node{i}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let data = dir.join("data");
    let join = if i == 1 { String::new() } else { format!("{:?}", peer_addr(args, 1)) };
    // The demo's own settings, in order; `--set` replaces a key given here
    // or adds one.
    let mut settings: Vec<(String, String)> = vec![
        ("data_dir".into(), format!("{:?}", data.display().to_string())),
        ("listen_addr".into(), format!("\"127.0.0.1:{}\"", args.base_port + i)),
        ("peer_listen_addr".into(), format!("{:?}", peer_addr(args, i))),
        ("bootstrap".into(), (i == 1).to_string()),
        ("join".into(), format!("[{join}]")),
        ("region".into(), format!("\"{}\"", REGIONS[(i as usize - 1) % REGIONS.len()])),
        ("read_capacity_rps".into(), DEMO_READ_CAPACITY_RPS.to_string()),
        ("http_addr".into(), format!("\"{}\"", http_addr(args, i))),
    ];
    if !insecure(args) {
        let certs = std::path::absolute(certs_dir(args)).context("cannot resolve the demo's directory")?;
        for (key, file) in [("tls.ca_file", "ca.pem"), ("tls.cert_file", "node.pem"), ("tls.key_file", "node.key")] {
            settings.push((key.into(), format!("{:?}", certs.join(file).display().to_string())));
        }
    }
    for kv in &args.settings {
        let Some((k, v)) = kv.split_once('=') else { bail!("--set takes KEY=VALUE, got {kv:?}") };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        match settings.iter_mut().find(|(key, _)| *key == k) {
            Some(existing) => existing.1 = v,
            None => settings.push((k, v)),
        }
    }
    let mut text = String::from("# Written by `shadowctl demo`.\n");
    for (k, v) in &settings {
        text.push_str(&format!("{k} = {v}\n"));
    }
    let path = dir.join("node.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn spawn_node(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err_file = log_file.try_clone().context("cannot duplicate log file handle")?;
    std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        // Own process group: a Ctrl-C in the terminal reaches shadowctl,
        // which stops the nodes in order, not the nodes directly.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

async fn wait_ready(args: &DemoArgs, children: &mut [Child], tls: &Option<ClientTls>) -> anyhow::Result<Client> {
    let eps = endpoints(args);
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    let options =
        ClientOptions { total_deadline: Duration::from_secs(2), tls: tls.clone(), ..ClientOptions::default() };
    let client = Client::new_lazy(&eps, options)?;
    let want_voters = (args.nodes as usize).min(5);
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait().context("cannot poll node process")? {
                let log = args.dir.join(format!("node{}", i + 1)).join("node.log");
                bail!("node {} exited with {status} during start-up; its log ends with:\n{}", i + 1, log_tail(&log));
            }
        }
        if let Ok(s) = client.cluster_status().await {
            let voters = s.nodes.iter().filter(|n| n.meta_voter).count();
            let healthy = s.nodes.iter().all(|n| n.health == "up" || n.health == "self");
            // Every demo node has a peer listener: ready once each is recorded.
            let routed = s.nodes.iter().all(|n| !n.peer_address.is_empty());
            if s.nodes.len() == args.nodes as usize && voters == want_voters && healthy && routed {
                return Ok(Client::new_lazy(&eps, ClientOptions { tls: tls.clone(), ..ClientOptions::default() })?);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("cluster not ready after {READY_WAIT:?}; see the logs under {}", args.dir.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn workload(client: &Client, out: Output) -> anyhow::Result<()> {
    let resource = "demo-catalog";
    println!("\n== demo workload");
    match client.create_resource(resource, 3).await {
        Ok(info) => out.resource_info(&info),
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            println!("resource {resource} exists already")
        }
        Err(e) => return Err(e.into()),
    }
    let variants = ["en/mobile", "en/desktop", "de/mobile", "de/desktop"];
    for (i, v) in variants.iter().enumerate() {
        let body = format!("{{\"variant\":\"{v}\",\"title\":\"product {i}\",\"price_cents\":{}}}", 999 + i * 100);
        let version = client.put(resource, v, body.into_bytes()).await?;
        println!("put {resource}/{v} -> version {version}");
    }
    let read = client.get(resource, "en/mobile").await?;
    println!(
        "get {resource}/en/mobile -> version {} from node {}: {}",
        read.version,
        read.served_by_node,
        String::from_utf8_lossy(&read.value)
    );
    let v2 = client
        .put_if(
            resource,
            "en/mobile",
            b"{\"variant\":\"en/mobile\",\"title\":\"product 0 (sale)\"}".to_vec(),
            read.version,
        )
        .await?;
    println!("conditional put on version {} -> version {v2}", read.version);
    match client.put_if(resource, "en/mobile", b"stale".to_vec(), read.version).await {
        Err(e) if e.code() == tonic::Code::FailedPrecondition => {
            println!("conditional put on the old version {} refused: {}", read.version, e)
        }
        other => bail!("expected a refused conditional put, got {other:?}"),
    }
    println!("\n== shadowctl variants {resource}");
    out.variants(&client.list_variants(resource).await?);
    println!("\n== shadowctl resource describe {resource}");
    out.describe(&client.describe_resource(resource).await?);
    println!("\n== shadowctl status");
    out.status(&client.cluster_status().await?);
    Ok(())
}

pub async fn run(cmd: &DemoCmd, out: Output) -> anyhow::Result<()> {
    let args = &cmd.args;
    if let Some(DemoAction::Down { purge }) = &cmd.action {
        let pids = read_pids(&args.dir);
        let running: Vec<i32> = pids.into_iter().filter(|p| alive(*p)).collect();
        if running.is_empty() {
            println!("no demo cluster is running in {}", args.dir.display());
        } else {
            stop(&running);
            println!("stopped {} node processes", running.len());
        }
        let _ = std::fs::remove_file(pids_file(&args.dir));
        if *purge {
            std::fs::remove_dir_all(&args.dir).with_context(|| format!("cannot remove {}", args.dir.display()))?;
            println!("removed {}", args.dir.display());
        }
        return Ok(());
    }
    if !(3..=DEMO_NODES_MAX).contains(&args.nodes) {
        bail!("--nodes must be 3 to {DEMO_NODES_MAX}, got {}", args.nodes);
    }
    if args.base_port.checked_add(HTTP_PORT_OFFSET + args.nodes).is_none() {
        bail!(
            "--base-port {} leaves no room for {} nodes' client, peer and HTTP ports (base + 1 to base + {})",
            args.base_port,
            args.nodes,
            HTTP_PORT_OFFSET + args.nodes
        );
    }
    let running: Vec<i32> = read_pids(&args.dir).into_iter().filter(|p| alive(*p)).collect();
    if !running.is_empty() {
        bail!(
            "a demo cluster is already running from {} (pids {running:?}); stop it with `shadowctl demo down --dir {}`",
            args.dir.display(),
            args.dir.display()
        );
    }
    let bin = node_binary(args)?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let tls = make_certs(args)?;
    let mut children = Vec::new();
    for i in 1..=args.nodes {
        let config = write_config(args, i)?;
        let log = args.dir.join(format!("node{i}")).join("node.log");
        match spawn_node(&bin, &config, &log) {
            Ok(c) => children.push(c),
            Err(e) => {
                stop(&children.iter().map(|c| c.id() as i32).collect::<Vec<_>>());
                return Err(e);
            }
        }
        if i == 1 {
            // Let node 1 bootstrap before the others try to join it.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let pids: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
    let pid_text: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    std::fs::write(pids_file(&args.dir), pid_text.join("\n")).context("cannot write the pids file")?;
    let client = match wait_ready(args, &mut children, &tls).await {
        Ok(c) => c,
        Err(e) => {
            stop(&pids);
            let _ = std::fs::remove_file(pids_file(&args.dir));
            return Err(e);
        }
    };
    let eps = endpoints(args).join(",");
    println!("shadowstore demo cluster: {} nodes up", args.nodes);
    println!("endpoints: {eps}");
    println!("data, configs and logs: {}", args.dir.display());
    println!(
        "metrics (Prometheus): {}",
        (1..=args.nodes).map(|i| format!("http://{}/metrics", http_addr(args, i))).collect::<Vec<_>>().join(" ")
    );
    let capacity = args
        .settings
        .iter()
        .find_map(|kv| kv.strip_prefix("read_capacity_rps="))
        .map_or(DEMO_READ_CAPACITY_RPS.to_string(), str::to_string);
    println!(
        "read capacity: {capacity} reads/s per node (reads above it are shed with RESOURCE_EXHAUSTED; \
         --set read_capacity_rps=N changes it)"
    );
    if !args.no_workload {
        if let Err(e) = workload(&client, out).await {
            eprintln!("demo workload failed: {e:#}");
        }
        if let Err(e) = configure_placement(&client, args.nodes).await {
            eprintln!("demo placement settings failed: {e:#}");
        }
    }
    println!();
    match &tls {
        Some(_) => {
            let certs = certs_dir(args);
            println!("mutual TLS: CA and certificates (admin, writer, reader, node) in {}", certs.display());
            println!("try: SHADOWSTORE_ENDPOINTS={eps} SHADOWSTORE_CERTS={} shadowctl status", certs.display());
        }
        None => {
            println!("INSECURE: plaintext, no authentication (--set insecure=true)");
            println!("try: SHADOWSTORE_ENDPOINTS={eps} shadowctl --insecure status");
        }
    }
    if args.detach {
        println!("running in the background; stop with `shadowctl demo down --dir {}`", args.dir.display());
        return Ok(());
    }
    // SIGTERM (a service manager, `kill`, `timeout`) stops the cluster as
    // Ctrl-C does, so no node outlives the demo. Both are watched before
    // the prompt is printed.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    let interrupt = tokio::signal::ctrl_c();
    if !args.no_workload {
        tokio::spawn(generate_demand(endpoints(args), tls.clone()));
        println!(
            "generating demand on demo-catalog: {DEMAND_BASE_RPS} reads/s, {DEMAND_SURGE_RPS} reads/s for the first {} minutes of every ten (node read capacity {DEMO_READ_CAPACITY_RPS}/s)",
            DEMAND_SURGE_FOR_S / 60
        );
        println!("try: shadowctl demand show demo-catalog   and   shadowctl placement plan");
        if args.nodes > 3 {
            println!(
                "watch the shadow loop (decision, sync, steps, retirement): watch shadowctl placement status demo-catalog"
            );
        }
    }
    println!("press Ctrl-C to stop the cluster");
    // Watches for a node exiting on its own; ends once the demo stops.
    let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = stopping.clone();
    let exited = tokio::task::spawn_blocking(move || {
        loop {
            if watching.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            for (i, c) in children.iter_mut().enumerate() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Some((i + 1, status));
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    tokio::select! {
        _ = interrupt => println!("\nstopping the cluster"),
        _ = terminate.recv() => println!("terminated: stopping the cluster"),
        r = exited => if let Ok(Some((i, status))) = r {
            eprintln!("node {i} exited with {status}; stopping the cluster");
        },
    }
    stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    stop(&pids);
    let _ = std::fs::remove_file(pids_file(&args.dir));
    Ok(())
}
