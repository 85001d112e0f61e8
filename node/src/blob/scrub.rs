//! Background verification and repair of the shards this node holds.
//!
//! One pass walks every retained blob version of every local resource group
//! for which this replica is a holder, reads its shard stripe by stripe and
//! checks every chunk against the manifest's crc32. A missing or corrupt
//! chunk makes the scrubber rebuild that stripe's shard from k verified
//! shards of the other holders and store it again. Reading is rate-limited
//! (bytes per second); after a pass the scrubber rests. A replica that just
//! became a holder (after replacing a lost one) finds all its chunks missing
//! and rebuilds them the same way.
//!
//! Each pass first checks the Raft records (log, vote, snapshot) of every
//! local resource replica against their checksums, under the same rate
//! limit: rot in a record nothing reads again would otherwise stay until a
//! restart. A corrupt replica is quarantined and replaced
//! (`group::registry`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::DataPlane;
use super::fetch::fetch_shard;
use super::holder;
use super::read::reconstruct;
use super::shard_store::HeldShard;
use super::shard_store::ShardStore;
use crate::resource::manifest::BlobManifest;
use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::META_GROUP_ID;

#[derive(Debug, Default)]
pub struct ScrubStats {
    pub passes_completed: AtomicU64,
    pub pass_shards_done: AtomicU64,
    pub pass_shards_total: AtomicU64,
    pub bytes_verified: AtomicU64,
    pub chunks_verified: AtomicU64,
    pub chunks_corrupt: AtomicU64,
    pub chunks_missing: AtomicU64,
    pub chunks_repaired: AtomicU64,
    pub repair_failures: AtomicU64,
    pub last_pass_finished_ms: AtomicU64,
    pub orphan_shards_collected: AtomicU64,
    /// Replicas quarantined by a pass for a corrupt Raft record.
    pub replicas_quarantined: AtomicU64,
}

/// What the last look at one held shard left unresolved: bad chunks that
/// could not be repaired (repaired ones are not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Finding {
    pub chunks_corrupt: u64,
    pub chunks_missing: u64,
    /// Chunks found bad and rebuilt during the look.
    pub chunks_repaired: u64,
    pub last_verified_ms: u64,
}

#[derive(Debug, Default)]
pub struct Scrubber {
    pub stats: ScrubStats,
    findings: Mutex<HashMap<(GroupId, u64, u8), Finding>>,
    pub rate_bytes_per_s: AtomicU64,
}

impl Scrubber {
    pub fn finding(&self, group: GroupId, blob: u64, shard: u8) -> Option<Finding> {
        self.findings.lock().unwrap_or_else(|p| p.into_inner()).get(&(group, blob, shard)).copied()
    }

    fn record(&self, group: GroupId, blob: u64, shard: u8, f: Finding) {
        self.findings.lock().unwrap_or_else(|p| p.into_inner()).insert((group, blob, shard), f);
    }
}

/// Spreads reads so they average `rate` bytes per second.
struct Throttle {
    rate: u64,
    next: tokio::time::Instant,
}

impl Throttle {
    async fn consume(&mut self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        let now = tokio::time::Instant::now();
        self.next = self.next.max(now) + Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        if self.next > now + Duration::from_millis(10) {
            tokio::time::sleep_until(self.next).await;
        }
    }
}

/// The shards this node should hold: (group, manifest, shard index). A
/// shadow's copies are scrubbed once complete (their record written);
/// copying what is missing is the shadow's sync (`copy.rs`), not a repair.
fn work(ctx: &DataPlane) -> Vec<(GroupId, Arc<BlobManifest>, u8)> {
    let store = ShardStore::new(ctx.engine.clone());
    let mut out = Vec::new();
    for g in ctx.cluster.registry.all() {
        if g.id == META_GROUP_ID {
            continue;
        }
        let shadow = ctx.cluster.is_shadow(&g);
        for (m, j) in super::copy::kept_shards(&g, shadow) {
            if shadow && !matches!(store.held_shard(g.id, m.blob_id, j), Ok(Some(_))) {
                continue;
            }
            out.push((g.id, m, j));
        }
    }
    out
}

/// Checks one stripe of one held shard; rebuilds it if a chunk is bad.
/// Returns the bytes read.
async fn scrub_stripe(
    ctx: &DataPlane,
    group: GroupId,
    m: &BlobManifest,
    shard: u8,
    stripe: u32,
    f: &mut Finding,
) -> u64 {
    let s = &ctx.scrubber.stats;
    let expected = m.layout.chunks_in_shard(stripe);
    let chunks = match holder::read_shard(ctx, group, m.blob_id, shard, stripe, &[expected]) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%group, blob = %m.blob_id, stripe, error = %e, "scrub: cannot read local shard");
            return 0;
        }
    };
    let bytes: u64 = chunks.iter().map(|c| c.data.len() as u64).sum();
    let (mut missing, mut corrupt) = (0, 0);
    for c in &chunks {
        if c.missing {
            missing += 1;
        } else if crc32fast::hash(&c.data) != m.crc(stripe, shard as usize, c.chunk) {
            corrupt += 1;
        } else {
            s.chunks_verified.fetch_add(1, Ordering::Relaxed);
        }
    }
    s.chunks_missing.fetch_add(missing, Ordering::Relaxed);
    s.chunks_corrupt.fetch_add(corrupt, Ordering::Relaxed);
    s.bytes_verified.fetch_add(bytes, Ordering::Relaxed);
    let bad = missing + corrupt;
    if bad > 0 {
        match repair_stripe(ctx, group, m, shard, stripe).await {
            Ok(()) => {
                s.chunks_repaired.fetch_add(bad, Ordering::Relaxed);
                f.chunks_repaired += bad;
                tracing::info!(%group, blob = %m.blob_id, shard, stripe, chunks = bad, "scrub: repaired shard");
            }
            Err(e) => {
                f.chunks_missing += missing;
                f.chunks_corrupt += corrupt;
                s.repair_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%group, blob = %m.blob_id, shard, stripe, error = %e, "scrub: repair failed");
            }
        }
    }
    bytes
}

/// Rebuilds this node's shard `shard` of `stripe` from the other holders.
pub async fn repair_stripe(
    ctx: &DataPlane,
    group: GroupId,
    m: &BlobManifest,
    shard: u8,
    stripe: u32,
) -> Result<(), String> {
    let k = m.layout.k as usize;
    let others: Vec<usize> = (0..m.layout.shards()).filter(|j| *j != shard as usize).collect();
    let fetched = futures::future::join_all(others.iter().map(|j| fetch_shard(ctx, group, m, *j, stripe))).await;
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; m.layout.shards()];
    let mut good = 0;
    for (j, r) in others.iter().zip(fetched) {
        if let Ok(data) = r {
            shards[*j] = Some(data);
            good += 1;
        }
    }
    if good < k {
        return Err(format!("only {good} healthy shards of stripe {stripe}, {k} needed"));
    }
    let rebuilt = reconstruct(&mut shards, m, stripe).map_err(|e| e.to_string())?;
    let mine = &rebuilt[shard as usize];
    let chunk_size = m.layout.chunk_size as usize;
    let mut writes = Vec::new();
    for c in 0..m.layout.chunks_in_shard(stripe) {
        let start = c as usize * chunk_size;
        let piece = mine[start..(start + chunk_size).min(mine.len())].to_vec();
        if crc32fast::hash(&piece) != m.crc(stripe, shard as usize, c) {
            return Err(format!("rebuilt chunk {c} does not match the manifest"));
        }
        writes.push((stripe, c as u16, piece));
    }
    let store = ShardStore::new(ctx.engine.clone());
    store.note_shard(group, m.blob_id, shard, ctx.clock.now_ms()).map_err(|e| e.to_string())?;
    store.put_chunks(group, m.blob_id, shard, writes).map_err(|e| e.to_string())?;
    Ok(())
}

/// Scrubs one held shard entirely; returns what it found.
async fn scrub_shard(ctx: &DataPlane, group: GroupId, m: &BlobManifest, shard: u8, throttle: &mut Throttle) -> Finding {
    let mut f = Finding::default();
    for stripe in 0..m.layout.stripes() {
        let bytes = scrub_stripe(ctx, group, m, shard, stripe, &mut f).await;
        throttle.consume(bytes.max(1)).await;
    }
    f.last_verified_ms = ctx.clock.now_ms();
    // Repairs are written without a sync each; one sync covers the shard.
    if f.chunks_repaired > 0 {
        if let Err(e) = ctx.syncer.sync().await {
            tracing::error!(error = %e, "scrub: sync after repair failed");
        }
        let store = ShardStore::new(ctx.engine.clone());
        let expected: u64 = (0..m.layout.stripes()).map(|s| m.layout.chunks_in_shard(s) as u64).sum();
        let stored = expected - f.chunks_missing;
        let _ = store.set_held(
            group,
            m.blob_id,
            shard,
            HeldShard { received_at_ms: f.last_verified_ms, chunks_stored: stored },
        );
    }
    f
}

pub async fn run(ctx: Arc<DataPlane>, rate_bytes_per_s: u64, pass_interval: Duration) {
    ctx.scrubber.rate_bytes_per_s.store(rate_bytes_per_s, Ordering::Relaxed);
    let mut throttle = Throttle { rate: rate_bytes_per_s, next: tokio::time::Instant::now() };
    loop {
        let s = &ctx.scrubber.stats;
        for g in ctx.cluster.registry.all() {
            if g.id == META_GROUP_ID {
                continue; // a corrupt meta replica needs an operator: see membership::start_local_replicas
            }
            match ctx.cluster.registry.scrub_records(g.id).await {
                Ok(bytes) => throttle.consume(bytes.max(1)).await,
                Err(e) if crate::storage::checksum::is_corrupt(&e) => {
                    s.replicas_quarantined.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!(group = %g.id, error = %e, "scrub: raft records not checked this pass"),
            }
        }
        let todo = work(&ctx);
        s.pass_shards_total.store(todo.len() as u64, Ordering::Relaxed);
        s.pass_shards_done.store(0, Ordering::Relaxed);
        for (group, m, shard) in todo {
            if ctx.cluster.registry.get(group).is_none() {
                continue; // the group left this node during the pass
            }
            let f = scrub_shard(&ctx, group, &m, shard, &mut throttle).await;
            ctx.scrubber.record(group, m.blob_id, shard, f);
            s.pass_shards_done.fetch_add(1, Ordering::Relaxed);
        }
        s.passes_completed.fetch_add(1, Ordering::Relaxed);
        s.last_pass_finished_ms.store(ctx.clock.now_ms(), Ordering::Relaxed);
        tokio::time::sleep(pass_interval).await;
    }
}
