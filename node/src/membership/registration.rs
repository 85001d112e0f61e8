//! Registering a node, on the meta leader: the `Join` a new node sends
//! (its node id and meta replica id are allocated) or a known node sends
//! after a restart with new labels.

use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::ids::RequestId;
use shadowstore_base::limits::NODE_LABEL_BYTES_MAX;
use shadowstore_proto::peer::JoinRequest;

use super::Member;
use crate::cluster::Error;
use crate::meta::command::MetaCommand;
use crate::meta::command::MetaResponse;
use crate::meta::state::NodeLabels;
use crate::meta::state::NodeRecord;

/// How long the meta leader waits for a node's recorded address to answer
/// before it lets a `Join` move that node's identity elsewhere.
const READDRESS_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves a join on the meta leader. A redirect names the leader's peer
/// address: the caller may not know the directory's routes yet.
pub async fn handle_join(ctx: &Member, req: JoinRequest) -> Result<(u64, u64), Error> {
    register(ctx, req).await.map_err(|e| match e {
        Error::NotLeader { what, leader_addr } => {
            Error::NotLeader { what, leader_addr: leader_addr.map(|a| ctx.cluster.peers.route(&a)) }
        }
        Error::OutcomeUnknown { what, leader_addr } => {
            Error::OutcomeUnknown { what, leader_addr: leader_addr.map(|a| ctx.cluster.peers.route(&a)) }
        }
        e => e,
    })
}

async fn register(ctx: &Member, req: JoinRequest) -> Result<(u64, u64), Error> {
    let meta = ctx.cluster.meta_group().ok_or(Error::NotReady)?;
    if !meta.is_leader() {
        return Err(ctx.cluster.not_leader("join", &meta));
    }
    let invalid = |detail: String| Error::Invalid { what: "join".into(), detail };
    if req.address.is_empty() {
        return Err(invalid("empty address".into()));
    }
    for (field, value) in [("address", &req.address), ("peer_address", &req.peer_address), ("region", &req.region)] {
        if value.len() > NODE_LABEL_BYTES_MAX {
            return Err(invalid(format!("{field} is {} bytes, over the limit of {NODE_LABEL_BYTES_MAX}", value.len())));
        }
    }
    if req.peer_address == req.address {
        return Err(invalid(format!("peer_address {} is the client address: leave it empty instead", req.address)));
    }
    let peer_addr = (!req.peer_address.is_empty()).then(|| req.peer_address.clone());
    if let Some(peer) = &peer_addr {
        refuse_a_taken_peer_address(ctx, &req, peer)?;
    }
    let labels = NodeLabels {
        addr: req.address.clone(),
        region: req.region.clone(),
        read_capacity_rps: req.read_capacity_rps,
        disk_capacity_bytes: req.disk_capacity_bytes,
        prices: shadowstore_placement::Prices {
            storage_gb_hour_micros: req.price_storage_gb_hour_micros,
            transfer_gb_micros: req.price_transfer_gb_micros,
            million_requests_micros: req.price_million_requests_micros,
        },
    };
    if req.existing_node_id != 0 {
        refuse_live_readdressing(ctx, NodeId::new(req.existing_node_id), &req.address, peer_addr.as_deref()).await?;
    } else {
        refuse_retiring_a_live_member(ctx, &req.address).await?;
    }
    let now_ms = ctx.clock.now_ms();
    let cmd = if req.existing_node_id != 0 {
        MetaCommand::UpdateNode { now_ms, node_id: NodeId::new(req.existing_node_id), labels }
    } else {
        MetaCommand::RegisterNode {
            request: RequestId { client_id: req.join_id, seq: 1, first_incomplete_seq: 1 },
            now_ms,
            labels,
        }
    };
    let (node_id, meta_replica_id) = match ctx.cluster.propose_meta(cmd).await? {
        MetaResponse::Registered { node_id, meta_replica_id } => (node_id, meta_replica_id),
        MetaResponse::Updated => {
            let node_id = NodeId::new(req.existing_node_id);
            let replica = ctx
                .cluster
                .with_meta(|m| m.nodes.get(&node_id).map(|n| n.meta_replica_id))
                .flatten()
                .unwrap_or(ReplicaId::new(0));
            (node_id, replica)
        }
        other => return Err(refusal(req.existing_node_id, other)),
    };
    set_peer_addr(ctx, node_id, peer_addr).await?;
    Ok((node_id.get(), meta_replica_id.get()))
}

/// Records where `node_id` serves the peer service, if the directory says
/// otherwise (on the meta leader).
pub async fn set_peer_addr(ctx: &Member, node_id: NodeId, peer_addr: Option<String>) -> Result<(), Error> {
    let recorded = ctx.cluster.with_meta(|m| m.peer_addr_of(node_id).map(String::from)).flatten();
    if recorded == peer_addr {
        return Ok(());
    }
    let now_ms = ctx.clock.now_ms();
    match ctx.cluster.propose_meta(MetaCommand::SetPeerAddr { now_ms, node_id, peer_addr }).await? {
        MetaResponse::Updated => Ok(()),
        other => Err(refusal(node_id.get(), other)),
    }
}

/// A peer address another member serves (as client or peer address) is
/// refused before anything is proposed: found only after a registration
/// committed, it would leave a member that can never be reached. The
/// member the `Join` updates, or retires by registering at its address,
/// does not count.
fn refuse_a_taken_peer_address(ctx: &Member, req: &JoinRequest, peer: &str) -> Result<(), Error> {
    let replaced = |n: &NodeRecord| n.node_id.get() == req.existing_node_id || n.labels.addr == req.address;
    let owner = ctx.cluster.with_meta(|m| m.addr_owner(peer, replaced));
    match owner.flatten() {
        Some(other) => {
            Err(Error::Refused { what: "join".into(), detail: format!("peer address {peer} belongs to node {other}") })
        }
        None => Ok(()),
    }
}

/// A meta answer other than success to a node's announcement.
fn refusal(node_id: u64, answer: MetaResponse) -> Error {
    match answer {
        MetaResponse::NotFound => {
            Error::NotFound { what: "join".into(), detail: format!("node {node_id} is not a member of this cluster") }
        }
        MetaResponse::Rejected { reason } => Error::Refused { what: "join".into(), detail: reason },
        other => Error::internal("join", format!("unexpected meta answer {other:?}")),
    }
}

/// A known node's identity moves to a new address (client or peer) only
/// when the node no longer answers as itself where the directory routes
/// peers to it, or when it answers there announcing exactly these
/// addresses itself (a node turning on its peer listener still answers at
/// its client address until the move is recorded). Otherwise the `Join`
/// comes from another process claiming that identity (which would receive
/// the node's Raft traffic and could acknowledge appends it does not
/// hold), and is refused with PERMISSION_DENIED.
async fn refuse_live_readdressing(
    ctx: &Member,
    node_id: NodeId,
    new_addr: &str,
    new_peer_addr: Option<&str>,
) -> Result<(), Error> {
    let recorded = ctx
        .cluster
        .with_meta(|m| m.addr_of(node_id).map(|a| (a.to_string(), m.peer_addr_of(node_id).map(String::from))))
        .flatten();
    let Some((recorded, recorded_peer)) = recorded else {
        return Ok(());
    };
    if recorded == new_addr && recorded_peer.as_deref() == new_peer_addr {
        return Ok(());
    }
    let Some(answer) = answer_as(ctx, node_id, &recorded).await else {
        return Ok(());
    };
    let announces = |addr: &str, peer: &str| match peer {
        "" => addr.to_string(),
        p => format!("{addr} (peers at {p})"),
    };
    let (claimed, its_own) =
        (announces(new_addr, new_peer_addr.unwrap_or_default()), announces(&answer.address, &answer.peer_address));
    if claimed == its_own {
        return Ok(());
    }
    Err(Error::Denied {
        what: "join".into(),
        detail: format!(
            "node {node_id} is alive at {recorded}, announcing {its_own}: its identity cannot be moved to {claimed} by \
             another process"
        ),
    })
}

/// A new registration from a member's address retires that member (it
/// lost its data directory and came back as a new node). Refused while
/// the member still answers as itself there: then the `Join` comes from
/// another process, and would retire a live node and replace its replicas.
/// A node that lost its data answers with no identity.
async fn refuse_retiring_a_live_member(ctx: &Member, addr: &str) -> Result<(), Error> {
    let member = ctx.cluster.with_meta(|m| m.nodes.values().find(|n| n.labels.addr == addr).map(|n| n.node_id));
    let Some(node_id) = member.flatten() else {
        return Ok(());
    };
    if answer_as(ctx, node_id, addr).await.is_none() {
        return Ok(());
    }
    Err(Error::Denied {
        what: "join".into(),
        detail: format!("node {node_id} is alive at {addr}: a new node cannot register its address"),
    })
}

/// What `node_id` answers to a ping where the directory routes peers for
/// its address `addr`; `None` if nothing answers there as that node.
async fn answer_as(ctx: &Member, node_id: NodeId, addr: &str) -> Option<shadowstore_proto::peer::PingResponse> {
    let answer = ctx.cluster.peers.ping(addr, NodeId::new(0), READDRESS_PROBE_TIMEOUT).await?;
    (answer.node_id == node_id.get()).then_some(answer)
}
