//! Node configuration: a TOML file, overridden by command-line flags and
//! `SHADOWSTORE_*` environment variables (flags win over the environment,
//! both over the file).
//!
//! Cluster formation: a node with no identity in its data directory either
//! bootstraps a new cluster (`bootstrap = true`) or joins through any
//! member listed in `join`. A node that has an identity ignores both and
//! rejoins as itself. See deploy/ for examples.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

use crate::group::failure_detector::DetectorTiming;
use crate::meta::state::NodeLabels;
use crate::raft::config::RaftTiming;
use shadowstore_placement::Prices;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricesConfig {
    pub storage_gb_hour_micros: u64,
    pub transfer_gb_micros: u64,
    pub million_requests_micros: u64,
}

impl Default for PricesConfig {
    fn default() -> Self {
        PricesConfig { storage_gb_hour_micros: 100, transfer_gb_micros: 20_000, million_requests_micros: 400_000 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_every_entries: u64,
    pub log_entries_kept_after_snapshot: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        let t = RaftTiming::default();
        RaftConfig {
            heartbeat_interval_ms: t.heartbeat_interval_ms,
            election_timeout_min_ms: t.election_timeout_min_ms,
            election_timeout_max_ms: t.election_timeout_max_ms,
            snapshot_every_entries: t.snapshot_every_entries,
            log_entries_kept_after_snapshot: t.log_entries_kept_after_snapshot,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where sled and the node's identity live.
    pub data_dir: PathBuf,
    /// Address the gRPC server binds (`host:port`, port 0 picks one).
    pub listen_addr: String,
    /// Address other nodes and clients use; defaults to the bound address.
    pub advertise_addr: Option<String>,
    /// Address the peer service (Raft, joins, shards, demand) binds, on a
    /// listener of its own (`host:port`, port 0 picks one). Unset: peers and
    /// clients share `listen_addr`, told apart only by their certificates'
    /// roles. With it set, `listen_addr` serves clients only and `join`
    /// names other nodes' peer addresses.
    pub peer_listen_addr: Option<String>,
    /// Address other nodes use for the peer service; defaults to the bound
    /// peer address.
    pub peer_advertise_addr: Option<String>,
    /// Create a new cluster if this node has no identity yet.
    pub bootstrap: bool,
    /// Members to join through when this node has no identity yet.
    pub join: Vec<String>,
    pub region: String,
    /// Reads per second this node serves before shedding.
    pub read_capacity_rps: u64,
    /// Disk this node offers, 0 for "unknown".
    pub disk_capacity_bytes: u64,
    pub prices: PricesConfig,
    pub raft: RaftConfig,
    /// A group idle this long stops its timers.
    pub quiesce_after_ms: u64,
    pub ping_interval_ms: u64,
    pub suspect_after_ms: u64,
    /// sled's page cache. Small on purpose: group state lives in memory,
    /// and a larger cache mostly holds large shard pages (measured in
    /// docs/BENCHMARKS.md).
    pub cache_capacity_bytes: u64,
    /// Longest a request may run on the server, whatever its deadline.
    pub request_timeout_max_ms: u64,
    /// Largest value one Put may write.
    pub blob_bytes_max: u64,
    /// Bytes per second the scrubber reads (0: unlimited).
    pub scrub_bytes_per_s: u64,
    /// Rest between two scrub passes.
    pub scrub_interval_ms: u64,
    /// How often garbage collection runs.
    pub gc_interval_ms: u64,
    /// Age (and time unreferenced) before an orphan shard is deleted.
    pub orphan_grace_ms: u64,
    /// How long a superseded version stays readable.
    pub superseded_grace_ms: u64,
    /// A replica whose node has been down this long is replaced (0: only
    /// replicas of retired nodes are).
    pub replace_down_after_ms: u64,
    /// tracing filter, e.g. "info" or "shadowstore_node=debug".
    pub log: String,
    /// Log lines as text for people or as one JSON object per line for a
    /// log pipeline.
    pub log_format: LogFormat,
    /// Address of the operator's HTTP listener (`host:port`): Prometheus
    /// metrics at `/metrics` and the dashboard at `/`. Unset: none. It
    /// serves read-only views only (docs/OPERATING.md).
    pub http_addr: Option<String>,
    /// Certificates for mutual TLS with peers and clients (required unless
    /// `insecure = true`; see docs/SECURITY.md).
    pub tls: Option<TlsConfig>,
    /// Plaintext, no authentication: anyone who reaches the port may do
    /// anything, the peer service included. Only for a trusted network or
    /// a simulation; logged loudly at start-up.
    pub insecure: bool,
    /// Testing only: injected into every read a shadow replica on this
    /// node serves, to exercise the health gates and rollback. Never set
    /// in production.
    pub fault: FaultConfig,
}

/// The files of a node's TLS identity, in PEM (`shadowctl certs` makes
/// them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA: peers and clients must present a certificate it
    /// signed.
    pub ca_file: PathBuf,
    /// This node's certificate (role `node`, naming the hosts it is
    /// reached at) and its key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Faults a test injects into reads served by this node's shadow replicas.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Added to each shadow read before it answers.
    pub shadow_read_delay_ms: u64,
    /// Shadow reads failed with UNAVAILABLE, per mille.
    pub shadow_read_error_permille: u32,
    /// The background loop of this name (as logged, e.g. "scrubber")
    /// panics on its first run, to exercise loop supervision.
    pub panic_loop_once: Option<String>,
}

/// How log lines are written (`log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the span fields (node, group,
    /// resource, request id) of each line.
    Json,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let d = DetectorTiming::default();
        NodeConfig {
            data_dir: PathBuf::from("shadowstore-data"),
            listen_addr: "127.0.0.1:7100".to_string(),
            advertise_addr: None,
            peer_listen_addr: None,
            peer_advertise_addr: None,
            bootstrap: false,
            join: Vec::new(),
            region: "local".to_string(),
            read_capacity_rps: 20_000,
            disk_capacity_bytes: 0,
            prices: PricesConfig::default(),
            raft: RaftConfig::default(),
            quiesce_after_ms: 5_000,
            ping_interval_ms: d.ping_interval.as_millis() as u64,
            suspect_after_ms: d.suspect_after.as_millis() as u64,
            cache_capacity_bytes: 32 * 1024 * 1024,
            request_timeout_max_ms: 30_000,
            blob_bytes_max: shadowstore_base::limits::BLOB_BYTES_MAX_DEFAULT,
            scrub_bytes_per_s: 64 * 1024 * 1024,
            scrub_interval_ms: 60_000,
            gc_interval_ms: 30_000,
            orphan_grace_ms: 10 * 60_000,
            superseded_grace_ms: 60_000,
            replace_down_after_ms: 30 * 60_000,
            log: "info,openraft=warn".to_string(),
            log_format: LogFormat::Text,
            http_addr: None,
            tls: None,
            insecure: false,
            fault: FaultConfig::default(),
        }
    }
}

impl NodeConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.listen_addr.is_empty() {
            return bad("listen_addr is empty".into());
        }
        match &self.peer_listen_addr {
            Some(p) if p.is_empty() || *p == self.listen_addr => {
                return bad(format!(
                    "peer_listen_addr must name a listener of its own, other than listen_addr {:?}; got {p:?}",
                    self.listen_addr
                ));
            }
            None if self.peer_advertise_addr.is_some() => {
                return bad("peer_advertise_addr is set but peer_listen_addr is not: there is no peer listener to \
                            advertise"
                    .into());
            }
            _ => {}
        }
        if let Some(http) = &self.http_addr
            && http.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(format!("http_addr must be an IP address and port (host:port), got {http:?}"));
        }
        if !self.bootstrap && self.join.is_empty() && !self.data_dir.join("db").exists() {
            return bad(format!(
                "node has no data in {} and neither bootstrap = true nor any join address: it cannot form or join a cluster",
                self.data_dir.display()
            ));
        }
        if self.region.is_empty() || self.region.len() > 64 {
            return bad(format!("region must be 1..=64 bytes, got {:?}", self.region));
        }
        if self.read_capacity_rps == 0 {
            return bad("read_capacity_rps must be positive".into());
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            return bad(format!(
                "raft.election_timeout_min_ms ({}) must exceed raft.heartbeat_interval_ms ({})",
                r.election_timeout_min_ms, r.heartbeat_interval_ms
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return bad("raft.election_timeout_max_ms must exceed raft.election_timeout_min_ms".into());
        }
        if self.suspect_after_ms <= self.ping_interval_ms {
            return bad("suspect_after_ms must exceed ping_interval_ms".into());
        }
        let blob_bytes_limit = blob_bytes_limit();
        if self.blob_bytes_max == 0 || self.blob_bytes_max > blob_bytes_limit {
            return bad(format!(
                "blob_bytes_max must be in 1..={blob_bytes_limit}: one blob's manifest (a crc per chunk) must fit one \
                 Raft log entry with the default storage layout"
            ));
        }
        if self.fault.shadow_read_error_permille > 1_000 || self.fault.shadow_read_delay_ms > 60_000 {
            return bad(
                "fault.shadow_read_error_permille must be 0..=1000 and fault.shadow_read_delay_ms 0..=60000".into()
            );
        }
        if self.gc_interval_ms == 0 || self.scrub_interval_ms == 0 {
            return bad("gc_interval_ms and scrub_interval_ms must be positive".into());
        }
        match (&self.tls, self.insecure) {
            (None, false) => {
                return bad("TLS is required: set tls.ca_file, tls.cert_file and tls.key_file (make them with \
                     `shadowctl certs`), or insecure = true to run without encryption or authentication"
                    .into());
            }
            (Some(_), true) => return bad("both [tls] and insecure = true are set: choose one".into()),
            _ => {}
        }
        Ok(())
    }

    pub fn raft_timing(&self) -> RaftTiming {
        RaftTiming {
            heartbeat_interval_ms: self.raft.heartbeat_interval_ms,
            election_timeout_min_ms: self.raft.election_timeout_min_ms,
            election_timeout_max_ms: self.raft.election_timeout_max_ms,
            snapshot_every_entries: self.raft.snapshot_every_entries,
            log_entries_kept_after_snapshot: self.raft.log_entries_kept_after_snapshot,
        }
    }

    pub fn detector_timing(&self) -> DetectorTiming {
        DetectorTiming {
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            suspect_after: Duration::from_millis(self.suspect_after_ms),
            ..DetectorTiming::default()
        }
    }

    /// What this node tells the meta group about itself.
    pub fn labels(&self, addr: &str) -> NodeLabels {
        NodeLabels {
            addr: addr.to_string(),
            region: self.region.clone(),
            read_capacity_rps: self.read_capacity_rps,
            disk_capacity_bytes: self.disk_capacity_bytes,
            prices: Prices {
                storage_gb_hour_micros: self.prices.storage_gb_hour_micros,
                transfer_gb_micros: self.prices.transfer_gb_micros,
                million_requests_micros: self.prices.million_requests_micros,
            },
        }
    }
}

/// The largest `blob_bytes_max` a node accepts: what a manifest with the
/// default layout of every allowed replication factor can describe.
/// Resources created with smaller stripes or wider codes hold less; writes
/// to them are refused at that resource's own capacity.
pub fn blob_bytes_limit() -> u64 {
    shadowstore_base::limits::REPLICATION_FACTORS_ALLOWED
        .iter()
        .map(|rf| {
            let s = crate::meta::directory::StorageParams::default_for(*rf);
            crate::resource::manifest::blob_bytes_capacity(s.stripe_size, s.k, s.m)
        })
        .min()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deploy_style_file_and_rejects_unknown_keys() {
        let c: NodeConfig = toml::from_str(
            r#"
            data_dir = "/tmp/n1"
            listen_addr = "127.0.0.1:7101"
            bootstrap = true
            region = "eu-west"
            [tls]
            ca_file = "certs/ca.pem"
            cert_file = "certs/node.pem"
            key_file = "certs/node.key"
            [prices]
            storage_gb_hour_micros = 5
            [raft]
            heartbeat_interval_ms = 100
            "#,
        )
        .unwrap();
        assert_eq!(c.region, "eu-west");
        assert_eq!(c.prices.storage_gb_hour_micros, 5);
        assert_eq!(c.prices.transfer_gb_micros, PricesConfig::default().transfer_gb_micros);
        assert_eq!(c.raft.heartbeat_interval_ms, 100);
        c.validate().unwrap();
        assert!(toml::from_str::<NodeConfig>("listen = 'x'").is_err(), "typo'd key must be refused");
    }

    #[test]
    fn every_example_config_in_deploy_parses_and_validates() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let mut seen = 0;
        for sub in ["local", "three-hosts"] {
            for entry in std::fs::read_dir(root.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let c = NodeConfig::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    assert!(c.bootstrap || !c.join.is_empty(), "{} can neither bootstrap nor join", path.display());
                    c.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 6);
    }

    #[test]
    fn blob_bytes_max_is_bounded_by_what_a_manifest_describes() {
        let limit = blob_bytes_limit();
        assert!((8 << 30..64 << 30).contains(&limit), "{limit}");
        let at = NodeConfig { bootstrap: true, insecure: true, blob_bytes_max: limit, ..Default::default() };
        at.validate().unwrap();
        let over = NodeConfig { blob_bytes_max: limit + 1, ..at };
        let e = over.validate().unwrap_err().to_string();
        assert!(e.contains("blob_bytes_max") && e.contains("manifest"), "{e}");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = NodeConfig { bootstrap: true, ..Default::default() };
        c.raft.election_timeout_min_ms = c.raft.heartbeat_interval_ms;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("election_timeout_min_ms"), "{e}");
        let c = NodeConfig { data_dir: "/nonexistent/x".into(), ..Default::default() };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("bootstrap"), "{e}");
        let c = NodeConfig { bootstrap: true, ..Default::default() };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("TLS is required") && e.contains("insecure = true"), "{e}");
        assert!(NodeConfig { bootstrap: true, insecure: true, ..Default::default() }.validate().is_ok());
    }

    #[test]
    fn a_peer_listener_must_be_a_listener_of_its_own() {
        let ok = NodeConfig {
            bootstrap: true,
            insecure: true,
            peer_listen_addr: Some("127.0.0.1:7200".into()),
            peer_advertise_addr: Some("10.0.0.1:7200".into()),
            ..Default::default()
        };
        ok.validate().unwrap();
        let shared = NodeConfig { peer_listen_addr: Some(ok.listen_addr.clone()), ..ok.clone() };
        let e = shared.validate().unwrap_err().to_string();
        assert!(e.contains("peer_listen_addr") && e.contains("listen_addr"), "{e}");
        let nothing_to_advertise = NodeConfig { peer_listen_addr: None, ..ok };
        let e = nothing_to_advertise.validate().unwrap_err().to_string();
        assert!(e.contains("peer_advertise_addr") && e.contains("peer_listen_addr"), "{e}");
    }
}
