//! `MetaState` as earlier formats of the `meta_state` record family stored
//! it: read only to upgrade a stored meta snapshot
//! (`raft::state_machine::upgrade_meta_snapshot`). Each layout converts to
//! the next, so an upgrade from any of them ends in the current one.

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

/// Formats 0 and 1: before the shadow sub-state.
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

/// Format 2: format 1 and the shadow sub-state, before peer addresses.
/// postcard writes a struct's fields one after another with no framing, so
/// a nested struct first reads exactly as its fields inline.
#[derive(Deserialize)]
pub struct MetaStateFormat2 {
    format1: MetaStateFormat1,
    shadows: ShadowMeta,
}

impl From<MetaStateFormat1> for MetaStateFormat2 {
    fn from(format1: MetaStateFormat1) -> MetaStateFormat2 {
        MetaStateFormat2 { format1, shadows: ShadowMeta::default() }
    }
}

impl From<MetaStateFormat2> for MetaState {
    fn from(o: MetaStateFormat2) -> MetaState {
        let MetaStateFormat2 { format1: f, shadows } = o;
        MetaState {
            nodes: f.nodes,
            resources: f.resources,
            groups: f.groups,
            retired_nodes: f.retired_nodes,
            replica_index: f.replica_index,
            next_node_id: f.next_node_id,
            next_replica_id: f.next_replica_id,
            next_group_id: f.next_group_id,
            sessions: f.sessions,
            placement: f.placement,
            shadows,
            peer_addrs: BTreeMap::new(),
        }
    }
}
