//! The replicas this node hosts.
//!
//! Every replica is recorded in the `local` tree before its Raft group
//! starts, so a restarting node starts all its replicas at once from local
//! storage, without waiting for the meta group.
//!
//! A replica whose durable Raft state fails its checksums
//! (`storage::checksum`) is *quarantined*: it is stopped, kept out of the
//! running groups and never started again. It may have acknowledged
//! entries, so it cannot simply be rebuilt under the same replica id; the
//! meta leader learns of it from this node's pings and replaces it with a
//! new replica (`meta::membership`), after which the reconciler deletes
//! the quarantined data.

use openraft::rt::WatchReceiver;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ReadPolicy;
use openraft::errors::ClientWriteError;
use openraft::errors::ForwardReason;
use openraft::errors::RaftError;
use openraft::raft::ClientWriteResponse;
use serde::Deserialize;
use serde::Serialize;

use super::quiesce::Activity;
use crate::codec;
use crate::ids::GroupId;
use crate::ids::ReplicaId;
use crate::raft::Command;
use crate::raft::GroupRaft;
use crate::raft::RaftMetrics;
use crate::raft::TypeConfig;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::network::RaftRouter;
use crate::raft::state_machine::SharedState;
use crate::raft::state_machine::StateMachineStore;
use crate::rng::NodeRng;
use crate::storage::SharedEngine;
use crate::storage::Syncer;
use crate::storage::Tree;
use crate::storage::WriteBatch;
use crate::storage::checksum;
use crate::storage::keys;

/// Longest wait for a quorum to renew a lapsed leader lease before a
/// proposal gives up (see [`Group::propose`]).
const LEASE_RENEW_TIMEOUT_MS: u64 = 2_000;

/// What a proposal through [`Group::propose`] can fail with.
pub type WriteError = RaftError<TypeConfig, ClientWriteError<TypeConfig>>;

/// The local record of a hosted replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalReplica {
    pub group_id: GroupId,
    pub replica_id: ReplicaId,
}

/// One running replica.
pub struct Group {
    pub id: GroupId,
    pub replica_id: ReplicaId,
    pub raft: GroupRaft,
    pub state: SharedState,
    pub activity: Activity,
    /// Monotonic milliseconds (see `quiesce::mono_ms`) when this replica
    /// last accepted entries or a heartbeat from a leader.
    pub leader_contact_ms: AtomicU64,
    log: LogStore,
}

impl Group {
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow_watched().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// Proposes `cmd` through this replica's Raft group and waits until it
    /// is applied, waking the group first.
    ///
    /// A leader that was quiesced sent no heartbeats, so its leader lease
    /// has lapsed and openraft refuses the first write with
    /// `ForwardReason::LeaseExpired` although nothing is wrong. One
    /// read-index round (a heartbeat answered by a quorum) renews the lease
    /// and the write is retried once; any other refusal is returned as is.
    pub async fn propose(&self, cmd: Command) -> Result<ClientWriteResponse<TypeConfig>, WriteError> {
        self.touch();
        match self.raft.client_write(cmd.clone()).await {
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                if f.reason == ForwardReason::LeaseExpired =>
            {
                let renewed = tokio::time::timeout(
                    Duration::from_millis(LEASE_RENEW_TIMEOUT_MS),
                    self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
                )
                .await;
                match renewed {
                    Ok(Ok(_)) => self.raft.client_write(cmd).await,
                    _ => Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))),
                }
            }
            r => r,
        }
    }

    /// Marks the group active, waking it if it was quiesced.
    pub fn touch(&self) {
        self.activity.touch(&self.raft);
    }

    pub fn note_leader_contact(&self) {
        self.leader_contact_ms.store(super::quiesce::mono_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since this replica last heard from a leader.
    pub fn since_leader_contact_ms(&self) -> u64 {
        super::quiesce::mono_ms().saturating_sub(self.leader_contact_ms.load(Ordering::Relaxed))
    }
}

pub struct Registry {
    groups: RwLock<BTreeMap<GroupId, Arc<Group>>>,
    /// Replicas stopped for good because their durable state is corrupt.
    quarantined: RwLock<BTreeMap<GroupId, ReplicaId>>,
    /// Serialises opening and removing replicas.
    lifecycle: tokio::sync::Mutex<()>,
    engine: SharedEngine,
    syncer: Syncer,
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

    /// After `group` failed to start or its core stopped: quarantines the
    /// replica if its durable state is corrupt, and says so.
    fn quarantine_if_corrupt(&self, group: GroupId, replica: ReplicaId) -> Option<io::Error> {
        let e = self.check_integrity(group).err().filter(checksum::is_corrupt)?;
        self.quarantine(group, replica, &e);
        Some(io::Error::new(io::ErrorKind::InvalidData, format!("replica {replica} of group {group} quarantined: {e}")))
    }

    fn quarantine(&self, group: GroupId, replica: ReplicaId, cause: &io::Error) {
        tracing::error!(group, replica, error = %cause, "replica state is corrupt; quarantined until replaced");
        self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&group);
        self.quarantined.write().unwrap_or_else(|p| p.into_inner()).insert(group, replica);
    }

    /// The scrubber's check of a running replica's durable records: a
    /// corrupt replica is stopped and quarantined (the error). Returns the
    /// bytes checked. Other errors (a snapshot replaced while it was being
    /// read) leave the replica running.
    pub async fn scrub_records(&self, group: GroupId) -> io::Result<u64> {
        let _guard = self.lifecycle.lock().await;
        let Some(g) = self.get(group) else { return Ok(0) };
        let e = match self.check_integrity(group) {
            Err(e) if checksum::is_corrupt(&e) => e,
            other => return other,
        };
        let _ = g.raft.shutdown().await;
        self.quarantine(group, g.replica_id, &e);
        Err(e)
    }

    /// Replicas recorded in local storage.
    pub fn local_replicas(&self) -> io::Result<Vec<LocalReplica>> {
        let (s, e) = keys::local_replicas_range();
        let mut out = Vec::new();
        for (_, v) in self.engine.range(Tree::Local, &s, &e, usize::MAX)? {
            out.push(codec::decode("local replica", &v)?);
        }
        Ok(out)
    }

    /// Starts the replica `replica` of `group`, recording it locally first.
    /// Returns the running group if it is already open with that replica id.
    pub async fn open(&self, group: GroupId, replica: ReplicaId) -> io::Result<Arc<Group>> {
        let _guard = self.lifecycle.lock().await;
        if self.quarantined_replica(group) == Some(replica) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("replica {replica} of group {group} is quarantined"),
            ));
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
        let record = LocalReplica { group_id: group, replica_id: replica };
        let key = keys::local_replica(group);
        if self.engine.get(Tree::Local, &key)?.is_none() {
            let mut b = WriteBatch::new(Tree::Local);
            b.put(key, codec::encode("local replica", &record)?);
            self.engine.write(b)?;
            self.syncer.sync().await?;
        }
        let g = match self.start(group, replica).await {
            Ok(g) => g,
            Err(e) => return Err(self.quarantine_if_corrupt(group, replica).unwrap_or(e)),
        };
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(group, g.clone());
        Ok(g)
    }

    async fn start(&self, group: GroupId, replica: ReplicaId) -> io::Result<Arc<Group>> {
        let log = LogStore::new(group, self.engine.clone(), self.syncer.clone());
        let sm = StateMachineStore::open(group, self.engine.clone(), self.syncer.clone())?;
        let state = sm.shared();
        let network = NetworkFactory::new(self.router.clone(), group);
        let raft = self
            .rng
            .openraft_scope(GroupRaft::new(replica, self.raft_config.clone(), network, log.clone(), sm))
            .await
            .map_err(|e| io::Error::other(format!("group {group}: raft failed to start: {e}")))?;
        tracing::debug!(group, replica, "group started");
        Ok(Arc::new(Group {
            id: group,
            replica_id: replica,
            raft: raft.clone(),
            state,
            activity: Activity::new(),
            leader_contact_ms: AtomicU64::new(0),
            log,
        }))
    }

    /// Restarts a group whose Raft core stopped, from its durable state.
    pub async fn restart(&self, group: GroupId) -> io::Result<Arc<Group>> {
        let _guard = self.lifecycle.lock().await;
        let Some(old) = self.get(group) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("group {group} is not open")));
        };
        let _ = old.raft.shutdown().await;
        // Its core may have stopped on a corrupt record that a fresh start
        // would not read again: check everything before starting.
        if let Some(e) = self.quarantine_if_corrupt(group, old.replica_id) {
            return Err(e);
        }
        let g = self.start(group, old.replica_id).await?;
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(group, g.clone());
        self.restarts.fetch_add(1, Ordering::Relaxed);
        Ok(g)
    }

    /// Stops the replica of `group` and deletes all its data and its local
    /// record.
    pub async fn remove(&self, group: GroupId) -> io::Result<()> {
        let _guard = self.lifecycle.lock().await;
        let removed = self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&group);
        self.quarantined.write().unwrap_or_else(|p| p.into_inner()).remove(&group);
        if let Some(g) = &removed {
            let _ = g.raft.shutdown().await;
            g.log.destroy()?;
        } else {
            LogStore::new(group, self.engine.clone(), self.syncer.clone()).destroy()?;
        }
        StateMachineStore::destroy(group, &self.engine)?;
        crate::blob::shard_store::ShardStore::new(self.engine.clone()).delete_group(group)?;
        let mut b = WriteBatch::new(Tree::Local);
        b.delete(keys::local_replica(group));
        self.engine.write(b)?;
        self.syncer.sync().await?;
        tracing::info!(group, "replica removed and its data deleted");
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
