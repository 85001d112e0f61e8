//! Damage to disks (bit rot, and the gate disk loss shares with it): what
//! may rot, applying a rot, knowing when its damage is repaired, and the
//! gate that keeps damage within the durability promise (one failure after
//! an acknowledgement).

use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::ReplicaId;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;

use shadowstore_base::ids::META_GROUP_ID;
use shadowstore_node::blob::shard_store::ChunkAddr;
use shadowstore_node::blob::shard_store::parse_chunk_key;
use shadowstore_node::group::Group;
use shadowstore_node::raft::state_machine::GroupData;
use shadowstore_node::resource::manifest::BlobManifest;
use shadowstore_node::storage::StorageEngine;
use shadowstore_node::storage::Tree;
use shadowstore_node::storage::keys;

use super::hosts::NodeSlot;
use super::hosts::node_name;
use crate::faults::Fault;

/// Bytes the simulator rotted on a node's disk, until the damage is gone.
pub struct Rot {
    pub node: usize,
    pub tree: Tree,
    key: Vec<u8>,
    bytes: Vec<u8>,
    /// For a rotted Raft record: the group and the replica it belongs to.
    replica: Option<(GroupId, ReplicaId)>,
}

impl Rot {
    /// Whether the damage still stands: the rotted bytes are on the disk
    /// or still what reads see, the replica they belonged to is
    /// quarantined, or it stopped running there and is still a member of
    /// its group (replacement not finished).
    pub fn outstanding(&self, slots: &[NodeSlot]) -> bool {
        let engine = &slots[self.node].engine;
        let rotted = Some(&self.bytes[..]);
        if engine.durable_value(self.tree, &self.key).as_deref() == rotted
            || engine.get(self.tree, &self.key).ok().flatten().as_deref() == rotted
        {
            return true;
        }
        let Some((group, replica)) = self.replica else { return false };
        let ctx = slots[self.node].ctx.as_ref();
        if ctx.is_some_and(|c| c.cluster.registry.quarantined().get(&group) == Some(&replica)) {
            return true;
        }
        let running = |s: &NodeSlot| s.ctx.as_ref().and_then(|c| c.cluster.registry.get(group));
        if running(&slots[self.node]).is_some_and(|g| g.replica_id == replica) {
            return false; // overwritten or purged before anything read it
        }
        slots.iter().filter_map(running).any(|g| {
            let m = g.metrics();
            m.membership_config.membership().nodes().any(|(id, _)| *id == replica)
        })
    }
}

/// Whether another rot or a disk loss may be applied: one rotted record
/// takes one copy out of a group (or one shard out of a stripe) until it
/// is repaired, which is all three replicas (or k = 2 of 3 shards)
/// tolerate.
pub fn no_damage_outstanding(rots: &[Rot]) -> Result<(), String> {
    match rots.first() {
        None => Ok(()),
        Some(r) => Err(format!("rot on {} in {} not repaired yet", node_name(r.node), r.tree.name())),
    }
}

/// Flips one bit for a rot fault; returns what it rotted, if anything
/// could rot.
pub fn apply_rot(slots: &[NodeSlot], f: Fault) -> Option<Rot> {
    let (node, tree, key, replica, bit) = match f {
        Fault::RotShard { node, pick, bit } => {
            let candidates = rot_candidates(slots, node);
            let key = candidates.get(pick % candidates.len().max(1))?.clone();
            (node, Tree::Shards, key, None, bit)
        }
        Fault::RotRaft { node, pick, bit } => {
            let candidates = raft_rot_candidates(&slots[node]);
            let (tree, key, group, replica) = candidates.get(pick % candidates.len().max(1))?.clone();
            (node, tree, key, Some((group, replica)), bit)
        }
        _ => return None,
    };
    let engine = &slots[node].engine;
    // Only a value that reads see as it is on the disk: rotting the disk
    // under a newer unsynced value would leave reads on rotted bytes after
    // the sync wrote the clean ones (or the reverse).
    if engine.get(tree, &key).ok().flatten() != engine.durable_value(tree, &key) || !engine.rot(tree, &key, bit) {
        return None;
    }
    let bytes = engine.durable_value(tree, &key)?;
    tracing::info!(node, tree = tree.name(), ?replica, "bit rot applied");
    Some(Rot { node, tree, key, bytes, replica })
}

/// Durable Raft records (log parts, vote/committed/purge records,
/// snapshot manifest and chunks) of the resource groups `slot` runs, with
/// each record's group and the replica it belongs to. The meta group's are
/// left alone: a corrupt meta replica needs an operator (the node refuses
/// to start), which the simulator does not play.
fn raft_rot_candidates(slot: &NodeSlot) -> Vec<(Tree, Vec<u8>, GroupId, ReplicaId)> {
    let Some(ctx) = &slot.ctx else { return Vec::new() };
    let mut out = Vec::new();
    for tree in [Tree::Log, Tree::RaftState, Tree::Snapshot] {
        for key in slot.engine.durable_keys(tree) {
            let Some(group) = keys::group_of(&key) else { continue };
            if group == META_GROUP_ID {
                continue;
            }
            if let Some(g) = ctx.cluster.registry.get(group) {
                out.push((tree, key, group, g.replica_id));
            }
        }
    }
    out
}

/// Chunks on `node` that may rot, weakest first: the chunks of retained
/// blobs whose stripe has the fewest shards stored on any disk (a blob
/// written while a holder was down, or not yet rebuilt), so a write
/// acknowledged with too little margin is what rot finds. Whether rotting
/// one now exceeds the durability promise is decided by the damage gate
/// (`exposed_blobs_healed`), not here.
fn rot_candidates(slots: &[NodeSlot], node: usize) -> Vec<Vec<u8>> {
    let retained = retained_manifests(slots);
    // (group, blob, stripe, chunk) → shards stored on some disk.
    let mut copies: HashMap<(GroupId, u64, u32, u16), HashSet<u8>> = HashMap::new();
    for s in slots {
        for a in s.engine.durable_keys(Tree::Shards).iter().filter_map(|k| parse_chunk_key(k)) {
            copies.entry((a.group, a.blob, a.stripe, a.chunk)).or_default().insert(a.shard);
        }
    }
    let mut mine: Vec<(usize, Vec<u8>)> = slots[node]
        .engine
        .durable_keys(Tree::Shards)
        .into_iter()
        .filter_map(|k| {
            let a = parse_chunk_key(&k)?;
            retained.contains_key(&(a.group, a.blob)).then_some(())?;
            let n = copies.get(&(a.group, a.blob, a.stripe, a.chunk)).map_or(0, |c| c.len());
            Some((n, k))
        })
        .collect();
    let weakest = mine.iter().map(|(n, _)| *n).min();
    mine.retain(|(n, _)| Some(*n) == weakest);
    mine.into_iter().map(|(_, k)| k).collect()
}

/// The retained blob manifests of every resource group, from the replica
/// that applied the most of it.
fn retained_manifests(slots: &[NodeSlot]) -> BTreeMap<(GroupId, u64), Arc<BlobManifest>> {
    let mut best: BTreeMap<GroupId, Arc<Group>> = BTreeMap::new();
    for s in slots {
        let Some(ctx) = &s.ctx else { continue };
        for g in ctx.cluster.registry.all() {
            if g.id == META_GROUP_ID {
                continue;
            }
            let applied = |g: &Group| g.state.applied_index();
            if best.get(&g.id).is_none_or(|b| applied(b) < applied(&g)) {
                best.insert(g.id, g);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (group, g) in best {
        let st = g.state.read();
        if let GroupData::Resource(rs) = &st.data {
            out.extend(rs.blobs().map(|m| ((group, m.blob_id), m.clone())));
        }
    }
    out
}

/// Every blob some disk holds a shard of or some state refers to: what a
/// damage fault applied now may hit.
pub fn blobs_on_record(slots: &[NodeSlot]) -> HashSet<(GroupId, u64)> {
    let mut out: HashSet<(GroupId, u64)> = retained_manifests(slots).into_keys().collect();
    for s in slots {
        out.extend(
            s.engine.durable_keys(Tree::Shards).iter().filter_map(|k| parse_chunk_key(k)).map(|a| (a.group, a.blob)),
        );
    }
    out
}

/// The damage gate of the durability promise (an acknowledged write
/// survives the loss of any one node, its disk or its replica, after the
/// acknowledgement): damage (a rot or a lost disk) may hit a blob that was
/// on record at the previous damage only once that blob healed, i.e.
/// every shard of it is again stored in full, matching its manifest, on
/// some disk. A second damage before that would be a second failure after
/// its acknowledgement, which the promise does not cover. Blobs written
/// since the previous damage take their first failure, whatever layout
/// they were written in.
pub fn exposed_blobs_healed(slots: &[NodeSlot], exposed: &HashSet<(GroupId, u64)>) -> Result<(), String> {
    let manifests = retained_manifests(slots);
    let mut stored: HashMap<ChunkAddr, Vec<Vec<u8>>> = HashMap::new();
    for s in slots {
        for k in s.engine.durable_keys(Tree::Shards) {
            let Some(a) = parse_chunk_key(&k) else { continue };
            if !exposed.contains(&(a.group, a.blob)) {
                continue;
            }
            if let Some(v) = s.engine.durable_value(Tree::Shards, &k) {
                stored.entry(a).or_default().push(v);
            }
        }
    }
    for (&(group, blob), m) in &manifests {
        if !exposed.contains(&(group, blob)) {
            continue;
        }
        for shard in 0..m.layout.shards() {
            for stripe in 0..m.layout.stripes() {
                for chunk in 0..m.layout.chunks_in_shard(stripe) {
                    let a = ChunkAddr { group, blob, shard: shard as u8, stripe, chunk: chunk as u16 };
                    let good = stored.get(&a).is_some_and(|copies| {
                        copies.iter().any(|c| {
                            c.len() == m.layout.chunk_len(stripe, chunk) as usize
                                && crc32fast::hash(c) == m.crc(stripe, shard, chunk)
                        })
                    });
                    if !good {
                        return Err(format!(
                            "blob {blob:x} of group {group} (on record at the last damage) still lacks chunk {stripe}/{chunk} of shard {shard}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
