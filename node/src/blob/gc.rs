//! Removing shards nothing refers to, and expiring superseded versions.
//!
//! A held shard is kept while a retained version's manifest names this
//! replica as its holder. Otherwise it is an orphan (a write that never
//! committed, a version that expired, a shard moved elsewhere) and is
//! deleted once
//! - no write to it is in progress on this node,
//! - its last write is older than the grace period,
//! - it has been seen unreferenced for the grace period (protecting reads
//!   of a version this node dropped but a replica a little behind still
//!   serves), and
//! - it is still unreferenced after this replica caught up with its leader
//!   (a read index): a replica's own state may lag the committed log, for
//!   instance right after a restart, and must not lose the shards of a
//!   commit it has not applied yet.
//!
//! On a group's leader the same loop proposes `Expire` when superseded
//! versions passed their read grace, and re-encodes one blob written in a
//! narrower code (`reencode`).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::DataPlane;
use super::shard_store::ShardStore;
use crate::group::quiesce::mono_ms;
use crate::raft::Command;
use crate::raft::state_machine::GroupData;
use crate::resource::ResourceCommand;
use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::META_GROUP_ID;

#[derive(Clone, Debug)]
pub struct GcTiming {
    pub interval: Duration,
    /// Age and unreferenced time before an orphan shard is deleted.
    pub orphan_grace: Duration,
    /// How long a superseded version stays readable.
    pub superseded_grace: Duration,
}

/// The shards this replica must keep (blob, shard index), a shadow's full
/// copies included, and whether superseded versions are due for expiry,
/// from its current state.
fn kept_shards(
    ctx: &DataPlane,
    g: &crate::group::Group,
    now_ms: u64,
    timing: &GcTiming,
    keep_versions: u32,
) -> Option<(BTreeSet<(u64, u8)>, bool)> {
    let shadow = ctx.cluster.is_shadow(g);
    let keep = super::copy::kept_shards(g, shadow).into_iter().map(|(m, j)| (m.blob_id, j)).collect();
    let st = g.state.read();
    let GroupData::Resource(rs) = &st.data else { return None };
    Some((keep, rs.has_expired_versions(now_ms, timing.superseded_grace.as_millis() as u64, keep_versions)))
}

pub async fn run(ctx: Arc<DataPlane>, timing: GcTiming) {
    let mut unreferenced_since: BTreeMap<(GroupId, u64, u8), u64> = BTreeMap::new();
    let grace_ms = timing.orphan_grace.as_millis() as u64;
    let store = ShardStore::new(ctx.engine.clone());
    let mut tick = tokio::time::interval(timing.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut seen = BTreeMap::new();
        for g in ctx.cluster.registry.all() {
            if g.id == META_GROUP_ID {
                continue;
            }
            // Shards of a removed replica of this group are mixed in with
            // this one's until `handoff` has placed them: nothing here is
            // an orphan meanwhile.
            let collect_orphans = !ctx.cluster.registry.has_retired(g.id);
            let keep_versions = ctx
                .cluster
                .with_meta(|m| m.resource_by_group(g.id).map(|r| r.storage.keep_versions))
                .flatten()
                .unwrap_or(1);
            let Some((keep, expire_due)) = kept_shards(&ctx, &g, ctx.clock.now_ms(), &timing, keep_versions) else {
                continue;
            };
            let held = match store.held(g.id) {
                Ok(_) if !collect_orphans => Vec::new(),
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(group = %g.id, error = %e, "gc: cannot list shards");
                    continue;
                }
            };
            let mut candidates = Vec::new();
            for (blob, shard, h) in held {
                if keep.contains(&(blob, shard)) || ctx.active_writes.contains(g.id, blob, shard) {
                    continue;
                }
                let key = (g.id, blob, shard);
                let first = *unreferenced_since.get(&key).unwrap_or(&mono_ms());
                seen.insert(key, first);
                let age = ctx.clock.now_ms().saturating_sub(h.received_at_ms);
                if age >= grace_ms && mono_ms().saturating_sub(first) >= grace_ms {
                    candidates.push((blob, shard));
                }
            }
            if !candidates.is_empty() {
                // Decide on a state at least as new as the committed log.
                if let Err(e) = ctx.cluster.linearize(&g, "garbage collection").await {
                    tracing::debug!(group = %g.id, error = %e, "gc: not caught up with the leader; deferring");
                    candidates.clear();
                }
            }
            let keep_now = if candidates.is_empty() {
                BTreeSet::new()
            } else {
                kept_shards(&ctx, &g, ctx.clock.now_ms(), &timing, keep_versions).map(|k| k.0).unwrap_or_default()
            };
            for (blob, shard) in candidates {
                let key = (g.id, blob, shard);
                if keep_now.contains(&(blob, shard)) || ctx.active_writes.contains(g.id, blob, shard) {
                    seen.remove(&key);
                    continue;
                }
                match store.delete_shard(g.id, blob, shard) {
                    Ok(()) => {
                        ctx.scrubber.stats.orphan_shards_collected.fetch_add(1, Ordering::Relaxed);
                        seen.remove(&key);
                        tracing::info!(group = %g.id, blob, shard, "gc: removed unreferenced shard");
                    }
                    Err(e) => tracing::warn!(group = %g.id, blob, error = %e, "gc: delete failed"),
                }
            }
            if expire_due && g.is_leader() {
                let cmd = ResourceCommand::Expire {
                    now_ms: ctx.clock.now_ms(),
                    grace_ms: timing.superseded_grace.as_millis() as u64,
                    keep_versions,
                };
                if let Err(e) = g.propose(Command::Resource(cmd)).await {
                    tracing::debug!(group = %g.id, error = %e, "gc: expire proposal failed");
                }
            }
            if g.is_leader()
                && let Err(e) = super::reencode::reencode_one(&ctx, &g).await
            {
                tracing::debug!(group = %g.id, error = %e, "re-encoding a narrow blob failed; retrying later");
            }
        }
        unreferenced_since = seen;
    }
}
