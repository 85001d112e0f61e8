//! Cluster formation and the meta group's own membership.
//!
//! [`form`] runs once at start-up and returns the node's identity:
//! - a node with an identity in its data directory starts every replica
//!   recorded locally and keeps its identity;
//! - otherwise, with `bootstrap = true`, it creates a new cluster as node 1
//!   holding meta replica 1, under a new random cluster id, unless a peer
//!   named in `join` answers that it already belongs to a cluster;
//! - otherwise it joins through the `join` addresses: the meta leader
//!   registers it (allocating its node id and meta replica id) and the
//!   membership manager adds its meta replica to the meta group.
//!
//! [`run_manager`] runs on every node and acts while the node leads the
//! meta group: it registers the bootstrap node, adds every registered
//! node's meta replica as a learner and promotes the first
//! `META_VOTERS_MAX` nodes to voters once they have caught up. On other
//! nodes it re-announces this node's address and labels when they changed.

use shadowstore_base::ids::ReplicaId;
use std::collections::BTreeMap;
use std::time::Duration;

use shadowstore_proto::LEADER_ADDRESS_METADATA;
use shadowstore_proto::PEER_ADDRESS_METADATA;
use shadowstore_proto::peer::JoinRequest;
use shadowstore_proto::peer::JoinResponse;

use super::Member;
use crate::cluster::NodeIdentity;
use crate::cluster::PEER_CALL_TIMEOUT;
use crate::meta::state::NodeLabels;
use crate::storage::Tree;
use crate::storage::WriteBatch;
use crate::storage::keys;
use crate::transport::cluster_id::ClusterId;
use shadowstore_base::codec;
use shadowstore_base::ids::BOOTSTRAP_META_REPLICA_ID;
use shadowstore_base::ids::BOOTSTRAP_NODE_ID;
use shadowstore_base::ids::META_GROUP_ID;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaNode;

const JOIN_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a node about to bootstrap waits for each configured peer to
/// say whether it already belongs to a cluster.
const BOOTSTRAP_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn form(ctx: &Member) -> Result<NodeIdentity, String> {
    let stored = ctx.engine.get(Tree::Local, keys::IDENTITY_KEY).map_err(|e| format!("reading identity: {e}"))?;
    if let Some(bytes) = stored {
        let id: NodeIdentity = codec::decode("identity", &bytes).map_err(|e| e.to_string())?;
        load_cluster_id(ctx)?;
        start_local_replicas(ctx).await?;
        tracing::info!(node = %id.node_id, "restarted with existing identity");
        return Ok(id);
    }
    if ctx.config.bootstrap {
        refuse_if_peers_formed(ctx).await?;
        let id = NodeIdentity { node_id: BOOTSTRAP_NODE_ID, meta_replica_id: BOOTSTRAP_META_REPLICA_ID };
        let cluster_id = ClusterId::random(&ctx.rng);
        ctx.cluster.peers.cluster_id().set(cluster_id)?;
        persist_identity(ctx, id, Some(cluster_id)).await?;
        let meta = ctx
            .cluster
            .registry
            .open(META_GROUP_ID, id.meta_replica_id)
            .await
            .map_err(|e| format!("starting meta replica: {e}"))?;
        let members =
            BTreeMap::from([(id.meta_replica_id, ReplicaNode { node_id: id.node_id, addr: ctx.addr.clone() })]);
        meta.raft.initialize(members).await.map_err(|e| format!("initializing meta group: {e}"))?;
        ctx.cluster.peers.set_node_addr(id.node_id, &ctx.addr);
        tracing::info!(addr = %ctx.addr, cluster = %cluster_id, "bootstrapped a new cluster as node 1");
        return Ok(id);
    }
    let (id, cluster_id) = join(ctx).await?;
    if let Some(c) = cluster_id {
        ctx.cluster.peers.cluster_id().set(c)?;
    }
    persist_identity(ctx, id, cluster_id).await?;
    ctx.cluster
        .registry
        .open(META_GROUP_ID, id.meta_replica_id)
        .await
        .map_err(|e| format!("starting meta replica: {e}"))?;
    tracing::info!(node = %id.node_id, "joined the cluster");
    Ok(id)
}

/// Writes the node's identity and its cluster's id in one batch, synced.
async fn persist_identity(ctx: &Member, id: NodeIdentity, cluster_id: Option<ClusterId>) -> Result<(), String> {
    let mut b = WriteBatch::new(Tree::Local);
    b.put(keys::IDENTITY_KEY.to_vec(), codec::encode("identity", &id).map_err(|e| e.to_string())?);
    if let Some(c) = cluster_id {
        b.put(keys::CLUSTER_ID_KEY.to_vec(), c.to_string().into_bytes());
    }
    ctx.engine.write(b).map_err(|e| format!("writing identity: {e}"))?;
    ctx.syncer.sync().await.map_err(|e| format!("syncing identity: {e}"))
}

/// Reads back the cluster id stored at bootstrap or join.
fn load_cluster_id(ctx: &Member) -> Result<(), String> {
    let stored = ctx.engine.get(Tree::Local, keys::CLUSTER_ID_KEY).map_err(|e| format!("reading cluster id: {e}"))?;
    let Some(bytes) = stored else {
        tracing::warn!(
            "this node's cluster was bootstrapped before cluster ids existed: peer calls are not checked for the \
             cluster they come from (certificates still are)"
        );
        return Ok(());
    };
    let text = String::from_utf8_lossy(&bytes);
    let id: ClusterId = text.parse().map_err(|e| format!("stored cluster id: {e}"))?;
    ctx.cluster.peers.cluster_id().set(id)
}

/// A node about to bootstrap asks the peers its config names (`join`)
/// whether they already form a cluster. One that answers with a node id
/// means this node is not the first: its data directory is missing or was
/// replaced (a crash between compaction's renames, a wrong volume), and
/// bootstrapping would make a second cluster and a voter that forgot its
/// vote. Peers that do not answer are not evidence either way: the first
/// start of a new cluster finds none of them running.
async fn refuse_if_peers_formed(ctx: &Member) -> Result<(), String> {
    for addr in &ctx.config.join {
        if *addr == ctx.addr {
            continue;
        }
        let Some(answer) = ctx.cluster.peers.ping(addr, NodeId::new(0), BOOTSTRAP_PROBE_TIMEOUT).await else {
            continue;
        };
        if answer.node_id != 0 || !answer.cluster_id.is_empty() {
            let cluster = if answer.cluster_id.is_empty() {
                "a cluster".to_string()
            } else {
                format!("cluster {}", answer.cluster_id)
            };
            return Err(format!(
                "bootstrap = true, but this node's data directory holds no identity and the peer at {addr} already \
                 belongs to {cluster} (as node {}). Bootstrapping would start a second cluster. If this node's data \
                 was lost, set bootstrap = false so that it joins {cluster} as a new node (its old replicas are \
                 replaced); if the data directory was moved or a compaction was interrupted, restore it first",
                answer.node_id
            ));
        }
    }
    Ok(())
}

async fn start_local_replicas(ctx: &Member) -> Result<(), String> {
    ctx.cluster.registry.load_retired().map_err(|e| format!("listing retired replicas' shards: {e}"))?;
    let replicas = ctx.cluster.registry.local_replicas().map_err(|e| format!("listing local replicas: {e}"))?;
    for r in replicas {
        let Err(e) = ctx.cluster.registry.open(r.group_id, r.replica_id).await else { continue };
        // A corrupt resource replica waits for its replacement; the node
        // serves everything else meanwhile. Without its meta replica the
        // node cannot take part at all.
        let quarantined = ctx.cluster.registry.quarantined().contains_key(&r.group_id);
        if quarantined && r.group_id != META_GROUP_ID {
            tracing::warn!(group = %r.group_id, replica = %r.replica_id, error = %e, "replica quarantined at start");
            continue;
        }
        let hint = if quarantined {
            "; this node's meta replica is corrupt: move its data directory away and let the node rejoin"
        } else {
            ""
        };
        return Err(format!("starting replica {} of group {}: {e}{hint}", r.replica_id, r.group_id));
    }
    Ok(())
}

pub(super) fn join_request(
    labels: &NodeLabels,
    peer_addr: Option<&str>,
    existing_node_id: NodeId,
    join_id: u64,
) -> JoinRequest {
    JoinRequest {
        join_id,
        address: labels.addr.clone(),
        peer_address: peer_addr.unwrap_or_default().to_string(),
        region: labels.region.clone(),
        read_capacity_rps: labels.read_capacity_rps,
        price_storage_gb_hour_micros: labels.prices.storage_gb_hour_micros,
        price_transfer_gb_micros: labels.prices.transfer_gb_micros,
        price_million_requests_micros: labels.prices.million_requests_micros,
        disk_capacity_bytes: labels.disk_capacity_bytes,
        existing_node_id: existing_node_id.get(),
    }
}

/// Sends `req` to the meta leader, starting from any of `seeds` and
/// following redirects, until it succeeds or fails for a reason other than
/// "not the leader yet".
pub(super) async fn send_join(ctx: &Member, seeds: &[String], req: JoinRequest) -> Result<JoinResponse, String> {
    let mut delay = Duration::from_millis(100);
    let mut next: Option<String> = None;
    let mut i = 0usize;
    loop {
        let addr = match next.take() {
            Some(a) => a,
            None => {
                let a = seeds[i % seeds.len()].clone();
                i += 1;
                a
            }
        };
        let result = match ctx.cluster.peers.client(&addr) {
            Err(e) => Err(tonic::Status::invalid_argument(e.to_string())),
            Ok(mut c) => {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(PEER_CALL_TIMEOUT);
                c.join(r).await
            }
        };
        match result {
            Ok(resp) => return Ok(resp.into_inner()),
            Err(s) if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::DeadlineExceeded => {
                next = s.metadata().get(LEADER_ADDRESS_METADATA).and_then(|v| v.to_str().ok()).map(String::from);
                tracing::info!(via = %addr, status = %s.message(), "join: retrying");
            }
            Err(s) if s.code() == tonic::Code::InvalidArgument && s.message().contains("bad address") => {
                return Err(s.message().to_string());
            }
            // A client listener that names its node's peer listener (it
            // came from a redirect, or a seed's lagging routes).
            Err(s) if s.code() == tonic::Code::Unimplemented && s.metadata().contains_key(PEER_ADDRESS_METADATA) => {
                let peer = s.metadata().get(PEER_ADDRESS_METADATA).and_then(|v| v.to_str().ok()).map(String::from);
                tracing::info!(via = %addr, ?peer, "join: following the refusal to the peer listener");
                next = peer;
            }
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                return Err(format!(
                    "{addr} does not serve the peer service: it is a client listener of a node with a peer \
                     listener of its own, so `join` must name that node's peer address ({})",
                    s.message()
                ));
            }
            Err(s) if s.code() == tonic::Code::Unknown || s.code() == tonic::Code::Internal => {
                tracing::info!(via = %addr, status = %s.message(), "join: retrying");
            }
            Err(s) => return Err(format!("join refused by {addr}: {}", s.message())),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(JOIN_RETRY_MAX);
    }
}

async fn join(ctx: &Member) -> Result<(NodeIdentity, Option<ClusterId>), String> {
    if ctx.config.join.is_empty() {
        return Err("no identity, bootstrap is false and no join address is configured".into());
    }
    let req =
        join_request(&ctx.config.labels(&ctx.addr), ctx.peer_addr.as_deref(), NodeId::new(0), ctx.rng.next_u64() | 1);
    let joined = send_join(ctx, &ctx.config.join, req).await?;
    let cluster_id = if joined.cluster_id.is_empty() {
        None
    } else {
        Some(joined.cluster_id.parse::<ClusterId>().map_err(|e| format!("join answer: {e}"))?)
    };
    let id =
        NodeIdentity { node_id: NodeId::new(joined.node_id), meta_replica_id: ReplicaId::new(joined.meta_replica_id) };
    Ok((id, cluster_id))
}
