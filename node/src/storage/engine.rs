//! The storage-engine seam beneath the Raft log and the state machines.
//!
//! Guarantees an engine must give (and the in-memory engine reproduces, so
//! the simulator exercises the weakest allowed behaviour):
//! - a [`WriteBatch`] touches one tree and is atomic: after a crash either
//!   all of it or none of it is visible;
//! - writes are visible to reads as soon as `write` returns;
//! - writes are durable only once a later [`StorageEngine::sync`] completes;
//!   a crash loses an arbitrary suffix (in write order) of unsynced batches.

use std::io;
use std::sync::Arc;

use futures::future::BoxFuture;

/// The trees of a node's storage; each holds one concern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    /// Raft log entries: (group, index) → entry.
    Log,
    /// Per-group Raft metadata: vote, committed log id, purge point.
    RaftState,
    /// Per-group persisted snapshots, chunked.
    Snapshot,
    /// The node's own records: identity, hosted replicas.
    Local,
    /// Erasure-coded shard chunks this node holds.
    Shards,
    /// One record per held shard (arrival time, for garbage collection).
    BlobMeta,
}

impl Tree {
    pub const ALL: [Tree; 6] = [Tree::Log, Tree::RaftState, Tree::Snapshot, Tree::Local, Tree::Shards, Tree::BlobMeta];

    pub fn name(self) -> &'static str {
        match self {
            Tree::Log => "raft_log",
            Tree::RaftState => "raft_state",
            Tree::Snapshot => "snapshot",
            Tree::Local => "local",
            Tree::Shards => "shards",
            Tree::BlobMeta => "blob_meta",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Deletes every key in `[start, end)`.
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// An atomic group of writes to one tree.
#[derive(Clone, Debug)]
pub struct WriteBatch {
    pub tree: Tree,
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    pub fn new(tree: Tree) -> Self {
        WriteBatch { tree, ops: Vec::new() }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.ops.push(WriteOp::Put(key, value));
        self
    }

    /// Refuses values larger than `STORED_VALUE_BYTES_MAX` (see
    /// `sled_engine` for why); every engine calls this before writing.
    pub fn check_sizes(&self) -> io::Result<()> {
        for op in &self.ops {
            if let WriteOp::Put(k, v) = op {
                if v.len() > shadowstore_base::limits::STORED_VALUE_BYTES_MAX {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "value of {} bytes under key {:?} in {} exceeds STORED_VALUE_BYTES_MAX",
                            v.len(),
                            String::from_utf8_lossy(k),
                            self.tree.name()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn delete(&mut self, key: Vec<u8>) -> &mut Self {
        self.ops.push(WriteOp::Delete(key));
        self
    }

    pub fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) -> &mut Self {
        self.ops.push(WriteOp::DeleteRange(start, end));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

pub trait StorageEngine: Send + Sync + 'static {
    fn get(&self, tree: Tree, key: &[u8]) -> io::Result<Option<Vec<u8>>>;

    /// Key-value pairs with keys in `[start, end)`, in key order, at most
    /// `limit` of them.
    fn range(&self, tree: Tree, start: &[u8], end: &[u8], limit: usize) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// The greatest key in `[start, end)` with its value.
    fn last_in_range(&self, tree: Tree, start: &[u8], end: &[u8]) -> io::Result<Option<(Vec<u8>, Vec<u8>)>>;

    fn write(&self, batch: WriteBatch) -> io::Result<()>;

    /// Makes every write that returned before this call durable.
    fn sync(self: Arc<Self>) -> BoxFuture<'static, io::Result<()>>;

    /// Bytes the engine occupies on its medium (for benchmarks and status).
    fn size_on_disk_bytes(&self) -> u64;
}

pub type SharedEngine = Arc<dyn StorageEngine>;
