//! This node's handle on the cluster: its identity, the replicas it hosts
//! (`group::Registry`), its channels to the other nodes (`Peers`), their
//! liveness (`FailureDetector`), and the meta directory it follows. Every
//! service and loop that talks to other replicas goes through it, and it
//! imports none of them.
//!
//! It also turns openraft's refusals into domain errors ([`Error`]): which
//! leader to try instead, whether a write's outcome is unknown. The API
//! converts those into gRPC statuses, once, at the edge.

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use openraft::ReadPolicy;
use openraft::errors::ClientWriteError;
use openraft::errors::ForwardToLeader;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::raft::linearizable_read::Linearizer;
use openraft::raft::linearizable_read::ReadLogId;
use openraft::rt::WatchReceiver;
use serde::Deserialize;
use serde::Serialize;
use shadowstore_base::codec;
use shadowstore_base::ids::META_GROUP_ID;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_proto::peer::ReadIndexRequest;

use crate::group::Group;
use crate::group::Registry;
use crate::group::failure_detector::FailureDetector;
use crate::group::replica::ProposeError;
use crate::meta::command::MetaCommand;
use crate::meta::command::MetaResponse;
use crate::meta::state::MetaState;
use crate::raft::Command;
use crate::raft::CommandResponse;
use crate::raft::LogId;
use crate::raft::TypeConfig;
use crate::raft::state_machine::GroupData;
use crate::transport::Peers;

/// Longest a follower waits to catch up to a leader's read index.
pub const FOLLOWER_READ_WAIT: Duration = Duration::from_secs(2);
/// Deadline of node-to-node calls made on behalf of a request.
pub const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A node's identity, persisted in its data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: NodeId,
    pub meta_replica_id: ReplicaId,
}

/// Why a request through a Raft group did not succeed here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("node is starting or joining the cluster")]
    NotReady,
    /// Another replica leads; `leader_addr` is where to try, if known.
    #[error("{what}: not served by this node{}", .leader_addr.as_deref().map(|a| format!("; try {a}")).unwrap_or_else(|| "; no leader is known right now (election in progress?)".into()))]
    NotLeader { what: String, leader_addr: Option<String> },
    /// Leadership changed before the write committed.
    #[error(
        "{what}: leadership changed before the write committed; its outcome is unknown, retry with the same request id"
    )]
    OutcomeUnknown { what: String, leader_addr: Option<String> },
    #[error("{what}: cannot reach a quorum to confirm leadership: {detail}")]
    NoQuorum { what: String, detail: String },
    #[error("{what}: replica stopped ({detail}); it is being restarted")]
    Stopped { what: String, detail: String },
    /// Refused by Raft for a reason the caller can act on (a membership
    /// change in progress, a failed precondition).
    #[error("{what}: {detail}")]
    Refused { what: String, detail: String },
    /// The caller may not do this (beyond what its role allows).
    #[error("{what}: {detail}")]
    Denied { what: String, detail: String },
    /// The request itself is malformed.
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error("{what}: {detail}")]
    NotFound { what: String, detail: String },
    /// A peer did not answer, or this replica could not catch up in time.
    #[error("{what}: {detail}")]
    Unavailable { what: String, detail: String },
    #[error("{what}: {detail}")]
    Internal { what: String, detail: String },
}

impl Error {
    pub fn unavailable(what: &str, detail: impl std::fmt::Display) -> Error {
        Error::Unavailable { what: what.to_string(), detail: detail.to_string() }
    }

    pub fn internal(what: &str, detail: impl std::fmt::Display) -> Error {
        Error::Internal { what: what.to_string(), detail: detail.to_string() }
    }

    pub fn no_leader(what: &str) -> Error {
        Error::NotLeader { what: what.to_string(), leader_addr: None }
    }
}

pub struct Cluster {
    pub registry: Arc<Registry>,
    pub peers: Arc<Peers>,
    pub detector: Arc<FailureDetector>,
    identity: OnceLock<NodeIdentity>,
}

impl Cluster {
    pub fn new(registry: Arc<Registry>, peers: Arc<Peers>, detector: Arc<FailureDetector>) -> Cluster {
        Cluster { registry, peers, detector, identity: OnceLock::new() }
    }

    pub fn identity(&self) -> Option<NodeIdentity> {
        self.identity.get().copied()
    }

    pub fn set_identity(&self, id: NodeIdentity) {
        let set = self.identity.get_or_init(|| id);
        assert_eq!(*set, id, "a node's identity never changes while it runs");
    }

    /// This node's id, or `NotReady` while it is still joining.
    pub fn node_id(&self) -> Result<NodeId, Error> {
        self.identity().map(|i| i.node_id).ok_or(Error::NotReady)
    }

    /// Whether `replica` on `node` was quarantined for corrupt durable
    /// state: known locally for this node, else from the node's last
    /// answer to the failure detector.
    pub fn is_quarantined(&self, node: NodeId, replica: ReplicaId) -> bool {
        if self.identity().is_some_and(|i| i.node_id == node) {
            return self.registry.quarantined().values().any(|r| *r == replica);
        }
        self.detector
            .view(node)
            .and_then(|v| v.last_answer)
            .is_some_and(|a| a.quarantined_replica_ids.contains(&replica.get()))
    }

    pub fn meta_group(&self) -> Option<Arc<Group>> {
        self.registry.get(META_GROUP_ID)
    }

    /// Whether the local replica of `g` is a shadow (per this node's copy
    /// of the directory).
    pub fn is_shadow(&self, g: &Group) -> bool {
        self.with_meta(|m| {
            m.resource_by_group(g.id)
                .and_then(|r| r.replicas.iter().find(|x| x.replica_id == g.replica_id))
                .is_some_and(|x| x.role == crate::meta::directory::ReplicaRole::Shadow)
        })
        .unwrap_or(false)
    }

    /// Runs `f` on this node's applied copy of the meta state.
    pub fn with_meta<R>(&self, f: impl FnOnce(&MetaState) -> R) -> Option<R> {
        let g = self.meta_group()?;
        let st = g.state.read();
        match &st.data {
            GroupData::Meta(m) => Some(f(m)),
            GroupData::Resource(_) => None,
        }
    }

    /// Address of the node hosting `replica`: from the meta directory, or
    /// from group memberships seen by openraft (while joining).
    pub fn replica_addr(&self, replica: ReplicaId) -> Option<String> {
        self.with_meta(|m| m.replica_addr(replica).map(|(_, a)| a.to_string()))
            .flatten()
            .or_else(|| self.peers.replica_addr(replica).map(|(_, a)| a))
    }

    /// Address of the node hosting the group's current leader.
    pub fn leader_addr(&self, g: &Group) -> Option<String> {
        let leader = g.raft.metrics().borrow_watched().current_leader?;
        self.replica_addr(leader)
    }

    /// `NotLeader` for `g`, naming its leader's address if known.
    pub fn not_leader(&self, what: &str, g: &Group) -> Error {
        Error::NotLeader { what: what.to_string(), leader_addr: self.leader_addr(g) }
    }

    fn forward(&self, what: &str, f: ForwardToLeader<TypeConfig>) -> Error {
        Error::NotLeader { what: what.to_string(), leader_addr: f.leader_id.and_then(|r| self.replica_addr(r)) }
    }

    /// What a failed proposal means for the caller.
    pub fn write_error(&self, what: &str, e: ProposeError) -> Error {
        let e = match e {
            ProposeError::Raft(e) => e,
            e @ ProposeError::TooLarge { .. } => {
                return Error::Invalid { what: what.to_string(), detail: e.to_string() };
            }
            ProposeError::Encode(e) => return Error::internal(what, e),
        };
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => self.forward(what, f),
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => Error::OutcomeUnknown {
                what: what.to_string(),
                leader_addr: f.leader_id.and_then(|r| self.replica_addr(r)),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                Error::Refused { what: what.to_string(), detail: e.to_string() }
            }
            RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => {
                Error::Refused { what: what.to_string(), detail: e.to_string() }
            }
            RaftError::Fatal(f) => Error::Stopped { what: what.to_string(), detail: f.to_string() },
        }
    }

    /// What a failed read index means for the caller.
    pub fn read_error(&self, what: &str, e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> Error {
        match e {
            RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => self.forward(what, f),
            RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)) => {
                Error::NoQuorum { what: what.to_string(), detail: q.to_string() }
            }
            RaftError::Fatal(f) => Error::Stopped { what: what.to_string(), detail: f.to_string() },
        }
    }

    /// Proposes `cmd` on this node's meta replica (which must lead).
    ///
    /// A structural command is first applied to a copy of the directory:
    /// one that would leave it failing its check is refused here, before
    /// it is committed (applied, it would stop the meta replica of every
    /// node).
    pub async fn propose_meta(&self, cmd: MetaCommand) -> Result<MetaResponse, Error> {
        let meta = self.meta_group().ok_or(Error::NotReady)?;
        if cmd.is_structural()
            && let Some(Err(reason)) = self.with_meta(|m| m.dry_run(&cmd))
        {
            tracing::error!(command = %cmd, %reason, "a meta command would break the directory's invariants");
            return Err(Error::Refused {
                what: "meta group".into(),
                detail: format!(
                    "refused before commit: applying it would leave the directory failing its check: {reason}"
                ),
            });
        }
        let resp = meta.propose(Command::Meta(cmd)).await.map_err(|e| self.write_error("meta group", e))?;
        match resp.response() {
            CommandResponse::Meta(m) => Ok(m.clone()),
            other => Err(Error::internal("meta group", format!("answered {other:?}"))),
        }
    }

    /// Waits until `g`'s local state reflects every write acknowledged
    /// before this call: the leader confirms its leadership (read index);
    /// a follower or learner asks the leader for its read index and waits
    /// to apply up to it.
    pub async fn linearize(&self, g: &Group, what: &str) -> Result<(), Error> {
        g.touch();
        if g.is_leader() {
            let ready =
                g.raft.ensure_linearizable(ReadPolicy::ReadIndex).await.map_err(|e| self.read_error(what, e))?;
            tracing::debug!(group = %g.id, replica = %g.replica_id, read_log_id = %ready.log_id(), applied = g.state.applied_index(), "leader read index");
            return Ok(());
        }
        #[cfg(feature = "planted-bugs")]
        if crate::planted::stale_follower_reads() {
            return Ok(());
        }
        let addr = self.leader_addr(g).ok_or_else(|| Error::no_leader(what))?;
        let mut client = self.peers.client(&addr).map_err(|e| Error::unavailable(what, e))?;
        let mut req = tonic::Request::new(ReadIndexRequest { group_id: g.id.get() });
        req.set_timeout(PEER_CALL_TIMEOUT);
        let resp = client.read_index(req).await.map_err(|s| remote_error(what, s))?.into_inner();
        let log_id: LogId = codec::decode("read index", &resp.read_log_id).map_err(|e| Error::internal(what, e))?;
        let applied = g.raft.metrics().borrow_watched().last_applied.clone();
        let lin = Linearizer::<TypeConfig>::new(g.replica_id, ReadLogId::from_log_id(log_id), applied);
        match lin.try_await_ready(&g.raft, Some(FOLLOWER_READ_WAIT)).await {
            Ok(Ok(_)) => {
                tracing::debug!(group = %g.id, replica = %g.replica_id, leader = %addr, read_log_id = %log_id, applied = g.state.applied_index(), "follower read index");
                Ok(())
            }
            Ok(Err(st)) => Err(Error::unavailable(
                what,
                format!(
                    "this replica did not catch up to the leader's read index {} in {FOLLOWER_READ_WAIT:?}",
                    st.read_log_id()
                ),
            )),
            Err(f) => Err(Error::Stopped { what: what.to_string(), detail: f.to_string() }),
        }
    }
}

/// A peer's refusal, as this node's error: a redirect stays a redirect.
pub fn remote_error(what: &str, s: tonic::Status) -> Error {
    let leader_addr =
        s.metadata().get(shadowstore_proto::LEADER_ADDRESS_METADATA).and_then(|v| v.to_str().ok()).map(String::from);
    match s.code() {
        tonic::Code::Unavailable if leader_addr.is_some() => Error::NotLeader { what: what.to_string(), leader_addr },
        _ => Error::unavailable(what, s.message()),
    }
}
