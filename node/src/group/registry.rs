//! The replicas this node hosts: opening, restarting, quarantining and
//! removing them, and the in-memory view of which run, which are
//! quarantined and which removed ones still keep shards. The running
//! replica itself is [`super::replica::Group`]; the records in the `local`
//! tree are [`super::local_records`].
//!
//! Every replica is recorded in the `local` tree before its Raft group
//! starts, so a restarting node starts all its replicas at once from local
//! storage, without waiting for the meta group.
//!
//! A replica whose durable Raft state fails its checksums
//! (`storage::checksum`) is *quarantined*: it is stopped, kept out of the
//! running groups and never started again (the mark is kept in its local
//! record, so a restart of the node does not undo it). It may have acknowledged
//! entries, so it cannot simply be rebuilt under the same replica id; the
//! meta leader learns of it from this node's pings and replaces it with a
//! new replica (`membership::replacement`), after which the reconciler deletes
//! the quarantined Raft state.
//!
//! Shards outlive their replica: a quarantined replica's shard chunks are
//! sealed by their own crc32s, so they are still served to reads and
//! repairs; and a removed replica's shards are kept (a *retired* record in
//! the `local` tree) until `blob::handoff` has given each to its current
//! holder or found its blob (or resource) gone. The registry itself never
//! deletes shards.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::ReplicaId;

use super::local_records;
use super::local_records::LocalReplica;
use super::replica::Group;
use crate::raft::GroupRaft;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::network::RaftRouter;
use crate::raft::state_machine::StateMachineStore;
use crate::rng::NodeRng;
use crate::storage::SharedEngine;
use crate::storage::Syncer;
use crate::storage::checksum;

/// What removing a replica does with the shards it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardFate {
    /// Its successor on this node takes them over.
    KeepForSuccessor,
    /// Kept, served and handed off to their current holders
    /// (`blob::handoff`), or deleted once no retained version refers to
    /// them (all at once when the resource is deleted).
    HandOff,
    /// Deleted with the replica (a retired shadow's full copies).
    Delete,
}

pub struct Registry {
    groups: RwLock<BTreeMap<GroupId, Arc<Group>>>,
    /// Replicas stopped for good because their durable state is corrupt.
    quarantined: RwLock<BTreeMap<GroupId, ReplicaId>>,
    /// Removed replicas whose shards are kept until handed off.
    retired: RwLock<BTreeMap<GroupId, BTreeSet<ReplicaId>>>,
    /// Serialises opening and removing replicas.
    lifecycle: tokio::sync::Mutex<()>,
    engine: SharedEngine,
    pub syncer: Syncer,
    router: RaftRouter,
    raft_config: Arc<openraft::Config>,
    rng: Arc<NodeRng>,
    pub restarts: AtomicU64,
    /// Groups this node led at the last quiesce scan (for status and
    /// pings, which must not scan every group themselves).
    pub led: AtomicU64,
}

impl Registry {
    pub fn new(
        engine: SharedEngine,
        syncer: Syncer,
        router: RaftRouter,
        raft_config: Arc<openraft::Config>,
        rng: Arc<NodeRng>,
    ) -> Self {
        Registry {
            groups: RwLock::new(BTreeMap::new()),
            quarantined: RwLock::new(BTreeMap::new()),
            retired: RwLock::new(BTreeMap::new()),
            lifecycle: tokio::sync::Mutex::new(()),
            engine,
            syncer,
            router,
            raft_config,
            rng,
            restarts: AtomicU64::new(0),
            led: AtomicU64::new(0),
        }
    }

    pub fn get(&self, group: GroupId) -> Option<Arc<Group>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Group>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Quarantined replicas by group.
    pub fn quarantined(&self) -> BTreeMap<GroupId, ReplicaId> {
        self.quarantined.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Removed replicas whose shards this node still keeps, by group.
    pub fn retired(&self) -> BTreeMap<GroupId, BTreeSet<ReplicaId>> {
        self.retired.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn has_retired(&self, group: GroupId) -> bool {
        self.retired.read().unwrap_or_else(|p| p.into_inner()).contains_key(&group)
    }

    /// Whether this node keeps the shards of `replica` of `group`: running,
    /// quarantined (its shards are sealed by their own crc32s, independent
    /// of its Raft records) or removed but not yet handed off.
    pub fn serves_shards_of(&self, group: GroupId, replica: ReplicaId) -> bool {
        self.get(group).is_some_and(|g| g.replica_id == replica)
            || self.quarantined_replica(group) == Some(replica)
            || self.retired.read().unwrap_or_else(|p| p.into_inner()).get(&group).is_some_and(|r| r.contains(&replica))
    }

    /// Loads the retired records at start-up.
    pub fn load_retired(&self) -> io::Result<()> {
        let retired = local_records::retired(&self.engine)?;
        *self.retired.write().unwrap_or_else(|p| p.into_inner()) = retired;
        Ok(())
    }

    /// Forgets the retired replicas of `group` once their shards are gone
    /// (handed off, or their blobs gone).
    pub async fn forget_retired(&self, group: GroupId) -> io::Result<()> {
        let Some(replicas) = self.retired.write().unwrap_or_else(|p| p.into_inner()).remove(&group) else {
            return Ok(());
        };
        local_records::forget_retired(&self.engine, group, &replicas)?;
        self.syncer.sync().await
    }

    fn quarantined_replica(&self, group: GroupId) -> Option<ReplicaId> {
        self.quarantined.read().unwrap_or_else(|p| p.into_inner()).get(&group).copied()
    }

    /// Checks every durable record of `group` (log, Raft state, snapshot)
    /// against its checksum; returns the bytes checked. Reads only, so the
    /// scrubber runs it beside the live replica.
    pub fn check_integrity(&self, group: GroupId) -> io::Result<u64> {
        let log = LogStore::new(group, self.engine.clone(), self.syncer.clone()).verify()?;
        let snapshot = StateMachineStore::verify(group, &self.engine)?;
        Ok(log + snapshot)
    }

    /// After `group` failed to start or its core stopped (nothing writes
    /// its storage): quarantines the replica if its durable state is
    /// corrupt or otherwise unreadable, and says so.
    async fn quarantine_if_unreadable(&self, group: GroupId, replica: ReplicaId) -> Option<io::Error> {
        let e = self
            .check_integrity(group)
            .err()
            .filter(|e| checksum::is_corrupt(e) || e.kind() == io::ErrorKind::InvalidData)?;
        self.quarantine(group, replica, &e).await;
        Some(io::Error::new(io::ErrorKind::InvalidData, format!("replica {replica} of group {group} quarantined: {e}")))
    }

    /// Marks the replica quarantined, here and in its local record (so a
    /// restart of the node does not start it either).
    async fn quarantine(&self, group: GroupId, replica: ReplicaId, cause: &io::Error) {
        tracing::error!(%group, %replica, error = %cause, "replica state is corrupt; quarantined until replaced");
        self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&group);
        self.quarantined.write().unwrap_or_else(|p| p.into_inner()).insert(group, replica);
        let record = LocalReplica { group_id: group, replica_id: replica, quarantined: true };
        if let Err(e) = self.write_local_record(&record).await {
            tracing::error!(%group, %replica, error = %e, "recording the quarantine failed; it holds until the node stops");
        }
    }

    async fn write_local_record(&self, record: &LocalReplica) -> io::Result<()> {
        local_records::put(&self.engine, record)?;
        self.syncer.sync().await
    }

    /// The scrubber's check of a running replica's durable records: a
    /// corrupt replica is stopped and quarantined (the error). Returns the
    /// bytes checked. Other errors (a snapshot replaced while it was being
    /// read) leave the replica running. The check runs beside the live
    /// replica, without the lifecycle lock; only a corrupt finding takes it
    /// and checks again.
    pub async fn scrub_records(&self, group: GroupId) -> io::Result<u64> {
        match self.check_integrity(group) {
            Err(e) if checksum::is_corrupt(&e) => {}
            other => return other,
        }
        let _guard = self.lifecycle.lock().await;
        let Some(g) = self.get(group) else { return Ok(0) };
        let e = match self.check_integrity(group) {
            Err(e) if checksum::is_corrupt(&e) => e,
            other => return other,
        };
        g.stop().await;
        self.quarantine(group, g.replica_id, &e).await;
        Err(e)
    }

    /// Replicas recorded in local storage.
    pub fn local_replicas(&self) -> io::Result<Vec<LocalReplica>> {
        local_records::all(&self.engine)
    }

    /// Starts the replica `replica` of `group`, recording it locally first.
    /// Returns the running group if it is already open with that replica id.
    pub async fn open(&self, group: GroupId, replica: ReplicaId) -> io::Result<Arc<Group>> {
        let _guard = self.lifecycle.lock().await;
        if self.quarantined_replica(group) == Some(replica) {
            return Err(quarantined_error(group, replica));
        }
        if let Some(g) = self.get(group) {
            if g.replica_id == replica {
                return Ok(g);
            }
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("group {group} already has replica {} on this node", g.replica_id),
            ));
        }
        match local_records::get(&self.engine, group)? {
            Some(r) if r.replica_id == replica && r.quarantined => {
                self.quarantined.write().unwrap_or_else(|p| p.into_inner()).insert(group, replica);
                return Err(quarantined_error(group, replica));
            }
            Some(r) if r.replica_id == replica => {}
            // A new replica: whatever an earlier replica of the group left
            // (a removal cut short by a crash) is not its state.
            _ => {
                self.destroy_raft_state(group)?;
                self.write_local_record(&LocalReplica { group_id: group, replica_id: replica, quarantined: false })
                    .await?;
            }
        }
        let g = match self.start(group, replica).await {
            Ok(g) => g,
            Err(e) => return Err(self.quarantine_if_unreadable(group, replica).await.unwrap_or(e)),
        };
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(group, g.clone());
        Ok(g)
    }

    /// Deletes the group's log, Raft state and snapshots (not its shards,
    /// which the holders and garbage collection govern).
    fn destroy_raft_state(&self, group: GroupId) -> io::Result<()> {
        LogStore::new(group, self.engine.clone(), self.syncer.clone()).destroy()?;
        StateMachineStore::destroy(group, &self.engine)
    }

    async fn start(&self, group: GroupId, replica: ReplicaId) -> io::Result<Arc<Group>> {
        let log = LogStore::new(group, self.engine.clone(), self.syncer.clone());
        let sm = StateMachineStore::open(group, self.engine.clone(), self.syncer.clone())?;
        let state = sm.shared();
        let snapshot_writes = sm.writes_gate();
        let network = NetworkFactory::new(self.router.clone(), group);
        let raft = self
            .rng
            .openraft_scope(GroupRaft::new(replica, self.raft_config.clone(), network, log, sm))
            .await
            .map_err(|e| io::Error::other(format!("group {group}: raft failed to start: {e}")))?;
        tracing::debug!(%group, %replica, "group started");
        Ok(Arc::new(Group::new(group, replica, raft, state, snapshot_writes)))
    }

    /// Restarts a group whose Raft core stopped, from its durable state.
    pub async fn restart(&self, group: GroupId) -> io::Result<Arc<Group>> {
        let _guard = self.lifecycle.lock().await;
        let Some(old) = self.get(group) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("group {group} is not open")));
        };
        old.stop().await;
        // Its state failed its check after an entry: starting it again would
        // replay the same entry into the same failure. Quarantined like a
        // corrupt replica (replaced from the others); for the meta replica,
        // which the node cannot work without, the error says what to do.
        let failed_check = old.state.read().failed_check.clone();
        if let Some(reason) = failed_check {
            let e = io::Error::new(io::ErrorKind::InvalidData, reason);
            if group == shadowstore_base::ids::META_GROUP_ID {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{e}; this node's meta replica cannot go on: move its data directory away and let it rejoin"
                    ),
                ));
            }
            self.quarantine(group, old.replica_id, &e).await;
            return Err(e);
        }
        // Its core may have stopped on a corrupt record that a fresh start
        // would not read again: check everything before starting. Not the
        // meta replica: without it the node cannot work at all, so it keeps
        // failing here, loudly, and refuses to start after a restart.
        if group != shadowstore_base::ids::META_GROUP_ID
            && let Some(e) = self.quarantine_if_unreadable(group, old.replica_id).await
        {
            return Err(e);
        }
        let g = self.start(group, old.replica_id).await?;
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(group, g.clone());
        self.restarts.fetch_add(1, Ordering::Relaxed);
        Ok(g)
    }

    /// Stops the replica `replica` of `group` and deletes its local record,
    /// then its Raft state; its shards go as `shards` says. The record goes
    /// first, with a sync (and, for a handoff, the retired record in the
    /// same write): a crash in between leaves data without a record, which
    /// is never started (and is cleared when the group is opened again),
    /// never a record whose vote survived its log.
    pub async fn remove(&self, group: GroupId, replica: ReplicaId, shards: ShardFate) -> io::Result<()> {
        let _guard = self.lifecycle.lock().await;
        let removed = self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&group);
        self.quarantined.write().unwrap_or_else(|p| p.into_inner()).remove(&group);
        if let Some(g) = &removed {
            g.stop().await;
        }
        local_records::remove(&self.engine, group, replica, shards == ShardFate::HandOff)?;
        if shards == ShardFate::HandOff {
            self.retired.write().unwrap_or_else(|p| p.into_inner()).entry(group).or_default().insert(replica);
        }
        self.syncer.sync().await?;
        self.destroy_raft_state(group)?;
        if shards == ShardFate::Delete {
            crate::storage::delete_group_records(&self.engine, group, &crate::storage::SHARD_TREES)?;
        }
        self.syncer.sync().await?;
        tracing::info!(%group, %replica, ?shards, "replica removed and its Raft state deleted");
        Ok(())
    }

    /// The replicas this node hosts, running or quarantined, by group.
    pub fn hosted(&self) -> BTreeMap<GroupId, ReplicaId> {
        let mut all = self.quarantined();
        all.extend(self.all().iter().map(|g| (g.id, g.replica_id)));
        all
    }

    /// Stops every group (node shutdown).
    pub async fn shutdown_all(&self) {
        for g in self.all() {
            let _ = g.raft.shutdown().await;
        }
    }
}

/// What opening a quarantined replica answers.
fn quarantined_error(group: GroupId, replica: ReplicaId) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("replica {replica} of group {group} is quarantined"))
}

#[cfg(test)]
mod tests {
    use shadowstore_base::ids::NodeId;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::raft::network::RaftRouter;
    use crate::storage::StorageEngine;
    use crate::storage::Tree;
    use crate::storage::WriteBatch;
    use crate::storage::keys;
    use crate::storage::memory_engine::MemoryEngine;
    use crate::transport::Peers;
    use shadowstore_base::ids::ReplicaNode;

    const GROUP: GroupId = GroupId::new(7);

    /// A registry on `engine`, as a node starting on that disk builds it.
    fn registry(engine: &Arc<MemoryEngine>) -> Registry {
        let shared: SharedEngine = engine.clone();
        let peers = Arc::new(Peers::new(Arc::new(crate::transport::TcpNetwork), None, Default::default()));
        let raft_config = crate::raft::config::build(&crate::config::NodeConfig::default().raft_timing()).unwrap();
        Registry::new(
            shared.clone(),
            Syncer::start(shared),
            RaftRouter::new(peers),
            raft_config,
            Arc::new(NodeRng::from_seed(1)),
        )
    }

    /// Opens replica `replica` of GROUP as the group's only voter and waits
    /// until it has written log entries.
    async fn single_voter(registry: &Registry, replica: ReplicaId) -> Arc<Group> {
        let g = registry.open(GROUP, replica).await.unwrap();
        let members = BTreeMap::from([(replica, ReplicaNode { node_id: NodeId::new(1), addr: "127.0.0.1:1".into() })]);
        g.raft.initialize(members).await.unwrap();
        for _ in 0..200 {
            if g.is_leader() && g.metrics().last_applied.is_some() {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("a single voter did not elect itself");
    }

    fn group_keys(engine: &Arc<MemoryEngine>, tree: Tree) -> Vec<Vec<u8>> {
        engine
            .range(tree, &keys::group_start(GROUP), &keys::group_end(GROUP), usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// Blob writes reserve their manifest's bytes until answered, so
    /// concurrent writes cannot together take a resource's manifests past
    /// `RESOURCE_MANIFEST_BYTES_MAX` (and its snapshot past the limit).
    #[tokio::test]
    async fn manifest_reservations_bound_a_resources_manifests() {
        use crate::api::data::ManifestReservation;
        use crate::resource::layout::Layout;
        use shadowstore_base::limits::RESOURCE_MANIFEST_BYTES_MAX;
        let engine = MemoryEngine::new();
        let node = registry(&engine);
        let g = single_voter(&node, ReplicaId::new(71)).await;
        // The largest manifests a layout allows: about 2 MiB each.
        let (stripe, k, m) = (64 * 1024, 1, 4);
        let big = Layout::new(crate::resource::manifest::blob_bytes_capacity(stripe, k, m), stripe, k, m);
        let each = crate::resource::manifest::encoded_bytes_upper(&big) as u64;
        let fit = (RESOURCE_MANIFEST_BYTES_MAX / each) as usize;
        let mut held: Vec<ManifestReservation<'_>> =
            (0..fit).map(|i| ManifestReservation::take(&g, &big).unwrap_or_else(|e| panic!("{i}: {e}"))).collect();
        let e = ManifestReservation::take(&g, &big).err().expect("one more is over the budget");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("manifests"), "{}", e.message());
        // A refused reservation holds nothing; an answered write frees its share.
        assert_eq!(g.manifest_bytes_reserved.load(std::sync::atomic::Ordering::Relaxed), fit as u64 * each);
        held.pop();
        let again = ManifestReservation::take(&g, &big).expect("room again");
        drop(again);
        drop(held);
        assert_eq!(g.manifest_bytes_reserved.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    /// An entry that leaves a replica's state failing its check stops the
    /// replica; the restart that follows (the supervisor's) quarantines it
    /// instead of replaying the entry, and it stays quarantined when the
    /// node restarts.
    #[tokio::test]
    async fn a_replica_whose_state_fails_its_check_is_quarantined_not_restarted() {
        use crate::raft::state_machine::GroupData;
        use crate::resource::ResourceCommand;
        use shadowstore_base::ids::RequestId;
        let engine = MemoryEngine::new();
        let node = registry(&engine);
        let g = single_voter(&node, ReplicaId::new(72)).await;
        let put = |variant: &str| {
            crate::raft::Command::Resource(ResourceCommand::Put {
                request: RequestId::default(),
                now_ms: 1,
                variant: variant.to_string(),
                value: bytes::Bytes::from_static(b"value"),
                if_version: None,
            })
        };
        g.raft.client_write(put("before")).await.expect("a write to a sound replica");
        // The replica's state goes wrong (a bug, memory corruption): more
        // inline bytes than any entry could have left.
        g.state.tamper(|data| {
            if let GroupData::Resource(r) = data {
                r.inline_bytes = shadowstore_base::limits::RESOURCE_INLINE_BYTES_MAX + 1;
            }
        });
        let after = tokio::time::timeout(Duration::from_secs(10), g.raft.client_write(put("after"))).await;
        assert!(!matches!(after, Ok(Ok(_))), "the next entry fails the check");
        let Err(e) = node.restart(GROUP).await else { panic!("restarted into the same failure") };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("failed its check"), "{e}");
        assert_eq!(node.quarantined(), BTreeMap::from([(GROUP, ReplicaId::new(72))]));
        assert!(node.get(GROUP).is_none(), "a quarantined replica does not run");
        node.shutdown_all().await;
        let restarted = registry(&engine);
        let Err(e) = restarted.open(GROUP, ReplicaId::new(72)).await else { panic!("a quarantined replica started") };
        assert!(e.to_string().contains("quarantined"), "{e}");
    }

    #[tokio::test]
    async fn a_quarantine_outlives_a_restart_and_an_in_place_successor_starts_clean() {
        let engine = MemoryEngine::new();
        let node = registry(&engine);
        single_voter(&node, ReplicaId::new(70)).await;
        let last = group_keys(&engine, Tree::Log).pop().expect("log entries");
        assert!(engine.rot(Tree::Log, &last, 3));
        let e = node.scrub_records(GROUP).await.expect_err("the scrub finds the rot");
        assert!(checksum::is_corrupt(&e), "{e}");
        assert!(node.get(GROUP).is_none(), "a quarantined replica does not run");
        assert_eq!(node.quarantined(), BTreeMap::from([(GROUP, ReplicaId::new(70))]));
        node.shutdown_all().await;

        // The node restarts on the same disk: the replica stays quarantined
        // without anything reading the rotted entry (flipped back here, so
        // only the recorded quarantine can refuse it).
        assert!(engine.rot(Tree::Log, &last, 3));
        let restarted = registry(&engine);
        assert!(restarted.local_replicas().unwrap().iter().all(|r| r.quarantined));
        let Err(e) = restarted.open(GROUP, ReplicaId::new(70)).await else { panic!("a quarantined replica started") };
        assert!(e.to_string().contains("quarantined"), "{e}");
        assert_eq!(restarted.hosted(), BTreeMap::from([(GROUP, ReplicaId::new(70))]));
        assert!(
            restarted.serves_shards_of(GROUP, ReplicaId::new(70)),
            "a quarantined replica's shards are still served"
        );
        assert!(!restarted.serves_shards_of(GROUP, ReplicaId::new(69)));
        // Replaced on this node: the old Raft state goes, and the successor
        // starts with an empty log and no vote.
        restarted.remove(GROUP, ReplicaId::new(70), ShardFate::KeepForSuccessor).await.unwrap();
        assert!(restarted.quarantined().is_empty());
        assert!(group_keys(&engine, Tree::Log).is_empty() && group_keys(&engine, Tree::RaftState).is_empty());
        let successor = restarted.open(GROUP, ReplicaId::new(71)).await.unwrap();
        let m = successor.metrics();
        assert_eq!((m.last_log_index, m.current_term), (None, 0));
        restarted.shutdown_all().await;
    }

    #[tokio::test]
    async fn a_removed_replica_keeps_its_shards_until_they_are_handed_off() {
        use crate::blob::shard_store::ShardStore;
        let engine = MemoryEngine::new();
        let node = registry(&engine);
        single_voter(&node, ReplicaId::new(70)).await;
        let store = ShardStore::new(engine.clone());
        store.put_chunks(GROUP, 9, 1, vec![(0, 0, vec![1, 2, 3])]).unwrap();
        node.remove(GROUP, ReplicaId::new(70), ShardFate::HandOff).await.unwrap();
        assert!(node.get(GROUP).is_none());
        assert!(group_keys(&engine, Tree::Log).is_empty(), "the Raft state goes at once");
        assert_eq!(store.get_stripe(GROUP, 9, 1, 0).unwrap().len(), 1, "the shard stays");
        assert!(node.serves_shards_of(GROUP, ReplicaId::new(70)));
        node.shutdown_all().await;

        // The retired record outlives a restart of the node.
        let restarted = registry(&engine);
        assert!(!restarted.serves_shards_of(GROUP, ReplicaId::new(70)), "not loaded yet");
        restarted.load_retired().unwrap();
        assert!(restarted.serves_shards_of(GROUP, ReplicaId::new(70)));
        assert_eq!(restarted.retired(), BTreeMap::from([(GROUP, BTreeSet::from([ReplicaId::new(70)]))]));
        restarted.forget_retired(GROUP).await.unwrap();
        assert!(!restarted.serves_shards_of(GROUP, ReplicaId::new(70)));
        let again = registry(&engine);
        again.load_retired().unwrap();
        assert!(again.retired().is_empty(), "forgetting is durable");
    }

    #[tokio::test]
    async fn a_new_replica_never_starts_from_what_a_cut_short_removal_left() {
        let engine = MemoryEngine::new();
        let node = registry(&engine);
        single_voter(&node, ReplicaId::new(70)).await;
        node.shutdown_all().await;
        // A removal that crashed right after deleting the local record (its
        // first step): the old replica's log and vote are still there.
        let mut b = WriteBatch::new(Tree::Local);
        b.delete(keys::local_replica(GROUP));
        engine.write(b).unwrap();
        assert!(!group_keys(&engine, Tree::RaftState).is_empty());
        let restarted = registry(&engine);
        assert!(restarted.local_replicas().unwrap().is_empty(), "no record, so nothing starts");
        let successor = restarted.open(GROUP, ReplicaId::new(71)).await.unwrap();
        let m = successor.metrics();
        assert_eq!((m.last_log_index, m.current_term), (None, 0), "the successor inherited the old replica's state");
        restarted.shutdown_all().await;
    }
}
