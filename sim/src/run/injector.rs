//! The fault injector: applies the run's fault schedule as simulated time
//! passes, behind the gates that keep damage within what the system
//! promises to survive, and heals each fault when its duration is over (or
//! when the fault phase ends).

use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::NodeId;
use std::collections::HashSet;
use std::hash::Hash;
use std::hash::Hasher;

use super::damage::Rot;
use super::damage::apply_rot;
use super::damage::blobs_on_record;
use super::damage::exposed_blobs_healed;
use super::damage::no_damage_outstanding;
use super::hosts::NodeSlot;
use super::hosts::Slots;
use super::hosts::node_name;
use super::invariants::survives_disk_loss;
use crate::faults::Fault;
use crate::faults::Scheduled;
use shadowstore_base::ids::META_GROUP_ID;
use shadowstore_node::storage::memory_engine::MemoryEngine;

pub struct Injector {
    /// The schedule; a disk loss the gate refused is rewritten to the crash
    /// applied instead, so the report shows what happened.
    faults: Vec<Scheduled>,
    next_fault: usize,
    /// (time, fault, nodes it cut off) to undo each applied fault.
    heals: Vec<(u64, Fault, Vec<usize>)>,
    /// Identities of nodes whose disk was lost.
    lost_nodes: HashSet<NodeId>,
    /// Rotted records not yet repaired.
    rots: Vec<Rot>,
    /// Blobs on record at the last damage fault (see `exposed_blobs_healed`).
    exposed: HashSet<(GroupId, u64)>,
}

impl Injector {
    pub fn new(faults: Vec<Scheduled>) -> Self {
        Injector {
            faults,
            next_fault: 0,
            heals: Vec::new(),
            lost_nodes: HashSet::new(),
            rots: Vec::new(),
            exposed: HashSet::new(),
        }
    }

    /// The faults as applied.
    pub fn into_faults(self) -> Vec<Scheduled> {
        self.faults
    }

    /// Applies every fault due at `now`, hashing what it did into `trace`.
    pub fn inject_due(&mut self, sim: &mut turmoil::Sim<'_>, slots: &Slots, now: u64, trace: &mut impl Hasher) {
        let nodes = slots.borrow().len();
        while self.next_fault < self.faults.len() && self.faults[self.next_fault].at_ms <= now {
            let mut f = self.faults[self.next_fault].fault;
            self.next_fault += 1;
            self.rots.retain(|r| r.outstanding(&slots.borrow()));
            if let Fault::WipeDisk { node, down_ms } = f
                && let Err(why) = self.damage_gate(&slots.borrow(), false)
            {
                // Three replicas survive one lost disk, not a second one
                // before the first was re-replicated: that needs an
                // operator, so the simulator downgrades it to a crash (and
                // reports the fault it applied).
                tracing::info!(node, %why, "disk loss downgraded to a crash");
                f = Fault::Crash { node, down_ms, torn_batches: 0 };
                self.faults[self.next_fault - 1].fault = f;
            }
            if let Fault::WipeDisk { node, .. } = f {
                self.exposed = blobs_on_record(&slots.borrow());
                if let Some(id) = slots.borrow()[node].ctx.as_ref().and_then(|c| c.cluster.identity()) {
                    self.lost_nodes.insert(id.node_id);
                }
            }
            let isolated = match f {
                Fault::RotShard { .. } | Fault::RotRaft { .. } => {
                    self.rot(&slots.borrow(), f);
                    vec![]
                }
                _ => apply_fault(sim, slots, nodes, f),
            };
            (now, f, &isolated).hash(trace);
            let dur = match f {
                Fault::Crash { down_ms, .. } | Fault::WipeDisk { down_ms, .. } | Fault::CrashLeader { down_ms, .. } => {
                    down_ms
                }
                Fault::RotShard { .. } | Fault::RotRaft { .. } => 0,
                Fault::Isolate { duration_ms, .. }
                | Fault::OneWay { duration_ms, .. }
                | Fault::IsolateLeader { duration_ms, .. } => duration_ms,
            };
            self.heals.push((now + dur, f, isolated));
        }
    }

    /// Heals every fault whose time is over, and all of them once the fault
    /// phase ended (`now >= fault_end_ms`).
    pub fn heal_due(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        nodes: usize,
        now: u64,
        fault_end_ms: u64,
        trace: &mut impl Hasher,
    ) {
        let mut i = 0;
        while i < self.heals.len() {
            if self.heals[i].0 <= now || now >= fault_end_ms {
                let (_, f, isolated) = self.heals.swap_remove(i);
                heal_fault(sim, nodes, f, &isolated);
                (now, "heal", f).hash(trace);
            } else {
                i += 1;
            }
        }
    }

    /// Whether damage may be applied now: no earlier damage outstanding,
    /// every blob exposed to the last damage healed, and (for a lost disk,
    /// or a rotted Raft record which takes a replica out the same way)
    /// every group survives losing one more voter's disk.
    fn damage_gate(&self, slots: &[NodeSlot], rot_shard: bool) -> Result<(), String> {
        no_damage_outstanding(&self.rots)
            .and_then(|()| exposed_blobs_healed(slots, &self.exposed))
            .and_then(|()| if rot_shard { Ok(()) } else { survives_disk_loss(slots, &self.lost_nodes) })
    }

    /// A rot fault, behind the damage gate.
    fn rot(&mut self, slots: &[NodeSlot], f: Fault) {
        match self.damage_gate(slots, matches!(f, Fault::RotShard { .. })) {
            Ok(()) => {
                let on_record = blobs_on_record(slots);
                if let Some(rot) = apply_rot(slots, f) {
                    self.rots.push(rot);
                    self.exposed = on_record;
                }
            }
            Err(why) => tracing::info!(%why, "rot skipped"),
        }
    }
}

/// Applies `f`; returns the nodes it cut off (for the heal).
fn apply_fault(sim: &mut turmoil::Sim<'_>, slots: &Slots, nodes: usize, f: Fault) -> Vec<usize> {
    let others = |n: usize| (0..nodes).filter(move |&j| j != n).map(node_name).collect::<Vec<_>>();
    match f {
        Fault::Crash { node, .. } | Fault::WipeDisk { node, .. } if !sim.is_host_running(node_name(node)) => vec![],
        Fault::Crash { node, torn_batches, .. } => {
            sim.crash(node_name(node));
            let mut all = slots.borrow_mut();
            all[node].ctx = None;
            all[node].engine.crash(torn_batches);
            vec![]
        }
        Fault::WipeDisk { node, .. } => {
            sim.crash(node_name(node));
            let mut all = slots.borrow_mut();
            all[node].ctx = None;
            all[node].engine = MemoryEngine::new();
            all[node].wiped = true;
            vec![]
        }
        // Applied by `apply_rot`, behind its gate.
        Fault::RotShard { .. } | Fault::RotRaft { .. } => vec![],
        Fault::Isolate { node, .. } => {
            for o in others(node) {
                sim.partition(node_name(node), o);
            }
            vec![node]
        }
        Fault::OneWay { from, to, .. } => {
            sim.partition_oneway(node_name(from), node_name(to));
            vec![from, to]
        }
        Fault::IsolateLeader { nth, .. } => match leader_node(&slots.borrow(), nth) {
            Some(node) => {
                for o in others(node) {
                    sim.partition(node_name(node), o);
                }
                vec![node]
            }
            None => vec![],
        },
        Fault::CrashLeader { nth, down_ms, torn_batches } => {
            let leader = leader_node(&slots.borrow(), nth);
            match leader {
                Some(node) => {
                    apply_fault(sim, slots, nodes, Fault::Crash { node, down_ms, torn_batches });
                    vec![node]
                }
                None => vec![],
            }
        }
    }
}

/// The node leading the `nth` resource group (by group id, modulo their
/// number) right now.
fn leader_node(slots: &[NodeSlot], nth: usize) -> Option<usize> {
    let mut leaders: Vec<(GroupId, usize)> = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        let Some(ctx) = &s.ctx else { continue };
        for g in ctx.cluster.registry.all() {
            if g.id != META_GROUP_ID && g.is_leader() {
                leaders.push((g.id, i));
            }
        }
    }
    leaders.sort();
    leaders.get(nth % leaders.len().max(1)).map(|&(_, i)| i)
}

fn heal_fault(sim: &mut turmoil::Sim<'_>, nodes: usize, f: Fault, isolated: &[usize]) {
    match f {
        Fault::Crash { node, .. } | Fault::WipeDisk { node, .. } => {
            if !sim.is_host_running(node_name(node)) {
                sim.bounce(node_name(node));
            }
        }
        Fault::RotShard { .. } | Fault::RotRaft { .. } => {}
        Fault::CrashLeader { .. } => {
            for &node in isolated {
                if !sim.is_host_running(node_name(node)) {
                    sim.bounce(node_name(node));
                }
            }
        }
        Fault::Isolate { .. } | Fault::IsolateLeader { .. } => {
            for &node in isolated {
                for o in (0..nodes).filter(|&j| j != node) {
                    sim.repair(node_name(node), node_name(o));
                }
            }
        }
        Fault::OneWay { .. } => {
            if let [from, to] = isolated {
                sim.repair_oneway(node_name(*from), node_name(*to));
            }
        }
    }
}
