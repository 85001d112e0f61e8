//! openraft's log storage over the storage engine: every group's log, vote,
//! committed pointer and purge point, under the group's key prefix.
//!
//! Appends return once the entries are readable and complete their
//! callback once a group-commit sync has made them durable; votes are
//! durable before `save_vote` returns. Writes go through the engine in
//! call order, so a durable committed pointer implies a durable log up to
//! it.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;

use openraft::LogState;
use openraft::RaftLogReader;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;

use super::Entry;
use super::LogId;
use super::TypeConfig;
use super::Vote;
use crate::codec;
use crate::ids::GroupId;
use crate::storage::SharedEngine;
use crate::storage::Syncer;
use crate::storage::Tree;
use crate::storage::WriteBatch;
use crate::storage::keys;

/// Entries returned by one `limited_get_log_entries` call at most, which
/// bounds one replication message.
const READ_ENTRIES_MAX: usize = 512;

#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    engine: SharedEngine,
    syncer: Syncer,
}

impl LogStore {
    pub fn new(group: GroupId, engine: SharedEngine, syncer: Syncer) -> Self {
        LogStore { group, engine, syncer }
    }

    fn get_state<T: serde::de::DeserializeOwned>(&self, tag: u8, what: &'static str) -> io::Result<Option<T>> {
        match self.engine.get(Tree::RaftState, &keys::raft_state(self.group, tag))? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode(what, &v)?)),
        }
    }

    fn put_state<T: serde::Serialize>(&self, tag: u8, what: &'static str, value: &T) -> io::Result<()> {
        let mut b = WriteBatch::new(Tree::RaftState);
        b.put(keys::raft_state(self.group, tag), codec::encode(what, value)?);
        self.engine.write(b)
    }

    fn read_range(&self, start: u64, end: Option<u64>, limit: usize) -> io::Result<Vec<Entry>> {
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let (s, e) = keys::log_range(self.group, start, end);
        let kvs = self.engine.range(Tree::Log, &s, &e, limit)?;
        let mut out = Vec::with_capacity(kvs.len());
        for (k, v) in kvs {
            let entry: Entry = codec::decode("log entry", &v)?;
            let index = keys::log_index_of(&k);
            if index != Some(entry.log_id.index) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("group {}: log key {index:?} holds entry {}", self.group, entry.log_id),
                ));
            }
            if let Some(prev) = out.last() {
                let prev: &Entry = prev;
                if prev.log_id.index + 1 != entry.log_id.index {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("group {}: hole in log after {}", self.group, prev.log_id.index),
                    ));
                }
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Removes every trace of the group from the log and Raft-state trees
    /// (the replica is being deleted from this node).
    pub fn destroy(&self) -> io::Result<()> {
        for tree in [Tree::Log, Tree::RaftState] {
            let mut b = WriteBatch::new(tree);
            b.delete_range(keys::group_start(self.group), keys::group_end(self.group));
            self.engine.write(b)?;
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x.checked_add(1),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        self.read_range(start, end, usize::MAX)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.get_state(keys::VOTE_TAG, "vote")
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        self.read_range(start, Some(end), READ_ENTRIES_MAX)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self.get_state(keys::PURGED_TAG, "purged log id")?;
        let (s, e) = keys::log_range(self.group, 0, None);
        let last = match self.engine.last_in_range(Tree::Log, &s, &e)? {
            None => last_purged_log_id.clone(),
            Some((_, v)) => {
                let entry: Entry = codec::decode("log entry", &v)?;
                Some(entry.log_id)
            }
        };
        Ok(LogState { last_purged_log_id, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.put_state(keys::VOTE_TAG, "vote", vote)?;
        self.syncer.sync().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not synced on its own: it becomes durable with the next sync, and
        // a stale committed pointer after a crash only means re-applying
        // less on restart (openraft then catches up from the leader).
        self.put_state(keys::COMMITTED_TAG, "committed log id", &committed)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.get_state::<Option<LogId>>(keys::COMMITTED_TAG, "committed log id")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut b = WriteBatch::new(Tree::Log);
        for entry in entries {
            b.put(keys::log_entry(self.group, entry.log_id.index), codec::encode("log entry", &entry)?);
        }
        if !b.is_empty() {
            self.engine.write(b)?;
        }
        self.syncer.after_sync(move |r| callback.io_completed(r)).await;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        let (s, e) = keys::log_range(self.group, from, None);
        let mut b = WriteBatch::new(Tree::Log);
        b.delete_range(s, e);
        self.engine.write(b)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // The purge point first: a crash between the two writes leaves
        // purged entries that the next purge removes, never a hole.
        self.put_state(keys::PURGED_TAG, "purged log id", &log_id)?;
        let (s, e) = keys::log_range(self.group, 0, Some(log_id.index + 1));
        let mut b = WriteBatch::new(Tree::Log);
        b.delete_range(s, e);
        self.engine.write(b)
    }
}
