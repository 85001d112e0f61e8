//! Writing an erasure-coded blob (on the resource group's leader).
//!
//! The incoming stream is cut into stripes; each stripe is encoded into
//! k + m shards; shard j goes, chunk by chunk with its crc32, to holder j
//! (this node's own storage or a `WriteShard` stream to another node), over
//! bounded queues so memory stays bounded and a slow holder slows the
//! client down instead of piling up bytes. Holders sync before answering.
//! The code and the holders come from `quorum::choose_layout` (a narrower
//! code over the live holders when some are down). When k + 1 holders
//! answered and still hold their shards (`quorum`), the manifest is
//! returned for the caller to commit through Raft; shards a failed holder
//! lacks are rebuilt later by its scrubber. Nothing is visible until the
//! manifest commits: an abandoned write leaves only orphan shards, which
//! garbage collection removes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytes::BytesMut;
use futures::Stream;
use futures::StreamExt;
use shadowstore_proto::peer::ShardChunk;
use shadowstore_proto::peer::ShardStreamHeader;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::DataPlane;
use super::Error;
use super::erasure;
use super::holder;
use super::quorum;
use crate::group::Group;
use crate::meta::state::StorageParams;
use crate::resource::layout::CHUNK_SIZE;
use crate::resource::layout::Layout;
use crate::resource::layout::chunk_slots_per_shard;
use crate::resource::manifest::BlobManifest;
use shadowstore_base::ids::ReplicaId;

/// Chunks queued per holder (bounds memory: 64 chunks of 48 KiB per holder).
const HOLDER_QUEUE_CHUNKS: usize = 64;
/// Shortest deadline of a holder's shard stream; large blobs get more.
const SHARD_WRITE_TIMEOUT_MIN: Duration = Duration::from_secs(60);
/// Slowest holder ingest the deadline allows for.
const SHARD_WRITE_RATE_MIN_BYTES_PER_S: u64 = 4 * 1024 * 1024;

/// Where the bytes come from and how many are allowed.
pub struct Source<S> {
    /// Bytes already read (e.g. while deciding inline or not).
    pub prefix: Bytes,
    pub rest: S,
    /// The size the client declared, if any.
    pub declared: Option<u64>,
    pub max_bytes: u64,
}

struct Sink {
    tx: Option<mpsc::Sender<ShardChunk>>,
    done: JoinHandle<Result<u64, String>>,
}

fn open_sink(ctx: &Arc<DataPlane>, g: &Group, holder: ReplicaId, blob: u64, shard: u8, expected_bytes: u64) -> Sink {
    let (tx, rx) = mpsc::channel::<ShardChunk>(HOLDER_QUEUE_CHUNKS);
    let ctx = ctx.clone();
    let group = g.id;
    let local = g.replica_id == holder;
    let done = tokio::spawn(async move {
        if local {
            return holder::store_shard(&ctx, group, blob, shard, expected_bytes, ReceiverStream::new(rx).map(Ok))
                .await
                .map_err(|e| e.to_string());
        }
        let addr = ctx.cluster.replica_addr(holder).ok_or_else(|| format!("replica {holder} has no known address"))?;
        let mut client = ctx.cluster.peers.client(&addr).map_err(|e| e.to_string())?;
        let header = ShardChunk {
            header: Some(ShardStreamHeader {
                group_id: group.get(),
                target_replica_id: holder.get(),
                blob_id: blob,
                shard: shard as u32,
            }),
            ..Default::default()
        };
        let mut req = tonic::Request::new(futures::stream::once(async { header }).chain(ReceiverStream::new(rx)));
        let budget = SHARD_WRITE_TIMEOUT_MIN + Duration::from_secs(expected_bytes / SHARD_WRITE_RATE_MIN_BYTES_PER_S);
        req.set_timeout(budget);
        client
            .write_shard(req)
            .await
            .map(|r| r.into_inner().chunks_stored)
            .map_err(|s| format!("{}: {}", s.code(), s.message()))
    });
    Sink { tx: Some(tx), done }
}

struct Encoder {
    /// The group's storage parameters with the code this blob is written in.
    params: StorageParams,
    /// Holders that must store their shards: `quorum::acks_required`.
    required: usize,
    holders: Vec<ReplicaId>,
    sinks: Vec<Sink>,
    failed: Vec<Option<String>>,
    crcs: Vec<u32>,
    stripes: u32,
    slots: u32,
}

impl Encoder {
    /// Encodes one stripe and queues its shards to the holders.
    async fn stripe(&mut self, data: Bytes) -> Result<(), Error> {
        let k = self.params.k;
        let shard_len = data.len().div_ceil(k as usize);
        let shards = erasure::encode(&data, k, self.params.m, shard_len).map_err(|e| Error::Internal(e.to_string()))?;
        let stripe = self.stripes;
        self.stripes += 1;
        let base = self.crcs.len();
        self.crcs.resize(base + shards.len() * self.slots as usize, 0);
        for (j, shard) in shards.into_iter().enumerate() {
            let shard = Bytes::from(shard);
            for (c, start) in (0..shard.len()).step_by(CHUNK_SIZE as usize).enumerate() {
                let piece = shard.slice(start..(start + CHUNK_SIZE as usize).min(shard.len()));
                let crc = crc32fast::hash(&piece);
                self.crcs[base + j * self.slots as usize + c] = crc;
                let Some(tx) = &self.sinks[j].tx else { continue };
                let chunk =
                    ShardChunk { header: None, stripe, chunk: c as u32, data: piece, crc32: crc, missing: false };
                if tx.send(chunk).await.is_err() {
                    // The holder's stream ended early; its result says why.
                    self.sinks[j].tx = None;
                    self.failed[j].get_or_insert_with(|| "holder stopped accepting chunks".into());
                }
            }
        }
        let failed = self.failed.iter().filter(|f| f.is_some()).count();
        if failed > self.holders.len() - self.required {
            return Err(Error::Unavailable(format!(
                "{failed} of {} holders failed during the write; at most {} may: {:?}",
                self.holders.len(),
                self.holders.len() - self.required,
                self.failed
            )));
        }
        Ok(())
    }

    /// Remembers the holders that failed, so the next write leaves them out.
    fn note_failures(&self, ctx: &DataPlane) {
        for (h, f) in self.holders.iter().zip(&self.failed) {
            if f.is_some() {
                ctx.holder_failures.note(*h);
            }
        }
    }

    fn abort(self, ctx: &DataPlane) {
        self.note_failures(ctx);
        for s in self.sinks {
            s.done.abort();
        }
    }
}

/// Streams `source` into a new erasure-coded blob of `g`, whose voters are
/// `voters`, and returns its manifest once k + 1 holders stored it and
/// still hold it.
pub async fn write_blob<S>(
    ctx: &Arc<DataPlane>,
    g: &Group,
    params: StorageParams,
    voters: Vec<ReplicaId>,
    source: Source<S>,
) -> Result<BlobManifest, Error>
where
    S: Stream<Item = Result<Bytes, Error>> + Unpin,
{
    let group_shards = params.k as usize + params.m as usize;
    if voters.len() != group_shards {
        return Err(Error::Unavailable(format!(
            "the group has {} voters but its code needs {group_shards} holders (membership change in progress?)",
            voters.len()
        )));
    }
    let (k, m, holders) = quorum::choose_layout(ctx, g, params.k, params.m, &voters)?;
    let params = StorageParams { k, m, ..params };
    let shards = holders.len();
    let blob_id = ctx.rng.next_u64();
    // What each holder may receive: a stripe's shards are rounded up, so
    // this is more than size / k when a stripe is not a multiple of k.
    let size_bound = source.declared.unwrap_or(source.max_bytes);
    let expected_shard_bytes = Layout::new(size_bound, params.stripe_size, params.k, params.m).shard_bytes();
    let sinks: Vec<Sink> = holders
        .iter()
        .enumerate()
        .map(|(j, h)| open_sink(ctx, g, *h, blob_id, j as u8, expected_shard_bytes))
        .collect();
    let mut enc = Encoder {
        params,
        required: planted_acks_required(k, m),
        holders: holders.clone(),
        sinks,
        failed: vec![None; shards],
        crcs: Vec::new(),
        stripes: 0,
        slots: chunk_slots_per_shard(params.stripe_size, params.k, CHUNK_SIZE),
    };
    match feed(&mut enc, source).await {
        Ok(size) => {
            let (manifest, acked) = finish(ctx, enc, blob_id, size).await?;
            quorum::confirm_holders(ctx, g, &manifest, &acked).await?;
            Ok(manifest)
        }
        Err(e) => {
            enc.abort(ctx);
            Err(e)
        }
    }
}

/// Acknowledgements the write waits for (the planted bug brings back the
/// old quorum: k, or k + 1 when k = m).
fn planted_acks_required(k: u8, m: u8) -> usize {
    #[cfg(feature = "planted-bugs")]
    if crate::planted::blob_acks_without_margin() {
        return k as usize + usize::from(k == m);
    }
    let _ = m;
    quorum::acks_required(k)
}

/// Reads the whole source through the encoder; returns the blob's size.
async fn feed<S>(enc: &mut Encoder, source: Source<S>) -> Result<u64, Error>
where
    S: Stream<Item = Result<Bytes, Error>> + Unpin,
{
    let stripe_size = enc.params.stripe_size as usize;
    let mut buf = BytesMut::with_capacity(stripe_size);
    let mut total = 0u64;
    let Source { prefix, mut rest, declared, max_bytes } = source;
    let limit = declared.unwrap_or(max_bytes);
    let mut next = Some(prefix);
    loop {
        let bytes = match next.take() {
            Some(b) => b,
            None => match rest.next().await {
                Some(b) => b?,
                None => break,
            },
        };
        total += bytes.len() as u64;
        if total > limit {
            return Err(match declared {
                Some(d) => Error::Invalid(format!("stream carries more than the declared {d} bytes")),
                None => Error::TooLarge(format!("value exceeds the {max_bytes}-byte limit")),
            });
        }
        let mut bytes = bytes;
        while !bytes.is_empty() {
            let take = (stripe_size - buf.len()).min(bytes.len());
            buf.extend_from_slice(&bytes.split_to(take));
            if buf.len() == stripe_size {
                enc.stripe(buf.split().freeze()).await?;
            }
        }
    }
    if let Some(d) = declared {
        if total != d {
            return Err(Error::Invalid(format!("stream ended after {total} of the declared {d} bytes")));
        }
    }
    if !buf.is_empty() {
        enc.stripe(buf.freeze()).await?;
    }
    if total == 0 {
        return Err(Error::Invalid("empty value for an erasure-coded write".into()));
    }
    Ok(total)
}

/// Ends every holder's stream and waits for their answers; returns the
/// manifest and the shard indexes whose holders stored them.
async fn finish(
    ctx: &DataPlane,
    mut enc: Encoder,
    blob_id: u64,
    size: u64,
) -> Result<(BlobManifest, Vec<usize>), Error> {
    let required = enc.required;
    let mut acked = Vec::new();
    for (j, sink) in enc.sinks.iter_mut().enumerate() {
        sink.tx = None; // end the holder's stream
        match (&mut sink.done).await {
            Ok(Ok(_)) => acked.push(j),
            Ok(Err(e)) => {
                enc.failed[j].get_or_insert(e);
            }
            Err(e) => {
                enc.failed[j].get_or_insert(e.to_string());
            }
        }
    }
    enc.note_failures(ctx);
    if acked.len() < required {
        return Err(Error::Unavailable(format!(
            "only {} of {} holders stored their shards; a write needs {required}: {:?}",
            acked.len(),
            enc.holders.len(),
            enc.failed
        )));
    }
    if enc.failed.iter().any(|f| f.is_some()) {
        tracing::warn!(blob = blob_id, failures = ?enc.failed, "blob written without every holder; scrubbing will rebuild");
    }
    let layout = Layout::new(size, enc.params.stripe_size, enc.params.k, enc.params.m);
    assert_eq!(layout.stripes(), enc.stripes, "stripes written must match the layout");
    assert_eq!(layout.crc_slots(), enc.crcs.len(), "a crc slot for every chunk");
    Ok((BlobManifest { blob_id, layout, holders: enc.holders, crcs: enc.crcs }, acked))
}
