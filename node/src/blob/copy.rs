//! A shadow replica's full local copies of its resource's blobs.
//!
//! A primary holds one shard of each blob (the one its manifest assigns
//! it); a shadow holds every *data* shard of every retained version, so it
//! serves whole reads from its own disk. The copies are stored exactly as
//! shards are (same keys, chunks, per-shard record) and checked against the
//! same manifest crc32s, so the scrubber verifies and repairs them, reads
//! verify them chunk by chunk, and garbage collection keeps them while the
//! shadow lives ([`kept_shards`]). They are fetched stripe by stripe through
//! the ordinary read path (k data shards, or any k shards reconstructed
//! when a holder is down), split into the data shards and written; a
//! shard's record is written only once all its chunks are, so a record
//! means a complete copy.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::DataPlane;
use super::Error;
use super::read::read_stripe;
use super::shard_store::HeldShard;
use super::shard_store::ShardStore;
use crate::group::Group;
use crate::raft::state_machine::GroupData;
use crate::resource::manifest::BlobManifest;

/// The shards the local replica of `g` keeps, with their manifests: its own
/// shard of every retained blob, or, for a shadow, every data shard.
pub fn kept_shards(g: &Group, shadow: bool) -> Vec<(Arc<BlobManifest>, u8)> {
    let st = g.state.read();
    let GroupData::Resource(rs) = &st.data else { return Vec::new() };
    let mut out = Vec::new();
    for m in rs.blobs() {
        if shadow {
            out.extend((0..m.layout.k).map(|j| (m.clone(), j)));
        } else if let Some(j) = m.shard_of(g.replica_id) {
            out.push((m.clone(), j as u8));
        }
    }
    out
}

/// How far a shadow's copies are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyProgress {
    pub blobs_total: u64,
    pub blobs_copied: u64,
    pub bytes_copied: u64,
}

impl CopyProgress {
    pub fn complete(&self) -> bool {
        self.blobs_copied == self.blobs_total
    }
}

/// Copies every blob of `g` the shadow lacks; returns the progress after
/// this pass. Stops at the first blob that cannot be read (it is tried
/// again on the next pass).
pub async fn sync_copies(ctx: &DataPlane, g: &Group) -> Result<CopyProgress, Error> {
    let store = ShardStore::new(ctx.engine.clone());
    let kept = kept_shards(g, true);
    let blobs: BTreeSet<u64> = kept.iter().map(|(m, _)| m.blob_id).collect();
    let mut progress = CopyProgress { blobs_total: blobs.len() as u64, ..Default::default() };
    let mut missing: Vec<Arc<BlobManifest>> = Vec::new();
    for (m, j) in &kept {
        let held = store.held_shard(g.id, m.blob_id, *j).map_err(|e| Error::Internal(e.to_string()))?;
        if held.is_none() && missing.last().is_none_or(|x| x.blob_id != m.blob_id) {
            missing.push(m.clone());
        }
    }
    progress.blobs_copied = progress.blobs_total - missing.len() as u64;
    for m in missing {
        progress.bytes_copied += copy_blob(ctx, g, &store, &m).await?;
        progress.blobs_copied += 1;
    }
    Ok(progress)
}

/// Copies one blob's data shards; returns its size.
async fn copy_blob(ctx: &DataPlane, g: &Group, store: &ShardStore, m: &BlobManifest) -> Result<u64, Error> {
    let l = &m.layout;
    let k = l.k as usize;
    let mut chunks_stored = vec![0u64; k];
    for stripe in 0..l.stripes() {
        let data = read_stripe(ctx, g.id, m, stripe).await?;
        let shard_len = l.shard_len(stripe) as usize;
        for (j, stored) in chunks_stored.iter_mut().enumerate() {
            let mut shard = vec![0u8; shard_len];
            let start = (j * shard_len).min(data.len());
            let end = ((j + 1) * shard_len).min(data.len());
            shard[..end - start].copy_from_slice(&data[start..end]);
            let mut writes = Vec::with_capacity(l.chunks_in_shard(stripe) as usize);
            let mut offset = 0usize;
            for c in 0..l.chunks_in_shard(stripe) {
                let len = l.chunk_len(stripe, c) as usize;
                let bytes = shard[offset..offset + len].to_vec();
                offset += len;
                // The read verified every chunk it used; a shard rebuilt
                // from parity is checked here against the manifest too.
                if crc32fast::hash(&bytes) != m.crc(stripe, j, c) {
                    return Err(Error::DataLoss(format!(
                        "blob {:x} stripe {stripe} shard {j} chunk {c}: rebuilt bytes fail the manifest's crc",
                        m.blob_id
                    )));
                }
                writes.push((stripe, c as u16, bytes));
            }
            *stored += writes.len() as u64;
            store.put_chunks(g.id, m.blob_id, j as u8, writes).map_err(|e| Error::Internal(e.to_string()))?;
        }
    }
    ctx.syncer.sync().await.map_err(|e| Error::Internal(e.to_string()))?;
    let now_ms = ctx.clock.now_ms();
    for (j, stored) in chunks_stored.into_iter().enumerate() {
        let held = HeldShard { received_at_ms: now_ms, chunks_stored: stored };
        store.set_held(g.id, m.blob_id, j as u8, held).map_err(|e| Error::Internal(e.to_string()))?;
    }
    tracing::debug!(group = %g.id, blob = %m.blob_id, size = l.size, "shadow copied a blob");
    Ok(l.size)
}
