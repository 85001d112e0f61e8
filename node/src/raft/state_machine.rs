//! openraft's state machine for every group: the group's state lives in
//! memory (shared with readers), snapshots are persisted in the engine.
//!
//! Recovery: the state is transient. On restart openraft installs the last
//! persisted snapshot and re-applies the log up to the saved committed
//! pointer (see `log_store`), so a node never serves state older than what
//! it had applied before the crash. Snapshots are stored as chunks of at
//! most 48 KiB under a manifest with a crc32 of the data, the manifest
//! itself sealed with one (`storage::checksum`); the manifest is written after
//! its chunks and old chunks are deleted after it, so a crash at any point
//! leaves one complete snapshot.

use std::io;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;

use bytes::Bytes;
use futures::Stream;
use futures::StreamExt;
use openraft::EntryPayload;
use openraft::RaftSnapshotBuilder;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use super::Command;
use super::CommandResponse;
use super::LogId;
use super::Snapshot;
use super::SnapshotMeta;
use super::StoredMembership;
use super::TypeConfig;
use crate::meta::state::MetaState;
use crate::resource::ResourceState;
use crate::storage::SharedEngine;
use crate::storage::Syncer;
use crate::storage::Tree;
use crate::storage::WriteBatch;
use crate::storage::checksum;
use crate::storage::keys;
use shadowstore_base::codec;
use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::META_GROUP_ID;
use shadowstore_base::limits::SNAPSHOT_BYTES_MAX;

/// Bytes per persisted snapshot chunk.
const SNAPSHOT_STORED_CHUNK_BYTES: usize = shadowstore_base::limits::STORED_PIECE_BYTES;

/// The replicated data of a group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GroupData {
    Meta(MetaState),
    Resource(ResourceState),
}

impl GroupData {
    pub fn initial(group: GroupId) -> Self {
        if group == META_GROUP_ID {
            GroupData::Meta(MetaState::default())
        } else {
            GroupData::Resource(ResourceState::default())
        }
    }

    /// Applies one command and checks the state's invariants; a state that
    /// fails them is an error (the replica stops and is quarantined).
    fn apply(&mut self, index: u64, cmd: &Command) -> Result<CommandResponse, String> {
        match (self, cmd) {
            (GroupData::Meta(s), Command::Meta(c)) => {
                let answer = s.apply(c);
                s.check_invariants()?;
                Ok(CommandResponse::Meta(answer))
            }
            (GroupData::Resource(s), Command::Resource(c)) => {
                let answer = s.apply(index, c);
                s.check_bounds()?;
                Ok(CommandResponse::Resource(answer))
            }
            _ => Ok(CommandResponse::WrongGroupKind),
        }
    }
}

/// A group's state as of `last_applied`.
#[derive(Clone, Debug)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub data: GroupData,
    /// Set when an applied entry left `data` failing its check: the
    /// state machine refuses to go on and the registry quarantines the
    /// replica instead of restarting it (never stored).
    pub failed_check: Option<String>,
}

/// The group's state, shared between the state machine (writer) and the
/// API (readers).
#[derive(Clone)]
pub struct SharedState {
    inner: Arc<RwLock<AppliedState>>,
    /// The index of the last applied entry (0: none).
    applied_tx: Arc<watch::Sender<u64>>,
}

impl SharedState {
    fn new(group: GroupId) -> Self {
        SharedState {
            inner: Arc::new(RwLock::new(AppliedState {
                last_applied: None,
                membership: StoredMembership::default(),
                data: GroupData::initial(group),
                failed_check: None,
            })),
            applied_tx: Arc::new(watch::channel(0).0),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        // A panic while holding the lock would have killed the Raft core
        // too, and the supervisor rebuilds the group from storage.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, AppliedState> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the applied data behind the state machine's back: tests use
    /// it to stand for a bug or memory corruption.
    #[cfg(test)]
    pub(crate) fn tamper(&self, f: impl FnOnce(&mut GroupData)) {
        f(&mut self.write().data)
    }

    /// Watches the last applied index.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    pub fn applied_index(&self) -> u64 {
        *self.applied_tx.borrow()
    }

    fn publish_applied(&self, index: u64) {
        self.applied_tx.send_if_modified(|cur| {
            if index != *cur {
                *cur = index;
                true
            } else {
                false
            }
        });
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SnapshotManifest {
    snapshot_id: u64,
    meta: SnapshotMeta,
    len_bytes: u64,
    chunks: u32,
    crc32: u32,
}

/// Open while a replica's state machine may persist snapshots; closing it
/// (write lock, set false) waits for a snapshot being persisted and stops
/// later ones. openraft builds snapshots in a task that can outlive the
/// Raft core's shutdown, and a replica replaced in place reuses the
/// group's snapshot keys.
pub type SnapshotGate = Arc<tokio::sync::RwLock<bool>>;

pub struct StateMachineStore {
    group: GroupId,
    state: SharedState,
    engine: SharedEngine,
    syncer: Syncer,
    writes: SnapshotGate,
}

impl StateMachineStore {
    /// Opens the state machine of `group`, discarding chunks of snapshots
    /// that were being written when the node last stopped.
    pub fn open(group: GroupId, engine: SharedEngine, syncer: Syncer) -> io::Result<Self> {
        let writes = Arc::new(tokio::sync::RwLock::new(true));
        let store = StateMachineStore { group, state: SharedState::new(group), engine, syncer, writes };
        store.discard_orphan_chunks()?;
        Ok(store)
    }

    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }

    pub fn writes_gate(&self) -> SnapshotGate {
        self.writes.clone()
    }

    fn manifest(&self) -> io::Result<Option<SnapshotManifest>> {
        read_manifest(self.group, &self.engine)
    }

    fn load_snapshot(&self) -> io::Result<Option<Snapshot>> {
        read_snapshot(self.group, &self.engine)
    }

    fn discard_orphan_chunks(&self) -> io::Result<()> {
        let keep = self.manifest()?.map(|m| m.snapshot_id);
        let (all_s, all_e) = keys::snapshot_chunks_all(self.group);
        let mut b = WriteBatch::new(Tree::Snapshot);
        match keep {
            None => {
                b.delete_range(all_s, all_e);
            }
            Some(id) => {
                let (s, e) = keys::snapshot_chunks_of(self.group, id);
                b.delete_range(all_s, s);
                b.delete_range(e, all_e);
            }
        }
        self.engine.write(b)
    }

    /// Persists `data` as the group's snapshot described by `meta`.
    async fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let open = self.writes.read().await;
        if !*open {
            return Err(io::Error::other(format!("group {}: replica stopped; snapshot not persisted", self.group)));
        }
        write_snapshot(self.group, &self.engine, meta, data)?;
        self.syncer.sync().await
    }

    /// Checks the stored snapshot of `group` (manifest and data) against
    /// its checksums; returns the bytes checked. Reads only: it may run
    /// while the group's state machine is persisting a new snapshot.
    pub fn verify(group: GroupId, engine: &SharedEngine) -> io::Result<u64> {
        Ok(read_snapshot(group, engine)?.map(|s| s.snapshot.len() as u64).unwrap_or(0))
    }

    /// Removes the snapshots of `group` (its replica is being deleted).
    /// Reads nothing, so it works on a corrupt snapshot too.
    pub fn destroy(group: GroupId, engine: &SharedEngine) -> io::Result<()> {
        let mut b = WriteBatch::new(Tree::Snapshot);
        b.delete(keys::snapshot_manifest(group));
        let (s, e) = keys::snapshot_chunks_all(group);
        b.delete_range(s, e);
        engine.write(b)
    }
}

/// Writes `data` as the snapshot of `group` (new chunks, then the
/// manifest that names them, then the old chunks go); not synced.
fn write_snapshot(group: GroupId, engine: &SharedEngine, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
    let old = read_manifest(group, engine)?;
    let snapshot_id = old.as_ref().map(|m| m.snapshot_id + 1).unwrap_or(1);
    let mut chunks = 0u32;
    for (i, chunk) in data.chunks(SNAPSHOT_STORED_CHUNK_BYTES).enumerate() {
        let mut b = WriteBatch::new(Tree::Snapshot);
        b.put(keys::snapshot_chunk(group, snapshot_id, i as u32), chunk.to_vec());
        engine.write(b)?;
        chunks += 1;
    }
    let manifest = SnapshotManifest {
        snapshot_id,
        meta: meta.clone(),
        len_bytes: data.len() as u64,
        chunks,
        crc32: crc32fast::hash(data),
    };
    let key = keys::snapshot_manifest(group);
    let sealed = checksum::seal(&key, &codec::encode("snapshot manifest", &manifest)?);
    let mut b = WriteBatch::new(Tree::Snapshot);
    b.put(key, sealed);
    engine.write(b)?;
    if let Some(old) = old {
        let (s, e) = keys::snapshot_chunks_of(group, old.snapshot_id);
        let mut b = WriteBatch::new(Tree::Snapshot);
        b.delete_range(s, e);
        engine.write(b)?;
    }
    Ok(())
}

/// The group data of a snapshot whose meta state has the layout `M` of an
/// earlier `meta_state` format (the variant order of [`GroupData`]).
#[derive(Deserialize)]
enum GroupDataAs<M> {
    Meta(M),
    #[allow(dead_code)]
    Resource(ResourceState),
}

/// `meta_state` formats 0, 1 and 2 → 3: the stored meta snapshot gains what
/// later formats appended (format 2: the empty shadow sub-state; format 3:
/// no peer addresses). Idempotent: a snapshot that already decodes in the
/// current format (a crash after the rewrite, before the format record) is
/// left alone. Log entries need nothing: commands were only appended.
///
/// postcard ignores bytes after a value, so the layouts are tried newest
/// first: an older layout would also read the start of a newer snapshot.
pub fn upgrade_meta_snapshot(engine: &SharedEngine, _from: u32) -> io::Result<()> {
    use crate::meta::state::{MetaStateFormat1, MetaStateFormat2};
    let Some(snapshot) = read_snapshot(META_GROUP_ID, engine)? else { return Ok(()) };
    let bytes = &snapshot.snapshot;
    if codec::decode::<GroupData>("snapshot", bytes).is_ok() {
        return Ok(());
    }
    let old: GroupDataAs<MetaStateFormat2> = match codec::decode("meta snapshot in format 2", bytes) {
        Ok(s) => s,
        Err(_) => match codec::decode::<GroupDataAs<MetaStateFormat1>>("meta snapshot in format 1", bytes)? {
            GroupDataAs::Meta(m) => GroupDataAs::Meta(m.into()),
            GroupDataAs::Resource(r) => GroupDataAs::Resource(r),
        },
    };
    let GroupDataAs::Meta(old) = old else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the meta group's snapshot holds a resource state"));
    };
    let data = codec::encode("snapshot", &GroupData::Meta(old.into()))?;
    write_snapshot(META_GROUP_ID, engine, &snapshot.meta, &data)
}

/// Stores `data` as the meta group's snapshot (format tests).
#[cfg(test)]
pub fn write_test_snapshot(engine: &SharedEngine, data: &[u8]) {
    write_snapshot(META_GROUP_ID, engine, &SnapshotMeta::default(), data).expect("write snapshot");
}

/// The meta group's stored snapshot bytes (format tests).
#[cfg(test)]
pub fn read_test_snapshot(engine: &SharedEngine) -> Vec<u8> {
    read_snapshot(META_GROUP_ID, engine).expect("read").expect("a snapshot").snapshot.to_vec()
}

fn read_manifest(group: GroupId, engine: &SharedEngine) -> io::Result<Option<SnapshotManifest>> {
    let key = keys::snapshot_manifest(group);
    match engine.get(Tree::Snapshot, &key)? {
        None => Ok(None),
        Some(v) => Ok(Some(codec::decode("snapshot manifest", &checksum::open(Tree::Snapshot, &key, v)?)?)),
    }
}

/// The stored snapshot of `group`, checked against its manifest.
fn read_snapshot(group: GroupId, engine: &SharedEngine) -> io::Result<Option<Snapshot>> {
    let Some(m) = read_manifest(group, engine)? else {
        return Ok(None);
    };
    let (s, e) = keys::snapshot_chunks_of(group, m.snapshot_id);
    let kvs = engine.range(Tree::Snapshot, &s, &e, usize::MAX)?;
    if kvs.len() != m.chunks as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("group {group}: snapshot {} has {} of {} chunks", m.snapshot_id, kvs.len(), m.chunks),
        ));
    }
    let mut data = Vec::with_capacity(m.len_bytes as usize);
    for (_, v) in kvs {
        data.extend_from_slice(&v);
    }
    if data.len() as u64 != m.len_bytes || crc32fast::hash(&data) != m.crc32 {
        tracing::error!(%group, snapshot = %m.snapshot_id, "snapshot fails its checksum");
        return Err(checksum::corrupt(Tree::Snapshot, &s));
    }
    Ok(Some(Snapshot { meta: m.meta, snapshot: Bytes::from(data) }))
}

/// Builds a snapshot from a copy of the state taken when the builder was
/// created.
pub struct SnapshotBuilder {
    store_group: GroupId,
    copy: AppliedState,
    persist: StateMachineStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let data = codec::encode("snapshot", &self.copy.data)?;
        let meta =
            SnapshotMeta { last_log_id: self.copy.last_applied.clone(), last_membership: self.copy.membership.clone() };
        self.persist.persist_snapshot(&meta, &data).await?;
        tracing::debug!(group = %self.store_group, bytes = data.len(), "snapshot built");
        Ok(Snapshot { meta, snapshot: Bytes::from(data) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Bytes;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let st = self.state.read();
        Ok((st.last_applied.clone(), st.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        let mut items = Vec::new();
        while let Some(item) = entries.next().await {
            items.push(item?);
        }
        let mut answers = Vec::with_capacity(items.len());
        let last_index;
        {
            let mut st = self.state.write();
            for (entry, responder) in items {
                let index = entry.log_id.index;
                assert!(
                    st.last_applied.as_ref().is_none_or(|l| l.index < index),
                    "group {}: applying {} after {:?}",
                    self.group,
                    entry.log_id,
                    st.last_applied
                );
                if let Some(reason) = &st.failed_check {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, reason.clone()));
                }
                let answer = match entry.payload {
                    EntryPayload::Blank => CommandResponse::None,
                    EntryPayload::Normal(cmd) => match st.data.apply(index, &cmd) {
                        Ok(answer) => answer,
                        Err(reason) => {
                            let reason = format!(
                                "group {}: the state failed its check after entry {}: {reason}",
                                self.group, entry.log_id
                            );
                            tracing::error!(group = %self.group, "{reason}");
                            st.failed_check = Some(reason.clone());
                            return Err(io::Error::new(io::ErrorKind::InvalidData, reason));
                        }
                    },
                    EntryPayload::Membership(m) => {
                        st.membership = StoredMembership::new(Some(entry.log_id.clone()), m);
                        CommandResponse::None
                    }
                };
                st.last_applied = Some(entry.log_id);
                if let Some(r) = responder {
                    answers.push((r, answer));
                }
            }
            last_index = st.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        }
        self.state.publish_applied(last_index);
        for (r, answer) in answers {
            r.send(answer);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store_group: self.group,
            copy: self.state.read().clone(),
            persist: StateMachineStore {
                group: self.group,
                state: self.state.clone(),
                engine: self.engine.clone(),
                syncer: self.syncer.clone(),
                writes: self.writes.clone(),
            },
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Bytes) -> io::Result<()> {
        if snapshot.len() > SNAPSHOT_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot of {} bytes exceeds {SNAPSHOT_BYTES_MAX}", snapshot.len()),
            ));
        }
        let data: GroupData = codec::decode("snapshot", &snapshot)?;
        if std::mem::discriminant(&data) != std::mem::discriminant(&GroupData::initial(self.group)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("group {}: snapshot of the wrong group kind", self.group),
            ));
        }
        self.persist_snapshot(meta, &snapshot).await?;
        let index = meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0);
        {
            let mut st = self.state.write();
            st.data = data;
            st.last_applied = meta.last_log_id.clone();
            st.membership = meta.last_membership.clone();
        }
        self.state.publish_applied(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        self.load_snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory_engine::MemoryEngine;

    /// An entry that leaves the state failing its check stops the state
    /// machine with an error (openraft then stops the core, and the
    /// registry quarantines the replica instead of restarting it), and
    /// every later apply is refused.
    #[tokio::test]
    async fn an_entry_leaving_a_state_failing_its_check_stops_the_replica() {
        use openraft::entry::RaftEntry;
        use openraft::storage::RaftStateMachine;
        use openraft::testing::log_id;
        use shadowstore_base::ids::RequestId;

        let engine = MemoryEngine::new();
        let shared: SharedEngine = engine.clone();
        let mut store = StateMachineStore::open(GroupId::new(6), shared.clone(), Syncer::start(shared)).unwrap();
        let put = |index: u64, len: usize| {
            let cmd = Command::Resource(crate::resource::ResourceCommand::Put {
                request: RequestId::default(),
                now_ms: index,
                variant: format!("v{index}"),
                value: bytes::Bytes::from(vec![1u8; len]),
                if_version: None,
            });
            let entry: crate::raft::Entry =
                RaftEntry::new_normal(log_id::<TypeConfig>(1, shadowstore_base::ids::ReplicaId::new(1), index), cmd);
            Ok((entry, None))
        };
        store.apply(futures::stream::iter(vec![put(1, 10)])).await.expect("a good entry applies");
        // This replica's state is wrong (a bug, memory corruption): it holds
        // more inline bytes than any applied entry could have left.
        if let GroupData::Resource(r) = &mut store.state.write().data {
            r.inline_bytes = shadowstore_base::limits::RESOURCE_INLINE_BYTES_MAX + 1;
        }
        let e = store.apply(futures::stream::iter(vec![put(2, 10)])).await.expect_err("the check fails");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let failed = store.state.read().failed_check.clone().expect("flagged for the registry");
        assert!(failed.contains("inline bytes"), "{failed}");
        assert_eq!(store.state.read().last_applied.as_ref().map(|l| l.index), Some(1));
        store.apply(futures::stream::iter(vec![put(3, 10)])).await.expect_err("refused from then on");
    }

    #[tokio::test]
    async fn verifying_a_snapshot_reads_only_and_catches_rot() {
        let engine = MemoryEngine::new();
        let shared: SharedEngine = engine.clone();
        let store = StateMachineStore::open(GroupId::new(5), shared.clone(), Syncer::start(shared.clone())).unwrap();
        let data = vec![7u8; 2 * SNAPSHOT_STORED_CHUNK_BYTES + 10];
        store.persist_snapshot(&SnapshotMeta::default(), &data).await.unwrap();
        assert_eq!(StateMachineStore::verify(GroupId::new(5), &shared).unwrap(), data.len() as u64);
        // A snapshot being written: a chunk of snapshot 2, its manifest not
        // yet stored. The scrubber's check runs beside it and must not
        // take it for an orphan.
        let in_progress = keys::snapshot_chunk(GroupId::new(5), 2, 0);
        let mut b = WriteBatch::new(Tree::Snapshot);
        b.put(in_progress.clone(), vec![1; 10]);
        shared.write(b).unwrap();
        StateMachineStore::verify(GroupId::new(5), &shared).unwrap();
        assert!(shared.get(Tree::Snapshot, &in_progress).unwrap().is_some(), "verify deleted a chunk being written");
        // One flipped bit in a stored chunk, or in the manifest, is corrupt.
        for key in [keys::snapshot_chunk(GroupId::new(5), 1, 1), keys::snapshot_manifest(GroupId::new(5))] {
            assert!(engine.rot(Tree::Snapshot, &key, 9));
            let e = StateMachineStore::verify(GroupId::new(5), &shared).unwrap_err();
            assert!(checksum::is_corrupt(&e), "{e}");
            assert!(engine.rot(Tree::Snapshot, &key, 9), "flip it back");
        }
        StateMachineStore::verify(GroupId::new(5), &shared).unwrap();
    }
}
