//! Local storage of a node: one storage engine (sled in production) holding
//! every group's Raft log, vote, snapshots and the node's own records, in
//! trees per concern with group-prefixed keys.
//!
//! - [`engine`]: the seam. [`engine::StorageEngine`] is what the Raft log and
//!   state machine see; sled implements it in production
//!   ([`sled_engine`]), an in-memory engine with durable and pending layers
//!   in the simulator and unit tests ([`memory_engine`]).
//! - [`syncer`]: group commit. Many groups' appends and votes wait for one
//!   shared flush + fsync.
//! - [`keys`]: the key layout of every tree.
//! - [`format`]: the data directory's format version, checked (and older
//!   formats upgraded) before anything else reads it.
//! - [`checksum`]: crc32 seals on the Raft log, Raft state and snapshot
//!   manifests, checked on every read.
//! - [`compact`]: offline compaction of a data directory (sled keeps its
//!   file at its high-water mark).

pub mod checksum;
pub mod compact;
pub mod engine;
pub mod format;
pub mod keys;
pub mod memory_engine;
pub mod sled_engine;
pub mod syncer;

pub use engine::SharedEngine;
pub use engine::StorageEngine;
pub use engine::Tree;
pub use engine::WriteBatch;
pub use syncer::Syncer;

/// The trees holding shard chunks and their per-shard records.
pub const SHARD_TREES: [Tree; 2] = [Tree::Shards, Tree::BlobMeta];

/// Deletes every record of `group` in `trees` (each tree keys by group
/// first: see `keys`).
pub fn delete_group_records(
    engine: &SharedEngine,
    group: shadowstore_base::ids::GroupId,
    trees: &[Tree],
) -> std::io::Result<()> {
    for &tree in trees {
        let mut b = WriteBatch::new(tree);
        b.delete_range(keys::group_start(group), keys::group_end(group));
        engine.write(b)?;
    }
    Ok(())
}
