//! `shadowstore`: runs one node.
//!
//! Configuration comes from `--config FILE` (TOML, see deploy/), overridden
//! by `SHADOWSTORE_*` environment variables and then by flags. The node
//! runs until SIGINT or SIGTERM, then stops its groups and syncs storage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use shadowstore_base::cli_docs;
use shadowstore_node::config::LogFormat;
use shadowstore_node::config::NodeConfig;
use shadowstore_node::node::Node;
use shadowstore_node::node::Seams;

#[derive(Parser, Debug)]
#[command(name = "shadowstore", version, about = "A shadowstore node")]
struct Args {
    #[command(subcommand)]
    command: Option<Tool>,
    /// TOML configuration file.
    #[arg(long, env = "SHADOWSTORE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (sled files and the node's identity).
    #[arg(long, env = "SHADOWSTORE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on, host:port.
    #[arg(long, env = "SHADOWSTORE_LISTEN")]
    listen: Option<String>,
    /// Address other nodes and clients use, if not the listen address.
    #[arg(long, env = "SHADOWSTORE_ADVERTISE")]
    advertise: Option<String>,
    /// Address the peer service listens on, host:port (unset: the listen
    /// address serves peers too).
    #[arg(long, env = "SHADOWSTORE_PEER_LISTEN")]
    peer_listen: Option<String>,
    /// Address other nodes use for the peer service, if not the peer
    /// listen address.
    #[arg(long, env = "SHADOWSTORE_PEER_ADVERTISE")]
    peer_advertise: Option<String>,
    /// Create a new cluster if this node has no identity yet.
    #[arg(long, env = "SHADOWSTORE_BOOTSTRAP")]
    bootstrap: bool,
    /// Members to join through (comma separated) if this node has no identity yet.
    #[arg(long, env = "SHADOWSTORE_JOIN", value_delimiter = ',')]
    join: Vec<String>,
    /// Region label of this node.
    #[arg(long, env = "SHADOWSTORE_REGION")]
    region: Option<String>,
    /// Reads per second this node serves before shedding.
    #[arg(long, env = "SHADOWSTORE_READ_CAPACITY_RPS")]
    read_capacity_rps: Option<u64>,
    /// tracing filter, e.g. "info" or "shadowstore_node=debug".
    #[arg(long, env = "SHADOWSTORE_LOG")]
    log: Option<String>,
    /// Log lines as text, or as one JSON object per line.
    #[arg(long, env = "SHADOWSTORE_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Operator HTTP listener (metrics at /metrics), host:port.
    #[arg(long, env = "SHADOWSTORE_HTTP_ADDR")]
    http_addr: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
enum Tool {
    /// Compacts the data directory of a stopped node: copies its live data
    /// into a fresh directory and swaps it in (sled keeps its file at its
    /// high-water mark after churn).
    Compact {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print a shell completion script, e.g. `shadowstore completions bash`.
    Completions {
        #[arg(value_enum)]
        shell: cli_docs::Shell,
    },
    /// Write the manual pages (shadowstore.1 and one per subcommand) into DIR.
    Man { dir: PathBuf },
}

fn compact(data_dir: &std::path::Path) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shadowstore: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(shadowstore_node::storage::compact::compact(data_dir, 32 << 20)) {
        Ok(r) => {
            println!(
                "compacted {}: {} keys, {} MB of values; {} MB on disk before, {} MB after",
                data_dir.display(),
                r.keys,
                r.value_bytes / 1_000_000,
                r.bytes_before / 1_000_000,
                r.bytes_after / 1_000_000
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shadowstore: compaction of {} failed (is the node stopped?): {e}", data_dir.display());
            ExitCode::FAILURE
        }
    }
}

fn load(args: Args) -> anyhow::Result<NodeConfig> {
    let mut c = match &args.config {
        Some(p) => NodeConfig::from_file(p)?,
        None => NodeConfig::default(),
    };
    if let Some(v) = args.data_dir {
        c.data_dir = v;
    }
    if let Some(v) = args.listen {
        c.listen_addr = v;
    }
    if let Some(v) = args.advertise {
        c.advertise_addr = Some(v);
    }
    if let Some(v) = args.peer_listen {
        c.peer_listen_addr = Some(v);
    }
    if let Some(v) = args.peer_advertise {
        c.peer_advertise_addr = Some(v);
    }
    if args.bootstrap {
        c.bootstrap = true;
    }
    if !args.join.is_empty() {
        c.join = args.join;
    }
    if let Some(v) = args.region {
        c.region = v;
    }
    if let Some(v) = args.read_capacity_rps {
        c.read_capacity_rps = v;
    }
    if let Some(v) = args.log {
        c.log = v;
    }
    if let Some(v) = args.log_format {
        c.log_format = v;
    }
    if let Some(v) = args.http_addr {
        c.http_addr = Some(v);
    }
    c.validate()?;
    Ok(c)
}

async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let data_dir = config.data_dir.display().to_string();
    let mut node = Node::start(config, Seams::production())
        .await
        .with_context(|| format!("starting node with data dir {data_dir}"))?;
    println!("shadowstore node listening on {}", node.addr());
    if let Some(peer) = node.peer_addr() {
        println!("shadowstore peer service on {peer}");
    }
    if let Some(http) = &node.ctx().http_addr {
        println!("shadowstore operator HTTP on http://{http}/metrics");
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        r = node.serve_until_stopped() => {
            if let Err(e) = r {
                // No orderly shutdown: it would sync again. The process
                // exits non-zero at once, without dropping the node: the
                // storage engine's destructor flushes and syncs, and sled
                // panics when that sync fails. A supervisor (systemd)
                // restarts the node, which recovers from what is on disk.
                eprintln!("shadowstore: {:#}", anyhow::Error::new(e).context("node stopped"));
                std::process::exit(1);
            }
        }
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    node.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match &args.command {
        Some(Tool::Compact { data_dir }) => return compact(data_dir),
        Some(Tool::Completions { shell }) => {
            let script = cli_docs::completions(<Args as clap::CommandFactory>::command(), *shell);
            return match cli_docs::write_stdout(&script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("shadowstore: writing the completion script: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Tool::Man { dir }) => {
            return match cli_docs::write_man_pages(<Args as clap::CommandFactory>::command(), dir) {
                Ok(pages) => {
                    println!("wrote {} manual pages in {}", pages.len(), dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shadowstore: cannot write the manual pages in {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    let config = match load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shadowstore: {e:#}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| "info".into());
    match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init(),
        // Each line carries the fields of the spans it was written in
        // (request id, node, group, resource).
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(filter)
            .with_target(false)
            .init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shadowstore: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shadowstore: {e:#}");
            ExitCode::FAILURE
        }
    }
}
