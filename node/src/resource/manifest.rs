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
