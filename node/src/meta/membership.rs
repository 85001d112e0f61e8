//! Cluster formation and the meta group's own membership.
//!
//! [`form`] runs once at start-up and returns the node's identity:
//! - a node with an identity in its data directory starts every replica
//!   recorded locally and keeps its identity;
//! - otherwise, with `bootstrap = true`, it creates a new cluster as node 1
//!   holding meta replica 1;
//! - otherwise it joins through the `join` addresses: the meta leader
//!   registers it (allocating its node id and meta replica id) and the
//!   membership manager adds its meta replica to the meta group.
//!
//! [`run_manager`] runs on every node and acts while the node leads the
//! meta group: it registers the bootstrap node, adds every registered
//! node's meta replica as a learner and promotes the first
//! `META_VOTERS_MAX` nodes to voters once they have caught up. On other
//! nodes it re-announces this node's address and labels when they changed.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;
use shadowstore_proto::LEADER_ADDRESS_METADATA;
use shadowstore_proto::peer::JoinRequest;

use super::state::MetaCommand;
use super::state::MetaResponse;
use super::state::NodeLabels;
use crate::node::NodeCtx;
use crate::node::NodeIdentity;
use crate::node::PEER_CALL_TIMEOUT;
use crate::raft::Command;
use crate::raft::CommandResponse;
use crate::storage::Tree;
use crate::storage::WriteBatch;
use crate::storage::keys;
use shadowstore_base::codec;
use shadowstore_base::ids::BOOTSTRAP_META_REPLICA_ID;
use shadowstore_base::ids::BOOTSTRAP_NODE_ID;
use shadowstore_base::ids::META_GROUP_ID;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaNode;
use shadowstore_base::ids::RequestId;
use shadowstore_base::limits::META_VOTERS_MAX;

/// A learner this many entries behind the leader is not promoted yet.
const PROMOTE_LAG_ENTRIES_MAX: u64 = 1_000;
const MANAGER_PERIOD: Duration = Duration::from_secs(1);
const JOIN_RETRY_MAX: Duration = Duration::from_secs(2);

pub async fn form(ctx: &Arc<NodeCtx>) -> Result<NodeIdentity, String> {
    let stored = ctx.engine.get(Tree::Local, keys::IDENTITY_KEY).map_err(|e| format!("reading identity: {e}"))?;
    if let Some(bytes) = stored {
        let id: NodeIdentity = codec::decode("identity", &bytes).map_err(|e| e.to_string())?;
        start_local_replicas(ctx).await?;
        tracing::info!(node = id.node_id, "restarted with existing identity");
        return Ok(id);
    }
    if ctx.config.bootstrap {
        let id = NodeIdentity { node_id: BOOTSTRAP_NODE_ID, meta_replica_id: BOOTSTRAP_META_REPLICA_ID };
        persist_identity(ctx, id).await?;
        let meta = ctx
            .registry
            .open(META_GROUP_ID, id.meta_replica_id)
            .await
            .map_err(|e| format!("starting meta replica: {e}"))?;
        let members =
            BTreeMap::from([(id.meta_replica_id, ReplicaNode { node_id: id.node_id, addr: ctx.addr.clone() })]);
        meta.raft.initialize(members).await.map_err(|e| format!("initializing meta group: {e}"))?;
        ctx.peers.set_node_addr(id.node_id, &ctx.addr);
        tracing::info!(addr = %ctx.addr, "bootstrapped a new cluster as node 1");
        return Ok(id);
    }
    let id = join(ctx).await?;
    persist_identity(ctx, id).await?;
    ctx.registry.open(META_GROUP_ID, id.meta_replica_id).await.map_err(|e| format!("starting meta replica: {e}"))?;
    tracing::info!(node = id.node_id, "joined the cluster");
    Ok(id)
}

async fn persist_identity(ctx: &NodeCtx, id: NodeIdentity) -> Result<(), String> {
    let mut b = WriteBatch::new(Tree::Local);
    b.put(keys::IDENTITY_KEY.to_vec(), codec::encode("identity", &id).map_err(|e| e.to_string())?);
    ctx.engine.write(b).map_err(|e| format!("writing identity: {e}"))?;
    ctx.syncer.sync().await.map_err(|e| format!("syncing identity: {e}"))
}

async fn start_local_replicas(ctx: &NodeCtx) -> Result<(), String> {
    ctx.registry.load_retired().map_err(|e| format!("listing retired replicas' shards: {e}"))?;
    let replicas = ctx.registry.local_replicas().map_err(|e| format!("listing local replicas: {e}"))?;
    for r in replicas {
        let Err(e) = ctx.registry.open(r.group_id, r.replica_id).await else { continue };
        // A corrupt resource replica waits for its replacement; the node
        // serves everything else meanwhile. Without its meta replica the
        // node cannot take part at all.
        let quarantined = ctx.registry.quarantined().contains_key(&r.group_id);
        if quarantined && r.group_id != META_GROUP_ID {
            tracing::warn!(group = r.group_id, replica = r.replica_id, error = %e, "replica quarantined at start");
            continue;
        }
        let hint = if quarantined {
            "; this node's meta replica is corrupt: move its data directory away and let the node rejoin"
        } else {
            ""
        };
        return Err(format!("starting replica {} of group {}: {e}{hint}", r.replica_id, r.group_id));
    }
    Ok(())
}

fn join_request(labels: &NodeLabels, existing_node_id: NodeId, join_id: u64) -> JoinRequest {
    JoinRequest {
        join_id,
        address: labels.addr.clone(),
        region: labels.region.clone(),
        read_capacity_rps: labels.read_capacity_rps,
        price_storage_gb_hour_micros: labels.prices.storage_gb_hour_micros,
        price_transfer_gb_micros: labels.prices.transfer_gb_micros,
        price_million_requests_micros: labels.prices.million_requests_micros,
        disk_capacity_bytes: labels.disk_capacity_bytes,
        existing_node_id,
    }
}

/// Sends `req` to the meta leader, starting from any of `seeds` and
/// following redirects, until it succeeds or fails for a reason other than
/// "not the leader yet".
async fn send_join(ctx: &NodeCtx, seeds: &[String], req: JoinRequest) -> Result<(u64, u64), String> {
    let mut delay = Duration::from_millis(100);
    let mut next: Option<String> = None;
    let mut i = 0usize;
    loop {
        let addr = match next.take() {
            Some(a) => a,
            None => {
                let a = seeds[i % seeds.len()].clone();
                i += 1;
                a
            }
        };
        let result = match ctx.peers.client(&addr) {
            Err(e) => Err(tonic::Status::invalid_argument(e.to_string())),
            Ok(mut c) => {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(PEER_CALL_TIMEOUT);
                c.join(r).await
            }
        };
        match result {
            Ok(resp) => {
                let r = resp.into_inner();
                return Ok((r.node_id, r.meta_replica_id));
            }
            Err(s) if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::DeadlineExceeded => {
                next = s.metadata().get(LEADER_ADDRESS_METADATA).and_then(|v| v.to_str().ok()).map(String::from);
                tracing::info!(via = %addr, status = %s.message(), "join: retrying");
            }
            Err(s) if s.code() == tonic::Code::InvalidArgument && s.message().contains("bad address") => {
                return Err(s.message().to_string());
            }
            Err(s) if s.code() == tonic::Code::Unknown || s.code() == tonic::Code::Internal => {
                tracing::info!(via = %addr, status = %s.message(), "join: retrying");
            }
            Err(s) => return Err(format!("join refused by {addr}: {}", s.message())),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(JOIN_RETRY_MAX);
    }
}

async fn join(ctx: &NodeCtx) -> Result<NodeIdentity, String> {
    if ctx.config.join.is_empty() {
        return Err("no identity, bootstrap is false and no join address is configured".into());
    }
    let req = join_request(&ctx.config.labels(&ctx.addr), 0, ctx.rng.next_u64() | 1);
    let (node_id, meta_replica_id) = send_join(ctx, &ctx.config.join, req).await?;
    Ok(NodeIdentity { node_id, meta_replica_id })
}

/// Proposes a meta command on this node's meta replica (must be leader).
pub async fn propose_meta(ctx: &NodeCtx, cmd: MetaCommand) -> Result<MetaResponse, tonic::Status> {
    let meta = ctx.meta_group().ok_or_else(crate::api::status::not_ready)?;
    let resp = meta
        .propose(Command::Meta(cmd))
        .await
        .map_err(|e| crate::api::status::write_error("meta group", e, |r| ctx.replica_addr(r)))?;
    match resp.response() {
        CommandResponse::Meta(m) => Ok(m.clone()),
        other => Err(tonic::Status::internal(format!("meta group answered {other:?}"))),
    }
}

pub async fn run_manager(ctx: Arc<NodeCtx>) {
    let Some(me) = ctx.identity() else { return };
    let mut tick = tokio::time::interval(MANAGER_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut announced = false;
    loop {
        tick.tick().await;
        let Some(meta) = ctx.meta_group() else {
            continue;
        };
        let labels = ctx.config.labels(&ctx.addr);
        if meta.is_leader() {
            if let Err(e) = lead_meta_membership(&ctx, me, &labels).await {
                tracing::warn!(error = %e, "meta membership management");
            }
            if let Err(e) = replace_lost_replicas(&ctx).await {
                tracing::warn!(error = %e, "replacing lost replicas");
            }
        } else if !announced {
            // After a restart: tell the meta leader our current labels.
            let recorded = ctx.with_meta(|m| m.nodes.get(&me.node_id).map(|n| n.labels.clone())).flatten();
            if recorded.as_ref() == Some(&labels) {
                announced = true;
            } else if let Some(leader) = ctx.leader_addr(&meta) {
                let req = join_request(&labels, me.node_id, 0);
                match send_join(&ctx, &[leader], req).await {
                    Ok(_) => announced = true,
                    Err(e) => tracing::warn!(error = %e, "re-announcing labels"),
                }
            }
        }
    }
}

async fn lead_meta_membership(ctx: &NodeCtx, me: NodeIdentity, labels: &NodeLabels) -> Result<(), tonic::Status> {
    let recorded = ctx.with_meta(|m| m.nodes.get(&me.node_id).map(|n| n.labels.clone())).flatten();
    match recorded {
        None if me.node_id == BOOTSTRAP_NODE_ID => {
            propose_meta(ctx, MetaCommand::Bootstrap { now_ms: ctx.clock.now_ms(), labels: labels.clone() }).await?;
        }
        Some(l) if &l != labels => {
            propose_meta(
                ctx,
                MetaCommand::UpdateNode { now_ms: ctx.clock.now_ms(), node_id: me.node_id, labels: labels.clone() },
            )
            .await?;
        }
        _ => {}
    }
    let Some(meta) = ctx.meta_group() else {
        return Ok(());
    };
    let nodes = ctx.with_meta(|m| m.nodes.clone()).unwrap_or_default();
    let metrics = meta.metrics();
    let membership = metrics.membership_config.membership().clone();
    let present: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
    for n in nodes.values() {
        if !present.contains(&n.meta_replica_id) {
            let node = ReplicaNode { node_id: n.node_id, addr: n.labels.addr.clone() };
            tracing::info!(node = n.node_id, replica = n.meta_replica_id, "adding meta learner");
            meta.raft
                .add_learner(n.meta_replica_id, node, false)
                .await
                .map_err(|e| crate::api::status::write_error("meta add learner", e, |r| ctx.replica_addr(r)))?;
        }
    }
    if membership.get_joint_config().len() > 1 {
        return Ok(());
    }
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let desired: BTreeSet<u64> = nodes.values().take(META_VOTERS_MAX).map(|n| n.meta_replica_id).collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let caught_up = |r: &u64| {
        metrics.replication.as_ref().and_then(|repl| repl.get(r)).and_then(|m| m.as_ref()).map(|l| l.index).unwrap_or(0)
            + PROMOTE_LAG_ENTRIES_MAX
            >= last
    };
    let ready = desired.iter().all(|r| voters.contains(r) || (present.contains(r) && caught_up(r)));
    if desired != voters && ready && !desired.is_empty() {
        tracing::info!(?voters, ?desired, "changing meta voters");
        meta.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(desired.clone()), false)
            .await
            .map_err(|e| crate::api::status::write_error("meta voters", e, |r| ctx.replica_addr(r)))?;
        return Ok(());
    }
    // Meta replicas of retired nodes (wiped and re-registered) leave.
    let known: BTreeSet<u64> = nodes.values().map(|n| n.meta_replica_id).collect();
    let stale: BTreeSet<u64> = present.difference(&known).filter(|r| !voters.contains(r)).copied().collect();
    if !stale.is_empty() {
        tracing::info!(?stale, "removing meta learners of retired nodes");
        meta.raft
            .change_membership(ChangeMembers::RemoveNodes(stale), false)
            .await
            .map_err(|e| crate::api::status::write_error("meta remove learners", e, |r| ctx.replica_addr(r)))?;
    }
    Ok(())
}

/// Replacements proposed per manager pass, at most.
const REPLACEMENTS_PER_PASS_MAX: usize = 16;

/// Replaces resource replicas that are lost: their node was retired (it
/// lost its data and rejoined under a new identity) or has been down
/// longer than `replace_down_after_ms`, or the node quarantined the replica
/// because its durable state is corrupt (reported in its pings). The new
/// replica goes to a live node that hosts none of the resource's replicas
/// (least loaded first); a corrupt replica with no such node is replaced
/// on its own node, under a new replica id.
async fn replace_lost_replicas(ctx: &NodeCtx) -> Result<(), tonic::Status> {
    let down_after = ctx.config.replace_down_after_ms;
    let now = crate::group::quiesce::mono_ms();
    let detector = &ctx.detector;
    let me = ctx.node_id()?;
    let lost = |node: NodeId, m: &super::state::MetaState| -> bool {
        if !m.nodes.contains_key(&node) {
            return true;
        }
        if node == me || down_after == 0 {
            return false;
        }
        detector.view(node).is_some_and(|v| {
            v.health != crate::group::failure_detector::Health::Up
                && now.saturating_sub(v.last_ok_ms.unwrap_or(0)) >= down_after
        })
    };
    let my_quarantined: Vec<u64> = ctx.registry.quarantined().into_values().collect();
    let corrupt = |rep: &super::state::ReplicaRecord| -> bool {
        if rep.node_id == me {
            return my_quarantined.contains(&rep.replica_id);
        }
        detector
            .view(rep.node_id)
            .and_then(|v| v.last_answer)
            .is_some_and(|a| a.quarantined_replica_ids.contains(&rep.replica_id))
    };
    let plans: Vec<(String, u64, NodeId)> = ctx
        .with_meta(|m| {
            let mut load = m.replicas_per_node();
            let mut plans = Vec::new();
            for r in m.resources.values() {
                for rep in &r.replicas {
                    let node_lost = lost(rep.node_id, m);
                    if plans.len() >= REPLACEMENTS_PER_PASS_MAX || !(node_lost || corrupt(rep)) {
                        continue;
                    }
                    let candidate = m
                        .nodes
                        .keys()
                        .filter(|n| **n == me || detector.is_up(**n))
                        .filter(|n| !lost(**n, m) && r.replica_on(**n).is_none())
                        .min_by_key(|n| (load.get(n).copied().unwrap_or(0), **n))
                        .copied()
                        .or((!node_lost).then_some(rep.node_id));
                    if let Some(n) = candidate {
                        *load.entry(n).or_default() += 1;
                        plans.push((r.name.clone(), rep.replica_id, n));
                    }
                    break; // one replacement per resource per pass
                }
            }
            plans
        })
        .unwrap_or_default();
    for (name, old_replica, new_node) in plans {
        tracing::info!(resource = %name, old_replica, new_node, "replacing a lost or corrupt replica");
        propose_meta(ctx, MetaCommand::ReplaceReplica { now_ms: ctx.clock.now_ms(), name, old_replica, new_node })
            .await?;
    }
    Ok(())
}

/// Serves a join on the meta leader.
pub async fn handle_join(ctx: &NodeCtx, req: JoinRequest) -> Result<(u64, u64), tonic::Status> {
    let meta = ctx.meta_group().ok_or_else(crate::api::status::not_ready)?;
    if !meta.is_leader() {
        return Err(crate::api::status::redirect("join", ctx.leader_addr(&meta).as_deref()));
    }
    if req.address.is_empty() {
        return Err(tonic::Status::invalid_argument("join: empty address"));
    }
    let labels = NodeLabels {
        addr: req.address.clone(),
        region: req.region.clone(),
        read_capacity_rps: req.read_capacity_rps,
        disk_capacity_bytes: req.disk_capacity_bytes,
        prices: shadowstore_placement::Prices {
            storage_gb_hour_micros: req.price_storage_gb_hour_micros,
            transfer_gb_micros: req.price_transfer_gb_micros,
            million_requests_micros: req.price_million_requests_micros,
        },
    };
    let now_ms = ctx.clock.now_ms();
    let cmd = if req.existing_node_id != 0 {
        MetaCommand::UpdateNode { now_ms, node_id: req.existing_node_id, labels }
    } else {
        MetaCommand::RegisterNode {
            request: RequestId { client_id: req.join_id, seq: 1, first_incomplete_seq: 1 },
            now_ms,
            labels,
        }
    };
    match propose_meta(ctx, cmd).await? {
        MetaResponse::Registered { node_id, meta_replica_id } => Ok((node_id, meta_replica_id)),
        MetaResponse::Updated => {
            let replica =
                ctx.with_meta(|m| m.nodes.get(&req.existing_node_id).map(|n| n.meta_replica_id)).flatten().unwrap_or(0);
            Ok((req.existing_node_id, replica))
        }
        MetaResponse::NotFound => {
            Err(tonic::Status::not_found(format!("node {} is not a member of this cluster", req.existing_node_id)))
        }
        MetaResponse::Rejected { reason } => Err(tonic::Status::failed_precondition(reason)),
        other => Err(tonic::Status::internal(format!("unexpected meta answer {other:?}"))),
    }
}
