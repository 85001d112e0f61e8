//! The meta group's own membership, managed by its leader: it registers
//! the bootstrap node, adds every registered node's meta replica as a
//! learner, promotes the first `META_VOTERS_MAX` nodes to voters once they
//! caught up, and removes meta replicas of retired nodes. On other nodes
//! the manager re-announces this node's address and labels when they
//! changed. The leader also replaces lost resource replicas
//! (`replacement`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;
use shadowstore_base::ids::BOOTSTRAP_NODE_ID;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::ids::ReplicaNode;
use shadowstore_base::limits::META_VOTERS_MAX;

use super::Member;
use super::formation::join_request;
use super::formation::send_join;
use super::replacement::replace_lost_replicas;
use crate::cluster::Error;
use crate::cluster::NodeIdentity;
use crate::meta::command::MetaCommand;
use crate::meta::state::NodeLabels;

/// A learner this many entries behind the leader is not promoted yet.
const PROMOTE_LAG_ENTRIES_MAX: u64 = 1_000;
const MANAGER_PERIOD: Duration = Duration::from_secs(1);

pub async fn run_manager(ctx: Arc<Member>) {
    let Some(me) = ctx.cluster.identity() else { return };
    let mut tick = tokio::time::interval(MANAGER_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut announced = false;
    loop {
        tick.tick().await;
        let Some(meta) = ctx.cluster.meta_group() else {
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
            // After a restart: tell the meta leader our current labels and
            // peer address.
            if recorded_announcement(&ctx, me) == Some((labels.clone(), ctx.peer_addr.clone())) {
                announced = true;
            } else if let Some(leader) = ctx.cluster.leader_addr(&meta) {
                let req = join_request(&labels, ctx.peer_addr.as_deref(), me.node_id, 0);
                match send_join(&ctx, &[leader], req).await {
                    Ok(_) => announced = true,
                    Err(e) => tracing::warn!(error = %e, "re-announcing labels"),
                }
            }
        }
    }
}

/// What the directory holds of what `me` announces: labels and peer address.
fn recorded_announcement(ctx: &Member, me: NodeIdentity) -> Option<(NodeLabels, Option<String>)> {
    ctx.cluster
        .with_meta(|m| {
            let labels = m.nodes.get(&me.node_id)?.labels.clone();
            Some((labels, m.peer_addr_of(me.node_id).map(String::from)))
        })
        .flatten()
}

async fn lead_meta_membership(ctx: &Member, me: NodeIdentity, labels: &NodeLabels) -> Result<(), Error> {
    let recorded = recorded_announcement(ctx, me);
    if let Some((_, peer)) = &recorded
        && *peer != ctx.peer_addr
        && let Err(e) = super::registration::set_peer_addr(ctx, me.node_id, ctx.peer_addr.clone()).await
    {
        // Logged, not returned: the rest of the leader's duties go on.
        tracing::warn!(error = %e, "recording this node's peer address");
    }
    match recorded.map(|(l, _)| l) {
        None if me.node_id == BOOTSTRAP_NODE_ID => {
            ctx.cluster
                .propose_meta(MetaCommand::Bootstrap { now_ms: ctx.clock.now_ms(), labels: labels.clone() })
                .await?;
        }
        Some(l) if &l != labels => {
            ctx.cluster
                .propose_meta(MetaCommand::UpdateNode {
                    now_ms: ctx.clock.now_ms(),
                    node_id: me.node_id,
                    labels: labels.clone(),
                })
                .await?;
        }
        _ => {}
    }
    let Some(meta) = ctx.cluster.meta_group() else {
        return Ok(());
    };
    let nodes = ctx.cluster.with_meta(|m| m.nodes.clone()).unwrap_or_default();
    let metrics = meta.metrics();
    let membership = metrics.membership_config.membership().clone();
    let present: BTreeSet<ReplicaId> = membership.nodes().map(|(id, _)| *id).collect();
    for n in nodes.values() {
        if !present.contains(&n.meta_replica_id) {
            let node = ReplicaNode { node_id: n.node_id, addr: n.labels.addr.clone() };
            tracing::info!(node = %n.node_id, replica = %n.meta_replica_id, "adding meta learner");
            meta.raft
                .add_learner(n.meta_replica_id, node, false)
                .await
                .map_err(|e| ctx.cluster.write_error("meta add learner", e.into()))?;
        }
    }
    if membership.get_joint_config().len() > 1 {
        return Ok(());
    }
    let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
    let desired: BTreeSet<ReplicaId> = nodes.values().take(META_VOTERS_MAX).map(|n| n.meta_replica_id).collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let caught_up = |r: &ReplicaId| {
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
            .map_err(|e| ctx.cluster.write_error("meta voters", e.into()))?;
        return Ok(());
    }
    // Meta replicas of retired nodes (wiped and re-registered) leave.
    let known: BTreeSet<ReplicaId> = nodes.values().map(|n| n.meta_replica_id).collect();
    let stale: BTreeSet<ReplicaId> = present.difference(&known).filter(|r| !voters.contains(r)).copied().collect();
    if !stale.is_empty() {
        tracing::info!(?stale, "removing meta learners of retired nodes");
        meta.raft
            .change_membership(ChangeMembers::RemoveNodes(stale), false)
            .await
            .map_err(|e| ctx.cluster.write_error("meta remove learners", e.into()))?;
    }
    Ok(())
}
