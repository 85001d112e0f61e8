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
