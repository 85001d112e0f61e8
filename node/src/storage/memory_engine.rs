//! An in-memory storage engine with a durable layer and a pending layer, for
//! the deterministic simulator and for unit tests. Never used by a node
//! binary.
//!
//! Writes land in the visible state and are queued as pending batches; a
//! [`StorageEngine::sync`] makes all pending batches durable. A simulated
//! crash ([`MemoryEngine::crash`]) throws away the visible state and keeps
//! the durable layer plus, to model torn writes, optionally a prefix of the
//! pending batches. [`MemoryEngine::rot`] flips a bit in a durable value
//! (bit rot below the checksums) and [`MemoryEngine::set_failing`] makes
//! every write and sync fail (a dying disk), [`MemoryEngine::set_sync_failing`]
//! only syncs, dropping the writes they should have made durable.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::engine::StorageEngine;
use super::engine::Tree;
use super::engine::WriteBatch;
use super::engine::WriteOp;

type Map = BTreeMap<(Tree, Vec<u8>), Vec<u8>>;

#[derive(Default)]
struct Layers {
    visible: Map,
    durable: Map,
    pending: Vec<WriteBatch>,
    failing: bool,
    /// Syncs fail and drop what they should have made durable, as a
    /// kernel may drop dirty pages it could not write (writes still work).
    sync_failing: bool,
    syncs: u64,
}

#[derive(Default)]
pub struct MemoryEngine {
    layers: Mutex<Layers>,
}

fn apply(map: &mut Map, batch: &WriteBatch) {
    for op in &batch.ops {
        match op {
            WriteOp::Put(k, v) => {
                map.insert((batch.tree, k.clone()), v.clone());
            }
            WriteOp::Delete(k) => {
                map.remove(&(batch.tree, k.clone()));
            }
            WriteOp::DeleteRange(s, e) => {
                let keys: Vec<_> = map
                    .range((Bound::Included((batch.tree, s.clone())), Bound::Excluded((batch.tree, e.clone()))))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in keys {
                    map.remove(&k);
                }
            }
        }
    }
}

impl MemoryEngine {
    pub fn new() -> Arc<Self> {
        Arc::new(MemoryEngine::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Layers> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Simulates a power loss: unsynced writes are lost except the first
    /// `torn_prefix` pending batches, which reached the medium.
    pub fn crash(&self, torn_prefix: usize) {
        let mut l = self.lock();
        let pending = std::mem::take(&mut l.pending);
        for b in pending.iter().take(torn_prefix) {
            apply(&mut l.durable, b);
        }
        l.visible = l.durable.clone();
    }

    /// Number of batches written but not yet synced.
    pub fn pending_batches(&self) -> usize {
        self.lock().pending.len()
    }

    /// Flips bit `bit` (modulo the value's length) of a durable and visible
    /// value. Returns false if the key does not exist or the value is empty.
    pub fn rot(&self, tree: Tree, key: &[u8], bit: usize) -> bool {
        let mut l = self.lock();
        let k = (tree, key.to_vec());
        let mut flipped = false;
        let Layers { durable, visible, .. } = &mut *l;
        for map in [durable, visible] {
            if let Some(v) = map.get_mut(&k) {
                if !v.is_empty() {
                    let bit = bit % (v.len() * 8);
                    v[bit / 8] ^= 1 << (bit % 8);
                    flipped = true;
                }
            }
        }
        flipped
    }

    /// The durable value under `key` (to tell whether rotted bytes are
    /// still on the medium).
    pub fn durable_value(&self, tree: Tree, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().durable.get(&(tree, key.to_vec())).cloned()
    }

    /// Keys of `tree` in the durable layer (for picking rot targets).
    pub fn durable_keys(&self, tree: Tree) -> Vec<Vec<u8>> {
        self.lock().durable.keys().filter(|(t, _)| *t == tree).map(|(_, k)| k.clone()).collect()
    }

    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// Makes syncs fail while writes still succeed; a failing sync loses
    /// the writes it was to make durable (the fsyncgate pattern).
    pub fn set_sync_failing(&self, failing: bool) {
        self.lock().sync_failing = failing;
    }

    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }
}

fn failing() -> io::Error {
    io::Error::other("simulated disk failure")
}

impl StorageEngine for MemoryEngine {
    fn get(&self, tree: Tree, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(self.lock().visible.get(&(tree, key.to_vec())).cloned())
    }

    fn range(&self, tree: Tree, start: &[u8], end: &[u8], limit: usize) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let l = self.lock();
        Ok(l.visible
            .range((Bound::Included((tree, start.to_vec())), Bound::Excluded((tree, end.to_vec()))))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn last_in_range(&self, tree: Tree, start: &[u8], end: &[u8]) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(None);
        }
        let l = self.lock();
        Ok(l.visible
            .range((Bound::Included((tree, start.to_vec())), Bound::Excluded((tree, end.to_vec()))))
            .next_back()
            .map(|((_, k), v)| (k.clone(), v.clone())))
    }

    fn write(&self, batch: WriteBatch) -> io::Result<()> {
        batch.check_sizes()?;
        let mut l = self.lock();
        if l.failing {
            return Err(failing());
        }
        apply(&mut l.visible, &batch);
        l.pending.push(batch);
        Ok(())
    }

    fn sync(self: Arc<Self>) -> BoxFuture<'static, io::Result<()>> {
        let r = {
            let mut l = self.lock();
            if l.failing {
                Err(failing())
            } else if l.sync_failing {
                l.pending.clear();
                Err(io::Error::other("simulated fsync failure: unsynced writes dropped"))
            } else {
                let pending = std::mem::take(&mut l.pending);
                for b in &pending {
                    apply(&mut l.durable, b);
                }
                l.syncs += 1;
                Ok(())
            }
        };
        futures::future::ready(r).boxed()
    }

    fn size_on_disk_bytes(&self) -> u64 {
        self.lock().durable.iter().map(|((_, k), v)| (k.len() + v.len()) as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(e: &MemoryEngine, k: &[u8], v: &[u8]) {
        let mut b = WriteBatch::new(Tree::Log);
        b.put(k.to_vec(), v.to_vec());
        e.write(b).unwrap();
    }

    #[tokio::test]
    async fn crash_loses_unsynced_suffix_only() {
        let e = MemoryEngine::new();
        put(&e, b"a", b"1");
        e.clone().sync().await.unwrap();
        put(&e, b"b", b"2");
        put(&e, b"c", b"3");
        assert_eq!(e.get(Tree::Log, b"c").unwrap(), Some(b"3".to_vec()), "visible before sync");
        e.crash(1);
        assert_eq!(e.get(Tree::Log, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.get(Tree::Log, b"b").unwrap(), Some(b"2".to_vec()), "torn prefix kept");
        assert_eq!(e.get(Tree::Log, b"c").unwrap(), None, "suffix lost");
    }

    #[tokio::test]
    async fn failing_disk_rejects_writes_and_syncs() {
        let e = MemoryEngine::new();
        e.set_failing(true);
        let mut b = WriteBatch::new(Tree::Log);
        b.put(b"k".to_vec(), b"v".to_vec());
        assert!(e.write(b).is_err());
        assert!(e.clone().sync().await.is_err());
        e.set_failing(false);
        assert_eq!(e.get(Tree::Log, b"k").unwrap(), None);
    }

    #[test]
    fn rot_flips_one_bit() {
        let e = MemoryEngine::new();
        put(&e, b"k", &[0u8; 4]);
        e.crash(1);
        assert!(e.rot(Tree::Log, b"k", 9));
        assert_eq!(e.get(Tree::Log, b"k").unwrap(), Some(vec![0, 2, 0, 0]));
        assert!(!e.rot(Tree::Log, b"missing", 0));
    }
}
