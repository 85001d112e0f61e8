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

/// Defines an identity: a `u64` the compiler keeps apart from every other
/// kind of id. Stored and sent as the bare number (serde transparent), so
/// the newtype changes no encoding; shown as the bare number too.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            pub const fn new(id: u64) -> Self {
                $name(id)
            }

            pub const fn get(self) -> u64 {
                self.0
            }

            /// The id after this one (identities are allocated in order).
            pub fn next(self) -> Self {
                $name(self.0.checked_add(1).expect(concat!(stringify!($name), " space exhausted")))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        /// From a number received at an edge (protobuf, openraft's test
        /// suite); inside the node the types stay apart.
        impl From<u64> for $name {
            fn from(id: u64) -> $name {
                $name(id)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }
    };
}

id_type!(
    /// Identity of a node (process + data directory), assigned by the meta
    /// group when the node first joins and persisted in its data directory.
    NodeId
);

id_type!(
    /// Identity of one Raft group. [`META_GROUP_ID`] is the meta group;
    /// resource groups are numbered from 1 by the meta group.
    GroupId
);

id_type!(
    /// Identity of one replica of one group; openraft's `NodeId`. Holders
    /// of erasure-coded shards are replicas, never nodes.
    ReplicaId
);

/// The bare numbers of `ids`, as the protobuf API carries them.
pub fn numbers<T: Copy + Into<u64>>(ids: &[T]) -> Vec<u64> {
    ids.iter().map(|&id| id.into()).collect()
}

/// The group that holds cluster membership and the resource directory.
pub const META_GROUP_ID: GroupId = GroupId::new(0);

/// The node id of the node that bootstraps a cluster.
pub const BOOTSTRAP_NODE_ID: NodeId = NodeId::new(1);
/// The meta replica id of the bootstrap node.
pub const BOOTSTRAP_META_REPLICA_ID: ReplicaId = ReplicaId::new(1);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stored_and_shown_as_bare_numbers() {
        let r = ReplicaId::new(42);
        assert_eq!(postcard::to_allocvec(&r).unwrap(), postcard::to_allocvec(&42u64).unwrap());
        assert_eq!(postcard::from_bytes::<ReplicaId>(&postcard::to_allocvec(&42u64).unwrap()).unwrap(), r);
        assert_eq!((r.to_string(), format!("{r:?}")), ("42".to_string(), "42".to_string()));
        assert_eq!(r.next(), ReplicaId::new(43));
        assert!(NodeId::new(1) < NodeId::new(2));
        assert_eq!(numbers(&[NodeId::new(4), NodeId::new(2)]), vec![4, 2]);
    }
}
