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
use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use crate::dedup::Admission;
use crate::dedup::Sessions;
use crate::ids::BOOTSTRAP_META_REPLICA_ID;
use crate::ids::BOOTSTRAP_NODE_ID;
use crate::ids::GroupId;
use crate::ids::NodeId;
use crate::ids::ReplicaId;
use crate::ids::RequestId;
use crate::limits::CLUSTER_NODES_MAX;
use crate::limits::CLUSTER_RESOURCES_MAX;
use crate::limits::REPLICATION_FACTORS_ALLOWED;
use crate::placement::RegionDistances;

/// Prices of a node, in micro-units of the cluster's currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    pub storage_gb_hour_micros: u64,
    pub transfer_gb_micros: u64,
    pub million_requests_micros: u64,
}

/// Placement settings, replicated so that every meta leader plans alike.
/// Integers only (per mille for probabilities): replicated state is
/// compared bit for bit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementSettings {
    pub threshold_permille: u32,
    pub horizon_s: u64,
    pub planning_interval_ms: u64,
    pub ttl_ms: u64,
    pub hysteresis_ms: u64,
}

impl Default for PlacementSettings {
    fn default() -> Self {
        PlacementSettings {
            threshold_permille: 800,
            horizon_s: 1_800,
            planning_interval_ms: 60_000,
            ttl_ms: 6 * 3_600_000,
            hysteresis_ms: 30 * 60_000,
        }
    }
}

/// Bounds on placement settings (checked by `SetPlacementConfig`).
pub const PLACEMENT_HORIZON_S_RANGE: (u64, u64) = (300, 6 * 3_600);
pub const PLANNING_INTERVAL_MS_RANGE: (u64, u64) = (1_000, 3_600_000);

/// The planner's latest committed decision for a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRecord {
    pub at_ms: u64,
    /// `add-shadows` or `retire`.
    pub action: String,
    pub nodes: Vec<NodeId>,
    pub p_exceed_permille: u32,
    pub reason: String,
}

/// Resource priorities range over -PRIORITY_ABS_MAX..=PRIORITY_ABS_MAX.
pub use crate::placement::planner::PRIORITY_ABS_MAX;

/// Longest reason kept in a committed placement record.
pub const PLACEMENT_REASON_BYTES_MAX: usize = 512;

/// What a node says about itself when it joins or restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLabels {
    pub addr: String,
    pub region: String,
    pub read_capacity_rps: u64,
    pub disk_capacity_bytes: u64,
    pub prices: Prices,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: NodeId,
    pub meta_replica_id: ReplicaId,
    pub labels: NodeLabels,
    pub joined_at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRole {
    /// A primary replica: a voter of the resource group.
    Primary,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    pub replica_id: ReplicaId,
    pub node_id: NodeId,
    pub role: ReplicaRole,
    /// The replica this one replaced (its shards move here).
    pub replaces: Option<ReplicaId>,
}

/// How a resource stores its values, fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageParams {
    /// Erasure code: k data shards + m parity shards, k + m = primaries.
    pub k: u8,
    pub m: u8,
    /// Values up to this size are stored inline through Raft.
    pub inline_threshold: u32,
    pub stripe_size: u32,
    /// Versions kept per variant past the read grace period.
    pub keep_versions: u32,
}

impl StorageParams {
    /// Defaults for `replication_factor` primaries: 3 → 2+1, 5 → 3+2.
    pub fn default_for(replication_factor: u32) -> StorageParams {
        let m = if replication_factor >= 5 { 2 } else { 1 };
        StorageParams {
            k: (replication_factor - m) as u8,
            m: m as u8,
            inline_threshold: crate::limits::INLINE_VALUE_BYTES_MAX as u32,
            stripe_size: crate::blob::layout::STRIPE_SIZE_DEFAULT,
            keep_versions: 1,
        }
    }

    pub fn validate(&self, replication_factor: u32) -> Result<(), String> {
        use crate::limits::{INLINE_VALUE_BYTES_MAX, KEEP_VERSIONS_MAX, STRIPE_SIZE_MAX, STRIPE_SIZE_MIN};
        if self.k == 0 || self.m == 0 {
            return Err(format!("erasure code {}+{} needs at least one data and one parity shard", self.k, self.m));
        }
        if self.k as u32 + self.m as u32 != replication_factor {
            return Err(format!(
                "erasure code {}+{} must add up to the replication factor {replication_factor}",
                self.k, self.m
            ));
        }
        if self.inline_threshold as usize > INLINE_VALUE_BYTES_MAX {
            return Err(format!("inline threshold {} exceeds {INLINE_VALUE_BYTES_MAX}", self.inline_threshold));
        }
        if !(STRIPE_SIZE_MIN..=STRIPE_SIZE_MAX).contains(&self.stripe_size) {
            return Err(format!("stripe size {} is outside {STRIPE_SIZE_MIN}..={STRIPE_SIZE_MAX}", self.stripe_size));
        }
        if self.keep_versions == 0 || self.keep_versions > KEEP_VERSIONS_MAX {
            return Err(format!("keep_versions {} is outside 1..={KEEP_VERSIONS_MAX}", self.keep_versions));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRecord {
    pub name: String,
    pub group_id: GroupId,
    pub replication_factor: u32,
    pub storage: StorageParams,
    pub replicas: Vec<ReplicaRecord>,
    /// The replicas the group was initialized with; the smallest of them
    /// initializes the Raft group.
    pub initial_replicas: BTreeSet<ReplicaId>,
    pub created_at_ms: u64,
}

impl ResourceRecord {
    pub fn replica_on(&self, node: NodeId) -> Option<&ReplicaRecord> {
        self.replicas.iter().find(|r| r.node_id == node)
    }

    pub fn node_of(&self, replica: ReplicaId) -> Option<NodeId> {
        self.replicas.iter().find(|r| r.replica_id == replica).map(|r| r.node_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// First entry of a new cluster: registers the bootstrap node.
    Bootstrap {
        now_ms: u64,
        labels: NodeLabels,
    },
    /// A new node joins: allocates its node id and meta replica id.
    RegisterNode {
        request: RequestId,
        now_ms: u64,
        labels: NodeLabels,
    },
    /// A known node restarted with new labels or a new address.
    UpdateNode {
        now_ms: u64,
        node_id: NodeId,
        labels: NodeLabels,
    },
    CreateResource {
        request: RequestId,
        now_ms: u64,
        name: String,
        replication_factor: u32,
        storage: StorageParams,
        /// Nodes for the replicas, chosen by the proposer.
        nodes: Vec<NodeId>,
    },
    /// Replaces a resource's replica (lost with its node, or corrupt) by a
    /// new replica on `new_node`, which may be the old replica's node.
    ReplaceReplica {
        now_ms: u64,
        name: String,
        old_replica: ReplicaId,
        new_node: NodeId,
    },
    DeleteResource {
        request: RequestId,
        now_ms: u64,
        name: String,
    },
    SetPlacementSettings {
        now_ms: u64,
        settings: PlacementSettings,
    },
    SetNodePrices {
        now_ms: u64,
        node_id: NodeId,
        prices: Prices,
    },
    /// A resource's placement priority (-5..=5): moves its threshold.
    SetResourcePriority {
        now_ms: u64,
        resource: String,
        priority: i32,
    },
    /// The planner's decision for `resource` (plans survive a leader
    /// change).
    RecordPlacement {
        now_ms: u64,
        resource: String,
        record: PlacementRecord,
    },
    /// The distance between two regions (1 removes the entry: the
    /// default).
    SetRegionDistance {
        now_ms: u64,
        a: String,
        b: String,
        distance: u32,
    },
}

impl fmt::Display for MetaCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaCommand::Bootstrap { labels, .. } => write!(f, "bootstrap at {}", labels.addr),
            MetaCommand::RegisterNode { labels, .. } => {
                write!(f, "register node at {}", labels.addr)
            }
            MetaCommand::UpdateNode { node_id, labels, .. } => write!(f, "update node {node_id} at {}", labels.addr),
            MetaCommand::CreateResource { name, nodes, .. } => {
                write!(f, "create resource {name} on {nodes:?}")
            }
            MetaCommand::DeleteResource { name, .. } => write!(f, "delete resource {name}"),
            MetaCommand::ReplaceReplica { name, old_replica, new_node, .. } => {
                write!(f, "replace replica {old_replica} of {name} with one on node {new_node}")
            }
            MetaCommand::SetPlacementSettings { settings, .. } => write!(f, "set placement settings {settings:?}"),
            MetaCommand::SetNodePrices { node_id, prices, .. } => write!(f, "set node {node_id} prices {prices:?}"),
            MetaCommand::SetResourcePriority { resource, priority, .. } => {
                write!(f, "set priority of {resource} to {priority}")
            }
            MetaCommand::SetRegionDistance { a, b, distance, .. } => {
                write!(f, "set distance between regions {a} and {b} to {distance}")
            }
            MetaCommand::RecordPlacement { resource, record, .. } => {
                write!(f, "record placement of {resource}: {} {:?}", record.action, record.nodes)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    Registered { node_id: NodeId, meta_replica_id: ReplicaId },
    Updated,
    Created(ResourceRecord),
    Deleted,
    AlreadyExists(ResourceRecord),
    NotFound,
    Rejected { reason: String },
    StaleRequest,
}

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
    pub placement_settings: PlacementSettings,
    /// resource → the planner's latest committed decision.
    pub placements: BTreeMap<String, PlacementRecord>,
    /// resource → placement priority, when not 0.
    pub priorities: BTreeMap<String, i32>,
    /// Prices an operator set for a node (`shadowctl config set prices.*
    /// --node N`). They win over the prices the node announces from its
    /// config, so a restart does not undo them; see [`MetaState::prices_of`].
    pub price_overrides: BTreeMap<NodeId, Prices>,
    /// Distances between regions an operator set (`shadowctl config set
    /// region_distance.A.B N`); the planner prefers shadow hosts nearest
    /// the demand's region. Unlisted pairs of regions are 1 apart.
    pub region_distances: RegionDistances,
}

fn truncate_utf8(text: &mut String, bytes_max: usize) {
    if text.len() > bytes_max {
        let mut end = bytes_max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
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
            next_node_id: BOOTSTRAP_NODE_ID + 1,
            next_replica_id: BOOTSTRAP_META_REPLICA_ID + 1,
            next_group_id: 1,
            sessions: Sessions::default(),
            placement_settings: PlacementSettings::default(),
            placements: BTreeMap::new(),
            priorities: BTreeMap::new(),
            price_overrides: BTreeMap::new(),
            region_distances: RegionDistances::default(),
        }
    }
}

impl MetaState {
    /// A node's prices: the operator's, else what the node announced.
    pub fn prices_of(&self, node: &NodeRecord) -> Prices {
        self.price_overrides.get(&node.node_id).cloned().unwrap_or_else(|| node.labels.prices.clone())
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
            | MetaCommand::RecordPlacement { now_ms, .. } => {
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

    fn execute(&mut self, cmd: &MetaCommand) -> MetaResponse {
        let now_ms = self.sessions.now_ms();
        match cmd {
            MetaCommand::Bootstrap { labels, .. } => {
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
            MetaCommand::RegisterNode { labels, .. } => {
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
                    self.price_overrides.remove(&old);
                    self.retired_nodes.insert(old);
                }
                let node_id = self.next_node_id;
                let meta_replica_id = self.next_replica_id;
                self.next_node_id += 1;
                self.next_replica_id += 1;
                self.nodes.insert(
                    node_id,
                    NodeRecord { node_id, meta_replica_id, labels: labels.clone(), joined_at_ms: now_ms },
                );
                self.replica_index.insert(meta_replica_id, node_id);
                MetaResponse::Registered { node_id, meta_replica_id }
            }
            MetaCommand::UpdateNode { node_id, labels, .. } => {
                if let Some(other) = self.nodes.values().find(|n| n.labels.addr == labels.addr && n.node_id != *node_id)
                {
                    return MetaResponse::Rejected {
                        reason: format!("address {} belongs to node {}", labels.addr, other.node_id),
                    };
                }
                match self.nodes.get_mut(node_id) {
                    None => MetaResponse::NotFound,
                    Some(n) => {
                        n.labels = labels.clone();
                        MetaResponse::Updated
                    }
                }
            }
            MetaCommand::CreateResource { name, replication_factor, storage, nodes, .. } => {
                if let Some(existing) = self.resources.get(name) {
                    return MetaResponse::AlreadyExists(existing.clone());
                }
                if self.resources.len() >= CLUSTER_RESOURCES_MAX {
                    return MetaResponse::Rejected {
                        reason: format!("cluster already holds the maximum of {CLUSTER_RESOURCES_MAX} resources"),
                    };
                }
                if !REPLICATION_FACTORS_ALLOWED.contains(replication_factor) {
                    return MetaResponse::Rejected {
                        reason: format!(
                            "replication factor {replication_factor} is not one of {REPLICATION_FACTORS_ALLOWED:?}"
                        ),
                    };
                }
                if let Err(reason) = storage.validate(*replication_factor) {
                    return MetaResponse::Rejected { reason };
                }
                let distinct: BTreeSet<_> = nodes.iter().collect();
                if nodes.len() != *replication_factor as usize || distinct.len() != nodes.len() {
                    return MetaResponse::Rejected {
                        reason: format!("need {replication_factor} distinct nodes, got {nodes:?}"),
                    };
                }
                if let Some(n) = nodes.iter().find(|n| !self.nodes.contains_key(n)) {
                    return MetaResponse::Rejected { reason: format!("node {n} is not a member") };
                }
                let group_id = self.next_group_id;
                self.next_group_id += 1;
                // The first replica initializes the group and usually becomes
                // its first leader: rotate so leadership spreads over nodes.
                let mut order = nodes.clone();
                let shift = (group_id % order.len() as u64) as usize;
                order.rotate_left(shift);
                let mut replicas = Vec::with_capacity(nodes.len());
                for &node_id in &order {
                    replicas.push(ReplicaRecord {
                        replica_id: self.next_replica_id,
                        node_id,
                        role: ReplicaRole::Primary,
                        replaces: None,
                    });
                    self.next_replica_id += 1;
                }
                let record = ResourceRecord {
                    name: name.clone(),
                    group_id,
                    replication_factor: *replication_factor,
                    storage: *storage,
                    initial_replicas: replicas.iter().map(|r| r.replica_id).collect(),
                    replicas,
                    created_at_ms: now_ms,
                };
                for r in &record.replicas {
                    self.replica_index.insert(r.replica_id, r.node_id);
                }
                self.resources.insert(name.clone(), record.clone());
                self.groups.insert(group_id, name.clone());
                MetaResponse::Created(record)
            }
            MetaCommand::ReplaceReplica { name, old_replica, new_node, .. } => {
                self.replace_replica(name, *old_replica, *new_node)
            }
            MetaCommand::DeleteResource { name, .. } => match self.resources.remove(name) {
                None => MetaResponse::NotFound,
                Some(r) => {
                    self.groups.remove(&r.group_id);
                    for rep in &r.replicas {
                        self.replica_index.remove(&rep.replica_id);
                    }
                    self.placements.remove(name);
                    self.priorities.remove(name);
                    MetaResponse::Deleted
                }
            },
            MetaCommand::SetPlacementSettings { settings, .. } => {
                self.placement_settings = settings.clone();
                MetaResponse::Updated
            }
            MetaCommand::SetNodePrices { node_id, prices, .. } => {
                if !self.nodes.contains_key(node_id) {
                    return MetaResponse::NotFound;
                }
                self.price_overrides.insert(*node_id, prices.clone());
                MetaResponse::Updated
            }
            MetaCommand::SetResourcePriority { resource, priority, .. } => {
                if !self.resources.contains_key(resource) {
                    return MetaResponse::NotFound;
                }
                let priority = (*priority).clamp(-PRIORITY_ABS_MAX, PRIORITY_ABS_MAX);
                if priority == 0 {
                    self.priorities.remove(resource);
                } else {
                    self.priorities.insert(resource.clone(), priority);
                }
                MetaResponse::Updated
            }
            MetaCommand::SetRegionDistance { a, b, distance, .. } => match self.region_distances.set(a, b, *distance) {
                Ok(()) => MetaResponse::Updated,
                Err(reason) => MetaResponse::Rejected { reason },
            },
            MetaCommand::RecordPlacement { resource, record, .. } => {
                if !self.resources.contains_key(resource) {
                    return MetaResponse::NotFound;
                }
                let mut record = record.clone();
                truncate_utf8(&mut record.reason, PLACEMENT_REASON_BYTES_MAX);
                self.placements.insert(resource.clone(), record);
                MetaResponse::Updated
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
        r.replicas[pos] = ReplicaRecord { replica_id: next, node_id: new_node, role, replaces: Some(old_replica) };
        self.next_replica_id += 1;
        self.replica_index.remove(&old_replica);
        self.replica_index.insert(next, new_node);
        MetaResponse::Created(r.clone())
    }

    /// Structural invariants, asserted after every apply (the full index
    /// comparison only in debug builds: it is linear in the directory).
    fn check_invariants(&self) {
        assert_eq!(self.resources.len(), self.groups.len());
        assert!(self.placements.keys().all(|r| self.resources.contains_key(r)), "placement of an unknown resource");
        assert!(self.priorities.keys().all(|r| self.resources.contains_key(r)), "priority of an unknown resource");
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
}

#[cfg(test)]
mod tests {
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
        assert_eq!(s.nodes.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        let metas: BTreeSet<_> = s.nodes.values().map(|n| n.meta_replica_id).collect();
        assert_eq!(metas.len(), 3);
        let create = |name: &str| MetaCommand::CreateResource {
            request: RequestId::default(),
            now_ms: 3,
            name: name.into(),
            replication_factor: 3,
            storage: StorageParams::default_for(3),
            nodes: vec![1, 2, 3],
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
                nodes: vec![1, 2, 3],
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
                nodes,
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
            nodes: vec![1, 2, 3],
        }) else {
            panic!()
        };
        let old = rec.replica_on(2).unwrap().replica_id;
        let before = s.clone();
        let same_node =
            s.apply(&MetaCommand::ReplaceReplica { now_ms: 4, name: "r".into(), old_replica: old, new_node: 3 });
        assert!(matches!(same_node, MetaResponse::Rejected { .. }));
        assert_eq!(s.resources, before.resources);
        let MetaResponse::Created(after) =
            s.apply(&MetaCommand::ReplaceReplica { now_ms: 4, name: "r".into(), old_replica: old, new_node: 4 })
        else {
            panic!()
        };
        let new = after.replica_on(4).unwrap();
        assert!(new.replica_id > old && new.replaces == Some(old));
        assert!(after.replica_on(2).is_none());
        assert_eq!(s.replica_index.get(&new.replica_id), Some(&4));
        assert!(!s.replica_index.contains_key(&old));
        // A corrupt replica may be replaced on its own node, under a new id.
        let on_3 = after.replica_on(3).unwrap().replica_id;
        let MetaResponse::Created(in_place) =
            s.apply(&MetaCommand::ReplaceReplica { now_ms: 5, name: "r".into(), old_replica: on_3, new_node: 3 })
        else {
            panic!()
        };
        let new_3 = in_place.replica_on(3).unwrap();
        assert!(new_3.replica_id > new.replica_id && new_3.replaces == Some(on_3));
        assert_eq!(in_place.replicas.len(), 3);
        assert_eq!(s.replica_index.get(&new_3.replica_id), Some(&3));
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
            nodes: vec![1, 2, 3],
        };
        let MetaResponse::Created(rec) = s.apply(&cmd) else { panic!() };
        assert_eq!(s.apply(&cmd), MetaResponse::AlreadyExists(rec));
    }

    #[test]
    fn new_registration_from_a_members_address_retires_the_old_identity() {
        let mut s = cluster(2);
        let r = s.apply(&MetaCommand::RegisterNode { request: RequestId::default(), now_ms: 2, labels: labels("a:2") });
        assert!(matches!(r, MetaResponse::Registered { node_id: 3, .. }), "{r:?}");
        assert_eq!(s.nodes.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert!(s.retired_nodes.contains(&2));
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
            assert_eq!(s.apply(&MetaCommand::UpdateNode { now_ms: 3, node_id: 2, labels }), MetaResponse::Updated);
        };
        restart(&mut s, 10);
        assert_eq!(s.prices_of(&s.nodes[&2]).storage_gb_hour_micros, 10, "announced prices apply");
        let set = MetaCommand::SetNodePrices { now_ms: 4, node_id: 2, prices: config_prices(7) };
        assert_eq!(s.apply(&set), MetaResponse::Updated);
        restart(&mut s, 99);
        assert_eq!(s.prices_of(&s.nodes[&2]).storage_gb_hour_micros, 7, "the operator's prices win");
        assert_eq!(s.prices_of(&s.nodes[&1]).storage_gb_hour_micros, 0, "other nodes keep their own");
        let missing = MetaCommand::SetNodePrices { now_ms: 5, node_id: 9, prices: config_prices(1) };
        assert_eq!(s.apply(&missing), MetaResponse::NotFound);
        assert!(!s.price_overrides.contains_key(&9));
    }
}
