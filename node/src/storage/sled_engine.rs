//! The production storage engine: one sled `Db` per node, one sled tree per
//! [`Tree`].
//!
//! Two sled pitfalls shape this file (see docs/ARCHITECTURE.md, "Storage"):
//! - `Db::flush` writes with `sync_file_range`, which neither flushes the
//!   disk cache nor the file's metadata (sled issue #1452). [`sync`] follows
//!   it with an `fdatasync` of sled's data file, done on a blocking thread.
//! - sled writes any page larger than `segment_size / 4` to a separate file
//!   under `blobs/` that is never fsynced. Every value we store is at most
//!   [`STORED_VALUE_BYTES_MAX`] (56 KiB) and a leaf holds at most 17 items
//!   before it splits (at most ~952 KiB), so with 4 MiB segments (1 MiB blob
//!   threshold) no page gets there; `blob_files` lets tests assert it.
//!
//! The segment size is also the size of sled's write buffers, which sled
//! queues for its I/O threads without back-pressure: 4 MiB rather than 8 MiB
//! segments cut a node's peak memory under sustained blob writes by about a
//! third (docs/BENCHMARKS.md).
//!
//! [`sync`]: StorageEngine::sync
//! [`STORED_VALUE_BYTES_MAX`]: shadowstore_base::limits::STORED_VALUE_BYTES_MAX

use std::fs::File;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::engine::StorageEngine;
use super::engine::Tree;
use super::engine::WriteBatch;
use super::engine::WriteOp;

/// Period of sled's background flusher, which also relocates live pages out
/// of mostly-empty segments so freed space can be reused and the file's
/// tail truncated.
pub const SLED_FLUSHER_PERIOD_MS: u64 = 1_000;

/// sled segment size; pages above a quarter of it would become blob files.
pub const SLED_SEGMENT_SIZE_BYTES: usize = 4 * 1024 * 1024;

pub struct SledEngine {
    path: PathBuf,
    db: sled::Db,
    trees: Vec<(Tree, sled::Tree)>,
    /// sled's main data file, kept open to fdatasync it after every flush.
    data_file: File,
}

fn sled_err(e: sled::Error) -> io::Error {
    match e {
        sled::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// Longest wait for sled's file lock at open, and the pause between tries.
const LOCK_WAIT_MS_MAX: u64 = 3_000;
const LOCK_RETRY_MS: u64 = 20;

impl SledEngine {
    /// Opens (or creates) the engine in `dir`.
    ///
    /// A database handle dropped just before (in this process) can hold
    /// sled's file lock for a moment while its background flusher stops:
    /// opening waits up to `LOCK_WAIT_MS_MAX` for it.
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let config = sled::Config::new()
            .path(dir)
            .segment_size(SLED_SEGMENT_SIZE_BYTES)
            .cache_capacity(cache_capacity_bytes)
            // We flush ourselves (group commit) for durability; sled's
            // background flusher stays on because it is also what cleans
            // sparse segments and gives disk space back (see module docs).
            .flush_every_ms(Some(SLED_FLUSHER_PERIOD_MS))
            .mode(sled::Mode::HighThroughput);
        let started = std::time::Instant::now();
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && started.elapsed() < Duration::from_millis(LOCK_WAIT_MS_MAX) =>
                {
                    std::thread::sleep(Duration::from_millis(LOCK_RETRY_MS));
                }
                Err(e) => return Err(sled_err(e)),
            }
        };
        let mut trees = Vec::new();
        for t in Tree::ALL {
            trees.push((t, db.open_tree(t.name()).map_err(sled_err)?));
        }
        let data_file = File::open(dir.join("db"))?;
        // Make the files' directory entries durable (matters right after
        // sled created them).
        File::open(dir)?.sync_all()?;
        Ok(Arc::new(SledEngine { path: dir.to_path_buf(), db, trees, data_file }))
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        // Tree::ALL is opened in order, so the index is the discriminant.
        let (t, handle) = &self.trees[tree as usize];
        debug_assert_eq!(*t, tree);
        handle
    }

    /// Files under sled's `blobs/` directory (must stay zero, see above).
    pub fn blob_files(&self) -> io::Result<usize> {
        blob_files_in(&self.path)
    }

    fn sync_blocking(&self) -> io::Result<()> {
        self.db.flush().map_err(sled_err)?;
        // fdatasync: the data and the size needed to read it back.
        self.data_file.sync_data()
    }
}

/// Files under `<dir>/blobs`, the directory sled writes oversized pages to.
pub fn blob_files_in(dir: &Path) -> io::Result<usize> {
    match std::fs::read_dir(dir.join("blobs")) {
        Ok(rd) => {
            let mut n = 0;
            for e in rd {
                e?;
                n += 1;
            }
            Ok(n)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

impl StorageEngine for SledEngine {
    fn get(&self, tree: Tree, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(self.tree(tree).get(key).map_err(sled_err)?.map(|v| v.to_vec()))
    }

    fn range(&self, tree: Tree, start: &[u8], end: &[u8], limit: usize) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        for kv in self.tree(tree).range(start..end).take(limit) {
            let (k, v) = kv.map_err(sled_err)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn last_in_range(&self, tree: Tree, start: &[u8], end: &[u8]) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(None);
        }
        match self.tree(tree).range(start..end).next_back() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv.map_err(sled_err)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
        }
    }

    fn write(&self, batch: WriteBatch) -> io::Result<()> {
        batch.check_sizes()?;
        let tree = self.tree(batch.tree);
        let mut b = sled::Batch::default();
        for op in batch.ops {
            match op {
                WriteOp::Put(k, v) => b.insert(k, v),
                WriteOp::Delete(k) => b.remove(k),
                WriteOp::DeleteRange(s, e) => {
                    // sled has no range delete: enumerate the keys. Range
                    // deletes are rare (log purge/truncate, snapshot swap).
                    for k in tree.range(s..e).keys() {
                        b.remove(k.map_err(sled_err)?);
                    }
                }
            }
        }
        tree.apply_batch(b).map_err(sled_err)
    }

    fn sync(self: Arc<Self>) -> BoxFuture<'static, io::Result<()>> {
        async move {
            match tokio::task::spawn_blocking(move || self.sync_blocking()).await {
                Ok(r) => r,
                Err(join) => Err(io::Error::other(format!("sync task failed: {join}"))),
            }
        }
        .boxed()
    }

    fn size_on_disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn survives_reopen_after_sync() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = SledEngine::open(dir.path(), 16 << 20).unwrap();
            let mut b = WriteBatch::new(Tree::Log);
            b.put(b"a".to_vec(), b"1".to_vec()).put(b"b".to_vec(), b"2".to_vec());
            e.write(b).unwrap();
            e.clone().sync().await.unwrap();
        }
        let e = SledEngine::open(dir.path(), 16 << 20).unwrap();
        assert_eq!(e.get(Tree::Log, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.get(Tree::Local, b"a").unwrap(), None, "trees are separate");
        let mut b = WriteBatch::new(Tree::Log);
        b.delete_range(b"a".to_vec(), b"b".to_vec());
        e.write(b).unwrap();
        assert_eq!(e.range(Tree::Log, b"", b"z", 10).unwrap(), vec![(b"b".to_vec(), b"2".to_vec())]);
        assert_eq!(e.last_in_range(Tree::Log, b"", b"z").unwrap().unwrap().0, b"b".to_vec());
    }

    #[tokio::test]
    async fn largest_allowed_values_never_create_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = SledEngine::open(dir.path(), 16 << 20).unwrap();
        // Dense keys so leaves fill with maximal values before splitting.
        for round in 0..4u8 {
            for i in 0..200u32 {
                let mut b = WriteBatch::new(Tree::Log);
                let v = vec![round ^ (i as u8); shadowstore_base::limits::STORED_VALUE_BYTES_MAX];
                b.put(i.to_be_bytes().to_vec(), v);
                e.write(b).unwrap();
            }
            e.clone().sync().await.unwrap();
        }
        assert_eq!(e.blob_files().unwrap(), 0, "sled wrote blob files");
    }
}
