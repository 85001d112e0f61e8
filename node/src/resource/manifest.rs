//! What Raft records about an erasure-coded blob: its layout, which replica
//! holds each shard, and the crc32 of every chunk. Committing a manifest is
//! the linearization point of a blob write.

use serde::Deserialize;
use serde::Serialize;

use super::layout::Layout;
use shadowstore_base::ids::ReplicaId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobManifest {
    /// Names the blob's shards on the holders; random per write attempt, so
    /// an abandoned attempt's shards never mix with a committed blob's.
    pub blob_id: u64,
    pub layout: Layout,
    /// `holders[j]` holds shard j of every stripe.
    pub holders: Vec<ReplicaId>,
    /// crc32 of every chunk, indexed by `Layout::crc_index`.
    pub crcs: Vec<u32>,
}

/// Bytes a manifest may take in its `PutBlob` command: the command limit
/// less room for the command's other fields (request id, time, a variant
/// name of at most `VARIANT_NAME_BYTES_MAX` bytes, condition, tags).
pub const MANIFEST_BYTES_MAX: usize = crate::raft::log_store::COMMAND_BYTES_MAX - 4 * 1024;

/// Postcard's longest encoding of a u32 and of a u64 (varints).
const VARINT_U32_LONGEST: usize = 5;
const VARINT_U64_LONGEST: usize = 10;

/// Longest encoding of a manifest of `layout` (whatever its ids and crcs):
/// blob id, layout fields, the holder list and the crc list.
pub fn encoded_bytes_upper(layout: &Layout) -> usize {
    let fixed = VARINT_U64_LONGEST // blob_id
        + VARINT_U64_LONGEST + 2 * VARINT_U32_LONGEST + 2 // layout
        + 2 * VARINT_U64_LONGEST; // the two list lengths
    fixed + layout.shards() * VARINT_U64_LONGEST + layout.crc_slots() * VARINT_U32_LONGEST
}

/// The largest blob whose manifest fits [`MANIFEST_BYTES_MAX`] with this
/// stripe size and code: one crc per chunk slot, so the capacity falls
/// with smaller stripes and wider codes.
pub fn blob_bytes_capacity(stripe_size: u32, k: u8, m: u8) -> u64 {
    let empty = Layout { size: 0, ..Layout::new(1, stripe_size, k, m) };
    let crcs_per_stripe = empty.shards() * empty.chunk_slots_per_shard() as usize;
    let budget = MANIFEST_BYTES_MAX - encoded_bytes_upper(&empty);
    let stripes = budget / VARINT_U32_LONGEST / crcs_per_stripe;
    stripes as u64 * stripe_size as u64
}

impl BlobManifest {
    pub fn crc(&self, stripe: u32, shard: usize, chunk: u32) -> u32 {
        self.crcs[self.layout.crc_index(stripe, shard, chunk)]
    }

    /// The shard index `replica` holds, if any.
    pub fn shard_of(&self, replica: ReplicaId) -> Option<usize> {
        self.holders.iter().position(|h| *h == replica)
    }

    /// Structural checks a state machine applies before accepting it.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.layout;
        if l.k == 0 {
            return Err("manifest has no data shards".into());
        }
        if self.holders.len() != l.shards() {
            return Err(format!("{} holders for {} shards", self.holders.len(), l.shards()));
        }
        let mut distinct = self.holders.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != self.holders.len() {
            return Err("a replica holds two shards".into());
        }
        if self.crcs.len() != l.crc_slots() {
            return Err(format!("{} crcs for {} chunk slots", self.crcs.len(), l.crc_slots()));
        }
        if l.size == 0 || l.stripe_size < l.k as u32 || l.chunk_size == 0 {
            return Err("degenerate layout".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::testing::log_id;
    use shadowstore_base::ids::RequestId;
    use shadowstore_base::limits::VARIANT_NAME_BYTES_MAX;

    use super::*;
    use crate::raft::Command;
    use crate::raft::Entry;
    use crate::raft::TypeConfig;
    use crate::raft::log_store::ENTRY_BYTES_MAX;
    use crate::resource::ResourceCommand;

    /// A manifest of `size` bytes with the longest encoding its layout
    /// allows, committed by the longest `PutBlob` entry.
    fn worst_entry(size: u64, stripe_size: u32, k: u8, m: u8) -> (usize, usize) {
        let layout = Layout::new(size, stripe_size, k, m);
        let manifest = BlobManifest {
            blob_id: u64::MAX,
            layout: Layout { size: u64::MAX - 1, ..layout },
            holders: vec![ReplicaId::new(u64::MAX); layout.shards()],
            crcs: vec![u32::MAX; layout.crc_slots()],
        };
        let manifest_bytes = shadowstore_base::codec::encode("manifest", &manifest).unwrap().len();
        let cmd = Command::Resource(ResourceCommand::PutBlob {
            request: RequestId { client_id: u64::MAX, seq: u64::MAX, first_incomplete_seq: u64::MAX },
            now_ms: u64::MAX,
            variant: "v".repeat(VARIANT_NAME_BYTES_MAX),
            manifest,
            if_version: Some(u64::MAX),
        });
        let entry: Entry = Entry::new_normal(log_id::<TypeConfig>(u64::MAX, ReplicaId::new(u64::MAX), u64::MAX), cmd);
        (manifest_bytes, shadowstore_base::codec::encode("entry", &entry).unwrap().len())
    }

    #[test]
    fn a_blob_at_capacity_commits_in_one_log_entry() {
        for (stripe_size, k, m) in
            [(1 << 20, 2, 1), (1 << 20, 3, 2), (64 * 1024, 2, 1), (64 * 1024, 1, 4), (8 << 20, 3, 2)]
        {
            let capacity = blob_bytes_capacity(stripe_size, k, m);
            assert!(capacity >= 1 << 30, "{stripe_size}/{k}+{m}: a manifest holds at least 1 GiB, got {capacity}");
            let (manifest_bytes, entry_bytes) = worst_entry(capacity, stripe_size, k, m);
            assert!(manifest_bytes <= encoded_bytes_upper(&Layout::new(capacity, stripe_size, k, m)));
            assert!(manifest_bytes <= MANIFEST_BYTES_MAX, "{stripe_size}/{k}+{m}: {manifest_bytes}");
            assert!(entry_bytes <= ENTRY_BYTES_MAX, "{stripe_size}/{k}+{m}: entry of {entry_bytes} bytes");
            // One stripe more no longer fits: the capacity is the largest.
            let over = Layout::new(capacity + stripe_size as u64, stripe_size, k, m);
            assert!(encoded_bytes_upper(&over) > MANIFEST_BYTES_MAX, "{stripe_size}/{k}+{m}: capacity is not tight");
        }
    }
}
