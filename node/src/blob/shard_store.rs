//! A holder's shard chunks in local storage.
//!
//! | tree      | key                                              | value          |
//! |-----------|--------------------------------------------------|----------------|
//! | shards    | group(8) blob(8) shard(1) stripe(4) chunk(2)     | chunk bytes    |
//! | blob_meta | group(8) blob(8) shard(1)                        | `HeldShard`    |
//!
//! `HeldShard` is written with the first chunk of a shard and updated when
//! its write ends, so garbage collection can tell a recent write from an
//! abandoned one. Chunks carry no crc here: the manifest holds them.

use std::io;

use serde::Deserialize;
use serde::Serialize;

use crate::storage::SharedEngine;
use crate::storage::Tree;
use crate::storage::WriteBatch;
use crate::storage::keys;
use shadowstore_base::codec;
use shadowstore_base::ids::GroupId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldShard {
    /// Wall-clock milliseconds of the last write to the shard (its first
    /// chunk, the end of its write stream, a repair).
    pub received_at_ms: u64,
    /// Chunks stored, as of the end of the write (or the last repair).
    pub chunks_stored: u64,
}

fn shard_prefix(group: GroupId, blob: u64, shard: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(23);
    k.extend_from_slice(&group.get().to_be_bytes());
    k.extend_from_slice(&blob.to_be_bytes());
    k.push(shard);
    k
}

/// Where one stored chunk belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkAddr {
    pub group: GroupId,
    pub blob: u64,
    pub shard: u8,
    pub stripe: u32,
    pub chunk: u16,
}

/// Bytes of a `shards` tree key.
const CHUNK_KEY_BYTES: usize = 23;

pub fn chunk_key(group: GroupId, blob: u64, shard: u8, stripe: u32, chunk: u16) -> Vec<u8> {
    let mut k = shard_prefix(group, blob, shard);
    k.extend_from_slice(&stripe.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    debug_assert_eq!(k.len(), CHUNK_KEY_BYTES);
    k
}

/// The chunk a `shards` tree key names (`None` for a malformed key).
pub fn parse_chunk_key(k: &[u8]) -> Option<ChunkAddr> {
    if k.len() != CHUNK_KEY_BYTES {
        return None;
    }
    Some(ChunkAddr {
        group: GroupId::new(u64::from_be_bytes(k[0..8].try_into().ok()?)),
        blob: u64::from_be_bytes(k[8..16].try_into().ok()?),
        shard: k[16],
        stripe: u32::from_be_bytes(k[17..21].try_into().ok()?),
        chunk: u16::from_be_bytes(k[21..23].try_into().ok()?),
    })
}

fn prefix_end(mut p: Vec<u8>) -> Vec<u8> {
    // Keys here are fixed-width, so incrementing the last byte (with carry)
    // gives the first key after the prefix.
    while let Some(last) = p.pop() {
        if last < 0xff {
            p.push(last + 1);
            return p;
        }
    }
    vec![0xff; 32]
}

/// One chunk to store: (stripe, chunk index, bytes).
pub type ChunkWrite = (u32, u16, Vec<u8>);

#[derive(Clone)]
pub struct ShardStore {
    engine: SharedEngine,
}

impl ShardStore {
    pub fn new(engine: SharedEngine) -> Self {
        ShardStore { engine }
    }

    /// Records that this node started receiving `shard` of `blob` (once).
    pub fn note_shard(&self, group: GroupId, blob: u64, shard: u8, now_ms: u64) -> io::Result<()> {
        if self.held_shard(group, blob, shard)?.is_none() {
            self.set_held(group, blob, shard, HeldShard { received_at_ms: now_ms, chunks_stored: 0 })?;
        }
        Ok(())
    }

    pub fn held_shard(&self, group: GroupId, blob: u64, shard: u8) -> io::Result<Option<HeldShard>> {
        match self.engine.get(Tree::BlobMeta, &shard_prefix(group, blob, shard))? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode("held shard", &v)?)),
        }
    }

    pub fn set_held(&self, group: GroupId, blob: u64, shard: u8, held: HeldShard) -> io::Result<()> {
        let mut b = WriteBatch::new(Tree::BlobMeta);
        b.put(shard_prefix(group, blob, shard), codec::encode("held shard", &held)?);
        self.engine.write(b)
    }

    pub fn put_chunks(&self, group: GroupId, blob: u64, shard: u8, chunks: Vec<ChunkWrite>) -> io::Result<()> {
        let mut b = WriteBatch::new(Tree::Shards);
        for (stripe, chunk, data) in chunks {
            b.put(chunk_key(group, blob, shard, stripe, chunk), data);
        }
        self.engine.write(b)
    }

    pub fn get_chunk(
        &self,
        group: GroupId,
        blob: u64,
        shard: u8,
        stripe: u32,
        chunk: u16,
    ) -> io::Result<Option<Vec<u8>>> {
        self.engine.get(Tree::Shards, &chunk_key(group, blob, shard, stripe, chunk))
    }

    /// The stored chunks of one shard of one stripe, as (chunk index, bytes).
    pub fn get_stripe(&self, group: GroupId, blob: u64, shard: u8, stripe: u32) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let mut start = shard_prefix(group, blob, shard);
        start.extend_from_slice(&stripe.to_be_bytes());
        let end = prefix_end(start.clone());
        let kvs = self.engine.range(Tree::Shards, &start, &end, usize::MAX)?;
        Ok(kvs
            .into_iter()
            .filter_map(|(k, v)| {
                let c: [u8; 2] = k.get(21..23)?.try_into().ok()?;
                Some((u16::from_be_bytes(c), v))
            })
            .collect())
    }

    /// Every shard held for `group`: (blob, shard, record).
    pub fn held(&self, group: GroupId) -> io::Result<Vec<(u64, u8, HeldShard)>> {
        let kvs = self.engine.range(Tree::BlobMeta, &keys::group_start(group), &keys::group_end(group), usize::MAX)?;
        let mut out = Vec::with_capacity(kvs.len());
        for (k, v) in kvs {
            let blob: [u8; 8] = k.get(8..16).and_then(|b| b.try_into().ok()).ok_or_else(|| bad_key(&k))?;
            let shard = *k.get(16).ok_or_else(|| bad_key(&k))?;
            out.push((u64::from_be_bytes(blob), shard, codec::decode("held shard", &v)?));
        }
        Ok(out)
    }

    /// Deletes every chunk of `shard` of `blob`, then its record.
    pub fn delete_shard(&self, group: GroupId, blob: u64, shard: u8) -> io::Result<()> {
        let p = shard_prefix(group, blob, shard);
        let mut b = WriteBatch::new(Tree::Shards);
        b.delete_range(p.clone(), prefix_end(p.clone()));
        self.engine.write(b)?;
        let mut b = WriteBatch::new(Tree::BlobMeta);
        b.delete(p);
        self.engine.write(b)
    }

    /// Deletes every shard of every blob of `group`.
    pub fn delete_group(&self, group: GroupId) -> io::Result<()> {
        crate::storage::delete_group_records(&self.engine, group, &crate::storage::SHARD_TREES)
    }
}

fn bad_key(k: &[u8]) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed blob_meta key {k:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory_engine::MemoryEngine;

    #[test]
    fn chunks_round_trip_and_deletes_are_scoped() {
        let store = ShardStore::new(MemoryEngine::new());
        store.note_shard(GroupId::new(7), 42, 1, 1000).unwrap();
        store.note_shard(GroupId::new(7), 42, 1, 2000).unwrap(); // first arrival wins
        store
            .put_chunks(
                GroupId::new(7),
                42,
                1,
                vec![(0, 0, b"a".to_vec()), (0, 1, b"b".to_vec()), (1, 0, b"c".to_vec())],
            )
            .unwrap();
        store.note_shard(GroupId::new(7), 43, 0, 1500).unwrap();
        store.put_chunks(GroupId::new(7), 43, 0, vec![(0, 0, b"x".to_vec())]).unwrap();
        store.note_shard(GroupId::new(8), 42, 1, 1500).unwrap();
        store.put_chunks(GroupId::new(8), 42, 1, vec![(0, 0, b"other group".to_vec())]).unwrap();
        assert_eq!(store.get_stripe(GroupId::new(7), 42, 1, 0).unwrap(), vec![(0, b"a".to_vec()), (1, b"b".to_vec())]);
        assert_eq!(store.get_chunk(GroupId::new(7), 42, 1, 1, 0).unwrap(), Some(b"c".to_vec()));
        let held = store.held(GroupId::new(7)).unwrap();
        assert_eq!(
            held,
            vec![
                (42, 1, HeldShard { received_at_ms: 1000, chunks_stored: 0 }),
                (43, 0, HeldShard { received_at_ms: 1500, chunks_stored: 0 })
            ]
        );
        store.delete_shard(GroupId::new(7), 42, 1).unwrap();
        assert_eq!(store.get_stripe(GroupId::new(7), 42, 1, 0).unwrap(), vec![]);
        assert_eq!(store.get_chunk(GroupId::new(7), 43, 0, 0, 0).unwrap(), Some(b"x".to_vec()));
        store.delete_group(GroupId::new(7)).unwrap();
        assert!(store.held(GroupId::new(7)).unwrap().is_empty());
        assert_eq!(store.get_chunk(GroupId::new(8), 42, 1, 0, 0).unwrap(), Some(b"other group".to_vec()));
    }

    #[test]
    fn chunk_keys_parse_back() {
        let a = ChunkAddr { group: GroupId::new(7), blob: u64::MAX - 3, shard: 2, stripe: 70_000, chunk: 513 };
        assert_eq!(parse_chunk_key(&chunk_key(a.group, a.blob, a.shard, a.stripe, a.chunk)), Some(a));
        assert_eq!(parse_chunk_key(&shard_prefix(GroupId::new(7), 1, 2)), None);
    }
}
