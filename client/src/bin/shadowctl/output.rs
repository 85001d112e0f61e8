//! Text and JSON renderings of command results.

use serde_json::Value;
use serde_json::json;
use shadowstore_client::v1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

fn replicas_json(r: &[v1::ReplicaInfo]) -> Value {
    r.iter()
        .map(|x| json!({"replica_id": x.replica_id, "node_id": x.node_id, "address": x.address, "role": x.role}))
        .collect()
}

pub fn resource_json(i: &v1::ResourceInfo) -> Value {
    json!({"name": i.name, "group_id": i.group_id, "replication_factor": i.replication_factor,
        "replicas": replicas_json(&i.replicas), "data_shards": i.data_shards, "parity_shards": i.parity_shards,
        "inline_threshold_bytes": i.inline_threshold_bytes, "stripe_size_bytes": i.stripe_size_bytes,
        "keep_versions": i.keep_versions})
}

fn variants_json(v: &[v1::VariantDetail]) -> Value {
    v.iter()
        .map(|d| {
            json!({"name": d.name, "current_version": d.current_version, "versions": d.versions.iter().map(|x| json!({
                "version": x.version, "size_bytes": x.size_bytes, "storage": x.storage, "superseded": x.superseded,
                "stripes": x.stripes, "data_shards": x.data_shards, "parity_shards": x.parity_shards,
                "shards": x.shards.iter().map(|s| json!({"shard": s.shard, "replica_id": s.replica_id, "node_id": s.node_id,
                    "state": s.state, "chunks_expected": s.chunks_expected, "chunks_stored": s.chunks_stored,
                    "chunks_corrupt": s.chunks_corrupt})).collect::<Vec<_>>()})).collect::<Vec<_>>()})
        })
        .collect()
}

impl Output {
    pub fn message(self, text: &str, value: Value) {
        match self {
            Output::Text => println!("{text}"),
            Output::Json => println!("{value}"),
        }
    }

    pub fn resource_info(self, i: &v1::ResourceInfo) {
        match self {
            Output::Json => println!("{}", resource_json(i)),
            Output::Text => {
                println!("resource {} (group {}, {} replicas)", i.name, i.group_id, i.replication_factor);
                for r in &i.replicas {
                    println!("  replica {:>5} on node {:>3} {}", r.replica_id, r.node_id, r.address);
                }
            }
        }
    }

    pub fn resource_list(self, list: &[v1::ResourceInfo]) {
        match self {
            Output::Json => println!("{}", Value::Array(list.iter().map(resource_json).collect())),
            Output::Text => {
                if list.is_empty() {
                    println!("no resources");
                }
                for i in list {
                    let nodes: Vec<String> = i.replicas.iter().map(|r| r.node_id.to_string()).collect();
                    println!("{:<40} group {:<6} nodes {}", i.name, i.group_id, nodes.join(","));
                }
            }
        }
    }

    pub fn describe(self, d: &v1::DescribeResourceResponse) {
        let info = d.resource.clone().unwrap_or_default();
        match self {
            Output::Json => println!(
                "{}",
                json!({"resource": resource_json(&info), "leader_replica_id": d.leader_replica_id,
                    "leader_node_id": d.leader_node_id, "term": d.term, "applied_index": d.applied_index,
                    "committed_index": d.committed_index, "variant_count": d.variant_count,
                    "inline_bytes": d.inline_bytes, "blob_bytes": d.blob_bytes, "variants": variants_json(&d.variants),
                    "progress": d.progress.iter().map(|p| json!({"replica_id": p.replica_id, "matched_index": p.matched_index})).collect::<Vec<_>>()})
            ),
            Output::Text => {
                println!("resource {} (group {})", info.name, info.group_id);
                println!("  leader: replica {} on node {}, term {}", d.leader_replica_id, d.leader_node_id, d.term);
                println!("  applied index {}, committed index {}", d.applied_index, d.committed_index);
                println!(
                    "  {} variants; {} bytes inline, {} bytes erasure-coded ({}+{}, inline up to {} B, stripes of {} B)",
                    d.variant_count,
                    d.inline_bytes,
                    d.blob_bytes,
                    info.data_shards,
                    info.parity_shards,
                    info.inline_threshold_bytes,
                    info.stripe_size_bytes
                );
                for r in &info.replicas {
                    let matched = d
                        .progress
                        .iter()
                        .find(|p| p.replica_id == r.replica_id)
                        .and_then(|p| p.matched_index)
                        .map_or("-".to_string(), |m| m.to_string());
                    let leader = if r.replica_id == d.leader_replica_id { " (leader)" } else { "" };
                    println!(
                        "  replica {:>5} node {:>3} {:<22} {:<8} matched {}{}",
                        r.replica_id, r.node_id, r.address, r.role, matched, leader
                    );
                }
                for v in &d.variants {
                    println!(
                        "  variant {} (current {})",
                        v.name,
                        if v.current_version == 0 { "deleted".to_string() } else { v.current_version.to_string() }
                    );
                    for x in &v.versions {
                        let sup = if x.superseded { ", superseded" } else { "" };
                        if x.storage == "erasure-coded" {
                            println!(
                                "    version {:<8} {:>12} B  {}+{} in {} stripes{sup}",
                                x.version, x.size_bytes, x.data_shards, x.parity_shards, x.stripes
                            );
                            for s in &x.shards {
                                println!(
                                    "      shard {} on replica {} (node {}): {} ({}/{} chunks{})",
                                    s.shard,
                                    s.replica_id,
                                    s.node_id,
                                    s.state,
                                    s.chunks_stored,
                                    s.chunks_expected,
                                    if s.chunks_corrupt > 0 {
                                        format!(", {} bad", s.chunks_corrupt)
                                    } else {
                                        String::new()
                                    }
                                );
                            }
                        } else {
                            println!("    version {:<8} {:>12} B  inline{sup}", x.version, x.size_bytes);
                        }
                    }
                }
            }
        }
    }

    pub fn variants(self, v: &[v1::VariantInfo]) {
        match self {
            Output::Json => println!(
                "{}",
                Value::Array(
                    v.iter()
                        .map(|x| json!({"name": x.name, "version": x.version, "size_bytes": x.size_bytes}))
                        .collect()
                )
            ),
            Output::Text => {
                if v.is_empty() {
                    println!("no variants");
                }
                for x in v {
                    println!("{:<40} version {:<10} {} bytes", x.name, x.version, x.size_bytes);
                }
            }
        }
    }

    pub fn scrub(self, all: &[Result<v1::ScrubStatusResponse, shadowstore_client::Error>]) {
        match self {
            Output::Json => println!(
                "{}",
                Value::Array(
                    all.iter()
                        .map(|r| match r {
                            Ok(s) => json!({"node_id": s.node_id, "passes_completed": s.passes_completed,
                                "pass_shards_done": s.pass_shards_done, "pass_shards_total": s.pass_shards_total,
                                "bytes_verified": s.bytes_verified, "chunks_verified": s.chunks_verified,
                                "chunks_corrupt": s.chunks_corrupt, "chunks_missing": s.chunks_missing,
                                "chunks_repaired": s.chunks_repaired, "repair_failures": s.repair_failures,
                                "rate_limit_bytes_per_s": s.rate_limit_bytes_per_s,
                                "last_pass_finished_ms": s.last_pass_finished_ms,
                                "orphan_shards_collected": s.orphan_shards_collected}),
                            Err(e) => json!({"error": e.to_string()}),
                        })
                        .collect()
                )
            ),
            Output::Text => {
                println!(
                    "{:>4}  {:>6} {:>11} {:>12} {:>9} {:>8} {:>8} {:>9} {:>7} {:>8}",
                    "node",
                    "passes",
                    "pass",
                    "verified MB",
                    "chunks ok",
                    "corrupt",
                    "missing",
                    "repaired",
                    "failed",
                    "orphans"
                );
                for r in all {
                    match r {
                        Ok(s) => println!(
                            "{:>4}  {:>6} {:>11} {:>12.1} {:>9} {:>8} {:>8} {:>9} {:>7} {:>8}",
                            s.node_id,
                            s.passes_completed,
                            format!("{}/{}", s.pass_shards_done, s.pass_shards_total),
                            s.bytes_verified as f64 / 1e6,
                            s.chunks_verified,
                            s.chunks_corrupt,
                            s.chunks_missing,
                            s.chunks_repaired,
                            s.repair_failures,
                            s.orphan_shards_collected
                        ),
                        Err(e) => println!("   ?  unreachable: {e}"),
                    }
                }
            }
        }
    }

    pub fn status(self, s: &v1::ClusterStatusResponse) {
        match self {
            Output::Json => println!(
                "{}",
                json!({"meta_leader_node_id": s.meta_leader_node_id, "resource_count": s.resource_count,
                    "nodes": s.nodes.iter().map(|n| json!({"node_id": n.node_id, "address": n.address,
                        "region": n.region, "read_capacity_rps": n.read_capacity_rps, "health": n.health,
                        "groups_hosted": n.groups_hosted, "groups_led": n.groups_led, "meta_voter": n.meta_voter,
                        "peer_address": n.peer_address})).collect::<Vec<_>>()})
            ),
            Output::Text => {
                println!("{} resources; meta leader on node {}", s.resource_count, s.meta_leader_node_id);
                println!(
                    "{:>4}  {:<22} {:<10} {:<8} {:>6} {:>6}  {:<7}  peers at",
                    "node", "address", "region", "health", "hosts", "leads", "meta"
                );
                for n in &s.nodes {
                    println!(
                        "{:>4}  {:<22} {:<10} {:<8} {:>6} {:>6}  {:<7}  {}",
                        n.node_id,
                        n.address,
                        n.region,
                        n.health,
                        n.groups_hosted,
                        n.groups_led,
                        if n.meta_voter { "voter" } else { "learner" },
                        // Empty: the node serves peers at its address.
                        if n.peer_address.is_empty() { "(address)" } else { &n.peer_address }
                    );
                }
            }
        }
    }
}
