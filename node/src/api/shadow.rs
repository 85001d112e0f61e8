//! The shadow part of the public API: routing tables, adding shadows,
//! operator actions (remove, pin, halt, rollback, promote, apply) and the
//! status of every shadow with its served reads, gate measurements, cost
//! and history. Operator actions are the same compare-and-set commands
//! the executor commits (`shadow::executor`).

use std::time::Duration;

use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_placement::ShadowPhase;
use shadowstore_placement::planner::Action;
use shadowstore_placement::planner::Verdict;
use shadowstore_proto::v1;
use shadowstore_proto::v1::ShadowActionKind;
use tonic::Status;

use super::status;
use crate::meta::command::MetaCommand;
use crate::meta::command::MetaResponse;
use crate::meta::shadow::ShadowRecord;
use crate::meta::state::ReplicaRole;
use crate::meta::state::ResourceRecord;
use crate::shadow::Shadows;
use crate::shadow::executor;

fn role_name(role: ReplicaRole) -> &'static str {
    match role {
        ReplicaRole::Primary => "primary",
        ReplicaRole::Shadow => "shadow",
    }
}

pub fn routing(s: &Shadows, rec: &ResourceRecord) -> Result<v1::RoutingTable, Status> {
    s.data
        .cluster
        .with_meta(|m| {
            m.routing_table(&rec.name).map(|t| v1::RoutingTable {
                resource: rec.name.clone(),
                version: t.version,
                entries: t
                    .entries
                    .iter()
                    .map(|e| v1::RouteEntry {
                        replica_id: e.replica_id.get(),
                        node_id: e.node_id.get(),
                        address: m.addr_of(e.node_id).unwrap_or_default().to_string(),
                        role: role_name(e.role).into(),
                        weight_permille: e.weight_permille,
                    })
                    .collect(),
            })
        })
        .flatten()
        .ok_or_else(|| Status::not_found(format!("resource {:?} does not exist", rec.name)))
}

/// Commits `cmd` and turns a refusal into the status an operator reads.
async fn commit(s: &Shadows, cmd: MetaCommand) -> Result<MetaResponse, Status> {
    match s.data.cluster.propose_meta(cmd).await? {
        MetaResponse::Rejected { reason } => Err(Status::failed_precondition(reason)),
        MetaResponse::NotFound => Err(Status::not_found("the resource or shadow no longer exists")),
        other => Ok(other),
    }
}

/// Adds a shadow on `node_id`, or on the host the planner ranks first.
pub async fn add(s: &Shadows, rec: &ResourceRecord, node_id: u64) -> Result<v1::ShadowActionResponse, Status> {
    let now_ms = s.data.clock.now_ms();
    let candidates =
        crate::placement::inputs::host_candidates(&s.placement, &rec.name, now_ms).ok_or_else(status::not_ready)?;
    let node = if node_id == 0 {
        candidates
            .iter()
            .find(|c| matches!(c.verdict, Verdict::NotNeeded | Verdict::Chosen { .. }))
            .map(|c| c.node_id)
            .ok_or_else(|| {
                let verdicts: Vec<String> =
                    candidates.iter().map(|c| format!("node {}: {:?}", c.node_id, c.verdict)).collect();
                Status::failed_precondition(format!(
                    "no host can take a shadow of {}: {}",
                    rec.name,
                    verdicts.join("; ")
                ))
            })?
    } else {
        let node = NodeId::new(node_id);
        let c = candidates
            .iter()
            .find(|c| c.node_id == node)
            .ok_or_else(|| Status::not_found(format!("node {node} is not a member")))?;
        match &c.verdict {
            Verdict::AlreadyReplica => {
                return Err(Status::already_exists(format!("node {node} already hosts a replica of {}", rec.name)));
            }
            Verdict::NotEnoughDisk { free_bytes, needed_bytes } => {
                return Err(Status::resource_exhausted(format!(
                    "node {node} offers {free_bytes} bytes of disk; a copy of {} needs {needed_bytes}",
                    rec.name
                )));
            }
            Verdict::Unhealthy => return Err(Status::failed_precondition(format!("node {node} is not up"))),
            Verdict::NoSpareCapacity { spare_rps } => {
                return Err(Status::failed_precondition(format!(
                    "node {node} has no spare read capacity ({spare_rps:.0} rps): a shadow there would serve nothing"
                )));
            }
            Verdict::NotNeeded | Verdict::Chosen { .. } => node,
        }
    };
    let cmd = MetaCommand::AddShadow { now_ms, resource: rec.name.clone(), node, by_operator: true };
    let MetaResponse::Created(after) = commit(s, cmd).await? else {
        return Err(Status::internal("adding a shadow answered something else"));
    };
    let replica = after.replica_on(node).map(|r| r.replica_id.get()).unwrap_or(0);
    Ok(v1::ShadowActionResponse {
        message: format!("shadow {replica} of {} added on node {node}; it syncs, then shifts", rec.name),
        replica_id: replica,
        node_id: node.get(),
    })
}

fn shadows_of(s: &Shadows, rec: &ResourceRecord) -> Vec<ShadowRecord> {
    s.data
        .cluster
        .with_meta(|m| m.shadows.of(&rec.name).map(|r| r.shadows.values().cloned().collect()))
        .flatten()
        .unwrap_or_default()
}

/// The shadow `replica_id` names, or the only shadow when it is 0.
fn one_shadow(s: &Shadows, rec: &ResourceRecord, replica_id: u64) -> Result<ShadowRecord, Status> {
    let all = shadows_of(s, rec);
    if replica_id == 0 {
        return match all.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Status::not_found(format!("{} has no shadows", rec.name))),
            _ => {
                Err(Status::invalid_argument(format!("{} has {} shadows: name one (--shadow ID)", rec.name, all.len())))
            }
        };
    }
    all.into_iter()
        .find(|x| x.replica_id == ReplicaId::new(replica_id))
        .ok_or_else(|| Status::not_found(format!("{} has no shadow {replica_id}", rec.name)))
}

pub async fn act(
    s: &Shadows,
    rec: &ResourceRecord,
    replica_id: u64,
    action: i32,
) -> Result<v1::ShadowActionResponse, Status> {
    let action = ShadowActionKind::try_from(action)
        .ok()
        .filter(|a| *a != ShadowActionKind::Unspecified)
        .ok_or_else(|| Status::invalid_argument(format!("unknown shadow action {action}")))?;
    let now_ms = s.data.clock.now_ms();
    let name = rec.name.clone();
    let reply = |message: String, sh: Option<&ShadowRecord>| v1::ShadowActionResponse {
        message,
        replica_id: sh.map_or(0, |x| x.replica_id.get()),
        node_id: sh.map_or(0, |x| x.node_id.get()),
    };
    match action {
        ShadowActionKind::Remove => {
            let sh = one_shadow(s, rec, replica_id)?;
            if sh.phase == ShadowPhase::Draining {
                return Ok(reply(format!("shadow {} is draining already", sh.replica_id), Some(&sh)));
            }
            commit(s, executor::drain_command(s, &name, &sh, "operator removal")).await?;
            Ok(reply(format!("shadow {} drains, then is removed with its data", sh.replica_id), Some(&sh)))
        }
        ShadowActionKind::Pin | ShadowActionKind::Unpin | ShadowActionKind::Halt | ShadowActionKind::Resume => {
            let sh = one_shadow(s, rec, replica_id)?;
            let (pinned, halted) = match action {
                ShadowActionKind::Pin => (Some(true), None),
                ShadowActionKind::Unpin => (Some(false), None),
                ShadowActionKind::Halt => (None, Some(true)),
                _ => (None, Some(false)),
            };
            commit(s, MetaCommand::FlagShadow { now_ms, resource: name, replica: sh.replica_id, pinned, halted })
                .await?;
            Ok(reply(format!("shadow {}: {}", sh.replica_id, action.as_str_name()), Some(&sh)))
        }
        ShadowActionKind::Rollback => {
            let targets: Vec<ShadowRecord> =
                if replica_id == 0 { shadows_of(s, rec) } else { vec![one_shadow(s, rec, replica_id)?] };
            let mut rolled = Vec::new();
            for sh in &targets {
                if let Some(cmd) = executor::manual_rollback(s, &name, sh) {
                    commit(s, cmd).await?;
                    rolled.push(sh.replica_id.to_string());
                }
            }
            if rolled.is_empty() {
                return Err(Status::failed_precondition(format!("{name} has no shadow taking reads to roll back")));
            }
            Ok(reply(format!("rolled back shadow(s) {}: weight 0", rolled.join(", ")), targets.first()))
        }
        ShadowActionKind::PromoteNext | ShadowActionKind::PromoteFull => {
            let sh = one_shadow(s, rec, replica_id)?;
            let cmd = executor::promote(s, &name, &sh, action == ShadowActionKind::PromoteFull)
                .map_err(Status::failed_precondition)?;
            commit(s, cmd).await?;
            Ok(reply(format!("shadow {} promoted", sh.replica_id), Some(&sh)))
        }
        ShadowActionKind::Apply => apply(s, rec).await,
        ShadowActionKind::Unspecified => Err(Status::invalid_argument("no shadow action")),
    }
}

/// Carries out the planner's current plan for `rec` now, whatever the mode.
async fn apply(s: &Shadows, rec: &ResourceRecord) -> Result<v1::ShadowActionResponse, Status> {
    let now_ms = s.data.clock.now_ms();
    let plans = crate::placement::inputs::plan_all(&s.placement, Some(&rec.name), now_ms);
    let plan = plans.first().ok_or_else(status::not_ready)?;
    match &plan.action {
        Action::Hold { reason } => {
            Ok(v1::ShadowActionResponse { message: format!("nothing to apply: {reason}"), ..Default::default() })
        }
        Action::AddShadows { nodes, .. } => {
            for node in nodes {
                let cmd = MetaCommand::AddShadow { now_ms, resource: rec.name.clone(), node: *node, by_operator: true };
                commit(s, cmd).await?;
            }
            Ok(v1::ShadowActionResponse {
                message: format!("added shadows on nodes {nodes:?}"),
                node_id: nodes.first().map_or(0, |n| n.get()),
                ..Default::default()
            })
        }
        Action::Retire { nodes, reason } => {
            for sh in shadows_of(s, rec).iter().filter(|x| nodes.contains(&x.node_id)) {
                commit(s, executor::drain_command(s, &rec.name, sh, reason)).await?;
            }
            Ok(v1::ShadowActionResponse {
                message: format!("retiring shadows on nodes {nodes:?}: {reason}"),
                ..Default::default()
            })
        }
    }
}

/// Deadline of the served-reads query to each replica's node.
const STATUS_REPORT_TIMEOUT_MS: u64 = 2_000;

pub async fn status(s: &Shadows, only: &str) -> Result<v1::ShadowStatusResponse, Status> {
    let (settings, rows) = s
        .data
        .cluster
        .with_meta(|m| {
            let rows: Vec<_> = m
                .resources
                .values()
                .filter(|r| {
                    if only.is_empty() {
                        m.shadows.of(&r.name).is_some_and(|x| !x.history.is_empty())
                    } else {
                        r.name == only
                    }
                })
                .map(|r| {
                    let table = m.routing_table(&r.name);
                    let rs = m.shadows.of(&r.name).cloned().unwrap_or_default();
                    let replicas: Vec<_> = r
                        .replicas
                        .iter()
                        .map(|x| (x.clone(), m.addr_of(x.node_id).unwrap_or_default().to_string()))
                        .collect();
                    (r.clone(), table, rs, replicas)
                })
                .collect();
            (m.shadows.settings.as_text(), rows)
        })
        .ok_or_else(status::not_ready)?;
    let mut out = Vec::new();
    for (rec, table, rs, replicas) in rows {
        let mut serving = Vec::new();
        // The ledger of retired shadows, and the live ones so far.
        let mut cost_micros = rs.retired_cost_micros as f64;
        for (x, addr) in replicas {
            let report = served_report(s, &addr, rec.group_id, x.replica_id).await;
            let weight = table
                .as_ref()
                .and_then(|t| t.entries.iter().find(|e| e.replica_id == x.replica_id))
                .map_or(0, |e| e.weight_permille);
            let sh = rs.shadows.get(&x.replica_id);
            let window = s.executor.window(x.replica_id);
            let lifetime_p99 = report
                .as_ref()
                .map(|r| crate::shadow::served::p99_ms(&vec![0; r.latency_buckets.len()], &r.latency_buckets))
                .unwrap_or(0);
            let reads = report.as_ref().map_or(0, |r| r.reads);
            if let Some(sh) = sh {
                cost_micros += s.cost_so_far_micros(&rec.name, sh, reads);
            }
            serving.push(v1::ReplicaServing {
                replica_id: x.replica_id.get(),
                node_id: x.node_id.get(),
                role: role_name(x.role).into(),
                phase: sh.map(|s| s.phase.as_str().to_string()).unwrap_or_default(),
                step: sh.map_or(0, |s| s.step as u32),
                weight_permille: weight,
                reads,
                errors: report.as_ref().map_or(0, |r| r.errors),
                p99_ms: window.map_or(lifetime_p99, |w| w.p99_ms),
                blobs_copied: report.as_ref().map_or(0, |r| r.blobs_copied),
                blobs_total: report.as_ref().map_or(0, |r| r.blobs_total),
                pinned: sh.is_some_and(|s| s.pinned),
                halted: sh.is_some_and(|s| s.halted),
                share_permille: sh.map_or(0, |s| s.share_permille),
                since_ms: sh.map_or(0, |s| s.since_ms),
            });
        }
        out.push(v1::ResourceShadowStatus {
            resource: rec.name.clone(),
            routing_version: rs.routing_version,
            replicas: serving,
            history: rs
                .history
                .iter()
                .map(|e| v1::ShadowEventInfo {
                    at_ms: e.at_ms,
                    replica_id: e.replica_id.get(),
                    node_id: e.node_id.get(),
                    kind: e.kind.clone(),
                    from_permille: e.from_permille,
                    to_permille: e.to_permille,
                    text: e.text.clone(),
                })
                .collect(),
            shadow_cost_micros: cost_micros.round() as u64,
        });
    }
    Ok(v1::ShadowStatusResponse {
        resources: out,
        settings: settings.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    })
}

/// The served-read counters of one replica, from its node.
async fn served_report(
    s: &Shadows,
    addr: &str,
    group: shadowstore_base::ids::GroupId,
    replica: ReplicaId,
) -> Option<shadowstore_proto::peer::ShadowReportResponse> {
    let mut client = s.data.cluster.peers.client(addr).ok()?;
    let mut req = tonic::Request::new(shadowstore_proto::peer::ShadowReportRequest {
        group_id: group.get(),
        replica_id: replica.get(),
    });
    req.set_timeout(Duration::from_millis(STATUS_REPORT_TIMEOUT_MS));
    client.shadow_report(req).await.ok().map(|r| r.into_inner())
}
