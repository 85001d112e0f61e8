//! Identifiers used across the cluster.
//!
//! A *node* is a process with a data directory; a *group* is one Raft group
//! (the meta group or one resource); a *replica* is one member of one group
//! hosted on one node. Replica ids are allocated by the meta group, are
//! unique cluster-wide and are never reused: a replica removed and re-added,
//! or re-created after its node lost its disk, gets a new id, so a wiped
//! node can never vote twice under an old identity.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// Identity of a node (process + data directory), assigned by the meta
/// group when the node first joins and persisted in its data directory.
pub type NodeId = u64;

/// Identity of one Raft group. [`META_GROUP_ID`] is the meta group; resource
/// groups are numbered from 1 by the meta group.
pub type GroupId = u64;

/// Identity of one replica of one group; openraft's `NodeId`.
pub type ReplicaId = u64;

/// The group that holds cluster membership and the resource directory.
pub const META_GROUP_ID: GroupId = 0;

/// The node id of the node that bootstraps a cluster.
pub const BOOTSTRAP_NODE_ID: NodeId = 1;
/// The meta replica id of the bootstrap node.
pub const BOOTSTRAP_META_REPLICA_ID: ReplicaId = 1;

/// What openraft stores as the `Node` of each member: where the replica
/// lives. The address is a fallback for when the meta directory has not yet
/// been applied locally (while joining); the meta directory's address wins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaNode {
    pub node_id: NodeId,
    pub addr: String,
}

impl fmt::Display for ReplicaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} at {}", self.node_id, self.addr)
    }
}

/// Identifies one client request across retries (see `RequestId` in the
/// proto). A zero `client_id` means "not deduplicated".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    pub client_id: u64,
    pub seq: u64,
    pub first_incomplete_seq: u64,
}

impl RequestId {
    pub fn is_deduplicated(&self) -> bool {
        self.client_id != 0
    }
}
