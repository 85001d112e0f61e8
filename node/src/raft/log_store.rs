//! openraft's log storage over the storage engine: every group's log, vote,
//! committed pointer and purge point, under the group's key prefix.
//!
//! Appends return once the entries are readable and complete their
//! callback once a group-commit sync has made them durable; votes are
//! durable before `save_vote` returns. Writes go through the engine in
//! call order, so a durable committed pointer implies a durable log up to
//! it. Every stored part and record is sealed with a crc32
//! (`storage::checksum`): a rotted one is an error on read, never an entry.

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
use crate::storage::SharedEngine;
use crate::storage::Syncer;
use crate::storage::Tree;
use crate::storage::WriteBatch;
use crate::storage::checksum;
use crate::storage::keys;
use shadowstore_base::codec;
use shadowstore_base::ids::GroupId;

/// Entries returned by one `limited_get_log_entries` call at most, which
/// bounds one replication message.
const READ_ENTRIES_MAX: u64 = 512;
/// Encoded bytes of entries one replication message carries before it
/// stops (it always carries one entry): with entries of at most
/// `ENTRY_BYTES_MAX`, a message stays below `GRPC_MESSAGE_BYTES_MAX`, so a
/// follower that missed many large entries catches up message by message.
const REPLICATION_BATCH_BYTES_MAX: usize = 1024 * 1024;
const _: () = assert!(
    REPLICATION_BATCH_BYTES_MAX + ENTRY_BYTES_MAX + 64 * 1024 <= shadowstore_base::limits::GRPC_MESSAGE_BYTES_MAX
);
/// Stored parts read per engine call when reading entries.
const READ_PAGE_PARTS: usize = 64;
/// Bytes of an encoded entry per stored part.
const ENTRY_PART_BYTES: usize = shadowstore_base::limits::STORED_PIECE_BYTES;
const _: () = assert!(ENTRY_PART_BYTES + checksum::TRAILER_BYTES <= shadowstore_base::limits::STORED_VALUE_BYTES_MAX);
/// Records read per page when verifying a whole log.
const VERIFY_PAGE_RECORDS: usize = 1024;
/// Largest encoded entry (bounded by what one gRPC message may carry).
pub const ENTRY_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Largest encoded command a proposal may carry: the entry limit less
/// room for the entry's own fields (log id, payload tag), so that a
/// command under it always appends.
pub const COMMAND_BYTES_MAX: usize = ENTRY_BYTES_MAX - 4 * 1024;

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
        let key = keys::raft_state(self.group, tag);
        match self.engine.get(Tree::RaftState, &key)? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode(what, &checksum::open(Tree::RaftState, &key, v)?)?)),
        }
    }

    fn put_state<T: serde::Serialize>(&self, tag: u8, what: &'static str, value: &T) -> io::Result<()> {
        let key = keys::raft_state(self.group, tag);
        let sealed = checksum::seal(&key, &codec::encode(what, value)?);
        let mut b = WriteBatch::new(Tree::RaftState);
        b.put(key, sealed);
        self.engine.write(b)
    }

    /// Entries with indexes in `[start, end)`, reassembled from their
    /// parts; an error if the range has a hole or a torn entry.
    /// Entries `[start, end)` in order, read a page of stored parts at a
    /// time; stops before an entry once the entries read so far hold
    /// `bytes_max` encoded bytes (at least one entry is read).
    fn read_range(&self, start: u64, end: Option<u64>, bytes_max: usize) -> io::Result<Vec<Entry>> {
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let (mut from, to) = keys::log_range(self.group, start, end);
        let mut out: Vec<Entry> = Vec::new();
        let mut read_bytes = 0usize;
        let mut pending: Option<(u64, Vec<u8>)> = None;
        let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, format!("group {}: {msg}", self.group));
        let finish = |index: u64, bytes: Vec<u8>, out: &mut Vec<Entry>| -> io::Result<()> {
            let entry: Entry = codec::decode("log entry", &bytes)?;
            if entry.log_id.index != index {
                return Err(bad(format!("log key {index} holds entry {}", entry.log_id)));
            }
            if let Some(prev) = out.last() {
                if prev.log_id.index + 1 != index {
                    return Err(bad(format!("hole in log after {}", prev.log_id.index)));
                }
            }
            out.push(entry);
            Ok(())
        };
        'pages: loop {
            let kvs = self.engine.range(Tree::Log, &from, &to, READ_PAGE_PARTS)?;
            let page_len = kvs.len();
            for (k, v) in kvs {
                let (Some(index), Some(part)) = (keys::log_index_of(&k), keys::log_part_of(&k)) else {
                    return Err(bad("malformed log key".into()));
                };
                let v = checksum::open(Tree::Log, &k, v)?;
                from = k;
                from.push(0);
                match pending.take() {
                    Some((i, mut bytes)) if i == index => {
                        bytes.extend_from_slice(&v);
                        pending = Some((i, bytes));
                        continue;
                    }
                    Some((i, bytes)) => {
                        read_bytes += bytes.len();
                        finish(i, bytes, &mut out)?;
                    }
                    None => {}
                }
                if part != 0 {
                    return Err(bad(format!("entry {index} starts at part {part}")));
                }
                if read_bytes >= bytes_max {
                    break 'pages;
                }
                pending = Some((index, v));
            }
            if page_len < READ_PAGE_PARTS {
                break;
            }
        }
        if let Some((i, bytes)) = pending {
            finish(i, bytes, &mut out)?;
        }
        Ok(out)
    }

    /// The log id of the entry at `index`, decoded from its first part only.
    fn log_id_at(&self, index: u64) -> io::Result<LogId> {
        let key = keys::log_entry(self.group, index);
        let part0 = self
            .engine
            .get(Tree::Log, &key)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("entry {index} has no first part")))?;
        let part0 = checksum::open(Tree::Log, &key, part0)?;
        // An entry is encoded log id first, so its first part starts with it.
        let (log_id, _) = postcard::take_from_bytes::<LogId>(&part0)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("entry {index}: {e}")))?;
        Ok(log_id)
    }

    /// Checks the checksum of every record the group has in the log and
    /// Raft-state trees; the first corrupt one is the error
    /// (`checksum::is_corrupt`). Returns the bytes checked.
    pub fn verify(&self) -> io::Result<u64> {
        let mut bytes = 0u64;
        let end = keys::group_end(self.group);
        for tree in [Tree::Log, Tree::RaftState] {
            let mut start = keys::group_start(self.group);
            loop {
                let page = self.engine.range(tree, &start, &end, VERIFY_PAGE_RECORDS)?;
                let full = page.len() == VERIFY_PAGE_RECORDS;
                for (k, v) in page {
                    bytes += v.len() as u64;
                    checksum::open(tree, &k, v)?;
                    start = k;
                }
                if !full {
                    break;
                }
                start.push(0); // the first key after the last one checked
            }
        }
        Ok(bytes)
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
        self.read_range(start, Some(end.min(start.saturating_add(READ_ENTRIES_MAX))), REPLICATION_BATCH_BYTES_MAX)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self.get_state(keys::PURGED_TAG, "purged log id")?;
        let (s, e) = keys::log_range(self.group, 0, None);
        let last = match self.engine.last_in_range(Tree::Log, &s, &e)? {
            None => last_purged_log_id.clone(),
            Some((k, _)) => {
                let index = keys::log_index_of(&k)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed log key"))?;
                Some(self.log_id_at(index)?)
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
        // Not synced on its own: it becomes durable with the next sync. A
        // stale committed pointer after a crash means re-applying less on
        // restart and catching up from the current leader; that is safe
        // only because a restarted leader is not restored in its old term
        // (`enable_leader_restore` is off in raft::config).
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
            let bytes = codec::encode("log entry", &entry)?;
            if bytes.len() > ENTRY_BYTES_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("log entry {} of {} bytes exceeds {ENTRY_BYTES_MAX}", entry.log_id, bytes.len()),
                ));
            }
            // All parts in one batch: an entry is stored whole or not at all.
            for (part, chunk) in bytes.chunks(ENTRY_PART_BYTES).enumerate() {
                let key = keys::log_entry_part(self.group, entry.log_id.index, part as u16);
                let sealed = checksum::seal(&key, chunk);
                b.put(key, sealed);
            }
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

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::storage::RaftLogStorage;
    use openraft::testing::log_id;
    use shadowstore_base::ids::ReplicaId;

    use super::*;
    use crate::raft::Command;
    use crate::resource::ResourceCommand;
    use crate::storage::StorageEngine;
    use crate::storage::memory_engine::MemoryEngine;
    use shadowstore_base::ids::RequestId;

    fn big_entry(index: u64, len: usize) -> Entry {
        let cmd = Command::Resource(ResourceCommand::Put {
            request: RequestId::default(),
            now_ms: 0,
            variant: "v".into(),
            value: bytes::Bytes::from(vec![index as u8; len]),
            if_version: None,
        });
        Entry::new_normal(log_id::<TypeConfig>(1, ReplicaId::new(1), index), cmd)
    }

    /// Regression (issue 17): replication batches were bounded by count
    /// only, so 512 entries of 64 KiB made one 32 MiB message that the
    /// 4 MiB gRPC limit refused forever.
    #[tokio::test]
    async fn replication_reads_are_bounded_in_bytes_and_cover_the_log() {
        let engine = MemoryEngine::new();
        let syncer = Syncer::start(engine.clone());
        let mut store = LogStore::new(GroupId::new(4), engine, syncer);
        // 600 inline-sized entries, and two larger than the batch budget.
        let mut sizes = vec![64 * 1024; 600];
        sizes[100] = 1_500_000;
        sizes[101] = 1_500_000;
        let entries: Vec<Entry> = sizes.iter().enumerate().map(|(i, &n)| big_entry(i as u64 + 1, n)).collect();
        let (tx, rx) = <TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
        store.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
        let mut next = 1u64;
        let mut batches = 0;
        while next <= 600 {
            let batch = store.limited_get_log_entries(next, 601).await.unwrap();
            assert!(!batch.is_empty(), "a non-empty range never reads nothing");
            assert_eq!(batch[0].log_id.index, next);
            let bytes: usize = batch.iter().map(|e| codec::encode("entry", e).unwrap().len()).sum();
            assert!(
                bytes <= REPLICATION_BATCH_BYTES_MAX + ENTRY_BYTES_MAX,
                "batch at {next}: {} entries, {bytes} bytes",
                batch.len()
            );
            assert!(bytes < shadowstore_base::limits::GRPC_MESSAGE_BYTES_MAX);
            next += batch.len() as u64;
            batches += 1;
        }
        assert_eq!(next, 601, "every entry read exactly once");
        assert!(batches > 600 * 64 * 1024 / REPLICATION_BATCH_BYTES_MAX, "{batches} batches");
        // The unlimited read still returns the whole range.
        assert_eq!(store.try_get_log_entries(1..601).await.unwrap().len(), 600);
    }

    #[tokio::test]
    async fn entries_larger_than_a_stored_value_are_split_and_reassembled() {
        let engine = MemoryEngine::new();
        let syncer = Syncer::start(engine.clone());
        let mut store = LogStore::new(GroupId::new(3), engine.clone(), syncer);
        let sizes = [10usize, 300_000, 64 * 1024, 5];
        let entries: Vec<Entry> = sizes.iter().enumerate().map(|(i, &n)| big_entry(i as u64 + 1, n)).collect();
        let (tx, rx) = <TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
        store.append(entries.clone(), IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
        let parts = engine
            .range(Tree::Log, &keys::group_start(GroupId::new(3)), &keys::group_end(GroupId::new(3)), usize::MAX)
            .unwrap();
        assert!(parts.len() > sizes.len(), "the 300 KB entry must span several parts");
        assert!(parts.iter().all(|(_, v)| v.len() <= ENTRY_PART_BYTES + checksum::TRAILER_BYTES));
        let read = store.try_get_log_entries(1..5).await.unwrap();
        assert_eq!(format!("{read:?}"), format!("{entries:?}"));
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id.map(|l| l.index), Some(4));
        // Truncating inside the log removes every part of the later entries.
        store.truncate_after(Some(log_id::<TypeConfig>(1, ReplicaId::new(1), 1))).await.unwrap();
        assert_eq!(store.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(1));
        assert_eq!(store.try_get_log_entries(1..5).await.unwrap().len(), 1);
    }
}
