//! The holder side of the data plane: storing a shard streamed by a writer
//! and serving a shard's chunks to readers. Used by the `Peer` service for
//! remote writers and readers, and directly when writer or reader is local.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use bytes::Bytes;
use futures::Stream;
use futures::StreamExt;
use shadowstore_proto::peer::ShardChunk;

use super::DataPlane;
use super::shard_store::HeldShard;
use super::shard_store::ShardStore;
use crate::group::Group;
use crate::raft::state_machine::GroupData;
use crate::resource::manifest::BlobManifest;
use shadowstore_base::ids::GroupId;

/// Chunks buffered before one storage batch.
const CHUNKS_PER_BATCH: usize = 16;
/// Chunks one stripe of one shard has at most: a shard's part of the
/// largest stripe, in chunks.
pub const CHUNKS_PER_STRIPE_MAX: u32 =
    shadowstore_base::limits::STRIPE_SIZE_MAX.div_ceil(crate::resource::layout::CHUNK_SIZE);
/// Stripes one blob has at most: the largest blob in the smallest stripes.
pub const STRIPES_PER_SHARD_MAX: u32 =
    (shadowstore_base::limits::BLOB_BYTES_LIMIT / shadowstore_base::limits::STRIPE_SIZE_MIN as u64) as u32;

#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    #[error("chunk {stripe}/{chunk} failed its crc in transit")]
    Corrupt { stripe: u32, chunk: u32 },
    #[error("chunk of {len} bytes exceeds the chunk size")]
    Oversized { len: usize },
    #[error(
        "chunk {stripe}/{chunk} is out of range: a shard has at most {STRIPES_PER_SHARD_MAX} stripes of {CHUNKS_PER_STRIPE_MAX} chunks"
    )]
    OutOfRange { stripe: u32, chunk: u32 },
    #[error("the shard stream exceeds {bytes_max} bytes")]
    TooLarge { bytes_max: u64 },
    #[error("stream: {0}")]
    Stream(String),
    #[error("storage: {0}")]
    Storage(#[from] io::Error),
    #[error("replica {replica} does not hold shard {shard} of blob {blob:x}")]
    NotHolder { replica: u64, blob: u64, shard: u8 },
}

/// Shards with a write stream open on this node; garbage collection never
/// touches them.
#[derive(Debug, Default)]
pub struct ActiveWrites(Mutex<HashMap<(GroupId, u64, u8), usize>>);

impl ActiveWrites {
    pub fn contains(&self, group: GroupId, blob: u64, shard: u8) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&(group, blob, shard))
    }

    fn enter(&self, key: (GroupId, u64, u8)) -> ActiveWriteGuard<'_> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default() += 1;
        ActiveWriteGuard { writes: self, key }
    }
}

struct ActiveWriteGuard<'a> {
    writes: &'a ActiveWrites,
    key: (GroupId, u64, u8),
}

impl Drop for ActiveWriteGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.writes.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Stores every chunk of `chunks` as shard `shard` of `blob`, checking each
/// chunk's crc, then syncs. Returns the number of chunks stored.
pub async fn store_shard<S>(
    ctx: &DataPlane,
    group: GroupId,
    blob: u64,
    shard: u8,
    bytes_max: u64,
    mut chunks: S,
) -> Result<u64, HolderError>
where
    S: Stream<Item = Result<ShardChunk, String>> + Unpin,
{
    let _active = ctx.active_writes.enter((group, blob, shard));
    let store = ShardStore::new(ctx.engine.clone());
    store.note_shard(group, blob, shard, ctx.clock.now_ms())?;
    let mut batch = Vec::with_capacity(CHUNKS_PER_BATCH);
    let mut stored = 0u64;
    let mut bytes = 0u64;
    while let Some(c) = chunks.next().await {
        let c = c.map_err(HolderError::Stream)?;
        if c.data.len() > crate::resource::layout::CHUNK_SIZE as usize {
            return Err(HolderError::Oversized { len: c.data.len() });
        }
        if c.stripe >= STRIPES_PER_SHARD_MAX || c.chunk >= CHUNKS_PER_STRIPE_MAX {
            return Err(HolderError::OutOfRange { stripe: c.stripe, chunk: c.chunk });
        }
        bytes += c.data.len() as u64;
        if bytes > bytes_max {
            return Err(HolderError::TooLarge { bytes_max });
        }
        if crc32fast::hash(&c.data) != c.crc32 {
            return Err(HolderError::Corrupt { stripe: c.stripe, chunk: c.chunk });
        }
        let chunk = u16::try_from(c.chunk).map_err(|_| HolderError::OutOfRange { stripe: c.stripe, chunk: c.chunk })?;
        batch.push((c.stripe, chunk, c.data.to_vec()));
        if batch.len() == CHUNKS_PER_BATCH {
            stored += batch.len() as u64;
            store.put_chunks(group, blob, shard, std::mem::take(&mut batch))?;
        }
    }
    stored += batch.len() as u64;
    if !batch.is_empty() {
        store.put_chunks(group, blob, shard, batch)?;
    }
    let held = store.held_shard(group, blob, shard)?.unwrap_or(HeldShard { received_at_ms: 0, chunks_stored: 0 });
    let held = HeldShard { received_at_ms: ctx.clock.now_ms(), chunks_stored: held.chunks_stored + stored };
    store.set_held(group, blob, shard, held)?;
    ctx.syncer.sync().await?;
    Ok(stored)
}

/// The chunks of `shard` of stripes `[first, first + chunks_per_stripe.len())`
/// in order; a chunk this holder lacks comes back marked missing.
pub fn read_shard(
    ctx: &DataPlane,
    group: GroupId,
    blob: u64,
    shard: u8,
    first: u32,
    chunks_per_stripe: &[u32],
) -> io::Result<Vec<ShardChunk>> {
    let store = ShardStore::new(ctx.engine.clone());
    let mut out = Vec::new();
    for (i, &expected) in chunks_per_stripe.iter().enumerate() {
        let stripe = first + i as u32;
        let mut have = store.get_stripe(group, blob, shard, stripe)?.into_iter().peekable();
        for c in 0..expected {
            let data = match have.peek() {
                Some((idx, _)) if *idx as u32 == c => have.next().map(|(_, d)| d),
                _ => None,
            };
            out.push(match data {
                Some(d) => ShardChunk {
                    header: None,
                    stripe,
                    chunk: c,
                    crc32: crc32fast::hash(&d),
                    data: Bytes::from(d),
                    missing: false,
                },
                None => ShardChunk { header: None, stripe, chunk: c, data: Bytes::new(), crc32: 0, missing: true },
            });
        }
    }
    Ok(out)
}

/// The manifest of blob `blob` among `g`'s retained versions.
pub fn retained_manifest(g: &Group, blob: u64) -> Option<std::sync::Arc<BlobManifest>> {
    let st = g.state.read();
    match &st.data {
        GroupData::Resource(rs) => rs.blobs().find(|m| m.blob_id == blob).cloned(),
        GroupData::Meta(_) => None,
    }
}

/// Whether every chunk of `shard` of `m` is stored here and matches the
/// manifest's crc32.
pub fn shard_verified(ctx: &DataPlane, group: GroupId, m: &BlobManifest, shard: u8) -> io::Result<bool> {
    let store = ShardStore::new(ctx.engine.clone());
    for stripe in 0..m.layout.stripes() {
        let have = store.get_stripe(group, m.blob_id, shard, stripe)?;
        let expected = m.layout.chunks_in_shard(stripe);
        let good = have
            .iter()
            .filter(|(c, data)| {
                (*c as u32) < expected
                    && data.len() == m.layout.chunk_len(stripe, *c as u32) as usize
                    && crc32fast::hash(data) == m.crc(stripe, shard as usize, *c as u32)
            })
            .count();
        if good != expected as usize {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What a handoff of a removed replica's shard came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandOff {
    /// A retained version still refers to the blob.
    pub retained: bool,
    /// This holder now has every chunk of the shard, verified.
    pub complete: bool,
}

/// Receives a shard that a removed replica's node hands off, on its
/// current holder `g` (caught up with its leader): stores each chunk that
/// matches the manifest's crc32 (a rotted one is dropped; the scrubber
/// rebuilds what is still missing), syncs, and says whether the whole
/// shard is now here.
pub async fn accept_handoff<S>(
    ctx: &DataPlane,
    g: &Group,
    blob: u64,
    shard: u8,
    mut chunks: S,
) -> Result<HandOff, HolderError>
where
    S: Stream<Item = Result<ShardChunk, String>> + Unpin,
{
    let Some(m) = retained_manifest(g, blob) else {
        return Ok(HandOff { retained: false, complete: false });
    };
    if m.shard_of(g.replica_id) != Some(shard as usize) {
        return Err(HolderError::NotHolder { replica: g.replica_id.get(), blob, shard });
    }
    let _active = ctx.active_writes.enter((g.id, blob, shard));
    let store = ShardStore::new(ctx.engine.clone());
    store.note_shard(g.id, blob, shard, ctx.clock.now_ms())?;
    let stripes = m.layout.stripes();
    let mut batch = Vec::with_capacity(CHUNKS_PER_BATCH);
    while let Some(c) = chunks.next().await {
        let c = c.map_err(HolderError::Stream)?;
        let fits = c.stripe < stripes && c.chunk < m.layout.chunks_in_shard(c.stripe);
        if !fits
            || c.data.len() != m.layout.chunk_len(c.stripe, c.chunk) as usize
            || crc32fast::hash(&c.data) != m.crc(c.stripe, shard as usize, c.chunk)
        {
            continue;
        }
        batch.push((c.stripe, c.chunk as u16, c.data.to_vec()));
        if batch.len() == CHUNKS_PER_BATCH {
            store.put_chunks(g.id, blob, shard, std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        store.put_chunks(g.id, blob, shard, batch)?;
    }
    ctx.syncer.sync().await?;
    let complete = shard_verified(ctx, g.id, &m, shard)?;
    if complete {
        let expected = (0..stripes).map(|s| m.layout.chunks_in_shard(s) as u64).sum();
        store.set_held(g.id, blob, shard, HeldShard { received_at_ms: ctx.clock.now_ms(), chunks_stored: expected })?;
    }
    Ok(HandOff { retained: true, complete })
}
