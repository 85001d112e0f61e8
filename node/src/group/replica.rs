//! One running replica of a Raft group, as the rest of the node holds it:
//! its openraft instance, its applied state, its activity (quiescing) and
//! when it last heard from a leader. Internal proposals go through
//! [`Group::propose`], which renews a quiesced leader's lapsed lease.
//! The [`super::Registry`] creates and stops these.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ReadPolicy;
use openraft::errors::ClientWriteError;
use openraft::errors::ForwardReason;
use openraft::errors::RaftError;
use openraft::raft::ClientWriteResponse;
use openraft::rt::WatchReceiver;
use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::ReplicaId;

use super::quiesce::Activity;
use crate::raft::Command;
use crate::raft::GroupRaft;
use crate::raft::RaftMetrics;
use crate::raft::TypeConfig;
use crate::raft::log_store::COMMAND_BYTES_MAX;
use crate::raft::state_machine::SharedState;
use crate::raft::state_machine::SnapshotGate;

/// Longest wait for a quorum to renew a lapsed leader lease before a
/// proposal gives up (see [`Group::propose`]).
const LEASE_RENEW_TIMEOUT_MS: u64 = 2_000;

/// What Raft can refuse a proposal with.
pub type WriteError = RaftError<TypeConfig, ClientWriteError<TypeConfig>>;

/// What a proposal through [`Group::propose`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error(transparent)]
    Raft(#[from] WriteError),
    /// Refused before it reached the log: appending it would fail the
    /// log store, which Raft treats as fatal for the whole group.
    #[error("a command of {bytes} bytes exceeds the {max}-byte log entry limit")]
    TooLarge { bytes: usize, max: usize },
    #[error("encoding the command: {0}")]
    Encode(#[from] shadowstore_base::codec::CodecError),
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
    /// Manifest bytes of blob writes reserved on this replica (as leader)
    /// and not yet committed, counted with the applied ones against
    /// `RESOURCE_MANIFEST_BYTES_MAX` (see `api::data`).
    pub manifest_bytes_reserved: AtomicU64,
    /// Closed before the replica's storage is reused: openraft's snapshot
    /// builder may outlive the core's shutdown.
    snapshot_writes: SnapshotGate,
}

impl Group {
    /// A handle on a replica whose Raft core `raft` was just started.
    pub(super) fn new(
        id: GroupId,
        replica_id: ReplicaId,
        raft: GroupRaft,
        state: SharedState,
        snapshot_writes: SnapshotGate,
    ) -> Group {
        Group {
            id,
            replica_id,
            raft,
            state,
            activity: Activity::new(),
            leader_contact_ms: AtomicU64::new(0),
            manifest_bytes_reserved: AtomicU64::new(0),
            snapshot_writes,
        }
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Entries the leader last reported committed that this replica has
    /// not applied yet (0 on the leader): its staleness in log entries.
    pub fn applied_lag(&self) -> u64 {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let committed = m.cluster_committed.as_ref().map_or(0, |l| l.index);
        let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
        committed.saturating_sub(applied)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// The group's voters in its current membership (the holders of the
    /// shards of its blobs).
    pub fn voters(&self) -> Vec<ReplicaId> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.membership().voter_ids().collect()
    }

    /// Proposes `cmd` through this replica's Raft group and waits until it
    /// is applied, waking the group first.
    ///
    /// A leader that was quiesced sent no heartbeats, so its leader lease
    /// has lapsed and openraft refuses the first write with
    /// `ForwardReason::LeaseExpired` although nothing is wrong. One
    /// read-index round (a heartbeat answered by a quorum) renews the lease
    /// and the write is retried once; any other refusal is returned as is.
    ///
    /// A command larger than [`COMMAND_BYTES_MAX`] is refused here: the log
    /// store could not append it, and openraft stops the group on a failed
    /// append.
    pub async fn propose(&self, cmd: Command) -> Result<ClientWriteResponse<TypeConfig>, ProposeError> {
        let bytes = shadowstore_base::codec::encode("command", &cmd)?.len();
        if bytes > COMMAND_BYTES_MAX {
            return Err(ProposeError::TooLarge { bytes, max: COMMAND_BYTES_MAX });
        }
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
                    Ok(Ok(_)) => Ok(self.raft.client_write(cmd).await?),
                    _ => Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)).into()),
                }
            }
            r => Ok(r?),
        }
    }

    /// Stops the Raft core and waits out any snapshot it is still
    /// persisting; no snapshot of this replica is written afterwards.
    pub(super) async fn stop(&self) {
        let _ = self.raft.shutdown().await;
        *self.snapshot_writes.write().await = false;
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
