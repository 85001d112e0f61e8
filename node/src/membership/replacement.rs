//! Replacing lost resource replicas, on the meta leader: a replica whose
//! node was retired or has been down longer than `replace_down_after_ms`,
//! or that its node quarantined, gets a successor under a new replica id.

use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;

use super::Member;
use crate::cluster::Error;
use crate::meta::command::MetaCommand;

/// Replacements proposed per manager pass, at most.
const REPLACEMENTS_PER_PASS_MAX: usize = 16;

/// Replaces resource replicas that are lost: their node was retired (it
/// lost its data and rejoined under a new identity) or has been down
/// longer than `replace_down_after_ms`, or the node quarantined the replica
/// because its durable state is corrupt (reported in its pings). The new
/// replica goes to a live node that hosts none of the resource's replicas
/// (least loaded first); a corrupt replica with no such node is replaced
/// on its own node, under a new replica id.
pub(super) async fn replace_lost_replicas(ctx: &Member) -> Result<(), Error> {
    let down_after = ctx.config.replace_down_after_ms;
    let now = crate::group::quiesce::mono_ms();
    let detector = &ctx.cluster.detector;
    let me = ctx.cluster.node_id()?;
    let lost = |node: NodeId, m: &crate::meta::state::MetaState| -> bool {
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
    let corrupt =
        |rep: &crate::meta::state::ReplicaRecord| -> bool { ctx.cluster.is_quarantined(rep.node_id, rep.replica_id) };
    let plans: Vec<(String, ReplicaId, NodeId)> = ctx
        .cluster
        .with_meta(|m| {
            let mut load = m.replicas_per_node();
            let mut plans = Vec::new();
            for r in m.resources.values() {
                // Shadows are not replaced: the executor retires a lost one.
                for rep in r.primaries() {
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
        tracing::info!(resource = %name, %old_replica, %new_node, "replacing a lost or corrupt replica");
        ctx.cluster
            .propose_meta(MetaCommand::ReplaceReplica { now_ms: ctx.clock.now_ms(), name, old_replica, new_node })
            .await?;
    }
    Ok(())
}
