//! The dashboard every node serves on its operator HTTP listener: one page
//! (`dashboard.html`, no external assets) that polls `/api/dashboard`.
//!
//! The JSON is made of the gRPC API's own answers (cluster status, shadow
//! status with weights, steps, history and cost, the placement plans with
//! their explanations, demand with forecast and capacity), produced by the
//! same handlers in-process, so the page and `shadowctl` never disagree.
//! Only read methods are called: the page needs no rights and can change
//! nothing. Plans and demand live on the meta leader; another node's page
//! says which node to open for them.

use std::sync::Arc;

use serde_json::Value;
use serde_json::json;
use shadowstore_proto::v1;
use shadowstore_proto::v1::shadow_store_server::ShadowStore;
use tonic::Request;

use crate::api::client::ClientService;
use crate::loops::Loops;
use crate::parts::NodeCtx;

/// Resources whose demand the page charts (the ones with the most recent
/// placement activity first, then by name).
pub const DASHBOARD_DEMAND_RESOURCES_MAX: usize = 8;
/// Five-minute slots of history per chart (two hours).
pub const DASHBOARD_HISTORY_SLOTS: u32 = 24;
/// Resources listed with their replicas.
pub const DASHBOARD_RESOURCES_MAX: usize = 200;

/// What the dashboard reads.
pub struct Dashboard {
    pub ctx: Arc<NodeCtx>,
    pub loops: Arc<Loops>,
    /// The client service's handlers, called in-process (read methods
    /// only).
    pub service: ClientService,
}

fn or_error<T: serde::Serialize>(r: Result<tonic::Response<T>, tonic::Status>) -> Value {
    match r {
        Ok(answer) => serde_json::to_value(answer.into_inner()).unwrap_or(Value::Null),
        Err(status) => json!({"error": format!("{:?}: {}", status.code(), status.message())}),
    }
}

impl Dashboard {
    /// The page's data.
    pub async fn snapshot(&self) -> Value {
        let ctx = &self.ctx;
        let s = &self.service;
        let cluster = or_error(s.cluster_status(Request::new(v1::ClusterStatusRequest {})).await);
        let shadows =
            or_error(s.shadow_status(Request::new(v1::ShadowStatusRequest { resource: String::new() })).await);
        let leads_meta = ctx.cluster.meta_group().is_some_and(|m| m.is_leader());
        let resources: Vec<Value> = ctx
            .cluster
            .with_meta(|m| {
                m.resources
                    .values()
                    .take(DASHBOARD_RESOURCES_MAX)
                    .map(|r| {
                        let replicas: Vec<Value> = r
                            .replicas
                            .iter()
                            .map(|x| {
                                let shadow = m.shadows.shadow(&r.name, x.replica_id);
                                json!({
                                    "replica_id": x.replica_id.get(),
                                    "node_id": x.node_id.get(),
                                    "role": format!("{:?}", x.role).to_lowercase(),
                                    "phase": shadow.map(|s| format!("{:?}", s.phase).to_lowercase()),
                                    "step": shadow.map(|s| s.step),
                                    "weight_permille": shadow.map(|s| s.weight_permille),
                                })
                            })
                            .collect();
                        json!({"name": r.name, "group_id": r.group_id.get(), "replicas": replicas})
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (plans, demand) = if leads_meta {
            let plans =
                or_error(s.placement_plan(Request::new(v1::PlacementPlanRequest { resource: String::new() })).await);
            // Resources with shadow activity first (their charts show the
            // loop), then by name; one read of the directory.
            let mut names: Vec<(bool, String)> = ctx
                .cluster
                .with_meta(|m| {
                    m.resources
                        .keys()
                        .take(DASHBOARD_RESOURCES_MAX)
                        .map(|n| (m.shadows.of(n).is_none_or(|x| x.history.is_empty()), n.clone()))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            let mut demand = Vec::new();
            for (_, name) in names.into_iter().take(DASHBOARD_DEMAND_RESOURCES_MAX) {
                let request = v1::DemandShowRequest { resource: name, history_slots: DASHBOARD_HISTORY_SLOTS };
                demand.push(or_error(s.demand_show(Request::new(request)).await));
            }
            (plans, Value::Array(demand))
        } else {
            (Value::Null, Value::Null)
        };
        json!({
            "node": {
                "node_id": ctx.cluster.identity().map_or(0, |i| i.node_id.get()),
                "addr": ctx.addr,
                "region": ctx.config.region,
                "version": env!("CARGO_PKG_VERSION"),
                "leads_meta": leads_meta,
                "now_ms": ctx.clock.now_ms(),
                "dead_loops": self.loops.dead().into_iter().map(|(name, why)| json!({"loop": name, "why": why})).collect::<Vec<_>>(),
                "storage_failed": ctx.syncer.failure(),
            },
            "cluster": cluster,
            "resources": resources,
            "shadows": shadows,
            "plans": plans,
            "demand": demand,
        })
    }
}
