//! openraft's network for every group, over the shared peer channels.
//!
//! [`RaftRouter`] implements openraft-multi's `GroupRouter`: each call names
//! the group and the target replica, finds the node hosting the replica in
//! the address book, and sends one `Peer` RPC on that node's shared
//! channel with the call's deadline. openraft messages travel as postcard
//! inside the protobuf envelope. Each message first asks the network seam
//! for its fate, so the simulator can drop, delay, reorder and duplicate
//! Raft messages; production always delivers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft_multi::GroupNetworkAdapter;
use openraft_multi::GroupRouter;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shadowstore_proto::peer::RaftEnvelope;
use shadowstore_proto::peer::SnapshotChunk;

use super::Snapshot;
use super::TypeConfig;
use super::Vote;
use crate::transport::MessageFate;
use crate::transport::Peers;
use shadowstore_base::codec;
use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::ids::ReplicaNode;
use shadowstore_base::limits::SNAPSHOT_CHUNK_BYTES;

/// Lower bound for a snapshot transfer's deadline.
const SNAPSHOT_SEND_TIMEOUT_MIN: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum RaftRpc {
    Append,
    Vote,
    PreVote,
    TransferLeader,
}

#[derive(Clone)]
pub struct RaftRouter {
    peers: Arc<Peers>,
}

fn unreachable(msg: impl ToString) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(msg))
}

/// Maps a transport failure to what openraft should do about it: back off
/// from a peer that is down or does not host the replica, retry soon after
/// anything else.
fn status_to_rpc_error(target: ReplicaId, s: tonic::Status) -> RPCError<TypeConfig> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::NotFound | tonic::Code::Unimplemented => {
            unreachable(format!("replica {target}: {}", s.message()))
        }
        _ => RPCError::Network(NetworkError::from_string(format!("replica {target}: {s}"))),
    }
}

impl RaftRouter {
    pub fn new(peers: Arc<Peers>) -> Self {
        RaftRouter { peers }
    }

    fn envelope<Req: Serialize>(
        group: GroupId,
        target: ReplicaId,
        req: &Req,
    ) -> Result<RaftEnvelope, RPCError<TypeConfig>> {
        let payload = codec::encode("raft request", req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        Ok(RaftEnvelope { group_id: group.get(), target_replica_id: target.get(), payload: payload.into() })
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        rpc: RaftRpc,
        target: ReplicaId,
        group: GroupId,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let (_node, addr) = self
            .peers
            .replica_addr(target)
            .ok_or_else(|| unreachable(format!("replica {target} of group {group} has no known address")))?;
        let mut client = self.peers.client(&addr).map_err(|e| unreachable(e.to_string()))?;
        let envelope = Self::envelope(group, target, req)?;
        let deadline = tokio::time::Instant::now() + ttl;
        let fate = self.peers.message_fate(&addr);
        match fate {
            MessageFate::Deliver | MessageFate::DropResponse => {}
            MessageFate::DropRequest => {
                tokio::time::sleep_until(deadline).await;
                return Err(lost(target, "request"));
            }
            MessageFate::Delay(d) => tokio::time::sleep(d.min(ttl)).await,
            MessageFate::Duplicate(after) => {
                let (mut copy_client, copy) = (client.clone(), envelope.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    // The copy's answer goes nowhere, as a duplicate's would.
                    let _ = send(&mut copy_client, rpc, copy, ttl).await;
                });
            }
        }
        let result =
            send(&mut client, rpc, envelope, deadline.saturating_duration_since(tokio::time::Instant::now())).await;
        if fate == MessageFate::DropResponse {
            tokio::time::sleep_until(deadline).await;
            return Err(lost(target, "response"));
        }
        match result {
            Ok(resp) => codec::decode("raft response", &resp.into_inner().payload)
                .map_err(|e| RPCError::Network(NetworkError::new(&e))),
            Err(status) => Err(status_to_rpc_error(target, status)),
        }
    }
}

fn lost(target: ReplicaId, what: &str) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!("replica {target}: {what} lost in the network")))
}

/// Sends one Raft message.
async fn send(
    client: &mut crate::transport::peers::PeerStub,
    rpc: RaftRpc,
    envelope: RaftEnvelope,
    ttl: Duration,
) -> Result<tonic::Response<RaftEnvelope>, tonic::Status> {
    let mut request = tonic::Request::new(envelope);
    request.set_timeout(ttl);
    match rpc {
        RaftRpc::Append => client.raft_append(request).await,
        RaftRpc::Vote => client.raft_vote(request).await,
        RaftRpc::PreVote => client.raft_pre_vote(request).await,
        RaftRpc::TransferLeader => client.raft_transfer_leader(request).await,
    }
}

impl GroupRouter<TypeConfig, GroupId> for RaftRouter {
    type SnapshotData = bytes::Bytes;

    async fn append_entries(
        &self,
        target: ReplicaId,
        group_id: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftRpc::Append, target, group_id, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &self,
        target: ReplicaId,
        group_id: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftRpc::Vote, target, group_id, &rpc, option.hard_ttl()).await
    }

    async fn pre_vote(
        &self,
        target: ReplicaId,
        group_id: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftRpc::PreVote, target, group_id, &rpc, option.hard_ttl()).await
    }

    async fn transfer_leader(
        &self,
        target: ReplicaId,
        group_id: GroupId,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftRpc::TransferLeader, target, group_id, &req, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &self,
        target: ReplicaId,
        group_id: GroupId,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let to_streaming = |e: RPCError<TypeConfig>| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            RPCError::Timeout(t) => StreamingError::Timeout(t),
            RPCError::RemoteError(r) => StreamingError::Network(NetworkError::from_string(r.to_string())),
        };
        let (_node, addr) = self
            .peers
            .replica_addr(target)
            .ok_or_else(|| to_streaming(unreachable(format!("replica {target} has no known address"))))?;
        let mut client = self.peers.client(&addr).map_err(|e| to_streaming(unreachable(e.to_string())))?;
        let header = Self::envelope(group_id, target, &(vote, snapshot.meta)).map_err(to_streaming)?;
        let data = snapshot.snapshot;
        let total = data.len();
        let first = SnapshotChunk { header: Some(header), data: bytes::Bytes::new() };
        let mut chunks = Vec::with_capacity(1 + total.div_ceil(SNAPSHOT_CHUNK_BYTES));
        chunks.push(first);
        for off in (0..total).step_by(SNAPSHOT_CHUNK_BYTES) {
            chunks.push(SnapshotChunk { header: None, data: data.slice(off..(off + SNAPSHOT_CHUNK_BYTES).min(total)) });
        }
        let chunks = futures::stream::iter(chunks);
        let mut request = tonic::Request::new(chunks);
        request.set_timeout(option.hard_ttl().max(SNAPSHOT_SEND_TIMEOUT_MIN));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = client.raft_snapshot(request) => match r {
                Ok(resp) => codec::decode("snapshot response", &resp.into_inner().payload)
                    .map_err(|e| StreamingError::Network(NetworkError::new(&e))),
                Err(status) => Err(to_streaming(status_to_rpc_error(target, status))),
            },
        }
    }
}

/// openraft's network factory for one group.
pub struct NetworkFactory {
    router: RaftRouter,
    group: GroupId,
}

impl NetworkFactory {
    pub fn new(router: RaftRouter, group: GroupId) -> Self {
        NetworkFactory { router, group }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = GroupNetworkAdapter<TypeConfig, GroupId, RaftRouter>;

    async fn new_client(&mut self, target: ReplicaId, node: &ReplicaNode) -> Self::Network {
        self.router.peers.note_replica(target, node);
        GroupNetworkAdapter::new(self.router.clone(), target, self.group)
    }
}
