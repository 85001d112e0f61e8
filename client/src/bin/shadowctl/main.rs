//! `shadowctl`: operate a shadowstore cluster.
//!
//! Every command talks to the cluster through `--endpoints` (or
//! `SHADOWSTORE_ENDPOINTS`); `demo` starts a local cluster of real node
//! processes. Errors name the problem and exit non-zero (2 for bad usage or
//! input, 1 for failures reported by the cluster or the system).

mod bench;
mod certs;
mod chart;
mod demo;
mod idle;
mod output;
mod placement;
mod procstat;
mod progress;
mod shadow;
mod shadow_bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use clap::Subcommand;
use output::Output;
use shadowstore_base::cli_docs;
use shadowstore_client::Client;
use shadowstore_client::ClientOptions;
use shadowstore_client::ClientTls;
use shadowstore_client::ReadOptions;
use shadowstore_client::ShadowActionKind;

pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";

#[derive(Parser, Debug)]
#[command(name = "shadowctl", version, about = "Operate a shadowstore cluster")]
struct Cli {
    #[command(flatten)]
    target: Target,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Total time a command may take, retries included, in seconds.
    #[arg(long, global = true, default_value_t = 15)]
    timeout_secs: u64,
    /// This client's region, sent with reads for the demand telemetry.
    #[arg(long, global = true, env = "SHADOWSTORE_REGION")]
    region: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// How shadowctl reaches a cluster and who it says it is.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Cluster nodes, comma separated host:port.
    #[arg(long, global = true, env = "SHADOWSTORE_ENDPOINTS", default_value = DEFAULT_ENDPOINTS, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Directory with the cluster CA (ca.pem) and this client's certificate
    /// (`shadowctl certs` writes it) [default: ./certs, or the demo's
    /// .demo/certs when ./certs does not exist].
    #[arg(long, global = true, env = "SHADOWSTORE_CERTS")]
    pub certs: Option<PathBuf>,
    /// The certificate in --certs to present: <NAME>.pem and <NAME>.key
    /// (admin, writer and reader by default).
    #[arg(long, global = true, env = "SHADOWSTORE_IDENTITY", default_value = "admin")]
    pub identity: String,
    /// Plaintext without a certificate: only for nodes that run with
    /// insecure = true.
    #[arg(long, global = true)]
    pub insecure: bool,
}

impl Target {
    pub fn certs_dir(&self) -> PathBuf {
        match &self.certs {
            Some(dir) => dir.clone(),
            None if !std::path::Path::new("certs").exists() && std::path::Path::new(".demo/certs").exists() => {
                PathBuf::from(".demo/certs")
            }
            None => PathBuf::from("certs"),
        }
    }

    /// `base` with this target's TLS material.
    pub fn options(&self, base: ClientOptions) -> anyhow::Result<ClientOptions> {
        let tls = if self.insecure {
            None
        } else {
            let dir = self.certs_dir();
            Some(ClientTls::from_dir(&dir, &self.identity).with_context(|| {
                format!(
                    "no certificate {:?} in {} (make one with `shadowctl certs --dir {}`, or pass --insecure for a \
                     node running with insecure = true)",
                    self.identity,
                    dir.display(),
                    dir.display()
                )
            })?)
        };
        Ok(ClientOptions { tls, ..base })
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, delete, describe and list resources.
    #[command(subcommand)]
    Resource(ResourceCmd),
    /// Write a variant from FILE, or standard input if FILE is "-" or absent
    /// (streamed; any size up to the cluster's limit).
    Put {
        resource: String,
        variant: String,
        file: Option<PathBuf>,
        /// Only write if the variant's current version is this (0: absent).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Read a variant to standard output or to a file.
    Get {
        resource: String,
        variant: String,
        /// Write the bytes to this file instead of standard output.
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
        /// A retained version instead of the latest.
        #[arg(long)]
        version: Option<u64>,
        /// Accept a read from any replica at most this many ms stale.
        #[arg(long)]
        max_staleness_ms: Option<u64>,
    },
    /// Delete a variant.
    Delete {
        resource: String,
        variant: String,
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// List a resource's variants.
    Variants { resource: String },
    /// Show the cluster's nodes, their health and the groups they lead.
    Status,
    /// Scrubbing and repair of erasure-coded shards.
    #[command(subcommand)]
    Scrub(ScrubCmd),
    /// The placement planner: a dry run with every decision explained.
    #[command(subcommand)]
    Placement(PlacementCmd),
    /// Demand telemetry and forecasts.
    #[command(subcommand)]
    Demand(DemandCmd),
    /// Shadow replicas: add, remove, pin, halt, promote.
    #[command(subcommand)]
    Shadow(shadow::ShadowCmd),
    /// Take read weight off a resource's shadows now (all, or --shadow).
    Rollback {
        resource: String,
        #[arg(long = "shadow")]
        shadow: Option<u64>,
    },
    /// Placement settings (threshold, horizon, planning interval, TTL,
    /// hysteresis) and node prices.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Measure put or get throughput and latency against a cluster.
    Bench(bench::BenchArgs),
    /// Start a local cluster of real node processes and run a demo workload.
    Demo(demo::DemoCmd),
    /// Make a cluster's certificates: the CA (once), node certificates and
    /// client certificates with their roles.
    Certs(certs::CertsArgs),
    /// Print a shell completion script, e.g. `shadowctl completions bash >
    /// /etc/bash_completion.d/shadowctl`.
    Completions {
        #[arg(value_enum)]
        shell: cli_docs::Shell,
    },
    /// Write the manual pages (shadowctl.1 and one per subcommand) into DIR.
    Man { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
enum PlacementCmd {
    /// Plan now without acting: inputs, candidates, costs and verdicts.
    Plan {
        /// Only this resource.
        #[arg(long)]
        resource: Option<String>,
    },
    /// Carry out the planner's current plan for RESOURCE now, whatever the
    /// mode (add or retire shadows).
    Apply { resource: String },
    /// Shadows with phases, weights, routing version, served reads per
    /// replica, gate measurements and cost (every resource that had
    /// shadows, or RESOURCE).
    Status { resource: Option<String> },
    /// Every step, halt, rollback and retirement of RESOURCE's shadows.
    History { resource: String },
}

#[derive(Subcommand, Debug)]
enum DemandCmd {
    /// A resource's read history per region and its forecast.
    Show {
        resource: String,
        /// Five-minute slots of history (default one day, at most 14 days).
        #[arg(long, default_value_t = 288)]
        slots: u32,
        /// Also draw history and forecast to this SVG file.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Show the placement settings and every node's prices.
    Get,
    /// Set one setting: threshold, horizon_s, planning_interval_ms,
    /// ttl_ms, hysteresis_ms, the shift settings (mode auto|manual, steps
    /// 10,25,50,100, dwell_ms, gate_p99_ms, gate_error_permille,
    /// gate_failures, gate_successes, drain_ms), priority (with --resource; -5..=5, higher
    /// acts sooner), or prices.storage_gb_hour_micros,
    /// prices.transfer_gb_micros, prices.million_requests_micros (with
    /// --node).
    Set {
        key: String,
        value: String,
        /// The node whose price changes.
        #[arg(long)]
        node: Option<u64>,
        /// The resource whose priority changes.
        #[arg(long)]
        resource: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ScrubCmd {
    /// Each node's scrubber: progress of the current pass and counts.
    Status,
}

#[derive(Subcommand, Debug)]
enum ResourceCmd {
    Create {
        name: String,
        /// Primary replicas: 3 or 5.
        #[arg(long, short = 'r', default_value_t = 3)]
        replication_factor: u32,
        /// Erasure code data shards (with --parity-shards; k + m must equal
        /// the replication factor). Default: 2+1 for 3, 3+2 for 5.
        #[arg(long, requires = "parity_shards")]
        data_shards: Option<u32>,
        #[arg(long, requires = "data_shards")]
        parity_shards: Option<u32>,
        /// Values up to this many bytes stay inline in the Raft log (max 65536).
        #[arg(long)]
        inline_threshold: Option<u32>,
        /// Stripe size in bytes of erasure-coded values.
        #[arg(long)]
        stripe_size: Option<u32>,
        /// Versions kept per variant after the read grace period.
        #[arg(long)]
        keep_versions: Option<u32>,
    },
    Delete {
        name: String,
    },
    Describe {
        name: String,
    },
    List,
}

async fn client(cli: &Cli) -> anyhow::Result<Client> {
    let options = cli.target.options(ClientOptions {
        total_deadline: Duration::from_secs(cli.timeout_secs),
        region: cli.region.clone(),
        ..ClientOptions::default()
    })?;
    let endpoints = &cli.target.endpoints;
    Client::connect_with(endpoints, options)
        .await
        .with_context(|| format!("cannot reach the cluster at {}", endpoints.join(",")))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = cli.output;
    match &cli.command {
        Command::Demo(cmd) => return demo::run(cmd, out).await,
        Command::Certs(args) => return certs::run(args, out),
        Command::Completions { shell } => {
            let script = cli_docs::completions(<Cli as clap::CommandFactory>::command(), *shell);
            return cli_docs::write_stdout(&script).context("writing to standard output");
        }
        Command::Man { dir } => {
            let written = cli_docs::write_man_pages(<Cli as clap::CommandFactory>::command(), dir)
                .with_context(|| format!("cannot write the manual pages in {}", dir.display()))?;
            println!("wrote {} manual pages in {}", written.len(), dir.display());
            return Ok(());
        }
        Command::Bench(args) => {
            return match args.workload {
                bench::Workload::Idle => idle::run(&cli.target, args, out).await,
                bench::Workload::Churn => idle::churn(&cli.target, args, out).await,
                bench::Workload::Put | bench::Workload::Get => bench::run(&cli.target, args, out).await,
                bench::Workload::Shadow => shadow_bench::run(&cli.target, args, out).await,
            };
        }
        _ => {}
    }
    let c = client(&cli).await?;
    match &cli.command {
        Command::Resource(ResourceCmd::Create {
            name,
            replication_factor,
            data_shards,
            parity_shards,
            inline_threshold,
            stripe_size,
            keep_versions,
        }) => {
            let options = shadowstore_client::CreateOptions {
                replication_factor: *replication_factor,
                data_shards: data_shards.unwrap_or(0),
                parity_shards: parity_shards.unwrap_or(0),
                inline_threshold_bytes: *inline_threshold,
                stripe_size_bytes: stripe_size.unwrap_or(0),
                keep_versions: keep_versions.unwrap_or(0),
            };
            let info = c.create_resource_with(name, options).await?;
            out.resource_info(&info);
        }
        Command::Resource(ResourceCmd::Delete { name }) => {
            c.delete_resource(name).await?;
            out.message(&format!("deleted resource {name}"), serde_json::json!({"deleted": name}));
        }
        Command::Resource(ResourceCmd::Describe { name }) => {
            let d = c.describe_resource(name).await?;
            out.describe(&d);
        }
        Command::Resource(ResourceCmd::List) => {
            let list = c.list_resources().await?;
            out.resource_list(&list);
        }
        Command::Put { resource, variant, file, if_version } => {
            let (version, len) = match file.as_ref().filter(|p| p.as_os_str() != "-") {
                Some(path) => {
                    let len = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
                    let bar = progress::bar(len, "put");
                    let v = c.put_file(resource, variant, path, *if_version, bar.hook()).await?;
                    bar.finish();
                    (v, len)
                }
                None => {
                    // Standard input can be read only once; spooled to a
                    // temporary file it can be retried (after a redirect or
                    // a leader change) and its size is known up front.
                    let mut spool =
                        tempfile::NamedTempFile::new().context("cannot create a temporary file for standard input")?;
                    let len = std::io::copy(&mut std::io::stdin().lock(), spool.as_file_mut())
                        .context("cannot read standard input")?;
                    let bar = progress::bar(len, "put");
                    let v = c.put_file(resource, variant, spool.path(), *if_version, bar.hook()).await?;
                    bar.finish();
                    (v, len)
                }
            };
            out.message(
                &format!("{resource}/{variant}: wrote {len} bytes as version {version}"),
                serde_json::json!({"resource": resource, "variant": variant, "version": version, "size_bytes": len}),
            );
        }
        Command::Get { resource, variant, out: file, version, max_staleness_ms } => {
            let mut opts = match max_staleness_ms {
                Some(ms) => ReadOptions::stale_ok(*ms),
                None => ReadOptions::linearizable(),
            };
            opts.version = *version;
            match file {
                Some(p) => {
                    let mut f =
                        tokio::fs::File::create(p).await.with_context(|| format!("cannot create {}", p.display()))?;
                    let bar = progress::bar(0, "get");
                    let h = c.get_to_writer(resource, variant, opts, &mut f, bar.hook()).await?;
                    bar.finish();
                    out.message(
                        &format!("{resource}/{variant}: version {} ({} bytes) written to {}", h.version, h.size, p.display()),
                        serde_json::json!({"version": h.version, "size_bytes": h.size, "file": p, "storage": h.storage}),
                    );
                }
                None => match out {
                    Output::Json => {
                        let r = c.get_with(resource, variant, opts).await?;
                        out.message(
                            "",
                            serde_json::json!({"version": r.version, "served_by_node": r.served_by_node,
                                "value": String::from_utf8_lossy(&r.value)}),
                        )
                    }
                    Output::Text => {
                        let mut stdout = tokio::io::stdout();
                        c.get_to_writer(resource, variant, opts, &mut stdout, None).await?;
                    }
                },
            }
        }
        Command::Delete { resource, variant, if_version } => {
            let version = match if_version {
                Some(v) => c.delete_if(resource, variant, *v).await?,
                None => c.delete(resource, variant).await?,
            };
            out.message(
                &format!("{resource}/{variant}: deleted (version {version})"),
                serde_json::json!({"resource": resource, "variant": variant, "version": version}),
            );
        }
        Command::Variants { resource } => {
            let v = c.list_variants(resource).await?;
            out.variants(&v);
        }
        Command::Status => {
            let s = c.cluster_status().await?;
            out.status(&s);
        }
        Command::Scrub(ScrubCmd::Status) => {
            let all = c.scrub_status_all().await?;
            out.scrub(&all);
        }
        Command::Placement(PlacementCmd::Plan { resource }) => {
            placement::plans(out, &c.placement_plan(resource.as_deref()).await?)?;
        }
        Command::Demand(DemandCmd::Show { resource, slots, svg }) => {
            let answer = c.demand_show(resource, *slots).await?;
            // The chart shows the shadows' read weight too; without it the
            // chart is still drawn.
            let steps = match svg {
                Some(_) => match c.shadow_status(Some(resource)).await {
                    Ok(s) => s.resources.iter().flat_map(|r| chart::shadow_steps(&r.history)).collect(),
                    Err(e) => {
                        eprintln!("shadowctl: the chart has no shadow steps (shadow status failed: {e})");
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            placement::demand(out, &answer, svg.as_deref(), &steps)?;
        }
        Command::Placement(PlacementCmd::Apply { resource }) => {
            shadow::action(out, &c.shadow_action(resource, None, ShadowActionKind::Apply).await?);
        }
        Command::Placement(PlacementCmd::Status { resource }) => {
            shadow::status(out, &c.shadow_status(resource.as_deref()).await?)?;
        }
        Command::Placement(PlacementCmd::History { resource }) => {
            shadow::history(out, &c.shadow_status(Some(resource)).await?)?;
        }
        Command::Shadow(cmd) => shadow::run(&c, out, cmd).await?,
        Command::Rollback { resource, shadow } => {
            shadow::action(out, &c.shadow_action(resource, *shadow, ShadowActionKind::Rollback).await?);
        }
        Command::Config(ConfigCmd::Get) => placement::config(out, &c.placement_config().await?)?,
        Command::Config(ConfigCmd::Set { key, value, node, resource }) => {
            placement::config(out, &c.set_placement_config(key, value, *node, resource.as_deref()).await?)?;
        }
        Command::Demo(_)
        | Command::Bench(_)
        | Command::Certs(_)
        | Command::Completions { .. }
        | Command::Man { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shadowctl: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shadowctl: {e:#}");
            let usage = e
                .downcast_ref::<shadowstore_client::Error>()
                .is_some_and(|ce| matches!(ce.code(), tonic::Code::InvalidArgument));
            if usage { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}
