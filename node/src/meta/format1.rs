//! `MetaState` as formats 0 and 1 of the `meta_state` record family
//! stored it, before the shadow sub-state: read only to upgrade a stored
//! meta snapshot (`raft::state_machine::upgrade_meta_snapshot`).

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::Deserialize;
use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;

use super::command::MetaResponse;
use super::directory::NodeRecord;
use super::directory::ResourceRecord;
use super::placement::PlacementMeta;
use super::shadow::ShadowMeta;
use super::state::MetaState;
use crate::dedup::Sessions;

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
