//! Erasure-coded variant blobs: the data plane beside Raft.
//!
//! A value larger than the resource's inline threshold is cut into stripes
//! (1 MiB by default); each stripe into k data shards plus m parity shards
//! (Reed-Solomon, systematic); each shard into chunks of at most 48 KiB,
//! stored in sled by the group's voters (shard j on holder j) and checked by
//! a crc32 recorded in the blob's manifest. Only the manifest goes through
//! Raft; committing it is the write's linearization point.
//!
//! What Raft records about a blob (its manifest and stripe layout) is part
//! of the resource state: `resource::manifest`, `resource::layout`.
//!
//! - [`erasure`]: the Reed-Solomon codec.
//! - [`shard_store`]: a holder's chunks in local storage.
//! - [`holder`]: storing and serving shards (the holder's side).
//! - [`fetch`]: one verified shard of one stripe, from wherever it lives.
//! - [`quorum`]: the durability promise: which holders and code a write
//!   uses, and how many must still hold their shards at commit.
//! - [`write`]: the leader's write pipeline.
//! - [`read`]: the read pipeline, with reconstruction of degraded stripes.
//! - [`reencode`]: blobs written in a narrower code, moved to the group's.
//! - [`scrub`]: background verification and repair.
//! - [`gc`]: removal of orphan and expired shards.
//! - [`handoff`]: a removed replica's shards, given to their current holders.
//! - [`copy`]: a shadow replica's full local copies.

pub mod copy;
pub mod erasure;
pub mod fetch;
pub mod gc;
pub mod handoff;
pub mod holder;
pub mod quorum;
pub mod read;
pub mod reencode;
pub mod scrub;
pub mod shard_store;
pub mod write;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use shadowstore_base::clock::SharedClock;

use crate::cluster::Cluster;
use crate::rng::NodeRng;
use crate::storage::SharedEngine;
use crate::storage::Syncer;

/// The data plane of one node: the handles it uses and the state it keeps
/// (counters, the scrubber's findings, shard writes in progress, holders
/// that failed recently). Every function of this module takes it.
pub struct DataPlane {
    pub cluster: Arc<Cluster>,
    pub engine: SharedEngine,
    pub syncer: Syncer,
    pub clock: SharedClock,
    pub rng: Arc<NodeRng>,
    pub stats: BlobStats,
    pub scrubber: scrub::Scrubber,
    pub active_writes: holder::ActiveWrites,
    pub holder_failures: quorum::HolderFailures,
}

impl DataPlane {
    pub fn new(
        cluster: Arc<Cluster>,
        engine: SharedEngine,
        syncer: Syncer,
        clock: SharedClock,
        rng: Arc<NodeRng>,
    ) -> Self {
        DataPlane {
            cluster,
            engine,
            syncer,
            clock,
            rng,
            stats: BlobStats::default(),
            scrubber: scrub::Scrubber::default(),
            active_writes: holder::ActiveWrites::default(),
            holder_failures: quorum::HolderFailures::default(),
        }
    }
}

/// Why a blob could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Too few holders live, stored or still hold their shards, or a
    /// stripe's holders are unreachable: worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// The value's stream does not match what was declared.
    #[error("{0}")]
    Invalid(String),
    /// The value exceeds a limit.
    #[error("{0}")]
    TooLarge(String),
    /// A stripe cannot be rebuilt: fewer than k verified shards exist.
    #[error("{0}")]
    DataLoss(String),
    /// The client's stream failed.
    #[error("the value's stream failed: {0}")]
    Source(String),
    /// Committing through the group failed.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::Error),
    #[error("{0}")]
    Internal(String),
}

/// Counters of the blob read path on this node.
#[derive(Debug, Default)]
pub struct BlobStats {
    pub stripes_read: AtomicU64,
    /// Stripes that needed a parity shard (a data shard was missing,
    /// corrupt or unreachable).
    pub degraded_stripes: AtomicU64,
}
