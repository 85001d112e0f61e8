//! `shadowctl shadow …`, `placement status|history|apply` and `rollback`:
//! operating shadow replicas, with text and JSON renderings.

use clap::Subcommand;
use serde_json::Value;
use serde_json::json;
use shadowstore_client::Client;
use shadowstore_client::ShadowActionKind;
use shadowstore_client::v1;

use crate::output::Output;

#[derive(Subcommand, Debug)]
pub enum ShadowCmd {
    /// Add a shadow replica (on --node, or where the planner would put it).
    Add {
        resource: String,
        #[arg(long)]
        node: Option<u64>,
    },
    /// Drain a shadow (weight 0), then remove it and its data.
    Remove {
        resource: String,
        #[arg(long = "shadow")]
        shadow: u64,
    },
    /// Keep a shadow whatever the planner decides.
    Pin {
        resource: String,
        #[arg(long = "shadow")]
        shadow: Option<u64>,
    },
    /// Let the planner retire a shadow again.
    Unpin {
        resource: String,
        #[arg(long = "shadow")]
        shadow: Option<u64>,
    },
    /// Stop promoting a shadow's steps (gates still roll it back).
    Halt {
        resource: String,
        #[arg(long = "shadow")]
        shadow: Option<u64>,
    },
    /// Let a halted shadow's steps be promoted again.
    Resume {
        resource: String,
        #[arg(long = "shadow")]
        shadow: Option<u64>,
    },
    /// Move a shadow to its next step now (or to full weight with --full).
    Promote {
        resource: String,
        #[arg(long = "shadow")]
        shadow: Option<u64>,
        #[arg(long)]
        full: bool,
    },
}

/// Runs one shadow command.
pub async fn run(c: &Client, out: Output, cmd: &ShadowCmd) -> anyhow::Result<()> {
    let answer = match cmd {
        ShadowCmd::Add { resource, node } => c.add_shadow(resource, *node).await?,
        ShadowCmd::Remove { resource, shadow } => {
            c.shadow_action(resource, Some(*shadow), ShadowActionKind::Remove).await?
        }
        ShadowCmd::Pin { resource, shadow } => c.shadow_action(resource, *shadow, ShadowActionKind::Pin).await?,
        ShadowCmd::Unpin { resource, shadow } => c.shadow_action(resource, *shadow, ShadowActionKind::Unpin).await?,
        ShadowCmd::Halt { resource, shadow } => c.shadow_action(resource, *shadow, ShadowActionKind::Halt).await?,
        ShadowCmd::Resume { resource, shadow } => c.shadow_action(resource, *shadow, ShadowActionKind::Resume).await?,
        ShadowCmd::Promote { resource, shadow, full } => {
            let kind = if *full { ShadowActionKind::PromoteFull } else { ShadowActionKind::PromoteNext };
            c.shadow_action(resource, *shadow, kind).await?
        }
    };
    action(out, &answer);
    Ok(())
}

pub fn action(out: Output, a: &v1::ShadowActionResponse) {
    out.message(&a.message, json!({"message": a.message, "shadow": a.replica_id, "node": a.node_id}));
}

/// UTC time of epoch milliseconds, e.g. `2026-12-03 21:09:24Z`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn status_json(r: &v1::ShadowStatusResponse) -> Value {
    json!({
        "settings": r.settings,
        "resources": r.resources.iter().map(|x| json!({
            "resource": x.resource,
            "routing_version": x.routing_version,
            "shadow_cost_micros": x.shadow_cost_micros,
            "replicas": x.replicas.iter().map(|p| json!({
                "replica_id": p.replica_id, "node_id": p.node_id, "role": p.role, "phase": p.phase,
                "step": p.step, "weight_permille": p.weight_permille, "share_permille": p.share_permille,
                "reads": p.reads, "errors": p.errors, "p99_ms": p.p99_ms,
                "blobs_copied": p.blobs_copied, "blobs_total": p.blobs_total,
                "pinned": p.pinned, "halted": p.halted, "since_ms": p.since_ms,
            })).collect::<Vec<_>>(),
            "history": history_json(&x.history),
        })).collect::<Vec<_>>(),
    })
}

fn history_json(h: &[v1::ShadowEventInfo]) -> Value {
    h.iter()
        .map(|e| {
            json!({"at_ms": e.at_ms, "at": utc(e.at_ms), "shadow": e.replica_id, "node": e.node_id, "kind": e.kind,
                "from_permille": e.from_permille, "to_permille": e.to_permille, "text": e.text})
        })
        .collect()
}

pub fn status(out: Output, r: &v1::ShadowStatusResponse) -> anyhow::Result<()> {
    if out == Output::Json {
        println!("{}", status_json(r));
        return Ok(());
    }
    if r.resources.is_empty() {
        println!("no resource has had shadows");
    }
    for x in &r.resources {
        println!(
            "{}  routing version {}  shadow cost so far {:.6}",
            x.resource,
            x.routing_version,
            x.shadow_cost_micros as f64 / 1e6
        );
        println!("  replica  node  role     phase      step  weight  reads      errors  p99 ms  copies");
        for p in &x.replicas {
            let step = if p.role == "shadow" { format!("{}", p.step + 1) } else { "-".into() };
            let copies = if p.role == "shadow" { format!("{}/{}", p.blobs_copied, p.blobs_total) } else { "-".into() };
            let mut flags = String::new();
            if p.pinned {
                flags.push_str(" pinned");
            }
            if p.halted {
                flags.push_str(" halted");
            }
            println!(
                "  {:<7}  {:<4}  {:<7}  {:<9}  {:<4}  {:>5.1}%  {:<9}  {:<6}  {:<6}  {copies}{flags}",
                p.replica_id,
                p.node_id,
                p.role,
                if p.phase.is_empty() { "-" } else { &p.phase },
                step,
                p.weight_permille as f64 / 10.0,
                p.reads,
                p.errors,
                p.p99_ms
            );
        }
        if let Some(e) = x.history.last() {
            println!("  last: {} {} shadow {}: {}", utc(e.at_ms), e.kind, e.replica_id, e.text);
        }
    }
    Ok(())
}

pub fn history(out: Output, r: &v1::ShadowStatusResponse) -> anyhow::Result<()> {
    let events: Vec<&v1::ShadowEventInfo> = r.resources.iter().flat_map(|x| x.history.iter()).collect();
    if out == Output::Json {
        println!("{}", history_json(&events.into_iter().cloned().collect::<Vec<_>>()));
        return Ok(());
    }
    for e in events {
        println!(
            "{}  {:<9} shadow {} on node {}  {:>5.1}% → {:>5.1}%  {}",
            utc(e.at_ms),
            e.kind,
            e.replica_id,
            e.node_id,
            e.from_permille as f64 / 10.0,
            e.to_permille as f64 / 10.0,
            e.text
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_renders_epoch_milliseconds() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_796_332_164_000), "2026-12-03 21:09:24Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn status_json_keeps_its_shape() {
        let r = v1::ShadowStatusResponse {
            resources: vec![v1::ResourceShadowStatus {
                resource: "r".into(),
                routing_version: 4,
                replicas: vec![v1::ReplicaServing {
                    replica_id: 9,
                    role: "shadow".into(),
                    phase: "shifting".into(),
                    weight_permille: 25,
                    ..Default::default()
                }],
                history: vec![v1::ShadowEventInfo { at_ms: 0, kind: "step".into(), ..Default::default() }],
                shadow_cost_micros: 12,
            }],
            settings: [("mode".to_string(), "auto".to_string())].into(),
        };
        let v = status_json(&r);
        assert_eq!(v["resources"][0]["replicas"][0]["phase"], "shifting");
        assert_eq!(v["resources"][0]["replicas"][0]["weight_permille"], 25);
        assert_eq!(v["resources"][0]["history"][0]["at"], "1970-01-01 00:00:00Z");
        assert_eq!(v["settings"]["mode"], "auto");
    }
}
