//! The durability promise of an erasure-coded write, and how a write keeps
//! it: **an acknowledged blob survives the loss of any one node afterwards**
//! (its disk, or its replica's quarantine), whatever state the cluster was
//! in when the write was accepted.
//!
//! A blob coded k + m is readable while k of its shards survive, so it is
//! acknowledged only once k + 1 holders stored and synced their shards: one
//! more loss still leaves k. When fewer than k + 1 of the group's holders
//! are live, the write does not wait for them: it uses a narrower code over
//! the live holders only, (L - 1) + 1 on L live holders (a mirror, 1 + 1,
//! on the two live holders of a 2 + 1 group), every one of which must
//! store its shard. The manifest records the code it was written with;
//! the group leader re-encodes such a blob to the group's code once every
//! holder is live again (`blob::reencode`). With fewer than two live
//! holders no layout keeps a margin, and the write is refused.
//!
//! Holders count only while live: right before the manifest is proposed,
//! every holder that acknowledged is asked again (`ShardInventory`) whether
//! it still holds its shard on a running (not quarantined) replica; the
//! write fails unless k + 1 still do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use shadowstore_proto::peer::ShardInventoryRequest;
use shadowstore_proto::peer::ShardRef;

use super::DataPlane;
use super::Error;
use super::shard_store::ShardStore;
use crate::cluster::PEER_CALL_TIMEOUT;
use crate::group::Group;
use crate::group::quiesce::mono_ms;
use crate::resource::manifest::BlobManifest;
use shadowstore_base::ids::ReplicaId;

/// How long a holder whose shard write failed is left out of new writes'
/// layouts (its node may still answer pings while its data path is stuck).
pub const HOLDER_FAILURE_MEMORY: Duration = Duration::from_secs(10);

/// The code (k, m) a write uses when `live` of the group's holders are
/// live, given the group's code `k + m`; `None` when no layout would keep
/// one failure's margin. Every layout returned needs `k + 1` holders to
/// store their shards.
pub fn write_code(k: u8, m: u8, live: usize) -> Option<(u8, u8)> {
    assert!(k >= 1 && m >= 1, "a group's code has data and parity shards");
    if live > k as usize {
        Some((k, m))
    } else if live >= 2 {
        Some(((live - 1) as u8, 1))
    } else {
        None
    }
}

/// Acknowledgements a blob coded with `k` data shards needs.
pub fn acks_required(k: u8) -> usize {
    k as usize + 1
}

/// Holders whose shard writes failed recently, by replica.
#[derive(Debug, Default)]
pub struct HolderFailures(Mutex<HashMap<ReplicaId, u64>>);

impl HolderFailures {
    pub fn note(&self, replica: ReplicaId) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(replica, mono_ms());
    }

    pub fn recent(&self, replica: ReplicaId) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = mono_ms();
        map.retain(|_, at| now.saturating_sub(*at) < HOLDER_FAILURE_MEMORY.as_millis() as u64);
        map.contains_key(&replica)
    }
}

/// Whether `replica` (a voter of `g`) can be counted on to store a shard
/// now: this replica itself, or one whose node answers pings, has not
/// reported it quarantined, and took its last shard without failing.
pub fn holder_live(ctx: &DataPlane, g: &Group, replica: ReplicaId) -> bool {
    if replica == g.replica_id {
        return true;
    }
    let Some(node) = ctx
        .cluster
        .with_meta(|m| m.replica_addr(replica).map(|(n, _)| n))
        .flatten()
        .or_else(|| ctx.cluster.peers.replica_addr(replica).map(|(n, _)| n))
    else {
        return false;
    };
    let quarantined = ctx
        .cluster
        .detector
        .view(node)
        .and_then(|v| v.last_answer)
        .is_some_and(|a| a.quarantined_replica_ids.contains(&replica.get()));
    ctx.cluster.detector.is_up(node) && !quarantined && !ctx.holder_failures.recent(replica)
}

/// The code and holders of a new blob of `g`, whose voters are `voters`
/// and whose resource's code is `k + m`.
pub fn choose_layout(
    ctx: &DataPlane,
    g: &Group,
    k: u8,
    m: u8,
    voters: &[ReplicaId],
) -> Result<(u8, u8, Vec<ReplicaId>), Error> {
    #[cfg(feature = "planted-bugs")]
    if crate::planted::blob_acks_without_margin() {
        return Ok((k, m, voters.to_vec()));
    }
    let live: Vec<ReplicaId> = voters.iter().copied().filter(|r| holder_live(ctx, g, *r)).collect();
    match write_code(k, m, live.len()) {
        Some((wk, wm)) if wk == k && wm == m => Ok((k, m, voters.to_vec())),
        Some((wk, wm)) => {
            tracing::info!(group = %g.id, live = ?live, voters = ?voters, code = %format!("{wk}+{wm}"), "writing a narrower code over the live holders");
            Ok((wk, wm, live))
        }
        None => Err(Error::Unavailable(format!(
            "only {} of the {} holders are live; an acknowledged write needs two, so that it survives one more failure",
            live.len(),
            voters.len()
        ))),
    }
}

/// Whether shard `shard` of `m` is stored in full on a running replica
/// `holder` right now.
async fn still_holds(ctx: &DataPlane, g: &Group, m: &BlobManifest, shard: usize) -> bool {
    let holder = m.holders[shard];
    let expected: u64 = (0..m.layout.stripes()).map(|s| m.layout.chunks_in_shard(s) as u64).sum();
    if holder == g.replica_id {
        let running = ctx.cluster.registry.get(g.id).is_some_and(|x| x.replica_id == holder);
        let held = ShardStore::new(ctx.engine.clone()).held_shard(g.id, m.blob_id, shard as u8);
        return running && matches!(held, Ok(Some(h)) if h.chunks_stored >= expected);
    }
    let Some(addr) = ctx.cluster.replica_addr(holder) else { return false };
    let Ok(mut client) = ctx.cluster.peers.client(&addr) else { return false };
    let mut req = tonic::Request::new(ShardInventoryRequest {
        group_id: g.id.get(),
        target_replica_id: holder.get(),
        shards: vec![ShardRef { blob_id: m.blob_id, shard: shard as u32 }],
    });
    req.set_timeout(PEER_CALL_TIMEOUT);
    match client.shard_inventory(req).await {
        Ok(r) => r.into_inner().shards.first().is_some_and(|e| e.held && e.chunks_stored >= expected),
        Err(_) => false,
    }
}

/// Checks, right before the manifest is proposed, that at least k + 1 of
/// the holders that acknowledged (`acked`, shard indexes) still hold their
/// shards on running replicas.
pub async fn confirm_holders(ctx: &DataPlane, g: &Group, m: &BlobManifest, acked: &[usize]) -> Result<(), Error> {
    #[cfg(feature = "planted-bugs")]
    if crate::planted::blob_acks_without_margin() {
        return Ok(());
    }
    let required = acks_required(m.layout.k);
    let answers = futures::future::join_all(acked.iter().map(|j| still_holds(ctx, g, m, *j))).await;
    let live = answers.iter().filter(|ok| **ok).count();
    if live < required {
        let lost: Vec<ReplicaId> =
            acked.iter().zip(&answers).filter(|(_, ok)| !**ok).map(|(j, _)| m.holders[*j]).collect();
        for r in &lost {
            ctx.holder_failures.note(*r);
        }
        return Err(Error::Unavailable(format!(
            "blob {:x}: only {live} of the holders that stored it are still live (lost {lost:?}); a write needs {required}",
            m.blob_id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_keeps_one_failure_of_margin() {
        for (k, m) in [(1u8, 1u8), (2, 1), (3, 2), (4, 2), (2, 2)] {
            let n = (k + m) as usize;
            for live in 0..=n {
                match write_code(k, m, live) {
                    None => assert!(live < 2, "{k}+{m} with {live} live refused"),
                    Some((wk, wm)) => {
                        let holders = if (wk, wm) == (k, m) { n } else { live };
                        assert_eq!(wk as usize + wm as usize, holders, "{k}+{m}, {live} live: shards = holders");
                        assert!(acks_required(wk) <= live, "{k}+{m}, {live} live: {wk}+{wm} needs more than are live");
                        // Losing any one acknowledging holder leaves k shards.
                        assert!(acks_required(wk) - 1 >= wk as usize);
                    }
                }
            }
        }
        assert_eq!(write_code(2, 1, 3), Some((2, 1)));
        assert_eq!(write_code(2, 1, 2), Some((1, 1)), "a 2+1 group with a holder down mirrors");
        assert_eq!(write_code(3, 2, 4), Some((3, 2)), "3+2 with one down still has k + 1 live");
        assert_eq!(write_code(3, 2, 3), Some((2, 1)));
        assert_eq!(write_code(2, 1, 1), None);
    }
}
