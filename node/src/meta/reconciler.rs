//! Makes this node host exactly the replicas the meta directory assigns it.
//!
//! Runs on every node whenever the meta group applies something, and every
//! `RECONCILE_PERIOD` as a safety net:
//! - refreshes the address book from the member list;
//! - opens every replica the directory places on this node, and the
//!   replica that initializes a new group (the smallest of its initial
//!   replicas) initializes it;
//! - removes a local replica (and deletes its data) only when the directory
//!   *positively* shows it gone: its group id was allocated (so this meta
//!   state is not older than the group) and the group is deleted or no
//!   longer lists this replica. A stale meta state can delay a removal,
//!   never cause a wrong one.

use openraft::rt::WatchReceiver;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::ids::META_GROUP_ID;
use crate::ids::NodeId;
use crate::ids::ReplicaNode;
use crate::meta::state::MetaState;
use crate::meta::state::ResourceRecord;
use crate::node::NodeCtx;

const RECONCILE_PERIOD: Duration = Duration::from_secs(10);

pub async fn run(ctx: Arc<NodeCtx>) {
    let Some(me) = ctx.identity() else { return };
    let mut applied = match ctx.meta_group() {
        Some(g) => g.state.subscribe_applied(),
        None => return,
    };
    loop {
        if let Err(e) = reconcile(&ctx, me.node_id).await {
            tracing::warn!(error = %e, "reconcile");
        }
        tokio::select! {
            _ = applied.changed() => {}
            _ = tokio::time::sleep(RECONCILE_PERIOD) => {}
        }
    }
}

fn replica_nodes(meta: &MetaState, r: &ResourceRecord) -> BTreeMap<u64, ReplicaNode> {
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
    /// (group, replica, members to initialize with if this replica does).
    open: Vec<(u64, u64, Option<BTreeMap<u64, ReplicaNode>>)>,
    remove: Vec<u64>,
}

fn plan(ctx: &NodeCtx, me: NodeId) -> Option<Plan> {
    let local: BTreeMap<u64, u64> = ctx.registry.all().iter().map(|g| (g.id, g.replica_id)).collect();
    ctx.with_meta(|meta| {
        let addresses = meta.nodes.values().map(|n| (n.node_id, n.labels.addr.clone())).collect();
        let mut open = Vec::new();
        for r in meta.resources.values() {
            let Some(mine) = r.replica_on(me) else {
                continue;
            };
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
            let still_mine = meta
                .resource_by_group(group)
                .and_then(|r| r.replica_on(me))
                .is_some_and(|rep| rep.replica_id == replica);
            if !still_mine {
                remove.push(group);
            }
        }
        Plan { addresses, open, remove }
    })
}

async fn reconcile(ctx: &NodeCtx, me: NodeId) -> std::io::Result<()> {
    let Some(plan) = plan(ctx, me) else {
        return Ok(());
    };
    for (node, addr) in &plan.addresses {
        ctx.peers.set_node_addr(*node, addr);
    }
    for group in plan.remove {
        tracing::info!(group, "directory no longer places this replica here; removing it");
        ctx.registry.remove(group).await?;
    }
    for (group, replica, members) in plan.open {
        let g = match ctx.registry.get(group) {
            Some(g) if g.replica_id == replica => g,
            Some(_) => continue, // replaced replica: removed on a later pass
            None => ctx.registry.open(group, replica).await?,
        };
        let Some(members) = members else { continue };
        let uninitialized = {
            let m = g.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config.membership().voter_ids().next().is_none() && m.last_log_index.is_none()
        };
        if uninitialized {
            for (r, n) in &members {
                ctx.peers.note_replica(*r, n);
            }
            match g.raft.initialize(members).await {
                Ok(()) => tracing::info!(group, replica, "initialized new resource group"),
                Err(e) => tracing::debug!(group, error = %e, "initialize"),
            }
        }
    }
    Ok(())
}
