//! What the planner is given about the cluster, built from the meta
//! directory and the leader's demand history: each resource's replicas,
//! read capacity, priority, size, demand region and forecast, and every
//! host's region, health, load, disk and prices. [`plan_all`] runs the
//! planner (`shadowstore_placement::planner::plan`) on them; nothing here
//! commits anything.

use std::collections::BTreeMap;

use shadowstore_base::ids::NodeId;
use shadowstore_placement::PlacementSettings;
use shadowstore_placement::RegionDistances;
use shadowstore_placement::ShadowPhase;
use shadowstore_placement::demand::DemandKey;
use shadowstore_placement::demand::history::FIVE_MIN_MS;
use shadowstore_placement::forecast::DemandForecast;
use shadowstore_placement::planner::{
    Candidate, HostView, Plan, PlannerConfig, ResourceDemand, ShadowState, choose_hosts, plan,
};

use super::Placement;
use super::forecasters::forecaster_config;
use super::history::REGION_TOTAL;
use crate::meta::state::MetaState;
use crate::meta::state::ReplicaRole;

pub fn planner_config(settings: &PlacementSettings) -> PlannerConfig {
    PlannerConfig {
        threshold: settings.threshold(),
        ttl_ms: settings.ttl_ms,
        hysteresis_ms: settings.hysteresis_ms,
        ..PlannerConfig::default()
    }
}

/// Read capacity `resource` gets: each primary's and each *ready*
/// shadow's share of its node's capacity (`hosted`, from
/// `MetaState::replicas_per_node`). A syncing shadow serves nothing yet.
pub fn resource_capacity_rps(meta: &MetaState, hosted: &BTreeMap<NodeId, usize>, resource: &str) -> f64 {
    let Some(record) = meta.resources.get(resource) else { return 0.0 };
    record
        .replicas
        .iter()
        .filter(|r| match r.role {
            ReplicaRole::Primary => true,
            ReplicaRole::Shadow => meta.shadows.shadow(resource, r.replica_id).is_some_and(|s| s.phase.is_ready()),
        })
        .map(|replica| meta.replica_capacity_rps(replica.node_id, hosted))
        .sum()
}

/// The resource's shadows as the planner sees them, with the time since
/// which demand without each has been low (kept by the planning loop).
fn shadow_states(
    p: &Placement,
    meta: &MetaState,
    resource: &str,
    hosted: &BTreeMap<NodeId, usize>,
) -> Vec<ShadowState> {
    let Some(rs) = meta.shadows.of(resource) else { return Vec::new() };
    rs.shadows
        .values()
        .filter(|s| s.phase != ShadowPhase::Draining)
        .map(|s| ShadowState {
            node_id: s.node_id,
            capacity_rps: if s.phase.is_ready() { meta.replica_capacity_rps(s.node_id, hosted) } else { 0.0 },
            added_at_ms: s.added_at_ms,
            low_since_ms: p.low_since(resource, s.node_id),
            pinned: s.pinned,
        })
        .collect()
}

/// One resource as the directory describes it.
struct ResourceRow {
    name: String,
    replica_nodes: Vec<NodeId>,
    capacity_rps: f64,
    priority: i32,
    shadows: Vec<ShadowState>,
}

/// Plans every resource (or one) now. Nothing is committed.
pub fn plan_all(p: &Placement, only: Option<&str>, now_ms: u64) -> Vec<Plan> {
    planner_inputs(p, only, now_ms)
        .map(|(config, demands, hosts, regions)| {
            demands.iter().map(|demand| plan(&config, demand, &hosts, &regions, now_ms)).collect()
        })
        .unwrap_or_default()
}

/// Every host's verdict as a shadow host of `resource`, capable hosts
/// first in the planner's order (nearest region, then cheapest per read),
/// whatever its demand: for an operator adding a shadow.
pub fn host_candidates(p: &Placement, resource: &str, now_ms: u64) -> Option<Vec<Candidate>> {
    let (config, demands, hosts, regions) = planner_inputs(p, Some(resource), now_ms)?;
    let demand = demands.first()?;
    Some(choose_hosts(&config, demand, &hosts, &regions, f64::MAX, usize::MAX).candidates)
}

/// The planner's view of every resource (or one) and of the hosts.
fn planner_inputs(
    p: &Placement,
    only: Option<&str>,
    now_ms: u64,
) -> Option<(PlannerConfig, Vec<ResourceDemand>, Vec<HostView>, RegionDistances)> {
    let me = p.cluster.identity().map(|i| i.node_id);
    let detector = &p.cluster.detector;
    let Some((settings, resources, hosts, regions)) = p.cluster.with_meta(|meta| {
        let hosted = meta.replicas_per_node();
        let resources: Vec<ResourceRow> = meta
            .resources
            .values()
            .filter(|r| only.is_none_or(|name| name == r.name))
            .map(|r| ResourceRow {
                name: r.name.clone(),
                replica_nodes: r.replicas.iter().map(|x| x.node_id).collect(),
                capacity_rps: resource_capacity_rps(meta, &hosted, &r.name),
                priority: meta.placement.priorities.get(&r.name).copied().unwrap_or(0),
                shadows: shadow_states(p, meta, &r.name, &hosted),
            })
            .collect();
        let hosts: Vec<HostView> = meta
            .nodes
            .values()
            .map(|n| HostView {
                node_id: n.node_id,
                region: n.labels.region.clone(),
                healthy: Some(n.node_id) == me || detector.is_up(n.node_id),
                read_capacity_rps: n.labels.read_capacity_rps as f64,
                load_rps: 0.0,
                // 0 means the node did not state its disk: not limited.
                disk_free_bytes: if n.labels.disk_capacity_bytes == 0 {
                    u64::MAX
                } else {
                    n.labels.disk_capacity_bytes
                },
                prices: meta.prices_of(n),
            })
            .collect();
        (meta.placement.settings.clone(), resources, hosts, meta.placement.region_distances.clone())
    }) else {
        return None;
    };
    let hosts: Vec<HostView> =
        hosts.into_iter().map(|h| HostView { load_rps: p.history.node_rps(h.node_id), ..h }).collect();
    let config = planner_config(&settings);
    let horizon_steps = forecaster_config(&settings).horizon_steps;
    let demands = resources
        .into_iter()
        .map(|row| {
            let total = DemandKey { resource: row.name.clone(), region: REGION_TOTAL.to_string() };
            let observed_rps = p.history.last_minute_rps(&total, now_ms);
            // Reactive (too little history): act on the last complete
            // minute, not on a five-minute slot that may still be filling.
            let forecast = match p.forecasters.forecast_rps(&total) {
                Some(forecast) if !forecast.is_reactive() => forecast,
                _ => DemandForecast::reactive_at(observed_rps, horizon_steps),
            };
            ResourceDemand {
                resource: row.name.clone(),
                priority: row.priority,
                // Zero until the node leading the group has reported it.
                size_bytes: p.history.size_of(&row.name),
                region: demand_region(p, &row.name, now_ms),
                replica_nodes: row.replica_nodes,
                capacity_rps: row.capacity_rps,
                observed_rps,
                forecast,
                forecast_step_ms: FIVE_MIN_MS,
                shadows: row.shadows,
            }
        })
        .collect();
    Some((config, demands, hosts, regions))
}

/// The demand's region: the region with the most reads in the last hour
/// (this node's region while there are none).
fn demand_region(p: &Placement, resource: &str, now_ms: u64) -> String {
    p.history
        .regions_of(resource)
        .into_iter()
        .map(|region| {
            let key = DemandKey { resource: resource.to_string(), region: region.clone() };
            let reads: f64 = p.history.series(&key, now_ms, 60, super::history::Resolution::Minutes).iter().sum();
            (region, reads)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(region, _)| region)
        .unwrap_or_else(|| p.region.clone())
}
