//! How internal outcomes become gRPC statuses. Every refusal names the
//! problem; a redirect carries the leader's address in metadata.

use openraft::errors::ClientWriteError;
use openraft::errors::Fatal;
use openraft::errors::ForwardToLeader;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use shadowstore_proto::LEADER_ADDRESS_METADATA;
use shadowstore_proto::RETRY_AFTER_MS_METADATA;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::raft::TypeConfig;

/// Retry hint when no leader is known (an election is likely under way).
pub const NO_LEADER_RETRY_AFTER_MS: u64 = 200;

/// UNAVAILABLE, pointing at `addr` if known.
pub fn redirect(what: &str, addr: Option<&str>) -> Status {
    match addr {
        Some(addr) => {
            let mut s = Status::unavailable(format!("{what}: not served by this node; try {addr}"));
            if let Ok(v) = MetadataValue::try_from(addr) {
                s.metadata_mut().insert(LEADER_ADDRESS_METADATA, v);
            }
            s
        }
        None => no_leader(what),
    }
}

pub fn no_leader(what: &str) -> Status {
    let mut s = Status::unavailable(format!("{what}: no leader is known right now (election in progress?)"));
    s.metadata_mut().insert(RETRY_AFTER_MS_METADATA, MetadataValue::from(NO_LEADER_RETRY_AFTER_MS));
    s
}

pub fn not_ready() -> Status {
    let mut s = Status::unavailable("node is starting or joining the cluster");
    s.metadata_mut().insert(RETRY_AFTER_MS_METADATA, MetadataValue::from(500u64));
    s
}

pub fn storage(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("local storage failed: {e}"))
}

/// What a failed write through Raft means for the caller, given a way to
/// resolve the leader's address.
pub fn write_error(
    what: &str,
    e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    leader_addr: impl Fn(u64) -> Option<String>,
) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => forward(what, f, leader_addr),
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
            let mut s = Status::unavailable(format!(
                "{what}: leadership changed before the write committed; its outcome is unknown, retry with the same request id"
            ));
            if let Some(addr) = f.leader_id.and_then(leader_addr) {
                if let Ok(v) = MetadataValue::try_from(addr.as_str()) {
                    s.metadata_mut().insert(LEADER_ADDRESS_METADATA, v);
                }
            }
            s
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::failed_precondition(format!("{what}: {e}"))
        }
        RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => {
            Status::failed_precondition(format!("{what}: {e}"))
        }
        RaftError::Fatal(f) => stopped(what, f),
    }
}

fn forward(what: &str, f: ForwardToLeader<TypeConfig>, leader_addr: impl Fn(u64) -> Option<String>) -> Status {
    redirect(what, f.leader_id.and_then(leader_addr).as_deref())
}

fn stopped(what: &str, f: Fatal<TypeConfig>) -> Status {
    Status::unavailable(format!("{what}: replica stopped ({f}); it is being restarted"))
}

pub fn read_error(
    what: &str,
    e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>,
    leader_addr: impl Fn(u64) -> Option<String>,
) -> Status {
    match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => forward(what, f, leader_addr),
        RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)) => {
            Status::unavailable(format!("{what}: cannot reach a quorum to confirm leadership: {q}"))
        }
        RaftError::Fatal(f) => stopped(what, f),
    }
}
