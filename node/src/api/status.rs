//! How internal outcomes become gRPC statuses. Every refusal names the
//! problem; a redirect carries the leader's address in metadata.

use shadowstore_proto::LEADER_ADDRESS_METADATA;
use shadowstore_proto::RETRY_AFTER_MS_METADATA;
use tonic::Status;
use tonic::metadata::MetadataValue;

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

/// A domain error of the cluster layer as the caller's status: a redirect
/// carries the leader's address, an unknown leader a retry hint.
impl From<crate::cluster::Error> for Status {
    fn from(e: crate::cluster::Error) -> Status {
        use crate::cluster::Error;
        match e {
            Error::NotReady => not_ready(),
            Error::NotLeader { what, leader_addr } => redirect(&what, leader_addr.as_deref()),
            Error::OutcomeUnknown { ref leader_addr, .. } => {
                let mut s = Status::unavailable(e.to_string());
                if let Some(v) = leader_addr.as_deref().and_then(|a| MetadataValue::try_from(a).ok()) {
                    s.metadata_mut().insert(LEADER_ADDRESS_METADATA, v);
                }
                s
            }
            Error::NoQuorum { .. } | Error::Stopped { .. } | Error::Unavailable { .. } => {
                Status::unavailable(e.to_string())
            }
            Error::Refused { .. } => Status::failed_precondition(e.to_string()),
            Error::Invalid { .. } => Status::invalid_argument(e.to_string()),
            Error::Denied { .. } => Status::permission_denied(e.to_string()),
            Error::NotFound { .. } => Status::not_found(e.to_string()),
            Error::Internal { .. } => Status::internal(e.to_string()),
        }
    }
}

/// A blob that could not be written or read, as the caller's status.
impl From<crate::blob::Error> for Status {
    fn from(e: crate::blob::Error) -> Status {
        use crate::blob::Error;
        match e {
            Error::Cluster(e) => e.into(),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Invalid(m) => Status::invalid_argument(m),
            Error::TooLarge(m) => Status::resource_exhausted(m),
            Error::DataLoss(m) => Status::data_loss(m),
            Error::Source(_) => Status::cancelled(e.to_string()),
            Error::Internal(m) => Status::internal(m),
        }
    }
}

/// A client's stream failure as a blob error (its code kept where the
/// blob error has one).
pub fn source_error(s: Status) -> crate::blob::Error {
    use crate::blob::Error;
    match s.code() {
        tonic::Code::InvalidArgument => Error::Invalid(s.message().to_string()),
        tonic::Code::ResourceExhausted => Error::TooLarge(s.message().to_string()),
        _ => Error::Source(s.message().to_string()),
    }
}
