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
        "replicas": replicas_json(&i.replicas)})
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
                    "inline_bytes": d.inline_bytes,
                    "progress": d.progress.iter().map(|p| json!({"replica_id": p.replica_id, "matched_index": p.matched_index})).collect::<Vec<_>>()})
            ),
            Output::Text => {
                println!("resource {} (group {})", info.name, info.group_id);
                println!("  leader: replica {} on node {}, term {}", d.leader_replica_id, d.leader_node_id, d.term);
                println!("  applied index {}, committed index {}", d.applied_index, d.committed_index);
                println!("  {} variants, {} bytes inline", d.variant_count, d.inline_bytes);
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

    pub fn status(self, s: &v1::ClusterStatusResponse) {
        match self {
            Output::Json => println!(
                "{}",
                json!({"meta_leader_node_id": s.meta_leader_node_id, "resource_count": s.resource_count,
                    "nodes": s.nodes.iter().map(|n| json!({"node_id": n.node_id, "address": n.address,
                        "region": n.region, "read_capacity_rps": n.read_capacity_rps, "health": n.health,
                        "groups_hosted": n.groups_hosted, "groups_led": n.groups_led, "meta_voter": n.meta_voter})).collect::<Vec<_>>()})
            ),
            Output::Text => {
                println!("{} resources; meta leader on node {}", s.resource_count, s.meta_leader_node_id);
                println!(
                    "{:>4}  {:<22} {:<10} {:<8} {:>6} {:>6}  meta",
                    "node", "address", "region", "health", "hosts", "leads"
                );
                for n in &s.nodes {
                    println!(
                        "{:>4}  {:<22} {:<10} {:<8} {:>6} {:>6}  {}",
                        n.node_id,
                        n.address,
                        n.region,
                        n.health,
                        n.groups_hosted,
                        n.groups_led,
                        if n.meta_voter { "voter" } else { "learner" }
                    );
                }
            }
        }
    }
}
