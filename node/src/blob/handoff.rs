//! Handing off the shards of a removed replica.
//!
//! When the directory removes a replica from a node (it was quarantined, or
//! its node was down too long and it was replaced elsewhere), its shards may
//! still be the only copies of some stripes: its successor has not rebuilt
//! them yet, and may not be able to (another holder can be missing its
//! shard too). So removal keeps them (`ShardFate::HandOff`), the node keeps
//! serving them to reads and repairs (`Registry::serves_shards_of`), and
//! this loop gives each to the replica that holds that shard now:
//!
//! 1. it asks a current replica of the group, caught up with its leader,
//!    which replica holds each shard now (`ShardHolders`);
//! 2. a shard whose blob no retained version refers to (and older than the
//!    orphan grace, so a write still in flight keeps its shard) is deleted;
//! 3. a shard still held by the removed replica's id (the leader has not
//!    reassigned it yet) waits;
//! 4. any other is streamed to its current holder (`HandOffShard`), which
//!    keeps the chunks that match the manifest and answers whether it now
//!    has the whole shard, verified; only then is the local copy deleted.
//!
//! When no shard of the group is left to place, the retired record goes.
//! A deleted resource's shards are deleted at once.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shadowstore_proto::peer::BlobHolders;
use shadowstore_proto::peer::ShardChunk;
use shadowstore_proto::peer::ShardHoldersRequest;
use shadowstore_proto::peer::ShardStreamHeader;

use super::DataPlane;
use super::holder;
use super::shard_store::HeldShard;
use super::shard_store::ShardStore;
use crate::cluster::PEER_CALL_TIMEOUT;
use crate::resource::layout::Layout;
use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::ReplicaId;

/// Shards handed off (or found orphaned) per group per pass, at most.
const SHARDS_PER_PASS_MAX: usize = 64;
/// Shortest deadline of one shard's handoff stream; large shards get more.
const HANDOFF_TIMEOUT_MIN: Duration = Duration::from_secs(60);
/// Slowest transfer rate the deadline allows for.
const HANDOFF_RATE_MIN_BYTES_PER_S: u64 = 4 * 1024 * 1024;

pub async fn run(ctx: Arc<DataPlane>, interval: Duration, orphan_grace: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (group, retired) in ctx.cluster.registry.retired() {
            if let Err(e) = pass(&ctx, group, &retired, orphan_grace).await {
                tracing::warn!(%group, ?retired, error = %e, "handoff of a removed replica's shards");
            }
        }
    }
}

/// One pass over the retired shards of `group`.
async fn pass(
    ctx: &DataPlane,
    group: GroupId,
    retired: &BTreeSet<ReplicaId>,
    orphan_grace: Duration,
) -> Result<(), String> {
    let store = ShardStore::new(ctx.engine.clone());
    let Some((exists, replicas)) = ctx.cluster.with_meta(|m| {
        let r = m.resource_by_group(group);
        let replicas: Vec<(ReplicaId, String)> = r
            .map(|r| {
                r.primaries()
                    .filter_map(|rep| m.addr_of(rep.node_id).map(|a| (rep.replica_id, a.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        (r.is_some() || group >= m.next_group_id, replicas)
    }) else {
        return Ok(()); // no meta state yet
    };
    if !exists {
        tracing::info!(%group, "resource deleted: dropping a removed replica's shards");
        store.delete_group(group).map_err(|e| e.to_string())?;
        return ctx.cluster.registry.forget_retired(group).await.map_err(|e| e.to_string());
    }
    // Shards a running local replica holds are its own, not the removed one's.
    let local = ctx.cluster.registry.get(group);
    let own: BTreeSet<(u64, u8)> = match &local {
        Some(g) => {
            let st = g.state.read();
            match &st.data {
                crate::raft::state_machine::GroupData::Resource(rs) => {
                    rs.blobs().filter_map(|m| m.shard_of(g.replica_id).map(|j| (m.blob_id, j as u8))).collect()
                }
                crate::raft::state_machine::GroupData::Meta(_) => BTreeSet::new(),
            }
        }
        None => BTreeSet::new(),
    };
    let todo: Vec<(u64, u8, HeldShard)> = store
        .held(group)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|(b, s, _)| !own.contains(&(*b, *s)) && !ctx.active_writes.contains(group, *b, *s))
        .take(SHARDS_PER_PASS_MAX)
        .collect();
    if todo.is_empty() {
        tracing::info!(%group, ?retired, "every shard of the removed replica is placed");
        return ctx.cluster.registry.forget_retired(group).await.map_err(|e| e.to_string());
    }
    let blob_ids: Vec<u64> = todo.iter().map(|(b, _, _)| *b).collect::<BTreeSet<_>>().into_iter().collect();
    let holders = shard_holders(ctx, group, &replicas, blob_ids).await?;
    let local_replica = local.as_ref().map(|g| g.replica_id);
    for (blob, shard, held) in todo {
        let Some(b) = holders.get(&blob) else { continue };
        let current = b.holders.get(shard as usize).copied().map(ReplicaId::new);
        if !b.retained || current.is_none() {
            let age_ms = ctx.clock.now_ms().saturating_sub(held.received_at_ms);
            if age_ms >= orphan_grace.as_millis() as u64 {
                store.delete_shard(group, blob, shard).map_err(|e| e.to_string())?;
                tracing::info!(%group, blob, shard, "removed replica's shard belongs to no retained version; deleted");
            }
            continue;
        }
        let to = current.expect("checked above");
        if retired.contains(&to) || Some(to) == local_replica {
            continue; // not reassigned yet, or it is this node's own now
        }
        let Some(addr) = replicas.iter().find(|(r, _)| *r == to).map(|(_, a)| a.clone()) else { continue };
        let layout =
            Layout { size: b.size, stripe_size: b.stripe_size, k: b.k as u8, m: b.m as u8, chunk_size: b.chunk_size };
        match hand_off(ctx, group, blob, shard, layout, to, &addr).await {
            Ok(done) if done.complete || !done.retained => {
                store.delete_shard(group, blob, shard).map_err(|e| e.to_string())?;
                tracing::info!(%group, blob, shard, %to, "removed replica's shard handed off; local copy deleted");
            }
            Ok(_) => {
                tracing::warn!(%group, blob, shard, %to, "handed off, but the holder still lacks verified chunks; kept")
            }
            Err(e) => tracing::debug!(%group, blob, shard, %to, error = %e, "handoff failed; retrying later"),
        }
    }
    Ok(())
}

/// Asks the group's replicas in turn which replica holds each shard of
/// `blob_ids` now.
async fn shard_holders(
    ctx: &DataPlane,
    group: GroupId,
    replicas: &[(ReplicaId, String)],
    blob_ids: Vec<u64>,
) -> Result<BTreeMap<u64, BlobHolders>, String> {
    let mut last = String::from("the group has no replica with an address");
    for (replica, addr) in replicas {
        let mut client = match ctx.cluster.peers.client(addr) {
            Ok(c) => c,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let mut req = tonic::Request::new(ShardHoldersRequest { group_id: group.get(), blob_ids: blob_ids.clone() });
        req.set_timeout(PEER_CALL_TIMEOUT * 2);
        match client.shard_holders(req).await {
            Ok(r) => return Ok(r.into_inner().blobs.into_iter().map(|b| (b.blob_id, b)).collect()),
            Err(s) => {
                last = format!("replica {replica}: {}", s.message());
                tracing::debug!(%group, %replica, error = %s, "shard holders: replica did not answer");
            }
        }
    }
    Err(last)
}

/// Streams the local copy of `shard` of `blob` to its holder `to`.
async fn hand_off(
    ctx: &DataPlane,
    group: GroupId,
    blob: u64,
    shard: u8,
    layout: Layout,
    to: ReplicaId,
    addr: &str,
) -> Result<holder::HandOff, String> {
    let header = ShardChunk {
        header: Some(ShardStreamHeader {
            group_id: group.get(),
            target_replica_id: to.get(),
            blob_id: blob,
            shard: shard as u32,
        }),
        ..Default::default()
    };
    // Read one stripe at a time as the stream is sent: a shard can be
    // hundreds of MiB.
    let store = ShardStore::new(ctx.engine.clone());
    let chunks = futures::stream::iter(0..layout.stripes()).flat_map(move |stripe| {
        let have = store.get_stripe(group, blob, shard, stripe).unwrap_or_default();
        futures::stream::iter(have.into_iter().map(move |(chunk, data)| ShardChunk {
            header: None,
            stripe,
            chunk: chunk as u32,
            crc32: crc32fast::hash(&data),
            data: bytes::Bytes::from(data),
            missing: false,
        }))
    });
    let mut client = ctx.cluster.peers.client(addr).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(futures::stream::once(async { header }).chain(chunks));
    let shard_bytes: u64 = (0..layout.stripes()).map(|s| layout.shard_len(s) as u64).sum();
    req.set_timeout(HANDOFF_TIMEOUT_MIN + Duration::from_secs(shard_bytes / HANDOFF_RATE_MIN_BYTES_PER_S));
    let r = client.hand_off_shard(req).await.map_err(|s| format!("{}: {}", s.code(), s.message()))?.into_inner();
    Ok(holder::HandOff { retained: r.retained, complete: r.complete })
}
