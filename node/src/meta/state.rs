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
pub use super::formats::{MetaStateFormat1, MetaStateFormat2};
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
    /// Where a node serves the peer service when it has a peer listener of
    /// its own; a node absent here serves peers at `labels.addr` (meta_state
    /// format 3; absent from format 2).
    pub peer_addrs: BTreeMap<NodeId, String>,
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
            peer_addrs: BTreeMap::new(),
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
            | MetaCommand::SetShiftSetting { now_ms, .. }
            | MetaCommand::SetPeerAddr { now_ms, .. } => {
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
            MetaCommand::SetPeerAddr { node_id, peer_addr, .. } => self.set_peer_addr(*node_id, peer_addr.as_deref()),
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
        if let Some((owner, _)) = self.peer_addrs.iter().find(|(_, p)| **p == labels.addr) {
            return MetaResponse::Rejected { reason: format!("address {} belongs to node {owner}", labels.addr) };
        }
        for old in replaced {
            if let Some(n) = self.nodes.remove(&old) {
                self.replica_index.remove(&n.meta_replica_id);
            }
            self.peer_addrs.remove(&old);
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
        if let Some(other) = self.addr_owner(&labels.addr, |n| n.node_id == node_id) {
            return MetaResponse::Rejected { reason: format!("address {} belongs to node {other}", labels.addr) };
        }
        match self.nodes.get_mut(&node_id) {
            None => MetaResponse::NotFound,
            Some(n) => {
                n.labels = labels.clone();
                MetaResponse::Updated
            }
        }
    }

    fn set_peer_addr(&mut self, node_id: NodeId, peer_addr: Option<&str>) -> MetaResponse {
        if !self.nodes.contains_key(&node_id) {
            return MetaResponse::NotFound;
        }
        let Some(addr) = peer_addr else {
            self.peer_addrs.remove(&node_id);
            return MetaResponse::Updated;
        };
        if let Some(other) = self.addr_owner(addr, |n| n.node_id == node_id) {
            return MetaResponse::Rejected { reason: format!("address {addr} belongs to node {other}") };
        }
        self.peer_addrs.insert(node_id, addr.to_string());
        MetaResponse::Updated
    }

    /// A member that serves clients or peers at `addr`, other than those
    /// `excepted`.
    pub fn addr_owner(&self, addr: &str, excepted: impl Fn(&NodeRecord) -> bool) -> Option<NodeId> {
        let serves = |n: &NodeRecord| n.labels.addr == addr || self.peer_addr_of(n.node_id) == Some(addr);
        self.nodes.values().find(|n| !excepted(n) && serves(n)).map(|n| n.node_id)
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

    /// Structural invariants, checked after every apply (the full index
    /// comparison only in debug builds: it is linear in the directory). A
    /// failure is returned, never a panic: the state machine stops this
    /// replica and it is quarantined (see `raft::state_machine`).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.resources.len() != self.groups.len() {
            return Err(format!("{} resources but {} groups", self.resources.len(), self.groups.len()));
        }
        self.placement.check_invariants(|r| self.resources.contains_key(r))?;
        self.check_shadow_invariants()?;
        if let Some(n) = self.peer_addrs.keys().find(|n| !self.nodes.contains_key(n)) {
            return Err(format!("peer address of node {n}, which is not a member"));
        }
        debug_assert_eq!(self.replica_index, self.derive_replica_index());
        for r in self.resources.values() {
            if r.group_id >= self.next_group_id {
                return Err(format!("group id {} of {} not allocated", r.group_id, r.name));
            }
            if self.groups.get(&r.group_id) != Some(&r.name) {
                return Err(format!("group {} does not name {}", r.group_id, r.name));
            }
            if let Some(rep) = r.replicas.iter().find(|rep| rep.replica_id >= self.next_replica_id) {
                return Err(format!("replica id {} of {} not allocated", rep.replica_id, r.name));
            }
        }
        Ok(())
    }

    /// What applying `cmd` would answer, on a copy: the meta leader runs
    /// it before proposing, so that an entry that would leave the state
    /// failing its check is refused before it is committed (on every
    /// replica it would stop the meta group).
    pub fn dry_run(&self, cmd: &MetaCommand) -> Result<MetaResponse, String> {
        let mut copy = self.clone();
        let answer = copy.apply(cmd);
        copy.check_invariants()?;
        Ok(answer)
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

    /// Where `node` serves the peer service, if not at its address.
    pub fn peer_addr_of(&self, node: NodeId) -> Option<&str> {
        self.peer_addrs.get(&node).map(String::as_str)
    }

    /// (address, peer address) of every member with a peer listener of its
    /// own: how the transport reaches a node named by its address.
    pub fn peer_routes(&self) -> Vec<(String, String)> {
        self.peer_addrs.iter().filter_map(|(n, p)| Some((self.addr_of(*n)?.to_string(), p.clone()))).collect()
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
