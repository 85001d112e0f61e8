//! The state machine of the meta group: cluster members and the resource
//! directory.
//!
//! The meta group allocates every identity in the cluster (node ids,
//! replica ids, group ids) from counters in this state, so identities are
//! unique and never reused. Placement of a new resource's replicas is chosen
//! by the proposing leader (it knows which nodes are alive) and validated
//! here; applying is deterministic.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde::Serialize;

use crate::dedup::Admission;
use crate::dedup::Sessions;
use shadowstore_base::ids::BOOTSTRAP_META_REPLICA_ID;
use shadowstore_base::ids::BOOTSTRAP_NODE_ID;
use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::limits::CLUSTER_NODES_MAX;
use shadowstore_base::limits::CLUSTER_RESOURCES_MAX;
use shadowstore_base::limits::REPLICATION_FACTORS_ALLOWED;
use shadowstore_placement::Prices;

pub use super::command::{MetaCommand, MetaResponse};
pub use super::directory::{NodeLabels, NodeRecord, ReplicaRecord, ReplicaRole, ResourceRecord, StorageParams};
use super::placement::PlacementMeta;
use super::shadow::ShadowMeta;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaState {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub resources: BTreeMap<String, ResourceRecord>,
    /// group id → resource name.
    pub groups: BTreeMap<GroupId, String>,
    /// Nodes replaced by a new registration from their address.
    pub retired_nodes: BTreeSet<NodeId>,
    /// Where every replica (meta and resource) lives: replica id → node.
    /// Derived from `nodes` and `resources`, kept in step by `apply`.
    pub replica_index: BTreeMap<ReplicaId, NodeId>,
    pub next_node_id: NodeId,
    pub next_replica_id: ReplicaId,
    pub next_group_id: GroupId,
    pub sessions: Sessions<MetaResponse>,
    /// Placement settings, decisions, priorities, operator prices and
    /// region distances (last: the encoding of the fields before it is
    /// unchanged since they were separate fields here).
    pub placement: PlacementMeta,
    /// Shadow replicas' phases and weights, routing versions, history and
    /// shift settings (meta_state format 2; absent from format 1).
    pub shadows: ShadowMeta,
}

/// `MetaState` as formats 0 and 1 of the `meta_state` family stored it
/// (before the shadow sub-state), for the upgrade of a stored snapshot.
#[derive(Deserialize)]
pub struct MetaStateFormat1 {
    nodes: BTreeMap<NodeId, NodeRecord>,
    resources: BTreeMap<String, ResourceRecord>,
    groups: BTreeMap<GroupId, String>,
    retired_nodes: BTreeSet<NodeId>,
    replica_index: BTreeMap<ReplicaId, NodeId>,
    next_node_id: NodeId,
    next_replica_id: ReplicaId,
    next_group_id: GroupId,
    sessions: Sessions<MetaResponse>,
    placement: PlacementMeta,
}

impl From<MetaStateFormat1> for MetaState {
    fn from(o: MetaStateFormat1) -> MetaState {
        MetaState {
            nodes: o.nodes,
            resources: o.resources,
            groups: o.groups,
            retired_nodes: o.retired_nodes,
            replica_index: o.replica_index,
            next_node_id: o.next_node_id,
            next_replica_id: o.next_replica_id,
            next_group_id: o.next_group_id,
            sessions: o.sessions,
            placement: o.placement,
            shadows: ShadowMeta::default(),
        }
    }
}

impl Default for MetaState {
    fn default() -> Self {
        MetaState {
            nodes: BTreeMap::new(),
            resources: BTreeMap::new(),
            groups: BTreeMap::new(),
            retired_nodes: BTreeSet::new(),
            replica_index: BTreeMap::new(),
            next_node_id: BOOTSTRAP_NODE_ID.next(),
            next_replica_id: BOOTSTRAP_META_REPLICA_ID.next(),
            next_group_id: GroupId::new(1),
            sessions: Sessions::default(),
            placement: PlacementMeta::default(),
            shadows: ShadowMeta::default(),
        }
    }
}

impl MetaState {
    /// A node's prices: the operator's, else what the node announced.
    pub fn prices_of(&self, node: &NodeRecord) -> Prices {
        self.placement.prices_of(node.node_id, &node.labels.prices)
    }

    pub fn apply(&mut self, cmd: &MetaCommand) -> MetaResponse {
        let request = match cmd {
            MetaCommand::Bootstrap { now_ms, .. }
            | MetaCommand::UpdateNode { now_ms, .. }
            | MetaCommand::ReplaceReplica { now_ms, .. }
            | MetaCommand::SetPlacementSettings { now_ms, .. }
            | MetaCommand::SetNodePrices { now_ms, .. }
            | MetaCommand::SetResourcePriority { now_ms, .. }
            | MetaCommand::SetRegionDistance { now_ms, .. }
            | MetaCommand::RecordPlacement { now_ms, .. }
            | MetaCommand::SetPlacementSetting { now_ms, .. }
            | MetaCommand::AddShadow { now_ms, .. }
            | MetaCommand::TransitionShadow { now_ms, .. }
            | MetaCommand::RemoveShadow { now_ms, .. }
            | MetaCommand::FlagShadow { now_ms, .. }
            | MetaCommand::SetShiftSetting { now_ms, .. } => {
                self.sessions.advance(*now_ms);
                None
            }
            MetaCommand::RegisterNode { request, now_ms, .. }
            | MetaCommand::CreateResource { request, now_ms, .. }
            | MetaCommand::DeleteResource { request, now_ms, .. } => {
                self.sessions.advance(*now_ms);
                Some(request)
            }
        };
        if let Some(request) = request {
            match self.sessions.admit(request) {
                Admission::Duplicate(answer) => return answer,
                Admission::Stale => return MetaResponse::StaleRequest,
                Admission::Execute => {}
            }
        }
        let answer = self.execute(cmd);
        if let Some(request) = request {
            self.sessions.record(request, &answer);
        }
        self.check_invariants();
        answer
    }

    /// Applies one command: a dispatch to the method that owns it.
    fn execute(&mut self, cmd: &MetaCommand) -> MetaResponse {
        let now_ms = self.sessions.now_ms();
        match cmd {
            MetaCommand::Bootstrap { labels, .. } => self.bootstrap(labels, now_ms),
            MetaCommand::RegisterNode { labels, .. } => self.register_node(labels, now_ms),
            MetaCommand::UpdateNode { node_id, labels, .. } => self.update_node(*node_id, labels),
            MetaCommand::CreateResource { name, replication_factor, storage, nodes, .. } => {
                self.create_resource(name, *replication_factor, storage, nodes, now_ms)
            }
            MetaCommand::ReplaceReplica { name, old_replica, new_node, .. } => {
                self.replace_replica(name, *old_replica, *new_node)
            }
            MetaCommand::DeleteResource { name, .. } => self.delete_resource(name),
            MetaCommand::SetPlacementSettings { .. }
            | MetaCommand::SetPlacementSetting { .. }
            | MetaCommand::SetNodePrices { .. }
            | MetaCommand::SetResourcePriority { .. }
            | MetaCommand::SetRegionDistance { .. }
            | MetaCommand::RecordPlacement { .. } => {
                let (resources, nodes) = (&self.resources, &self.nodes);
                self.placement.apply(cmd, |r| resources.contains_key(r), |n| nodes.contains_key(&n))
            }
            MetaCommand::AddShadow { resource, node, by_operator, .. } => {
                self.add_shadow(resource, *node, *by_operator, now_ms)
            }
            MetaCommand::TransitionShadow {
                resource, replica, expect, to, step, weight_permille, kind, text, ..
            } => self.transition_shadow(resource, *replica, expect, *to, *step, *weight_permille, kind, text, now_ms),
            MetaCommand::RemoveShadow { resource, replica, text, cost_micros, .. } => {
                self.remove_shadow(resource, *replica, text, *cost_micros, now_ms)
            }
            MetaCommand::FlagShadow { resource, replica, pinned, halted, .. } => {
                self.flag_shadow(resource, *replica, *pinned, *halted, now_ms)
            }
            MetaCommand::SetShiftSetting { setting, .. } => self.shadows.set(setting.clone()),
        }
    }

    fn bootstrap(&mut self, labels: &NodeLabels, now_ms: u64) -> MetaResponse {
        if self.nodes.contains_key(&BOOTSTRAP_NODE_ID) {
            return MetaResponse::Updated;
        }
        self.nodes.insert(
            BOOTSTRAP_NODE_ID,
            NodeRecord {
                node_id: BOOTSTRAP_NODE_ID,
                meta_replica_id: BOOTSTRAP_META_REPLICA_ID,
                labels: labels.clone(),
                joined_at_ms: now_ms,
            },
        );
        self.replica_index.insert(BOOTSTRAP_META_REPLICA_ID, BOOTSTRAP_NODE_ID);
        MetaResponse::Registered { node_id: BOOTSTRAP_NODE_ID, meta_replica_id: BOOTSTRAP_META_REPLICA_ID }
    }

    fn register_node(&mut self, labels: &NodeLabels, now_ms: u64) -> MetaResponse {
        if self.nodes.len() >= CLUSTER_NODES_MAX {
            return MetaResponse::Rejected {
                reason: format!("cluster already has the maximum of {CLUSTER_NODES_MAX} nodes"),
            };
        }
        // A new registration from the address of a member means that
        // member lost its data directory and came back as a new
        // node: the old identity is retired, never reused.
        let replaced: Vec<NodeId> =
            self.nodes.values().filter(|n| n.labels.addr == labels.addr).map(|n| n.node_id).collect();
        for old in replaced {
            if let Some(n) = self.nodes.remove(&old) {
                self.replica_index.remove(&n.meta_replica_id);
            }
            self.placement.forget_node(old);
            self.retired_nodes.insert(old);
        }
        let node_id = self.next_node_id;
        let meta_replica_id = self.next_replica_id;
        self.next_node_id = self.next_node_id.next();
        self.next_replica_id = self.next_replica_id.next();
        self.nodes
            .insert(node_id, NodeRecord { node_id, meta_replica_id, labels: labels.clone(), joined_at_ms: now_ms });
        self.replica_index.insert(meta_replica_id, node_id);
        MetaResponse::Registered { node_id, meta_replica_id }
    }

    fn update_node(&mut self, node_id: NodeId, labels: &NodeLabels) -> MetaResponse {
        if let Some(other) = self.nodes.values().find(|n| n.labels.addr == labels.addr && n.node_id != node_id) {
            return MetaResponse::Rejected {
                reason: format!("address {} belongs to node {}", labels.addr, other.node_id),
            };
        }
        match self.nodes.get_mut(&node_id) {
            None => MetaResponse::NotFound,
            Some(n) => {
                n.labels = labels.clone();
                MetaResponse::Updated
            }
        }
    }

    fn create_resource(
        &mut self,
        name: &str,
        replication_factor: u32,
        storage: &StorageParams,
        nodes: &[NodeId],
        now_ms: u64,
    ) -> MetaResponse {
        if let Some(existing) = self.resources.get(name) {
            return MetaResponse::AlreadyExists(existing.clone());
        }
        if self.resources.len() >= CLUSTER_RESOURCES_MAX {
            return MetaResponse::Rejected {
                reason: format!("cluster already holds the maximum of {CLUSTER_RESOURCES_MAX} resources"),
            };
        }
        if !REPLICATION_FACTORS_ALLOWED.contains(&replication_factor) {
            return MetaResponse::Rejected {
                reason: format!(
                    "replication factor {replication_factor} is not one of {REPLICATION_FACTORS_ALLOWED:?}"
                ),
            };
        }
        if let Err(reason) = storage.validate(replication_factor) {
            return MetaResponse::Rejected { reason };
        }
        let distinct: BTreeSet<_> = nodes.iter().collect();
        if nodes.len() != replication_factor as usize || distinct.len() != nodes.len() {
            return MetaResponse::Rejected {
                reason: format!("need {replication_factor} distinct nodes, got {nodes:?}"),
            };
        }
        if let Some(n) = nodes.iter().find(|n| !self.nodes.contains_key(n)) {
            return MetaResponse::Rejected { reason: format!("node {n} is not a member") };
        }
        let group_id = self.next_group_id;
        self.next_group_id = self.next_group_id.next();
        // The first replica initializes the group and usually becomes
        // its first leader: rotate so leadership spreads over nodes.
        let mut order = nodes.to_vec();
        let shift = (group_id.get() % order.len() as u64) as usize;
        order.rotate_left(shift);
        let mut replicas = Vec::with_capacity(nodes.len());
        for &node_id in &order {
            replicas.push(ReplicaRecord {
                replica_id: self.next_replica_id,
                node_id,
                role: ReplicaRole::Primary,
                replaces: None,
            });
            self.next_replica_id = self.next_replica_id.next();
        }
        let record = ResourceRecord {
            name: name.to_string(),
            group_id,
            replication_factor,
            storage: *storage,
            initial_replicas: replicas.iter().map(|r| r.replica_id).collect(),
            replicas,
            created_at_ms: now_ms,
        };
        for r in &record.replicas {
            self.replica_index.insert(r.replica_id, r.node_id);
        }
        self.resources.insert(name.to_string(), record.clone());
        self.groups.insert(group_id, name.to_string());
        MetaResponse::Created(record)
    }

    fn delete_resource(&mut self, name: &str) -> MetaResponse {
        match self.resources.remove(name) {
            None => MetaResponse::NotFound,
            Some(r) => {
                self.groups.remove(&r.group_id);
                for rep in &r.replicas {
                    self.replica_index.remove(&rep.replica_id);
                }
                self.placement.forget_resource(name);
                self.shadows.forget_resource(name);
                MetaResponse::Deleted
            }
        }
    }

    fn replace_replica(&mut self, name: &str, old_replica: ReplicaId, new_node: NodeId) -> MetaResponse {
        if !self.nodes.contains_key(&new_node) {
            return MetaResponse::Rejected { reason: format!("node {new_node} is not a member") };
        }
        let next = self.next_replica_id;
        let Some(r) = self.resources.get_mut(name) else { return MetaResponse::NotFound };
        let Some(pos) = r.replicas.iter().position(|x| x.replica_id == old_replica) else {
            return MetaResponse::Rejected { reason: format!("replica {old_replica} is not a replica of {name}") };
        };
        // The replaced replica's own node may take the new one (a corrupt
        // replica replaced in place); any other node of the resource not.
        if r.replicas.iter().any(|x| x.node_id == new_node && x.replica_id != old_replica) {
            return MetaResponse::Rejected { reason: format!("node {new_node} already hosts a replica of {name}") };
        }
        let role = r.replicas[pos].role;
        if role == ReplicaRole::Shadow {
            return MetaResponse::Rejected {
                reason: format!("replica {old_replica} of {name} is a shadow: a lost shadow is retired, not replaced"),
            };
        }
        r.replicas[pos] = ReplicaRecord { replica_id: next, node_id: new_node, role, replaces: Some(old_replica) };
        self.next_replica_id = self.next_replica_id.next();
        self.replica_index.remove(&old_replica);
        self.replica_index.insert(next, new_node);
        let created = r.clone();
        self.shadows.membership_changed(name);
        MetaResponse::Created(created)
    }

    /// Structural invariants, asserted after every apply (the full index
    /// comparison only in debug builds: it is linear in the directory).
    fn check_invariants(&self) {
        assert_eq!(self.resources.len(), self.groups.len());
        self.placement.check_invariants(|r| self.resources.contains_key(r));
        self.check_shadow_invariants();
        debug_assert_eq!(self.replica_index, self.derive_replica_index());
        for r in self.resources.values() {
            assert!(r.group_id < self.next_group_id, "group id {} not allocated", r.group_id);
            assert_eq!(self.groups.get(&r.group_id), Some(&r.name));
            for rep in &r.replicas {
                assert!(rep.replica_id < self.next_replica_id, "replica id {} not allocated", rep.replica_id);
            }
        }
    }

    fn derive_replica_index(&self) -> BTreeMap<ReplicaId, NodeId> {
        let mut index: BTreeMap<ReplicaId, NodeId> =
            self.nodes.values().map(|n| (n.meta_replica_id, n.node_id)).collect();
        for r in self.resources.values() {
            index.extend(r.replicas.iter().map(|rep| (rep.replica_id, rep.node_id)));
        }
        index
    }

    /// The node hosting `replica` (of any group) and its address.
    pub fn replica_addr(&self, replica: ReplicaId) -> Option<(NodeId, &str)> {
        let node = *self.replica_index.get(&replica)?;
        Some((node, self.addr_of(node)?))
    }

    pub fn resource_by_group(&self, group: GroupId) -> Option<&ResourceRecord> {
        self.groups.get(&group).and_then(|name| self.resources.get(name))
    }

    /// Replicas hosted per node, for placement.
    pub fn replicas_per_node(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.nodes.keys().map(|n| (*n, 0)).collect();
        for r in self.resources.values() {
            for rep in &r.replicas {
                *counts.entry(rep.node_id).or_default() += 1;
            }
        }
        counts
    }

    pub fn addr_of(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(&node).map(|n| n.labels.addr.as_str())
    }

    /// Every member with its address.
    pub fn node_addrs(&self) -> Vec<(NodeId, String)> {
        self.nodes.values().map(|n| (n.node_id, n.labels.addr.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use shadowstore_base::ids::RequestId;

    use super::*;

    fn labels(addr: &str) -> NodeLabels {
        NodeLabels { addr: addr.into(), region: "local".into(), read_capacity_rps: 1000, ..Default::default() }
    }

    fn cluster(n: usize) -> MetaState {
        let mut s = MetaState::default();
        s.apply(&MetaCommand::Bootstrap { now_ms: 1, labels: labels("a:1") });
        for i in 1..n {
            s.apply(&MetaCommand::RegisterNode {
                request: RequestId::default(),
                now_ms: 2,
                labels: labels(&format!("a:{}", i + 1)),
            });
        }
        s
    }

    #[test]
    fn identities_are_unique_and_never_reused() {
        let mut s = cluster(3);
        assert_eq!(s.nodes.keys().copied().collect::<Vec<_>>(), vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)]);
        let metas: BTreeSet<_> = s.nodes.values().map(|n| n.meta_replica_id).collect();
        assert_eq!(metas.len(), 3);
        let create = |name: &str| MetaCommand::CreateResource {
            request: RequestId::default(),
            now_ms: 3,
            name: name.into(),
            replication_factor: 3,
            storage: StorageParams::default_for(3),
            nodes: vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)],
        };
        let MetaResponse::Created(a) = s.apply(&create("a")) else { panic!() };
        s.apply(&MetaCommand::DeleteResource { request: RequestId::default(), now_ms: 4, name: "a".into() });
        let MetaResponse::Created(a2) = s.apply(&create("a")) else { panic!() };
        assert_ne!(a.group_id, a2.group_id, "group ids are not reused");
        let ids_a: BTreeSet<_> = a.replicas.iter().map(|r| r.replica_id).collect();
        let ids_a2: BTreeSet<_> = a2.replicas.iter().map(|r| r.replica_id).collect();
        assert!(ids_a.is_disjoint(&ids_a2), "replica ids are not reused");
        assert!(ids_a.is_disjoint(&metas));
    }

    #[test]
    fn initializing_replica_rotates_over_nodes() {
        let mut s = cluster(3);
        let mut first_nodes = BTreeSet::new();
        for i in 0..3 {
            let r = s.apply(&MetaCommand::CreateResource {
                request: RequestId::default(),
                now_ms: 3,
                name: format!("r{i}"),
                replication_factor: 3,
                storage: StorageParams::default_for(3),
                nodes: vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)],
            });
            let MetaResponse::Created(rec) = r else { panic!("{r:?}") };
            let first = rec.initial_replicas.first().copied().unwrap();
            first_nodes.insert(rec.node_of(first).unwrap());
        }
        assert_eq!(first_nodes.len(), 3, "three groups initialized from three different nodes");
    }

    #[test]
    fn create_validates_and_changes_nothing_on_rejection() {
        let mut s = cluster(3);
        let before = s.clone();
        for (rf, nodes) in [(4, vec![1, 2, 3, 3]), (3, vec![1, 2, 2]), (3, vec![1, 2, 9]), (5, vec![1, 2, 3])] {
            let r = s.apply(&MetaCommand::CreateResource {
                request: RequestId::default(),
                now_ms: 3,
                name: "x".into(),
                replication_factor: rf,
                storage: StorageParams::default_for(rf.min(5)),
                nodes: nodes.into_iter().map(NodeId::new).collect(),
            });
            assert!(matches!(r, MetaResponse::Rejected { .. }), "{r:?}");
        }
        assert_eq!(s.resources, before.resources);
        assert_eq!(s.next_replica_id, before.next_replica_id);
    }

    #[test]
    fn replacing_a_replica_allocates_a_new_id_and_records_the_old() {
        let mut s = cluster(4);
        let MetaResponse::Created(rec) = s.apply(&MetaCommand::CreateResource {
            request: RequestId::default(),
            now_ms: 3,
            name: "r".into(),
            replication_factor: 3,
            storage: StorageParams::default_for(3),
            nodes: vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)],
        }) else {
            panic!()
        };
        let old = rec.replica_on(NodeId::new(2)).unwrap().replica_id;
        let before = s.clone();
        let same_node = s.apply(&MetaCommand::ReplaceReplica {
            now_ms: 4,
            name: "r".into(),
            old_replica: old,
            new_node: NodeId::new(3),
        });
        assert!(matches!(same_node, MetaResponse::Rejected { .. }));
        assert_eq!(s.resources, before.resources);
        let MetaResponse::Created(after) = s.apply(&MetaCommand::ReplaceReplica {
            now_ms: 4,
            name: "r".into(),
            old_replica: old,
            new_node: NodeId::new(4),
        }) else {
            panic!()
        };
        let new = after.replica_on(NodeId::new(4)).unwrap();
        assert!(new.replica_id > old && new.replaces == Some(old));
        assert!(after.replica_on(NodeId::new(2)).is_none());
        assert_eq!(s.replica_index.get(&new.replica_id), Some(&NodeId::new(4)));
        assert!(!s.replica_index.contains_key(&old));
        // A corrupt replica may be replaced on its own node, under a new id.
        let on_3 = after.replica_on(NodeId::new(3)).unwrap().replica_id;
        let MetaResponse::Created(in_place) = s.apply(&MetaCommand::ReplaceReplica {
            now_ms: 5,
            name: "r".into(),
            old_replica: on_3,
            new_node: NodeId::new(3),
        }) else {
            panic!()
        };
        let new_3 = in_place.replica_on(NodeId::new(3)).unwrap();
        assert!(new_3.replica_id > new.replica_id && new_3.replaces == Some(on_3));
        assert_eq!(in_place.replicas.len(), 3);
        assert_eq!(s.replica_index.get(&new_3.replica_id), Some(&NodeId::new(3)));
    }

    #[test]
    fn storage_params_are_validated() {
        assert_eq!(StorageParams::default_for(3).k, 2);
        assert_eq!(StorageParams::default_for(5).m, 2);
        let mut p = StorageParams::default_for(3);
        p.k = 3;
        assert!(p.validate(3).unwrap_err().contains("add up"));
        let mut p = StorageParams::default_for(5);
        p.k = 4;
        p.m = 1;
        p.validate(5).unwrap();
        p.stripe_size = 1;
        assert!(p.validate(5).unwrap_err().contains("stripe"));
    }

    #[test]
    fn duplicate_name_returns_existing_record() {
        let mut s = cluster(3);
        let cmd = MetaCommand::CreateResource {
            request: RequestId::default(),
            now_ms: 3,
            name: "x".into(),
            replication_factor: 3,
            storage: StorageParams::default_for(3),
            nodes: vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)],
        };
        let MetaResponse::Created(rec) = s.apply(&cmd) else { panic!() };
        assert_eq!(s.apply(&cmd), MetaResponse::AlreadyExists(rec));
    }

    #[test]
    fn new_registration_from_a_members_address_retires_the_old_identity() {
        let mut s = cluster(2);
        let r = s.apply(&MetaCommand::RegisterNode { request: RequestId::default(), now_ms: 2, labels: labels("a:2") });
        assert!(matches!(r, MetaResponse::Registered { node_id, .. } if node_id == NodeId::new(3)), "{r:?}");
        assert_eq!(s.nodes.keys().copied().collect::<Vec<_>>(), vec![NodeId::new(1), NodeId::new(3)]);
        assert!(s.retired_nodes.contains(&NodeId::new(2)));
    }

    #[test]
    fn retried_join_registers_once() {
        let mut s = cluster(1);
        let request = RequestId { client_id: 99, seq: 1, first_incomplete_seq: 1 };
        let cmd = MetaCommand::RegisterNode { request, now_ms: 5, labels: labels("a:9") };
        let first = s.apply(&cmd);
        assert_eq!(s.apply(&cmd), first);
        assert_eq!(s.nodes.len(), 2);
    }

    #[test]
    fn operator_prices_survive_a_restart_with_other_config_prices() {
        let mut s = cluster(2);
        let config_prices = |storage| Prices { storage_gb_hour_micros: storage, ..Prices::default() };
        let restart = |s: &mut MetaState, storage| {
            let labels = NodeLabels { prices: config_prices(storage), ..labels("a:2") };
            assert_eq!(
                s.apply(&MetaCommand::UpdateNode { now_ms: 3, node_id: NodeId::new(2), labels }),
                MetaResponse::Updated
            );
        };
        restart(&mut s, 10);
        assert_eq!(s.prices_of(&s.nodes[&NodeId::new(2)]).storage_gb_hour_micros, 10, "announced prices apply");
        let set = MetaCommand::SetNodePrices { now_ms: 4, node_id: NodeId::new(2), prices: config_prices(7) };
        assert_eq!(s.apply(&set), MetaResponse::Updated);
        restart(&mut s, 99);
        assert_eq!(s.prices_of(&s.nodes[&NodeId::new(2)]).storage_gb_hour_micros, 7, "the operator's prices win");
        assert_eq!(s.prices_of(&s.nodes[&NodeId::new(1)]).storage_gb_hour_micros, 0, "other nodes keep their own");
        let missing = MetaCommand::SetNodePrices { now_ms: 5, node_id: NodeId::new(9), prices: config_prices(1) };
        assert_eq!(s.apply(&missing), MetaResponse::NotFound);
        assert!(!s.placement.price_overrides.contains_key(&NodeId::new(9)));
    }
}
