//! `shadowctl certs`: makes a cluster's certificates in one directory.
//!
//! The first run creates the cluster CA (`ca.pem`, `ca.key`); later runs
//! reuse it, so more nodes and clients can be added at any time. Without
//! `--node` or `--client` it makes the set one machine needs (what the
//! demo uses): a certificate `node` for 127.0.0.1 and localhost, and one
//! client certificate per role named after it (`admin`, `writer`,
//! `reader`).

use std::path::PathBuf;

use anyhow::Context;
use anyhow::bail;
use shadowstore_client::certs::CertAuthority;
use shadowstore_client::certs::Role;

use crate::output::Output;

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Where the CA and the certificates live.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// A node certificate to make (its file name), valid for every --host.
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// A host name or IP address the --node certificates are reached at.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// A client certificate to make, as NAME=ROLE (role admin, writer or
    /// reader).
    #[arg(long = "client")]
    pub clients: Vec<String>,
}

pub fn run(args: &CertsArgs, out: Output) -> anyhow::Result<()> {
    if !args.hosts.is_empty() && args.nodes.is_empty() {
        bail!("--host names where a --node is reached; give the --node it belongs to");
    }
    let mut clients = Vec::new();
    for c in &args.clients {
        let Some((name, role)) = c.split_once('=') else { bail!("--client takes NAME=ROLE, got {c:?}") };
        let role = match Role::parse(role) {
            Some(r @ (Role::Admin | Role::Writer | Role::Reader)) => r,
            _ => bail!("--client {c:?}: the role must be admin, writer or reader"),
        };
        clients.push((name.to_string(), role));
    }
    let (ca, created) = CertAuthority::open_or_create(&args.dir)
        .with_context(|| format!("cannot open or create the CA in {}", args.dir.display()))?;
    let mut written = Vec::new();
    if args.nodes.is_empty() && clients.is_empty() {
        written.extend(ca.issue_local_set(&args.dir)?);
    }
    for node in &args.nodes {
        written.push(ca.issue_to(&args.dir, node, Role::Node, &args.hosts)?);
    }
    for (name, role) in &clients {
        written.push(ca.issue_to(&args.dir, name, *role, &[])?);
    }
    let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    match out {
        Output::Json => {
            println!("{}", serde_json::json!({"dir": args.dir, "ca_created": created, "certificates": files}))
        }
        Output::Text => {
            let ca_path = args.dir.join("ca.pem");
            if created {
                println!("created the cluster CA {} (keep ca.key off the nodes)", ca_path.display());
            } else {
                println!("using the cluster CA {}", ca_path.display());
            }
            for f in files {
                println!("wrote {f} (key beside it, mode 0600)");
            }
        }
    }
    Ok(())
}
