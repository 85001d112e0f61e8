//! Erasure-coded variant blobs: the data plane beside Raft.
//!
//! A value larger than the resource's inline threshold is cut into stripes
//! (1 MiB by default); each stripe into k data shards plus m parity shards
//! (Reed-Solomon, systematic); each shard into chunks of at most 48 KiB,
//! stored in sled by the group's voters (shard j on holder j) and checked by
//! a crc32 recorded in the blob's manifest. Only the manifest goes through
//! Raft; committing it is the write's linearization point.
//!
//! - [`layout`]: stripe, shard and chunk arithmetic.
//! - [`erasure`]: the Reed-Solomon codec.
//! - [`manifest`]: what Raft records about a blob.
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

pub mod erasure;
pub mod fetch;
pub mod gc;
pub mod handoff;
pub mod holder;
pub mod layout;
pub mod manifest;
pub mod quorum;
pub mod read;
pub mod reencode;
pub mod scrub;
pub mod shard_store;
pub mod write;

use std::sync::atomic::AtomicU64;

/// Counters of the blob read path on this node.
#[derive(Debug, Default)]
pub struct BlobStats {
    pub stripes_read: AtomicU64,
    /// Stripes that needed a parity shard (a data shard was missing,
    /// corrupt or unreachable).
    pub degraded_stripes: AtomicU64,
}
