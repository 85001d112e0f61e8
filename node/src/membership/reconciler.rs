//! Makes this node host exactly the replicas the meta directory assigns it.
//!
//! Runs on every node whenever the meta group applies something, and every
//! `RECONCILE_PERIOD` as a safety net:
//! - refreshes the address book and the peer routes from the member list,
//!   and closes the client listener to peer calls once this node's peer
//!   listener is recorded (`transport::peer_gate`);
//! - opens every replica the directory places on this node, and the
//!   replica that initializes a new group (the smallest of its initial
//!   replicas) initializes it;
//! - removes a local replica (and deletes its data) only when the directory
//!   *positively* shows it gone: its group id was allocated (so this meta
//!   state is not older than the group) and the group is deleted or no
//!   longer lists this replica. A stale meta state can delay a removal,
//!   never cause a wrong one. A quarantined (corrupt) replica is never
//!   reopened; it is removed the same way once the directory has replaced
//!   it.

use openraft::rt::WatchReceiver;
use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::ReplicaId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Member;
use crate::group::registry::ShardFate;
use crate::meta::state::MetaState;
use crate::meta::state::ResourceRecord;
use shadowstore_base::ids::META_GROUP_ID;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaNode;

const RECONCILE_PERIOD: Duration = Duration::from_secs(10);

pub async fn run(ctx: Arc<Member>) {
    let Some(me) = ctx.cluster.identity() else { return };
    let mut applied = match ctx.cluster.meta_group() {
        Some(g) => g.state.subscribe_applied(),
        None => return,
    };
    loop {
        if let Err(e) = reconcile(&ctx, me.node_id).await {
            tracing::warn!(error = %e, "reconcile");
        }
        tokio::select! {
            changed = applied.changed() => {
                // The meta group was restarted (its old state is gone):
                // follow the new one, or fall back to the period.
                if changed.is_err() {
                    match ctx.cluster.meta_group() {
                        Some(g) => applied = g.state.subscribe_applied(),
                        None => tokio::time::sleep(RECONCILE_PERIOD).await,
                    }
                }
            }
            _ = tokio::time::sleep(RECONCILE_PERIOD) => {}
        }
    }
}

fn replica_nodes(meta: &MetaState, r: &ResourceRecord) -> BTreeMap<ReplicaId, ReplicaNode> {
    r.replicas
        .iter()
        .filter(|rep| r.initial_replicas.contains(&rep.replica_id))
        .map(|rep| {
            (
                rep.replica_id,
                ReplicaNode { node_id: rep.node_id, addr: meta.addr_of(rep.node_id).unwrap_or_default().to_string() },
            )
        })
        .collect()
}

struct Plan {
    addresses: Vec<(NodeId, String)>,
    /// (address, peer address) of nodes with a peer listener.
    routes: Vec<(String, String)>,
    /// This node's peer address as the directory records it.
    my_peer_addr: Option<String>,
    /// (group, replica, members to initialize with if this replica does).
    open: Vec<(GroupId, ReplicaId, Option<BTreeMap<ReplicaId, ReplicaNode>>)>,
    /// (group, replica, what becomes of its shards).
    remove: Vec<(GroupId, ReplicaId, ShardFate)>,
}

fn plan(ctx: &Member, me: NodeId) -> Option<Plan> {
    let local: BTreeMap<GroupId, ReplicaId> = ctx.cluster.registry.hosted();
    let quarantined = ctx.cluster.registry.quarantined();
    ctx.cluster.with_meta(|meta| {
        let addresses = meta.node_addrs();
        let routes = meta.peer_routes();
        let my_peer_addr = meta.peer_addr_of(me).map(String::from);
        let mut open = Vec::new();
        for r in meta.resources.values() {
            let Some(mine) = r.replica_on(me) else {
                continue;
            };
            if quarantined.get(&r.group_id) == Some(&mine.replica_id) {
                continue; // corrupt: waits for its replacement
            }
            let initializer = r.initial_replicas.first() == Some(&mine.replica_id);
            if !initializer && local.get(&r.group_id) == Some(&mine.replica_id) {
                continue; // open already, nothing to initialize
            }
            let members = initializer.then(|| replica_nodes(meta, r));
            open.push((r.group_id, mine.replica_id, members));
        }
        let mut remove = Vec::new();
        for (&group, &replica) in &local {
            if group == META_GROUP_ID || group >= meta.next_group_id {
                continue;
            }
            let resource = meta.resource_by_group(group);
            let successor = resource.and_then(|r| r.replica_on(me));
            if !successor.is_some_and(|rep| rep.replica_id == replica) {
                let retired_shadow = resource.is_some_and(|r| {
                    meta.shadows
                        .of(&r.name)
                        .is_some_and(|s| s.history.iter().any(|e| e.replica_id == replica && e.kind == "retired"))
                });
                let fate = if successor.is_some_and(|rep| rep.replaces == Some(replica)) {
                    ShardFate::KeepForSuccessor
                } else if retired_shadow {
                    // A shadow's copies are nobody's shards: they go with it.
                    ShardFate::Delete
                } else {
                    ShardFate::HandOff
                };
                remove.push((group, replica, fate));
            }
        }
        Plan { addresses, routes, my_peer_addr, open, remove }
    })
}

async fn reconcile(ctx: &Member, me: NodeId) -> std::io::Result<()> {
    let Some(plan) = plan(ctx, me) else {
        return Ok(());
    };
    ctx.cluster.peers.set_routes(plan.routes);
    if let Some(gate) = &ctx.peer_gate {
        gate.follow(plan.my_peer_addr.is_some() && plan.my_peer_addr == ctx.peer_addr);
    }
    for (node, addr) in &plan.addresses {
        ctx.cluster.peers.set_node_addr(*node, addr);
    }
    for (group, replica, fate) in plan.remove {
        tracing::info!(%group, %replica, ?fate, "directory no longer places this replica here; removing it");
        ctx.cluster.registry.remove(group, replica, fate).await?;
    }
    for (group, replica, members) in plan.open {
        let g = match ctx.cluster.registry.get(group) {
            Some(g) if g.replica_id == replica => g,
            Some(_) => continue, // replaced replica: removed on a later pass
            None => ctx.cluster.registry.open(group, replica).await?,
        };
        let Some(members) = members else { continue };
        let uninitialized = {
            let m = g.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config.membership().voter_ids().next().is_none() && m.last_log_index.is_none()
        };
        if uninitialized {
            for (r, n) in &members {
                ctx.cluster.peers.note_replica(*r, n);
            }
            match g.raft.initialize(members).await {
                Ok(()) => tracing::info!(%group, %replica, "initialized new resource group"),
                Err(e) => tracing::debug!(%group, error = %e, "initialize"),
            }
        }
    }
    Ok(())
}

/// How often group leaders align their membership with the directory.
const LEADER_DUTY_PERIOD: Duration = Duration::from_secs(2);
/// A learner this many entries behind is not promoted yet.
const PROMOTE_LAG_ENTRIES_MAX: u64 = 100;

/// On every node: for each resource group this node leads, makes the Raft
/// voters match the directory's replicas (adding the new replica as a
/// learner first, promoting it once caught up, dropping the replaced one),
/// then hands the replaced replica's shards to its successor.
pub async fn run_leader_duties(ctx: Arc<Member>) {
    let mut tick = tokio::time::interval(LEADER_DUTY_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for g in ctx.cluster.registry.all() {
            if g.id == META_GROUP_ID || !g.is_leader() {
                continue;
            }
            let Some(rec) = ctx.cluster.with_meta(|m| m.resource_by_group(g.id).cloned()).flatten() else { continue };
            if let Err(e) = align_group(&ctx, &g, &rec).await {
                tracing::warn!(group = %g.id, error = %e, "aligning group membership");
            }
        }
    }
}

async fn align_group(ctx: &Member, g: &crate::group::Group, rec: &ResourceRecord) -> Result<(), String> {
    use std::collections::BTreeSet;

    use openraft::ChangeMembers;

    let desired: BTreeMap<ReplicaId, ReplicaNode> = rec
        .replicas
        .iter()
        .map(|r| {
            let addr = ctx.cluster.with_meta(|m| m.addr_of(r.node_id).map(String::from)).flatten().unwrap_or_default();
            (r.replica_id, ReplicaNode { node_id: r.node_id, addr })
        })
        .collect();
    let desired_ids: BTreeSet<ReplicaId> = desired.keys().copied().collect();
    // Primaries vote; shadows are permanent learners, never promoted.
    let wanted_voters: BTreeSet<ReplicaId> = rec.primaries().map(|r| r.replica_id).collect();
    let m = g.metrics();
    let membership = m.membership_config.membership().clone();
    let err = |e: openraft::errors::RaftError<
        crate::raft::TypeConfig,
        openraft::errors::ClientWriteError<crate::raft::TypeConfig>,
    >| e.to_string();
    if let [.., last] = membership.get_joint_config().as_slice()
        && membership.get_joint_config().len() > 1
    {
        // A joint configuration this leader finds (its proposer may have
        // lost leadership between the two steps) is finished here: nothing
        // else would, and the removed voters would stay forever. A change
        // still in flight answers that it is in progress.
        let target = last.clone();
        tracing::info!(group = %g.id, joint = ?membership.get_joint_config(), "finishing a joint membership change");
        if let Err(e) = g.raft.change_membership(ChangeMembers::ReplaceAllVoters(target), false).await {
            tracing::debug!(group = %g.id, error = %e, "joint membership change not finished yet");
        }
        return Ok(());
    }
    let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
    let present: BTreeSet<ReplicaId> = membership.nodes().map(|(id, _)| *id).collect();
    for (id, node) in &desired {
        if !present.contains(id) {
            let role = if wanted_voters.contains(id) { "replacement replica" } else { "shadow" };
            tracing::info!(group = %g.id, replica = %id, node = %node.node_id, role, "adding learner");
            g.touch();
            ctx.cluster.peers.note_replica(*id, node);
            g.raft.add_learner(*id, node.clone(), false).await.map_err(err)?;
            return Ok(());
        }
    }
    if voters != wanted_voters {
        g.touch();
        let last = m.last_log_index.unwrap_or(0);
        let caught_up = wanted_voters.difference(&voters).all(|r| {
            m.replication.as_ref().and_then(|repl| repl.get(r)).and_then(|x| x.as_ref()).map(|l| l.index).unwrap_or(0)
                + PROMOTE_LAG_ENTRIES_MAX
                >= last
        });
        if caught_up {
            tracing::info!(group = %g.id, ?voters, wanted = ?wanted_voters, "replacing voters");
            g.raft.change_membership(ChangeMembers::ReplaceAllVoters(wanted_voters), false).await.map_err(err)?;
        }
        return Ok(());
    }
    let stale: BTreeSet<ReplicaId> = present.difference(&desired_ids).copied().collect();
    if !stale.is_empty() {
        g.raft.change_membership(ChangeMembers::RemoveNodes(stale), false).await.map_err(err)?;
        return Ok(());
    }
    // Voters match: move shards off replaced replicas.
    let holders: BTreeSet<ReplicaId> = {
        let st = g.state.read();
        match &st.data {
            crate::raft::state_machine::GroupData::Resource(rs) => rs.blobs().flat_map(|m| m.holders.clone()).collect(),
            _ => BTreeSet::new(),
        }
    };
    for r in &rec.replicas {
        let Some(old) = r.replaces else { continue };
        if holders.contains(&old) {
            let cmd = crate::resource::ResourceCommand::ReassignHolders {
                now_ms: ctx.clock.now_ms(),
                from: old,
                to: r.replica_id,
            };
            tracing::info!(
                group = %g.id,
                from = %old,
                to = %r.replica_id,
                "reassigning shards to the replacement replica"
            );
            g.propose(crate::raft::Command::Resource(cmd)).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
