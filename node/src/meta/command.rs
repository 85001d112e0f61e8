//! The commands of the meta group and their answers. Each is one entry of
//! the meta group's log, encoded with postcard: a variant's position is its
//! encoding, so new commands are appended last and none is removed while a
//! log or snapshot may still hold it.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::ids::RequestId;
use shadowstore_placement::PlacementRecord;
use shadowstore_placement::PlacementSetting;
use shadowstore_placement::PlacementSettings;
use shadowstore_placement::Prices;
use shadowstore_placement::ShadowPhase;
use shadowstore_placement::ShiftSetting;
use shadowstore_placement::shift::ShadowExpect;

use super::directory::NodeLabels;
use super::directory::ResourceRecord;
use super::directory::StorageParams;

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
    /// Sets every placement setting at once. Written by nodes before
    /// changes named one setting; still applied (checked) when a log
    /// replays it.
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
    /// Changes one placement setting, leaving the others as they are.
    SetPlacementSetting {
        now_ms: u64,
        setting: PlacementSetting,
    },
    /// Adds a shadow of `resource` on `node`: a new replica id, a directory
    /// replica with role Shadow and a shadow record in phase planned.
    AddShadow {
        now_ms: u64,
        resource: String,
        node: NodeId,
        by_operator: bool,
    },
    /// Compare-and-set of a shadow's phase, step and weight: applied only
    /// if the shadow is still as `expect` says. `kind` and `text` go into
    /// the resource's placement history.
    TransitionShadow {
        now_ms: u64,
        resource: String,
        replica: ReplicaId,
        expect: ShadowExpect,
        to: ShadowPhase,
        step: u8,
        weight_permille: u32,
        kind: String,
        text: String,
    },
    /// Removes a drained shadow (weight 0) from the directory; its node
    /// then stops the replica and deletes its data.
    RemoveShadow {
        now_ms: u64,
        resource: String,
        replica: ReplicaId,
        text: String,
        /// What the shadow cost over its life, for the resource's ledger.
        cost_micros: u64,
    },
    /// Operator flags of a shadow: pinned (the planner keeps it), halted
    /// (no promotion).
    FlagShadow {
        now_ms: u64,
        resource: String,
        replica: ReplicaId,
        pinned: Option<bool>,
        halted: Option<bool>,
    },
    /// Changes one shift setting (mode, steps, dwell, gates).
    SetShiftSetting {
        now_ms: u64,
        setting: ShiftSetting,
    },
    /// Where `node_id` serves the peer service (`None`: at its client
    /// address). Set by the node's join or restart announcement.
    SetPeerAddr {
        now_ms: u64,
        node_id: NodeId,
        peer_addr: Option<String>,
    },
}

impl MetaCommand {
    /// Whether the command changes the directory's structure (nodes,
    /// resources, replicas, shadows): what the structural check can catch,
    /// so what the leader dry-runs before proposing (see
    /// `MetaState::dry_run`). The others touch settings and records the
    /// check only ties to existing resources, which apply refuses itself.
    pub fn is_structural(&self) -> bool {
        matches!(
            self,
            MetaCommand::Bootstrap { .. }
                | MetaCommand::RegisterNode { .. }
                | MetaCommand::CreateResource { .. }
                | MetaCommand::ReplaceReplica { .. }
                | MetaCommand::DeleteResource { .. }
                | MetaCommand::AddShadow { .. }
                | MetaCommand::TransitionShadow { .. }
                | MetaCommand::RemoveShadow { .. }
                | MetaCommand::SetPeerAddr { .. }
        )
    }
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
            MetaCommand::SetPlacementSetting { setting, .. } => write!(f, "set placement setting {setting:?}"),
            MetaCommand::AddShadow { resource, node, .. } => write!(f, "add shadow of {resource} on node {node}"),
            MetaCommand::TransitionShadow { resource, replica, to, weight_permille, kind, .. } => {
                write!(f, "{kind}: shadow {replica} of {resource} to {to} at {weight_permille}‰")
            }
            MetaCommand::RemoveShadow { resource, replica, .. } => write!(f, "remove shadow {replica} of {resource}"),
            MetaCommand::FlagShadow { resource, replica, pinned, halted, .. } => {
                write!(f, "flag shadow {replica} of {resource}: pinned {pinned:?} halted {halted:?}")
            }
            MetaCommand::SetShiftSetting { setting, .. } => write!(f, "set shift setting {setting:?}"),
            MetaCommand::SetPeerAddr { node_id, peer_addr, .. } => match peer_addr {
                Some(a) => write!(f, "node {node_id} serves peers at {a}"),
                None => write!(f, "node {node_id} serves peers at its client address"),
            },
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
