//! The meta state's shadow commands: adding a shadow (a directory replica
//! with role Shadow and its record), compare-and-set transitions with the
//! capacity check, removal after draining, operator flags, the routing
//! table and the invariants. The records they change are `meta::shadow`.

use std::collections::BTreeMap;

use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_placement::ShadowPhase;
use shadowstore_placement::bounds::HISTORY_EVENTS_MAX;
use shadowstore_placement::bounds::SHADOWS_PER_RESOURCE_MAX;
use shadowstore_placement::shift::ShadowExpect;

use super::command::MetaResponse;
use super::directory::ReplicaRecord;
use super::directory::ReplicaRole;
use super::shadow::RouteEntry;
use super::shadow::RoutingTable;
use super::shadow::ShadowEvent;
use super::shadow::ShadowRecord;
use super::shadow::WEIGHT_TOTAL_PERMILLE;
use super::state::MetaState;

impl MetaState {
    /// Read capacity a replica on `node` gives one resource: the node's
    /// capacity shared among the replicas it hosts.
    pub fn replica_capacity_rps(&self, node: NodeId, hosted: &BTreeMap<NodeId, usize>) -> f64 {
        let shared_by = hosted.get(&node).copied().unwrap_or(1).max(1);
        let capacity = self.nodes.get(&node).map(|n| n.labels.read_capacity_rps).unwrap_or(0);
        capacity as f64 / shared_by as f64
    }

    /// The share (per mille) of `resource`'s reads that shadow `replica`
    /// can serve: its capacity over the capacity of the primaries and every
    /// ready shadow, itself included.
    pub fn shadow_share_permille(&self, resource: &str, replica: ReplicaId) -> u32 {
        let Some(rec) = self.resources.get(resource) else { return 0 };
        let hosted = self.replicas_per_node();
        let mut total = 0.0;
        let mut mine = 0.0;
        for r in &rec.replicas {
            let counts = match r.role {
                ReplicaRole::Primary => true,
                ReplicaRole::Shadow => {
                    r.replica_id == replica
                        || self.shadows.shadow(resource, r.replica_id).is_some_and(|s| s.phase.is_ready())
                }
            };
            if !counts {
                continue;
            }
            let c = self.replica_capacity_rps(r.node_id, &hosted);
            total += c;
            if r.replica_id == replica {
                mine = c;
            }
        }
        if total <= 0.0 { 0 } else { ((mine / total) * WEIGHT_TOTAL_PERMILLE as f64).floor() as u32 }
    }

    /// `resource`'s routing table: each shadow's weight, the rest shared
    /// equally by the primaries.
    pub fn routing_table(&self, resource: &str) -> Option<RoutingTable> {
        let rec = self.resources.get(resource)?;
        let shadows = self.shadows.of(resource);
        let mut entries = Vec::with_capacity(rec.replicas.len());
        let mut shadow_total = 0;
        for r in rec.shadows() {
            let w = shadows.and_then(|s| s.shadows.get(&r.replica_id)).map(|s| s.weight_permille).unwrap_or(0);
            shadow_total += w;
            entries.push(RouteEntry {
                replica_id: r.replica_id,
                node_id: r.node_id,
                role: ReplicaRole::Shadow,
                weight_permille: w,
            });
        }
        let primaries: Vec<&ReplicaRecord> = rec.primaries().collect();
        let rest = WEIGHT_TOTAL_PERMILLE.saturating_sub(shadow_total);
        let n = primaries.len().max(1) as u32;
        for (i, r) in primaries.iter().enumerate() {
            let w = rest / n + u32::from((i as u32) < rest % n);
            entries.push(RouteEntry {
                replica_id: r.replica_id,
                node_id: r.node_id,
                role: ReplicaRole::Primary,
                weight_permille: w,
            });
        }
        Some(RoutingTable { version: self.shadows.routing_version(resource), entries })
    }

    pub(super) fn add_shadow(&mut self, resource: &str, node: NodeId, by_operator: bool, now_ms: u64) -> MetaResponse {
        let rejected = |reason: String| MetaResponse::Rejected { reason };
        if !self.nodes.contains_key(&node) {
            return rejected(format!("node {node} is not a member"));
        }
        let Some(rec) = self.resources.get(resource) else { return MetaResponse::NotFound };
        if let Some(r) = rec.replica_on(node) {
            return rejected(format!("node {node} already hosts replica {} of {resource}", r.replica_id));
        }
        if rec.shadows().count() >= SHADOWS_PER_RESOURCE_MAX {
            return rejected(format!("{resource} already has the maximum of {SHADOWS_PER_RESOURCE_MAX} shadows"));
        }
        let replica_id = self.next_replica_id;
        self.next_replica_id = self.next_replica_id.next();
        let Some(rec) = self.resources.get_mut(resource) else { return MetaResponse::NotFound };
        rec.replicas.push(ReplicaRecord { replica_id, node_id: node, role: ReplicaRole::Shadow, replaces: None });
        let created = rec.clone();
        self.replica_index.insert(replica_id, node);
        let entry = self.shadows.resources.entry(resource.to_string()).or_default();
        entry.shadows.insert(
            replica_id,
            ShadowRecord {
                replica_id,
                node_id: node,
                phase: ShadowPhase::Planned,
                step: 0,
                weight_permille: 0,
                last_healthy_permille: 0,
                share_permille: 0,
                added_at_ms: now_ms,
                since_ms: now_ms,
                pinned: false,
                halted: false,
                by_operator,
            },
        );
        entry.routing_version += 1;
        let by = if by_operator { "operator" } else { "planner" };
        entry.push_event(ShadowEvent {
            at_ms: now_ms,
            replica_id,
            node_id: node,
            kind: "added".into(),
            from_permille: 0,
            to_permille: 0,
            text: format!("shadow added on node {node} by the {by}"),
        });
        MetaResponse::Created(created)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn transition_shadow(
        &mut self,
        resource: &str,
        replica: ReplicaId,
        expect: &ShadowExpect,
        to: ShadowPhase,
        step: u8,
        weight_permille: u32,
        kind: &str,
        text: &str,
        now_ms: u64,
    ) -> MetaResponse {
        let rejected = |reason: String| MetaResponse::Rejected { reason };
        let Some(current) = self.shadows.shadow(resource, replica).cloned() else { return MetaResponse::NotFound };
        if current.expect() != *expect {
            return rejected(format!(
                "shadow {replica} is {} at step {} weight {}‰, not {} at step {} weight {}‰",
                current.phase, current.step, current.weight_permille, expect.phase, expect.step, expect.weight_permille
            ));
        }
        use ShadowPhase::*;
        let allowed = matches!(
            (current.phase, to),
            (Planned, Syncing)
                | (Syncing, Ready)
                | (Ready, Shifting)
                | (Shifting, Shifting)
                | (Shifting, Ready)
                | (Planned | Syncing | Ready | Shifting, Draining)
        );
        if !allowed {
            return rejected(format!("shadow {replica} cannot go from {} to {to}", current.phase));
        }
        if weight_permille > 0 && to != Shifting {
            return rejected(format!("only a shifting shadow takes reads, not a {to} one"));
        }
        if step as usize >= self.shadows.settings.steps_pct.len().max(1) {
            return rejected(format!("step {step} is beyond the schedule {:?}", self.shadows.settings.steps_pct));
        }
        // Capacity before weight: never more than the shadow can serve.
        let share = if to.is_ready() { self.shadow_share_permille(resource, replica) } else { 0 };
        if weight_permille > share {
            return rejected(format!(
                "weight {weight_permille}‰ exceeds the {share}‰ of reads shadow {replica} has capacity for"
            ));
        }
        let others: u32 = self.shadows.resources[resource]
            .shadows
            .values()
            .filter(|s| s.replica_id != replica)
            .map(|s| s.weight_permille)
            .sum();
        if others + weight_permille > WEIGHT_TOTAL_PERMILLE {
            return rejected(format!("weights would exceed {WEIGHT_TOTAL_PERMILLE}‰"));
        }
        let entry = self.shadows.resources.get_mut(resource).expect("checked above");
        let s = entry.shadows.get_mut(&replica).expect("checked above");
        // A promotion leaves a step whose windows passed: its weight is the
        // last healthy one, where a later rollback may return.
        if kind == "step" && weight_permille > s.weight_permille {
            s.last_healthy_permille = s.weight_permille;
        }
        s.last_healthy_permille = s.last_healthy_permille.min(share);
        let from_permille = s.weight_permille;
        let changed = s.phase != to || s.weight_permille != weight_permille;
        s.phase = to;
        s.step = step;
        s.weight_permille = weight_permille;
        s.share_permille = share;
        s.since_ms = now_ms;
        let node_id = s.node_id;
        if changed {
            entry.routing_version += 1;
        }
        entry.push_event(ShadowEvent {
            at_ms: now_ms,
            replica_id: replica,
            node_id,
            kind: kind.into(),
            from_permille,
            to_permille: weight_permille,
            text: text.into(),
        });
        MetaResponse::Updated
    }

    pub(super) fn remove_shadow(
        &mut self,
        resource: &str,
        replica: ReplicaId,
        text: &str,
        cost_micros: u64,
        now_ms: u64,
    ) -> MetaResponse {
        let Some(current) = self.shadows.shadow(resource, replica).cloned() else { return MetaResponse::NotFound };
        // Retired only after its weight has been zero: a shifting or ready
        // shadow drains first.
        if current.weight_permille != 0
            || !matches!(current.phase, ShadowPhase::Draining | ShadowPhase::Planned | ShadowPhase::Syncing)
        {
            return MetaResponse::Rejected {
                reason: format!(
                    "shadow {replica} is {} at weight {}‰: it drains (weight 0) before it is removed",
                    current.phase, current.weight_permille
                ),
            };
        }
        if let Some(rec) = self.resources.get_mut(resource) {
            rec.replicas.retain(|r| r.replica_id != replica);
        }
        self.replica_index.remove(&replica);
        let entry = self.shadows.resources.get_mut(resource).expect("found above");
        entry.shadows.remove(&replica);
        entry.routing_version += 1;
        entry.retired_cost_micros = entry.retired_cost_micros.saturating_add(cost_micros);
        entry.push_event(ShadowEvent {
            at_ms: now_ms,
            replica_id: replica,
            node_id: current.node_id,
            kind: "retired".into(),
            from_permille: 0,
            to_permille: 0,
            text: text.into(),
        });
        MetaResponse::Deleted
    }

    pub(super) fn flag_shadow(
        &mut self,
        resource: &str,
        replica: ReplicaId,
        pinned: Option<bool>,
        halted: Option<bool>,
        now_ms: u64,
    ) -> MetaResponse {
        let Some(entry) = self.shadows.resources.get_mut(resource) else { return MetaResponse::NotFound };
        let Some(s) = entry.shadows.get_mut(&replica) else { return MetaResponse::NotFound };
        let mut kinds = Vec::new();
        if let Some(p) = pinned {
            s.pinned = p;
            kinds.push(if p { "pin" } else { "unpin" });
        }
        if let Some(h) = halted {
            s.halted = h;
            kinds.push(if h { "halt" } else { "resume" });
        }
        let (node_id, w) = (s.node_id, s.weight_permille);
        for kind in kinds {
            entry.push_event(ShadowEvent {
                at_ms: now_ms,
                replica_id: replica,
                node_id,
                kind: kind.into(),
                from_permille: w,
                to_permille: w,
                text: format!("operator: {kind}"),
            });
        }
        MetaResponse::Updated
    }

    pub(super) fn check_shadow_invariants(&self) -> Result<(), String> {
        for (name, rs) in &self.shadows.resources {
            let rec =
                self.resources.get(name).ok_or_else(|| format!("shadow state of an unknown resource {name:?}"))?;
            if rs.history.len() > HISTORY_EVENTS_MAX {
                return Err(format!("{} shadow history events of {name}", rs.history.len()));
            }
            let mut total = 0;
            for s in rs.shadows.values() {
                let r = rec
                    .replicas
                    .iter()
                    .find(|r| r.replica_id == s.replica_id)
                    .ok_or_else(|| format!("shadow {} of {name} without its replica", s.replica_id))?;
                if (r.role, r.node_id) != (ReplicaRole::Shadow, s.node_id) {
                    return Err(format!("shadow record and replica {} of {name} disagree", s.replica_id));
                }
                if s.weight_permille != 0 && s.phase != ShadowPhase::Shifting {
                    return Err(format!("a {} shadow of {name} has weight", s.phase));
                }
                total += s.weight_permille;
            }
            if total > WEIGHT_TOTAL_PERMILLE {
                return Err(format!("shadow weights of {name} sum to {total}"));
            }
            if rec.shadows().count() != rs.shadows.len() {
                return Err(format!("shadow replicas of {name} without records"));
            }
        }
        if let Some(rec) = self
            .resources
            .values()
            .find(|rec| rec.shadows().count() != 0 && !self.shadows.resources.contains_key(&rec.name))
        {
            return Err(format!("shadow replicas of {} without shadow state", rec.name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use shadowstore_base::ids::RequestId;

    use super::*;
    use crate::meta::command::MetaCommand;
    use crate::meta::directory::NodeLabels;
    use crate::meta::directory::StorageParams;

    /// Four nodes of 100 reads/s, resource "r" on nodes 1..=3.
    fn cluster() -> MetaState {
        let labels = |i: u64| NodeLabels { addr: format!("a:{i}"), read_capacity_rps: 100, ..Default::default() };
        let mut s = MetaState::default();
        s.apply(&MetaCommand::Bootstrap { now_ms: 1, labels: labels(1) });
        for i in 2..=4 {
            s.apply(&MetaCommand::RegisterNode { request: RequestId::default(), now_ms: 1, labels: labels(i) });
        }
        let r = s.apply(&MetaCommand::CreateResource {
            request: RequestId::default(),
            now_ms: 2,
            name: "r".into(),
            replication_factor: 3,
            storage: StorageParams::default_for(3),
            nodes: vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)],
        });
        assert!(matches!(r, MetaResponse::Created(_)), "{r:?}");
        s
    }

    fn add(s: &mut MetaState, node: u64) -> MetaResponse {
        s.apply(&MetaCommand::AddShadow {
            now_ms: 10,
            resource: "r".into(),
            node: NodeId::new(node),
            by_operator: true,
        })
    }

    fn go(s: &mut MetaState, replica: ReplicaId, to: ShadowPhase, step: u8, weight: u32) -> MetaResponse {
        let expect = s.shadows.shadow("r", replica).unwrap().expect();
        s.apply(&MetaCommand::TransitionShadow {
            now_ms: 20,
            resource: "r".into(),
            replica,
            expect,
            to,
            step,
            weight_permille: weight,
            kind: "step".into(),
            text: String::new(),
        })
    }

    fn shadow_id(s: &MetaState) -> ReplicaId {
        s.resources["r"].shadows().next().unwrap().replica_id
    }

    #[test]
    fn a_shadow_is_a_directory_replica_with_a_record_and_never_a_primary() {
        let mut s = cluster();
        let before = s.clone();
        for node in [1, 9] {
            assert!(matches!(add(&mut s, node), MetaResponse::Rejected { .. }), "node {node}");
        }
        assert_eq!(
            (&s.resources, &s.shadows, &s.replica_index, s.next_replica_id),
            (&before.resources, &before.shadows, &before.replica_index, before.next_replica_id),
            "a refused add changes nothing"
        );
        assert!(matches!(add(&mut s, 4), MetaResponse::Created(_)));
        let id = shadow_id(&s);
        let rec = s.resources["r"].clone();
        assert_eq!(rec.primaries().count(), 3);
        assert_eq!(rec.replica_on(NodeId::new(4)).unwrap().role, ReplicaRole::Shadow);
        assert_eq!(s.shadows.shadow("r", id).unwrap().phase, ShadowPhase::Planned);
        assert_eq!(s.replica_index.get(&id), Some(&NodeId::new(4)));
        // A lost shadow is retired, not replaced; a primary's replacement
        // never lands on the node holding the shadow.
        let replace_shadow =
            MetaCommand::ReplaceReplica { now_ms: 11, name: "r".into(), old_replica: id, new_node: NodeId::new(4) };
        assert!(matches!(s.apply(&replace_shadow), MetaResponse::Rejected { .. }));
        let primary = rec.replica_on(NodeId::new(1)).unwrap().replica_id;
        let onto_shadow = MetaCommand::ReplaceReplica {
            now_ms: 11,
            name: "r".into(),
            old_replica: primary,
            new_node: NodeId::new(4),
        };
        assert!(matches!(s.apply(&onto_shadow), MetaResponse::Rejected { .. }));
    }

    #[test]
    fn transitions_are_compare_and_set_and_capacity_comes_before_weight() {
        let mut s = cluster();
        add(&mut s, 4);
        let id = shadow_id(&s);
        assert!(
            matches!(go(&mut s, id, ShadowPhase::Shifting, 0, 10), MetaResponse::Rejected { .. }),
            "planned cannot shift"
        );
        assert_eq!(go(&mut s, id, ShadowPhase::Syncing, 0, 0), MetaResponse::Updated);
        assert!(
            matches!(go(&mut s, id, ShadowPhase::Ready, 0, 50), MetaResponse::Rejected { .. }),
            "weight while not shifting"
        );
        assert_eq!(go(&mut s, id, ShadowPhase::Ready, 0, 0), MetaResponse::Updated);
        // Four equal nodes: the shadow can take a quarter of the reads.
        assert_eq!(s.shadow_share_permille("r", id), 250);
        let v0 = s.shadows.routing_version("r");
        assert!(
            matches!(go(&mut s, id, ShadowPhase::Shifting, 0, 251), MetaResponse::Rejected { .. }),
            "over capacity"
        );
        assert_eq!(go(&mut s, id, ShadowPhase::Shifting, 0, 25), MetaResponse::Updated);
        assert!(s.shadows.routing_version("r") > v0, "a weight change bumps the routing version");
        // A stale expectation changes nothing.
        let stale = MetaCommand::TransitionShadow {
            now_ms: 30,
            resource: "r".into(),
            replica: id,
            expect: ShadowExpect { phase: ShadowPhase::Ready, step: 0, weight_permille: 0 },
            to: ShadowPhase::Shifting,
            step: 1,
            weight_permille: 62,
            kind: "step".into(),
            text: String::new(),
        };
        let before = s.clone();
        assert!(matches!(s.apply(&stale), MetaResponse::Rejected { .. }));
        assert_eq!(s.shadows, before.shadows);
        let t = s.routing_table("r").unwrap();
        assert_eq!(t.entries.iter().map(|e| e.weight_permille).sum::<u32>(), WEIGHT_TOTAL_PERMILLE);
        assert_eq!(t.entries.iter().find(|e| e.replica_id == id).unwrap().weight_permille, 25);
        // Removal only after the weight went to zero (draining).
        assert!(matches!(
            s.apply(&MetaCommand::RemoveShadow {
                now_ms: 40,
                resource: "r".into(),
                replica: id,
                text: String::new(),
                cost_micros: 7,
            }),
            MetaResponse::Rejected { .. }
        ));
        assert_eq!(go(&mut s, id, ShadowPhase::Shifting, 1, 62), MetaResponse::Updated);
        assert_eq!(s.shadows.shadow("r", id).unwrap().last_healthy_permille, 25, "the step it left was healthy");
        assert_eq!(go(&mut s, id, ShadowPhase::Draining, 0, 0), MetaResponse::Updated);
        assert_eq!(s.shadows.of("r").unwrap().retired_cost_micros, 0, "a refused removal charges nothing");
        let remove = MetaCommand::RemoveShadow {
            now_ms: 40,
            resource: "r".into(),
            replica: id,
            text: "done".into(),
            cost_micros: 7,
        };
        assert_eq!(s.apply(&remove), MetaResponse::Deleted);
        assert_eq!(s.shadows.of("r").unwrap().retired_cost_micros, 7, "the ledger keeps what the shadow cost");
        assert!(s.resources["r"].replica_on(NodeId::new(4)).is_none());
        assert!(!s.replica_index.contains_key(&id));
        assert_eq!(s.shadows.of("r").unwrap().history.back().unwrap().kind, "retired");
    }

    #[test]
    fn history_is_bounded_and_deleting_the_resource_forgets_its_shadows() {
        let mut s = cluster();
        add(&mut s, 4);
        let id = shadow_id(&s);
        for i in 0..(2 * HISTORY_EVENTS_MAX) {
            let pinned = Some(i % 2 == 0);
            s.apply(&MetaCommand::FlagShadow { now_ms: 50, resource: "r".into(), replica: id, pinned, halted: None });
        }
        assert_eq!(s.shadows.of("r").unwrap().history.len(), HISTORY_EVENTS_MAX);
        s.apply(&MetaCommand::DeleteResource { request: RequestId::default(), now_ms: 60, name: "r".into() });
        assert!(s.shadows.of("r").is_none());
        assert!(!s.replica_index.contains_key(&id));
    }
}
