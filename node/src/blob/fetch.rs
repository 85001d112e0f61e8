//! Fetching one shard of one stripe from its holder (local storage or a
//! `ReadShard` call), checked chunk by chunk against the manifest's crc32s.
//! Corrupt bytes never leave this function as data.

use std::time::Duration;

use futures::StreamExt;
use shadowstore_proto::peer::ReadShardRequest;
use shadowstore_proto::peer::ShardChunk;

use super::DataPlane;
use super::holder;
use super::shard_store::ShardStore;
use crate::resource::manifest::BlobManifest;
use shadowstore_base::ids::GroupId;

/// Deadline of one shard read from another node.
pub const SHARD_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardFault {
    #[error("chunk {chunk} is missing")]
    Missing { chunk: u32 },
    #[error("chunk {chunk} fails its crc")]
    Corrupt { chunk: u32 },
    #[error("holder unreachable: {0}")]
    Unreachable(String),
}

/// The chunks of `shard` of `stripe` as its holder returns them, unverified.
async fn raw_chunks(
    ctx: &DataPlane,
    group: GroupId,
    m: &BlobManifest,
    shard: usize,
    stripe: u32,
) -> Result<Vec<ShardChunk>, ShardFault> {
    let holder_replica = m.holders[shard];
    let expected = m.layout.chunks_in_shard(stripe);
    let local = ctx.cluster.registry.serves_shards_of(group, holder_replica);
    if local {
        return holder::read_shard(ctx, group, m.blob_id, shard as u8, stripe, &[expected])
            .map_err(|e| ShardFault::Unreachable(format!("local storage: {e}")));
    }
    let addr = ctx
        .cluster
        .replica_addr(holder_replica)
        .ok_or_else(|| ShardFault::Unreachable(format!("replica {holder_replica} has no known address")))?;
    let mut client = ctx.cluster.peers.client(&addr).map_err(|e| ShardFault::Unreachable(e.to_string()))?;
    let mut req = tonic::Request::new(ReadShardRequest {
        group_id: group.get(),
        target_replica_id: holder_replica.get(),
        blob_id: m.blob_id,
        shard: shard as u32,
        first_stripe: stripe,
        stripes: 1,
        chunks_per_stripe: vec![expected],
    });
    req.set_timeout(SHARD_READ_TIMEOUT);
    let mut stream =
        client.read_shard(req).await.map_err(|s| ShardFault::Unreachable(s.message().to_string()))?.into_inner();
    let mut out = Vec::with_capacity(expected as usize);
    while let Some(c) = stream.next().await {
        out.push(c.map_err(|s| ShardFault::Unreachable(s.message().to_string()))?);
    }
    Ok(out)
}

/// Shard `shard` of `stripe`, every chunk verified against the manifest.
pub async fn fetch_shard(
    ctx: &DataPlane,
    group: GroupId,
    m: &BlobManifest,
    shard: usize,
    stripe: u32,
) -> Result<Vec<u8>, ShardFault> {
    // A shadow reads its own full copy; a copy that fails its crc falls
    // back to the holder.
    // (Only a shadow looks: a primary's reads pay no extra lookup.)
    if !ctx.cluster.registry.serves_shards_of(group, m.holders[shard])
        && ctx.cluster.registry.get(group).is_some_and(|g| ctx.cluster.is_shadow(&g))
        && ShardStore::new(ctx.engine.clone()).held_shard(group, m.blob_id, shard as u8).ok().flatten().is_some()
    {
        let expected = m.layout.chunks_in_shard(stripe);
        if let Ok(chunks) = holder::read_shard(ctx, group, m.blob_id, shard as u8, stripe, &[expected])
            && let Ok(data) = verify_and_join(m, shard, stripe, chunks)
        {
            return Ok(data);
        }
    }
    let chunks = raw_chunks(ctx, group, m, shard, stripe).await?;
    verify_and_join(m, shard, stripe, chunks)
}

/// Joins the chunks of one shard of one stripe if all are present and match
/// the manifest's crc32s.
pub fn verify_and_join(
    m: &BlobManifest,
    shard: usize,
    stripe: u32,
    chunks: Vec<ShardChunk>,
) -> Result<Vec<u8>, ShardFault> {
    let expected = m.layout.chunks_in_shard(stripe);
    let mut out = Vec::with_capacity(m.layout.shard_len(stripe) as usize);
    for c in 0..expected {
        let Some(chunk) = chunks.iter().find(|x| x.chunk == c && x.stripe == stripe) else {
            return Err(ShardFault::Missing { chunk: c });
        };
        if chunk.missing {
            return Err(ShardFault::Missing { chunk: c });
        }
        if chunk.data.len() != m.layout.chunk_len(stripe, c) as usize
            || crc32fast::hash(&chunk.data) != m.crc(stripe, shard, c)
        {
            return Err(ShardFault::Corrupt { chunk: c });
        }
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}
