//! Reading an erasure-coded blob: stripe by stripe, a few stripes ahead.
//!
//! Healthy stripes take the systematic fast path: the k data shards,
//! concatenated, no decoding. A stripe with a missing, corrupt or
//! unreachable data shard is rebuilt from any k verified shards.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::Stream;
use futures::StreamExt;

use super::DataPlane;
use super::Error;
use super::erasure;
use super::fetch::ShardFault;
use super::fetch::fetch_shard;
use crate::resource::manifest::BlobManifest;
use shadowstore_base::ids::GroupId;

/// Stripes fetched ahead of the one being sent.
pub const READ_AHEAD_STRIPES: usize = 4;
/// Pause before asking an unreachable holder again.
const UNREACHABLE_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

/// The blob's bytes, one stripe per item.
pub fn stream_blob(
    ctx: Arc<DataPlane>,
    group: GroupId,
    m: Arc<BlobManifest>,
) -> impl Stream<Item = Result<Bytes, Error>> {
    let stripes = m.layout.stripes();
    futures::stream::iter(0..stripes)
        .map(move |s| {
            let (ctx, m) = (ctx.clone(), m.clone());
            async move { read_stripe(&ctx, group, &m, s).await }
        })
        .buffered(READ_AHEAD_STRIPES)
}

/// The data of one stripe.
pub async fn read_stripe(ctx: &DataPlane, group: GroupId, m: &BlobManifest, stripe: u32) -> Result<Bytes, Error> {
    let k = m.layout.k as usize;
    let len = m.layout.stripe_len(stripe) as usize;
    let data = futures::future::join_all((0..k).map(|j| fetch_shard(ctx, group, m, j, stripe))).await;
    ctx.stats.stripes_read.fetch_add(1, Ordering::Relaxed);
    if data.iter().all(|d| d.is_ok()) {
        let mut out = Vec::with_capacity(len);
        for d in data {
            out.extend_from_slice(&d.unwrap_or_default());
        }
        out.truncate(len);
        return Ok(Bytes::from(out));
    }
    ctx.stats.degraded_stripes.fetch_add(1, Ordering::Relaxed);
    let faults: Vec<String> =
        data.iter().enumerate().filter_map(|(j, d)| d.as_ref().err().map(|e| format!("shard {j}: {e}"))).collect();
    tracing::warn!(%group, blob = %m.blob_id, stripe, ?faults, "degraded read: reconstructing");
    let parity = futures::future::join_all((k..m.layout.shards()).map(|j| fetch_shard(ctx, group, m, j, stripe))).await;
    let mut all: Vec<Result<Vec<u8>, ShardFault>> = data.into_iter().chain(parity).collect();
    // A holder that did not answer may just be reconnecting: ask again once.
    if all.iter().filter(|r| r.is_ok()).count() < k {
        tokio::time::sleep(UNREACHABLE_RETRY_DELAY).await;
        for (j, r) in all.iter_mut().enumerate() {
            if matches!(r, Err(f) if is_unreachable(f)) {
                *r = fetch_shard(ctx, group, m, j, stripe).await;
            }
        }
    }
    let any_unreachable = all.iter().any(|r| matches!(r, Err(f) if is_unreachable(f)));
    if all.iter().filter(|r| r.is_ok()).count() < k {
        let faults: Vec<String> =
            all.iter().enumerate().filter_map(|(j, r)| r.as_ref().err().map(|e| format!("shard {j}: {e}"))).collect();
        tracing::error!(%group, blob = %m.blob_id, stripe, ?faults, "stripe unreadable");
    }
    let mut shards: Vec<Option<Vec<u8>>> = all.into_iter().map(Result::ok).collect();
    let shards = match reconstruct(&mut shards, m, stripe) {
        Ok(s) => s,
        // Missing holders may come back: the caller should retry, whereas
        // too many missing or corrupt chunks are a loss.
        Err(Error::DataLoss(e)) if any_unreachable => return Err(Error::Unavailable(e)),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(len);
    for d in &shards[..k] {
        out.extend_from_slice(d);
    }
    out.truncate(len);
    Ok(Bytes::from(out))
}

/// Every shard of one stripe from the verified ones present.
pub fn reconstruct(shards: &mut [Option<Vec<u8>>], m: &BlobManifest, stripe: u32) -> Result<Vec<Vec<u8>>, Error> {
    let present = shards.iter().filter(|s| s.is_some()).count();
    erasure::reconstruct(shards, m.layout.k, m.layout.m).map_err(|e| {
        Error::DataLoss(format!(
            "blob {:x} stripe {stripe}: {present} of {} shards readable, {} needed: {e}",
            m.blob_id,
            m.layout.shards(),
            m.layout.k
        ))
    })?;
    Ok(shards.iter_mut().map(|s| s.take().unwrap_or_default()).collect())
}

/// Whether a fault means the shard's holder could not be asked at all.
pub fn is_unreachable(f: &ShardFault) -> bool {
    matches!(f, ShardFault::Unreachable(_))
}
