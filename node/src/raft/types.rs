//! openraft's type configuration for every group of the cluster, and the
//! command and response types carried through the Raft log.
//!
//! All groups (the meta group and every resource group) share one type
//! configuration so that one log store, one network and one registry serve
//! them all; the state machine knows which kind of group it is.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use crate::ids::ReplicaId;
use crate::ids::ReplicaNode;
use crate::meta::state::MetaCommand;
use crate::meta::state::MetaResponse;
use crate::resource::ResourceCommand;
use crate::resource::ResourceResponse;

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
