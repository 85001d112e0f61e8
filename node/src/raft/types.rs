//! openraft's type configuration for every group of the cluster, and the
//! command and response types carried through the Raft log.
//!
//! All groups (the meta group and every resource group) share one type
//! configuration so that one log store, one network and one registry serve
//! them all; the state machine knows which kind of group it is.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use crate::meta::state::MetaCommand;
use crate::meta::state::MetaResponse;
use crate::resource::ResourceCommand;
use crate::resource::ResourceResponse;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::ids::ReplicaNode;

/// openraft's async runtime: tokio, with every random draw (election
/// timeouts) taken from a seeded generator (see `crate::rng`).
pub type Runtime = openraft::rt::deterministic_rng::DeterministicRng<openraft::impls::TokioRuntime>;

openraft::declare_raft_types!(
    /// Type configuration shared by every Raft group.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = ReplicaId,
        Node = ReplicaNode,
        // Standard Raft: at most one leader per term (a replica votes for
        // one candidate per term). openraft's default ("advanced") leader
        // ids let two candidates of one term both win; the simulator's
        // one-leader-per-term invariant caught it (seed 11).
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, ReplicaId>,
        AsyncRuntime = Runtime,
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Meta(MetaCommand),
    Resource(ResourceCommand),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Meta(c) => write!(f, "meta: {c}"),
            Command::Resource(c) => write!(f, "resource: {c}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// Blank and membership entries.
    None,
    Meta(MetaResponse),
    Resource(ResourceResponse),
    /// A meta command was logged in a resource group or the reverse; never
    /// produced by a correct node, answered rather than panicking.
    WrongGroupKind,
}

#[cfg(test)]
mod tests {
    use openraft::RaftTypeConfig;
    use openraft::vote::RaftLeaderId;
    use shadowstore_base::ids::ReplicaId;

    use super::TypeConfig;

    type LeaderId = <TypeConfig as RaftTypeConfig>::LeaderId;

    /// Regression (simulator seed 11 of the placement change): with
    /// openraft's default leader ids, a replica that voted for candidate 3
    /// in term 2 granted candidate 5 in term 2 too, and both led term 2.
    /// Standard Raft leader ids of one term and different candidates are
    /// incomparable, so a vote already cast in a term is never replaced.
    #[test]
    fn one_leader_per_term() {
        let three = LeaderId::new(2, ReplicaId::new(3));
        let five = LeaderId::new(2, ReplicaId::new(5));
        assert_eq!(three.partial_cmp(&five), None);
        assert_eq!(five.partial_cmp(&three), None);
        assert!(LeaderId::new(3, ReplicaId::new(3)) > five, "a later term still wins");
    }
}
