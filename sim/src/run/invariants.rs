//! What must hold while a run goes on, sampled by the driver: one leader
//! per term per group, applied indexes never going back, replicas at the
//! same index holding the same state; and the conditions the driver waits
//! for (convergence) or gates faults on (a lost disk is survivable).

use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;

use shadowstore_base::ids::META_GROUP_ID;
use shadowstore_node::group::Group;

use super::hosts::NodeSlot;
use super::hosts::node_name;

#[derive(Default)]
pub struct Invariants {
    /// (group, term) → replica that led it.
    leaders: HashMap<(GroupId, u64), ReplicaId>,
    /// (node, incarnation, group, replica) → last applied index seen (a
    /// replica replaced in place starts from 0 under a new id).
    applied: HashMap<(usize, u64, GroupId, ReplicaId), u64>,
    /// (group, replica) seen quarantined.
    pub quarantined: HashSet<(GroupId, ReplicaId)>,
    pub violation: Option<String>,
}

impl Invariants {
    pub fn sample(&mut self, slots: &[NodeSlot]) {
        // (group, applied index) → first replica seen there.
        let mut at_index: HashMap<(GroupId, u64), (usize, Arc<Group>)> = HashMap::new();
        for (i, s) in slots.iter().enumerate() {
            let Some(ctx) = &s.ctx else { continue };
            self.quarantined.extend(ctx.cluster.registry.quarantined());
            for g in ctx.cluster.registry.all() {
                self.check_same_state(&mut at_index, i, &g);
                let m = g.metrics();
                if m.state.is_leader() {
                    let prev = *self.leaders.entry((g.id, m.current_term)).or_insert(g.replica_id);
                    if prev != g.replica_id && self.violation.is_none() {
                        self.violation = Some(format!(
                            "two leaders in group {} term {}: replicas {prev} and {}",
                            g.id, m.current_term, g.replica_id
                        ));
                    }
                }
                let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
                let last = self.applied.entry((i, s.incarnation, g.id, g.replica_id)).or_insert(applied);
                if applied < *last && self.violation.is_none() {
                    self.violation = Some(format!(
                        "applied index of group {} on {} went back: {} → {applied}",
                        g.id,
                        node_name(i),
                        *last
                    ));
                }
                *last = applied.max(*last);
            }
        }
    }

    /// State-machine safety: two replicas of a group that applied the same
    /// index hold the same state. A replica that applied a corrupt entry
    /// differs from the others even if no client reads from it.
    fn check_same_state(
        &mut self,
        at_index: &mut HashMap<(GroupId, u64), (usize, Arc<Group>)>,
        node: usize,
        g: &Arc<Group>,
    ) {
        let st = g.state.read();
        let index = st.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        match at_index.get(&(g.id, index)) {
            None => {
                drop(st);
                at_index.insert((g.id, index), (node, g.clone()));
            }
            Some((other_node, other)) => {
                if st.data != other.state.read().data && self.violation.is_none() {
                    self.violation = Some(format!(
                        "replicas {} on {} and {} on {} of group {} applied index {index} but hold different states",
                        other.replica_id,
                        node_name(*other_node),
                        g.replica_id,
                        node_name(node),
                        g.id
                    ));
                }
            }
        }
    }
}

/// Whether losing one more disk leaves every group a quorum of voters
/// that kept theirs: no running replica sees a joint (changing) membership
/// or a voter on a node that already lost its disk (`lost` node ids).
pub fn survives_disk_loss(slots: &[NodeSlot], lost: &HashSet<NodeId>) -> Result<(), String> {
    for s in slots {
        let Some(ctx) = &s.ctx else { continue };
        for g in ctx.cluster.registry.all() {
            let m = g.metrics();
            let membership = m.membership_config.membership();
            if membership.get_joint_config().len() != 1 {
                return Err(format!("group {} is changing membership", g.id));
            }
            for voter in membership.voter_ids() {
                let node = membership.get_node(&voter).map(|n| n.node_id);
                if node.is_some_and(|n| lost.contains(&n)) {
                    return Err(format!("group {} still has voter {voter} on lost node {node:?}", g.id));
                }
            }
        }
    }
    Ok(())
}

/// Every resource group has a leader and all its replicas on running nodes
/// applied the same index, and no node holds a quarantined replica.
pub fn converged(slots: &[NodeSlot]) -> Result<(), String> {
    let mut groups: BTreeMap<GroupId, (bool, Vec<u64>)> = BTreeMap::new();
    for (i, s) in slots.iter().enumerate() {
        let Some(ctx) = &s.ctx else { continue };
        if let Some((group, replica)) = ctx.cluster.registry.quarantined().into_iter().next() {
            return Err(format!("{} still holds quarantined replica {replica} of group {group}", node_name(i)));
        }
        for g in ctx.cluster.registry.all() {
            let m = g.metrics();
            let e = groups.entry(g.id).or_default();
            e.0 |= m.state.is_leader();
            e.1.push(m.last_applied.map(|l| l.index).unwrap_or(0));
        }
    }
    for (gid, (has_leader, applied)) in groups {
        if gid == META_GROUP_ID {
            continue;
        }
        if !has_leader {
            return Err(format!("group {gid} has no leader"));
        }
        if applied.iter().min() != applied.iter().max() {
            return Err(format!("group {gid} replicas applied {applied:?}"));
        }
    }
    Ok(())
}
