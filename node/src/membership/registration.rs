//! Registering a node, on the meta leader: the `Join` a new node sends
//! (its node id and meta replica id are allocated) or a known node sends
//! after a restart with new labels.

use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::ids::RequestId;
use shadowstore_proto::peer::JoinRequest;

use super::Member;
use crate::cluster::Error;
use crate::meta::command::MetaCommand;
use crate::meta::command::MetaResponse;
use crate::meta::state::NodeLabels;

/// How long the meta leader waits for a node's recorded address to answer
/// before it lets a `Join` move that node's identity elsewhere.
const READDRESS_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves a join on the meta leader.
pub async fn handle_join(ctx: &Member, req: JoinRequest) -> Result<(u64, u64), Error> {
    let meta = ctx.cluster.meta_group().ok_or(Error::NotReady)?;
    if !meta.is_leader() {
        return Err(ctx.cluster.not_leader("join", &meta));
    }
    if req.address.is_empty() {
        return Err(Error::Invalid { what: "join".into(), detail: "empty address".into() });
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
        refuse_live_readdressing(ctx, NodeId::new(req.existing_node_id), &req.address).await?;
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
    match ctx.cluster.propose_meta(cmd).await? {
        MetaResponse::Registered { node_id, meta_replica_id } => Ok((node_id.get(), meta_replica_id.get())),
        MetaResponse::Updated => {
            let replica = ctx
                .cluster
                .with_meta(|m| m.nodes.get(&NodeId::new(req.existing_node_id)).map(|n| n.meta_replica_id))
                .flatten()
                .unwrap_or(ReplicaId::new(0));
            Ok((req.existing_node_id, replica.get()))
        }
        MetaResponse::NotFound => Err(Error::NotFound {
            what: "join".into(),
            detail: format!("node {} is not a member of this cluster", req.existing_node_id),
        }),
        MetaResponse::Rejected { reason } => Err(Error::Refused { what: "join".into(), detail: reason }),
        other => Err(Error::internal("join", format!("unexpected meta answer {other:?}"))),
    }
}

/// A known node's identity moves to a new address only when the node no
/// longer answers as itself at its recorded one: otherwise the `Join`
/// comes from another process claiming that identity (which would receive
/// the node's Raft traffic and could acknowledge appends it does not
/// hold), and is refused with PERMISSION_DENIED.
async fn refuse_live_readdressing(ctx: &Member, node_id: NodeId, new_addr: &str) -> Result<(), Error> {
    let Some(recorded) = ctx.cluster.with_meta(|m| m.addr_of(node_id).map(String::from)).flatten() else {
        return Ok(());
    };
    if recorded == new_addr {
        return Ok(());
    }
    let answer = ctx.cluster.peers.ping(&recorded, NodeId::new(0), READDRESS_PROBE_TIMEOUT).await;
    if answer.is_some_and(|a| a.node_id == node_id.get()) {
        return Err(Error::Denied {
            what: "join".into(),
            detail: format!(
                "node {node_id} is alive at {recorded}: its identity cannot be moved to {new_addr} by another process"
            ),
        });
    }
    Ok(())
}
