//! What a resource group's log carries: the commands its state machine
//! applies ([`ResourceCommand`]) and the answers it gives
//! ([`ResourceResponse`]). Stored in the Raft log (postcard): variants are
//! only ever appended (the `resource_state` record family).

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

use crate::resource::manifest::BlobManifest;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::ids::RequestId;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ResourceCommand {
    /// Writes an inline value.
    Put {
        request: RequestId,
        /// The proposing leader's wall clock (session and version expiry).
        now_ms: u64,
        variant: String,
        value: Bytes,
        if_version: Option<u64>,
    },
    /// Commits an erasure-coded blob whose shards the holders already have.
    PutBlob {
        request: RequestId,
        now_ms: u64,
        variant: String,
        manifest: BlobManifest,
        if_version: Option<u64>,
    },
    Delete {
        request: RequestId,
        now_ms: u64,
        variant: String,
        if_version: Option<u64>,
    },
    /// Drops superseded versions older than `grace_ms`, except the newest
    /// `keep_versions - 1` superseded versions of each variant (with the
    /// current one, `keep_versions` in all; a deleted variant keeps no
    /// extra).
    Expire {
        now_ms: u64,
        grace_ms: u64,
        keep_versions: u32,
    },
    /// Moves every shard held by `from` to `to` (a replica replaced `from`);
    /// `to` rebuilds the shards from the others.
    ReassignHolders {
        now_ms: u64,
        from: ReplicaId,
        to: ReplicaId,
    },
    /// Replaces the manifest of `version` of `variant`, written in a
    /// narrower code while a holder was down (`blob::quorum`), by
    /// `manifest`: the same bytes in the group's code. Applies only while
    /// the version still refers to blob `old_blob_id`, so a re-encoding
    /// that raced with another never undoes it. (Appended last: the
    /// encoding of the earlier commands is unchanged.)
    Reencode {
        now_ms: u64,
        variant: String,
        version: u64,
        old_blob_id: u64,
        manifest: BlobManifest,
    },
}

impl fmt::Display for ResourceCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceCommand::Put { variant, value, .. } => write!(f, "put {variant} ({} bytes inline)", value.len()),
            ResourceCommand::PutBlob { variant, manifest, .. } => {
                write!(f, "put {variant} (blob {:x}, {} bytes)", manifest.blob_id, manifest.layout.size)
            }
            ResourceCommand::Delete { variant, .. } => write!(f, "delete {variant}"),
            ResourceCommand::Expire { grace_ms, .. } => write!(f, "expire versions superseded > {grace_ms} ms ago"),
            ResourceCommand::ReassignHolders { from, to, .. } => write!(f, "reassign shards of replica {from} to {to}"),
            ResourceCommand::Reencode { variant, version, manifest, .. } => write!(
                f,
                "re-encode {variant}@{version} as {}+{} (blob {:x})",
                manifest.layout.k, manifest.layout.m, manifest.blob_id
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceResponse {
    /// The write applied; `version` is the new version (for a delete, the
    /// version of the deletion).
    Written { version: u64 },
    /// A conditional write found another current version (`None`: absent).
    VersionMismatch { current: Option<u64> },
    /// Delete of a variant that does not exist.
    NotFound,
    /// The write would exceed a limit of the resource.
    LimitExceeded { what: String },
    /// A malformed command (e.g. an inconsistent manifest).
    Rejected { reason: String },
    /// A late duplicate of a request whose answer was already delivered.
    StaleRequest,
    /// Maintenance applied: how many versions or shards it touched.
    Maintained { count: u64 },
}
