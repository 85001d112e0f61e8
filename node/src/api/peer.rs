//! The node-to-node `Peer` service: Raft messages for any group, joins,
//! read indexes for follower reads, and pings for the failure detector.
//!
//! A Raft message is delivered only to the replica it names: a message for
//! a group this node does not host, or for another replica id of it (a
//! replica that was replaced), is refused with NOT_FOUND, which the sender
//! treats as "unreachable, back off".

use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use std::sync::Arc;

use futures::StreamExt;
use openraft::ReadPolicy;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::VoteRequest;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shadowstore_proto::peer::BlobHolders;
use shadowstore_proto::peer::HandOffShardResponse;
use shadowstore_proto::peer::JoinRequest;
use shadowstore_proto::peer::JoinResponse;
use shadowstore_proto::peer::PingRequest;
use shadowstore_proto::peer::PingResponse;
use shadowstore_proto::peer::QuiesceRequest;
use shadowstore_proto::peer::QuiesceResponse;
use shadowstore_proto::peer::RaftEnvelope;
use shadowstore_proto::peer::ReadIndexRequest;
use shadowstore_proto::peer::ReadIndexResponse;
use shadowstore_proto::peer::ReadShardRequest;
use shadowstore_proto::peer::ShardChunk;
use shadowstore_proto::peer::ShardHoldersRequest;
use shadowstore_proto::peer::ShardHoldersResponse;
use shadowstore_proto::peer::ShardInventoryEntry;
use shadowstore_proto::peer::ShardInventoryRequest;
use shadowstore_proto::peer::ShardInventoryResponse;
use shadowstore_proto::peer::SnapshotChunk;
use shadowstore_proto::peer::WriteShardResponse;
use shadowstore_proto::peer::peer_server::Peer;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use super::status;
use crate::blob::DataPlane;
use crate::group::Group;
use crate::membership::Member;
use crate::placement::Placement;
use crate::raft::Snapshot;
use crate::raft::SnapshotMeta;
use crate::raft::TypeConfig;
use crate::raft::Vote;
use shadowstore_base::codec;
use shadowstore_base::limits::SNAPSHOT_BYTES_MAX;

/// The node-to-node service and what it uses.
pub struct PeerService {
    /// The data plane (and through it the cluster handle).
    data: Arc<DataPlane>,
    /// Snapshots being received and installed at once (each holds up to
    /// `SNAPSHOT_BYTES_MAX` in memory).
    snapshot_installs: Arc<tokio::sync::Semaphore>,
    placement: Arc<Placement>,
    member: Arc<Member>,
    shadows: Arc<crate::shadow::Shadows>,
}

impl PeerService {
    pub fn new(shadows: Arc<crate::shadow::Shadows>, member: Arc<Member>) -> Self {
        PeerService {
            data: shadows.data.clone(),
            snapshot_installs: Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_INSTALLS_MAX)),
            placement: shadows.placement.clone(),
            member,
            shadows,
        }
    }

    fn cluster(&self) -> &crate::cluster::Cluster {
        &self.data.cluster
    }

    fn group_for(&self, env: &RaftEnvelope) -> Result<Arc<Group>, Status> {
        self.replica(env.group_id, env.target_replica_id)
    }

    /// The local replica `replica` of `group`, or NOT_FOUND.
    fn replica(&self, group: u64, replica: u64) -> Result<Arc<Group>, Status> {
        let g = self
            .cluster()
            .registry
            .get(GroupId::new(group))
            .ok_or_else(|| Status::not_found(format!("group {group} is not hosted here")))?;
        if g.replica_id != ReplicaId::new(replica) {
            // The replica hosted here is not named: a caller learns nothing
            // it could address a forged message to.
            return Err(Status::not_found(format!("replica {replica} of group {group} is not hosted here")));
        }
        Ok(g)
    }
}

impl PeerService {
    /// Delivers one Raft message to the replica it names (waking the group)
    /// and wraps the answer.
    async fn deliver<Req, Resp, E, F, Fut>(
        &self,
        req: Request<RaftEnvelope>,
        what: &'static str,
        handle: F,
    ) -> Result<Response<RaftEnvelope>, Status>
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        E: std::fmt::Display,
        F: FnOnce(Arc<Group>, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, E>>,
    {
        let env = req.into_inner();
        let g = self.group_for(&env)?;
        g.touch();
        let rpc: Req = decode(what, &env.payload)?;
        let resp = handle(g, rpc).await.map_err(fatal)?;
        reply(&env, what, &resp)
    }
}

fn decode<T: DeserializeOwned>(what: &'static str, b: &[u8]) -> Result<T, Status> {
    codec::decode(what, b).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn reply<T: Serialize>(env: &RaftEnvelope, what: &'static str, v: &T) -> Result<Response<RaftEnvelope>, Status> {
    let payload = codec::encode(what, v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftEnvelope {
        group_id: env.group_id,
        target_replica_id: env.target_replica_id,
        payload: payload.into(),
    }))
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("replica stopped: {e}"))
}

/// Snapshots one node receives and installs at once; a leader whose
/// snapshot is refused with RESOURCE_EXHAUSTED sends it again later.
pub const SNAPSHOT_INSTALLS_MAX: usize = 2;

/// Stripes one ReadShard call may ask for.
const READ_SHARD_STRIPES_MAX: u32 = 64;
/// Blobs one ShardHolders call may ask about.
pub const SHARD_HOLDERS_BLOBS_MAX: usize = 1024;

fn holder_status(e: crate::blob::holder::HolderError) -> Status {
    use crate::blob::holder::HolderError;
    match e {
        HolderError::Corrupt { .. } => Status::data_loss(e.to_string()),
        HolderError::Oversized { .. } | HolderError::OutOfRange { .. } => Status::invalid_argument(e.to_string()),
        HolderError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        HolderError::Stream(_) => Status::cancelled(e.to_string()),
        HolderError::NotHolder { .. } => Status::failed_precondition(e.to_string()),
        HolderError::Storage(_) => status::storage(e),
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    type ReadShardStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<ShardChunk, Status>> + Send>>;

    async fn write_shard(&self, req: Request<Streaming<ShardChunk>>) -> Result<Response<WriteShardResponse>, Status> {
        let mut stream = req.into_inner();
        let first = stream.next().await.ok_or_else(|| Status::invalid_argument("empty shard stream"))??;
        let h = first.header.ok_or_else(|| Status::invalid_argument("first shard message has no header"))?;
        let shard = u8::try_from(h.shard).map_err(|_| Status::invalid_argument(format!("shard index {}", h.shard)))?;
        self.replica(h.group_id, h.target_replica_id)?;
        let chunks = stream.map(|r| r.map_err(|s| s.message().to_string()));
        // A shard is at most its blob, and a blob at most blob_bytes_max.
        let bytes_max = self.member.config.blob_bytes_max;
        let stored =
            crate::blob::holder::store_shard(&self.data, GroupId::new(h.group_id), h.blob_id, shard, bytes_max, chunks)
                .await
                .map_err(holder_status)?;
        Ok(Response::new(WriteShardResponse { chunks_stored: stored }))
    }

    async fn read_shard(&self, req: Request<ReadShardRequest>) -> Result<Response<Self::ReadShardStream>, Status> {
        let r = req.into_inner();
        tracing::debug!(group = r.group_id, blob = r.blob_id, shard = r.shard, stripes = r.stripes, "read shard");
        // A quarantined or removed replica's shards are still served until
        // they are handed off: each chunk is checked by the reader against
        // the manifest's crc32.
        if !self.cluster().registry.serves_shards_of(GroupId::new(r.group_id), ReplicaId::new(r.target_replica_id)) {
            return Err(Status::not_found(format!(
                "no shards of replica {} of group {} here",
                r.target_replica_id, r.group_id
            )));
        }
        if r.stripes == 0 || r.stripes > READ_SHARD_STRIPES_MAX || r.chunks_per_stripe.len() != r.stripes as usize {
            return Err(Status::invalid_argument(format!(
                "ask for 1..={READ_SHARD_STRIPES_MAX} stripes with a chunk count for each"
            )));
        }
        use crate::blob::holder::CHUNKS_PER_STRIPE_MAX;
        use crate::blob::holder::STRIPES_PER_SHARD_MAX;
        if r.chunks_per_stripe.iter().any(|&c| c > CHUNKS_PER_STRIPE_MAX)
            || r.first_stripe.checked_add(r.stripes).is_none_or(|end| end > STRIPES_PER_SHARD_MAX)
        {
            return Err(Status::invalid_argument(format!(
                "stripes {}..+{} with up to {:?} chunks: a shard has at most {STRIPES_PER_SHARD_MAX} stripes of \
                 {CHUNKS_PER_STRIPE_MAX} chunks",
                r.first_stripe,
                r.stripes,
                r.chunks_per_stripe.iter().max()
            )));
        }
        let shard = u8::try_from(r.shard).map_err(|_| Status::invalid_argument(format!("shard index {}", r.shard)))?;
        let chunks = crate::blob::holder::read_shard(
            &self.data,
            GroupId::new(r.group_id),
            r.blob_id,
            shard,
            r.first_stripe,
            &r.chunks_per_stripe,
        )
        .map_err(status::storage)?;
        Ok(Response::new(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))))
    }

    async fn shard_inventory(
        &self,
        req: Request<ShardInventoryRequest>,
    ) -> Result<Response<ShardInventoryResponse>, Status> {
        let r = req.into_inner();
        self.replica(r.group_id, r.target_replica_id)?;
        let store = crate::blob::shard_store::ShardStore::new(self.data.engine.clone());
        let mut shards = Vec::with_capacity(r.shards.len());
        if r.shards.len() > SHARD_HOLDERS_BLOBS_MAX {
            return Err(Status::invalid_argument(format!(
                "ShardInventory asks for {} shards; at most {SHARD_HOLDERS_BLOBS_MAX}",
                r.shards.len()
            )));
        }
        for s in r.shards {
            let shard =
                u8::try_from(s.shard).map_err(|_| Status::invalid_argument(format!("shard index {}", s.shard)))?;
            let held = store.held_shard(GroupId::new(r.group_id), s.blob_id, shard).map_err(status::storage)?;
            let finding = self.data.scrubber.finding(GroupId::new(r.group_id), s.blob_id, shard).unwrap_or_default();
            shards.push(ShardInventoryEntry {
                blob_id: s.blob_id,
                shard: s.shard,
                held: held.is_some(),
                chunks_stored: held.map_or(0, |h| h.chunks_stored),
                chunks_corrupt: finding.chunks_corrupt + finding.chunks_missing,
                last_verified_ms: finding.last_verified_ms,
            });
        }
        Ok(Response::new(ShardInventoryResponse { shards }))
    }

    async fn shard_holders(&self, req: Request<ShardHoldersRequest>) -> Result<Response<ShardHoldersResponse>, Status> {
        let r = req.into_inner();
        if r.blob_ids.len() > SHARD_HOLDERS_BLOBS_MAX {
            return Err(Status::invalid_argument(format!(
                "ShardHolders asks for {} blobs; at most {SHARD_HOLDERS_BLOBS_MAX}",
                r.blob_ids.len()
            )));
        }
        let g = self
            .cluster()
            .registry
            .get(GroupId::new(r.group_id))
            .ok_or_else(|| Status::not_found(format!("group {} is not hosted here", r.group_id)))?;
        self.cluster().linearize(&g, "shard holders").await?;
        let blobs = r
            .blob_ids
            .iter()
            .map(|&blob_id| match crate::blob::holder::retained_manifest(&g, blob_id) {
                None => BlobHolders { blob_id, retained: false, ..Default::default() },
                Some(m) => BlobHolders {
                    blob_id,
                    retained: true,
                    holders: shadowstore_base::ids::numbers(&m.holders),
                    size: m.layout.size,
                    stripe_size: m.layout.stripe_size,
                    k: m.layout.k as u32,
                    m: m.layout.m as u32,
                    chunk_size: m.layout.chunk_size,
                },
            })
            .collect();
        Ok(Response::new(ShardHoldersResponse { blobs }))
    }

    async fn shadow_report(
        &self,
        req: Request<shadowstore_proto::peer::ShadowReportRequest>,
    ) -> Result<Response<shadowstore_proto::peer::ShadowReportResponse>, Status> {
        let req = req.into_inner();
        let report = self.shadows.report(GroupId::new(req.group_id), ReplicaId::new(req.replica_id)).await;
        Ok(Response::new(report))
    }

    async fn hand_off_shard(
        &self,
        req: Request<Streaming<ShardChunk>>,
    ) -> Result<Response<HandOffShardResponse>, Status> {
        let mut stream = req.into_inner();
        let first = stream.next().await.ok_or_else(|| Status::invalid_argument("empty shard stream"))??;
        let h = first.header.ok_or_else(|| Status::invalid_argument("first shard message has no header"))?;
        let shard = u8::try_from(h.shard).map_err(|_| Status::invalid_argument(format!("shard index {}", h.shard)))?;
        let g = self.replica(h.group_id, h.target_replica_id)?;
        self.cluster().linearize(&g, "shard handoff").await?;
        let chunks = stream.map(|r| r.map_err(|s| s.message().to_string()));
        let done = crate::blob::holder::accept_handoff(&self.data, &g, h.blob_id, shard, chunks)
            .await
            .map_err(holder_status)?;
        Ok(Response::new(HandOffShardResponse { retained: done.retained, complete: done.complete }))
    }

    async fn raft_append(&self, req: Request<RaftEnvelope>) -> Result<Response<RaftEnvelope>, Status> {
        let env = req.into_inner();
        let g = self.group_for(&env)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode("append entries", &env.payload)?;
        // Entries wake a quiesced follower; an empty heartbeat does not.
        if !rpc.entries.is_empty() {
            g.touch();
        }
        let resp = g.raft.append_entries(rpc).await.map_err(fatal)?;
        if matches!(resp, AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_)) {
            g.note_leader_contact();
        }
        reply(&env, "append response", &resp)
    }

    async fn raft_vote(&self, req: Request<RaftEnvelope>) -> Result<Response<RaftEnvelope>, Status> {
        self.deliver(req, "vote", |g, rpc: VoteRequest<TypeConfig>| async move { g.raft.vote(rpc).await }).await
    }

    async fn raft_pre_vote(&self, req: Request<RaftEnvelope>) -> Result<Response<RaftEnvelope>, Status> {
        self.deliver(req, "pre-vote", |g, rpc: VoteRequest<TypeConfig>| async move { g.raft.pre_vote(rpc).await }).await
    }

    async fn raft_transfer_leader(&self, req: Request<RaftEnvelope>) -> Result<Response<RaftEnvelope>, Status> {
        self.deliver(req, "transfer leader", |g, rpc: TransferLeaderRequest<TypeConfig>| async move {
            g.raft.handle_transfer_leader(rpc).await
        })
        .await
    }

    async fn raft_snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftEnvelope>, Status> {
        let mut stream = req.into_inner();
        let first = stream.next().await.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let env = first.header.ok_or_else(|| Status::invalid_argument("first snapshot chunk has no header"))?;
        let g = self.group_for(&env)?;
        let _install = self.snapshot_installs.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{SNAPSHOT_INSTALLS_MAX} snapshots are being installed here; retry later"
            ))
        })?;
        g.touch();
        let (vote, meta): (Vote, SnapshotMeta) = decode("snapshot header", &env.payload)?;
        let mut data = Vec::new();
        data.extend_from_slice(&first.data);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if data.len() + chunk.data.len() > SNAPSHOT_BYTES_MAX {
                return Err(Status::resource_exhausted(format!("snapshot exceeds {SNAPSHOT_BYTES_MAX} bytes")));
            }
            data.extend_from_slice(&chunk.data);
        }
        let snapshot = Snapshot { meta, snapshot: bytes::Bytes::from(data) };
        let resp = g.raft.install_full_snapshot(vote, snapshot).await.map_err(fatal)?;
        g.note_leader_contact();
        reply(&env, "snapshot response", &resp)
    }

    async fn read_index(&self, req: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        let group = req.into_inner().group_id;
        let g = self
            .cluster()
            .registry
            .get(GroupId::new(group))
            .ok_or_else(|| Status::not_found(format!("group {group} is not hosted here")))?;
        g.touch();
        let what = "read index";
        let lin =
            g.raft.get_read_linearizer(ReadPolicy::ReadIndex).await.map_err(|e| self.cluster().read_error(what, e))?;
        let bytes =
            codec::encode("read index", lin.read_log_id().log_id()).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ReadIndexResponse { read_log_id: bytes.into() }))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let (node_id, meta_replica_id) =
            crate::membership::registration::handle_join(&self.member, req.into_inner()).await?;
        let cluster_id = self.cluster().peers.cluster_id().get().map(|c| c.to_string()).unwrap_or_default();
        Ok(Response::new(JoinResponse { node_id, meta_replica_id, cluster_id }))
    }

    async fn quiesce(&self, req: Request<QuiesceRequest>) -> Result<Response<QuiesceResponse>, Status> {
        let req = req.into_inner();
        let g = self.replica(req.group_id, req.target_replica_id)?;
        Ok(Response::new(QuiesceResponse { quiesced: crate::group::quiesce::follower_quiesce(&g, &req) }))
    }

    async fn ping(&self, _req: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let node_id = self.cluster().node_id()?;
        let registry = &self.cluster().registry;
        Ok(Response::new(PingResponse {
            node_id: node_id.get(),
            groups_hosted: registry.len() as u64,
            groups_led: registry.led.load(std::sync::atomic::Ordering::Relaxed),
            quarantined_replica_ids: registry.quarantined().into_values().map(ReplicaId::get).collect(),
            cluster_id: self.cluster().peers.cluster_id().get().map(|c| c.to_string()).unwrap_or_default(),
            address: self.member.addr.clone(),
            peer_address: self.member.peer_addr.clone().unwrap_or_default(),
        }))
    }

    async fn drain_demand(
        &self,
        req: Request<shadowstore_proto::peer::DrainDemandRequest>,
    ) -> Result<Response<shadowstore_proto::peer::DrainDemandResponse>, Status> {
        let req = req.into_inner();
        let delivered_before_ms = req.delivered_before_ms;
        let now_ms = self.placement.clock.now_ms();
        // Only a complete minute can have been delivered: a mark further
        // ahead than the clock skew allows would erase minutes not yet
        // collected.
        let limit_ms = now_ms.saturating_add(shadowstore_placement::bounds::DEMAND_CLOCK_SKEW_MS_MAX);
        if delivered_before_ms > limit_ms {
            return Err(Status::invalid_argument(format!(
                "DrainDemand delivered_before_ms {delivered_before_ms} is ahead of this node's clock ({now_ms}) by \
                 more than {} ms",
                shadowstore_placement::bounds::DEMAND_CLOCK_SKEW_MS_MAX
            )));
        }
        Ok(Response::new(crate::placement::collect::drain_local(
            &self.placement,
            now_ms,
            delivered_before_ms,
            req.after_minute_start_ms,
        )))
    }

    async fn share_demand(
        &self,
        req: Request<shadowstore_proto::peer::ShareDemandRequest>,
    ) -> Result<Response<shadowstore_proto::peer::ShareDemandResponse>, Status> {
        let req = req.into_inner();
        let Some(demand) = req.demand else {
            return Err(Status::invalid_argument("ShareDemand without demand"));
        };
        if demand.minutes.len() > shadowstore_placement::demand::recorder::DEMAND_KEYS_MAX {
            return Err(Status::invalid_argument(format!(
                "ShareDemand with {} minutes; a node reports at most {}",
                demand.minutes.len(),
                shadowstore_placement::demand::recorder::DEMAND_KEYS_MAX
            )));
        }
        crate::placement::collect::ingest(&self.placement, NodeId::new(req.node_id), &demand);
        Ok(Response::new(shadowstore_proto::peer::ShareDemandResponse {}))
    }
}
