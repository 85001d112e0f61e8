//! The planning loop and the state behind the placement API, on the meta
//! leader.
//!
//! Every planning interval (a replicated setting, default 1 min) the meta
//! leader:
//! 1. collects every node's complete minutes of read counts (`DrainDemand`)
//!    into its [`DemandHistory`];
//! 2. feeds each (resource, region) series, and each resource's total
//!    (region `*`, the sum of its regions, not stored), into a
//!    [`Forecaster`] at five-minute resolution;
//! 3. plans every resource ([`super::planner::plan`]) against its
//!    capacity, and commits each decision that changed to the meta group
//!    (`RecordPlacement`), so a new leader sees the plans of the old one.
//!
//! The history and forecasters live in the leader's memory: after a leader
//! change the new leader starts from empty history and is reactive until
//! it has a day of it (docs/PLACEMENT.md). Executing a plan (adding the
//! shadow as a Raft learner and shifting traffic) is not done here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use shadowstore_proto::peer;

use super::planner::{Action, HostView, Plan, PlannerConfig, RegionDistances, ResourceDemand, plan};
use crate::demand::history::FIVE_MIN_MS;
use crate::demand::recorder::MINUTE_MS;
use crate::demand::{DemandHistory, DemandKey, MinuteReport};
use crate::forecast::forecaster::ForecasterConfig;
use crate::forecast::{DemandForecast, Forecaster};
use crate::ids::NodeId;
use crate::meta::membership::propose_meta;
use crate::meta::state::{MetaCommand, MetaState, PlacementRecord, PlacementSettings};
use crate::node::NodeCtx;

/// The region key of a resource's total demand.
pub const REGION_TOTAL: &str = "*";
/// Slots of history fed to a new forecaster.
const FIRST_FEED_SLOTS_MAX: usize = 2 * 288;
/// How long the leader waits for one node's demand.
const DRAIN_TIMEOUT_MS: u64 = 2_000;
/// Forecasters the leader keeps (bounds memory; the busiest keys win).
pub const FORECASTERS_MAX: usize = 20_000;

struct Fed {
    forecaster: Forecaster,
    /// The five-minute slot (absolute index) fed last.
    next_slot: u64,
}

#[derive(Default)]
struct Inner {
    history: DemandHistory,
    forecasters: BTreeMap<DemandKey, Fed>,
    /// Reads per second each node served in its last complete minute.
    node_rps: BTreeMap<NodeId, f64>,
    /// The first five-minute slot each key was seen in: a new forecaster
    /// is fed from there, never with made-up zeros from before.
    first_slot: BTreeMap<DemandKey, u64>,
    last_plans: Vec<Plan>,
}

/// The leader-local placement state, shared by the loop and the API.
#[derive(Default)]
pub struct PlacementState {
    inner: Mutex<Inner>,
}

fn forecaster_config(settings: &PlacementSettings) -> ForecasterConfig {
    ForecasterConfig::for_step(FIVE_MIN_MS / 1000, settings.horizon_s)
}

pub fn planner_config(settings: &PlacementSettings) -> PlannerConfig {
    PlannerConfig {
        threshold: settings.threshold_permille as f64 / 1000.0,
        ttl_ms: settings.ttl_ms,
        hysteresis_ms: settings.hysteresis_ms,
        ..PlannerConfig::default()
    }
}

impl PlacementState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("placement state lock poisoned")
    }

    pub fn ingest(&self, reports: &[MinuteReport], node: NodeId, node_reads_last_minute: u64) {
        let mut inner = self.lock();
        for report in reports {
            inner.history.ingest(report);
            let slot = report.minute_start_ms / FIVE_MIN_MS;
            let total = DemandKey { resource: report.key.resource.clone(), region: REGION_TOTAL.to_string() };
            for key in [report.key.clone(), total] {
                let first = inner.first_slot.entry(key).or_insert(slot);
                *first = (*first).min(slot);
            }
        }
        inner.node_rps.insert(node, node_reads_last_minute as f64 / 60.0);
    }

    /// Feeds every complete five-minute slot before `now_ms` to the
    /// forecasters (creating them for new keys).
    fn feed(&self, settings: &PlacementSettings, now_ms: u64) {
        let end_slot = now_ms / FIVE_MIN_MS;
        let mut inner = self.lock();
        let Inner { history, forecasters, first_slot, .. } = &mut *inner;
        let config = forecaster_config(settings);
        // A forecaster fed from the first slot the key was seen, at most
        // FIRST_FEED_SLOTS_MAX back.
        let fresh = |seen: u64| {
            let next_slot = end_slot.saturating_sub(FIRST_FEED_SLOTS_MAX as u64).max(seen);
            Forecaster::new(config.clone()).ok().map(|forecaster| Fed { forecaster, next_slot })
        };
        // Every (resource, region) with history, and each resource's total.
        for (key, seen) in first_slot.iter() {
            let full = forecasters.len() >= FORECASTERS_MAX;
            let fed = match forecasters.entry(key.clone()) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(_) if full => continue,
                std::collections::btree_map::Entry::Vacant(entry) => match fresh(*seen) {
                    Some(fed) => entry.insert(fed),
                    None => continue,
                },
            };
            if fed.forecaster.config().horizon_steps != config.horizon_steps {
                // The horizon changed: start again from the history.
                if let Some(restarted) = fresh(*seen) {
                    *fed = restarted;
                }
            }
            if fed.next_slot >= end_slot {
                continue;
            }
            let slots = (end_slot - fed.next_slot) as usize;
            for value in series(history, key, end_slot * FIVE_MIN_MS, slots, Resolution::FiveMinutes) {
                fed.forecaster.observe(value);
            }
            fed.next_slot = end_slot;
        }
    }

    /// The forecast of `key` in requests per second.
    fn forecast_rps(&self, key: &DemandKey) -> Option<DemandForecast> {
        let mut inner = self.lock();
        let fed = inner.forecasters.get_mut(key)?;
        Some(fed.forecaster.forecast().scaled(1000.0 / FIVE_MIN_MS as f64))
    }

    fn last_minute_rps(&self, key: &DemandKey, now_ms: u64) -> f64 {
        let end = now_ms / MINUTE_MS * MINUTE_MS;
        series(&self.lock().history, key, end, 1, Resolution::Minutes)[0] / 60.0
    }

    fn regions_of(&self, resource: &str) -> Vec<String> {
        self.lock().history.keys_of(resource).map(|k| k.region.clone()).collect()
    }

    pub fn last_plans(&self) -> Vec<Plan> {
        self.lock().last_plans.clone()
    }

    pub fn memory_bytes(&self) -> usize {
        self.lock().history.memory_bytes()
    }
}

#[derive(Clone, Copy)]
enum Resolution {
    Minutes,
    FiveMinutes,
}

/// A key's series; a resource's total (region `*`) is the sum of its
/// regions, computed when read rather than stored twice.
fn series(history: &DemandHistory, key: &DemandKey, end_ms: u64, len: usize, resolution: Resolution) -> Vec<f64> {
    let one = |k: &DemandKey| match resolution {
        Resolution::Minutes => history.minute_series(k, end_ms, len),
        Resolution::FiveMinutes => history.five_min_series(k, end_ms, len),
    };
    if key.region != REGION_TOTAL {
        return one(key);
    }
    let mut total = vec![0.0; len];
    for region_key in history.keys_of(&key.resource) {
        for (sum, value) in total.iter_mut().zip(one(region_key)) {
            *sum += value;
        }
    }
    total
}

/// Read capacity `resource` gets: each replica's node capacity shared
/// equally among the replicas that node hosts.
fn resource_capacity_rps(meta: &MetaState, hosted: &BTreeMap<NodeId, usize>, resource: &str) -> f64 {
    let Some(record) = meta.resources.get(resource) else { return 0.0 };
    record
        .replicas
        .iter()
        .map(|replica| {
            let shared_by = hosted.get(&replica.node_id).copied().unwrap_or(1).max(1);
            let capacity = meta.nodes.get(&replica.node_id).map(|n| n.labels.read_capacity_rps).unwrap_or(0);
            capacity as f64 / shared_by as f64
        })
        .sum()
}

/// Replicas each node hosts (one pass over the directory).
fn replicas_hosted(meta: &MetaState) -> BTreeMap<NodeId, usize> {
    let mut hosted = BTreeMap::new();
    for replica in meta.resources.values().flat_map(|r| r.replicas.iter()) {
        *hosted.entry(replica.node_id).or_insert(0) += 1;
    }
    hosted
}

/// Plans every resource (or one) now. Nothing is committed.
pub fn plan_all(ctx: &NodeCtx, only: Option<&str>, now_ms: u64) -> Vec<Plan> {
    let Some((settings, resources, hosts)) = ctx.with_meta(|meta| {
        let hosted = replicas_hosted(meta);
        let resources: Vec<(String, Vec<NodeId>, f64, i32)> = meta
            .resources
            .values()
            .filter(|r| only.is_none_or(|name| name == r.name))
            .map(|r| {
                (
                    r.name.clone(),
                    r.replicas.iter().map(|x| x.node_id).collect(),
                    resource_capacity_rps(meta, &hosted, &r.name),
                    meta.priorities.get(&r.name).copied().unwrap_or(0),
                )
            })
            .collect();
        let hosts: Vec<HostView> = meta
            .nodes
            .values()
            .map(|n| HostView {
                node_id: n.node_id,
                region: n.labels.region.clone(),
                healthy: Some(n.node_id) == ctx.identity().map(|i| i.node_id) || ctx.detector.is_up(n.node_id),
                read_capacity_rps: n.labels.read_capacity_rps as f64,
                load_rps: 0.0,
                // 0 means the node did not state its disk: not limited.
                disk_free_bytes: if n.labels.disk_capacity_bytes == 0 {
                    u64::MAX
                } else {
                    n.labels.disk_capacity_bytes
                },
                prices: n.labels.prices.clone(),
            })
            .collect();
        (meta.placement_settings.clone(), resources, hosts)
    }) else {
        return Vec::new();
    };
    let state = &ctx.placement;
    let hosts: Vec<HostView> = {
        let inner = state.lock();
        hosts
            .into_iter()
            .map(|h| HostView { load_rps: inner.node_rps.get(&h.node_id).copied().unwrap_or(0.0), ..h })
            .collect()
    };
    let config = planner_config(&settings);
    let regions = RegionDistances::default();
    let mut plans = Vec::new();
    for (name, replica_nodes, capacity_rps, priority) in resources {
        let total = DemandKey { resource: name.clone(), region: REGION_TOTAL.to_string() };
        let observed_rps = state.last_minute_rps(&total, now_ms);
        // Reactive (too little history): act on the last complete minute,
        // not on a five-minute slot that may still be filling.
        let horizon_steps = forecaster_config(&settings).horizon_steps;
        let forecast = match state.forecast_rps(&total) {
            Some(forecast) if !forecast.is_reactive() => forecast,
            _ => DemandForecast::reactive_at(observed_rps, horizon_steps),
        };
        // The demand's region: the region with the most reads in the last hour.
        let region = state
            .regions_of(&name)
            .into_iter()
            .map(|region| {
                let key = DemandKey { resource: name.clone(), region: region.clone() };
                let reads: f64 = state.lock().history.minute_series(&key, now_ms, 60).iter().sum();
                (region, reads)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(region, _)| region)
            .unwrap_or_else(|| ctx.config.region.clone());
        let demand = ResourceDemand {
            resource: name.clone(),
            priority,
            // Resource sizes are not reported to the meta leader yet.
            size_bytes: 0,
            region,
            replica_nodes,
            capacity_rps,
            observed_rps,
            forecast,
            shadows: Vec::new(),
        };
        plans.push(plan(&config, &demand, &hosts, &regions, now_ms));
    }
    plans
}

/// The per-region history and forecast of one resource, for
/// `shadowctl demand show`.
#[derive(Clone, Debug, Serialize)]
pub struct DemandView {
    pub resource: String,
    pub now_ms: u64,
    pub slot_ms: u64,
    pub capacity_rps: f64,
    pub regions: Vec<RegionDemand>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RegionDemand {
    pub region: String,
    /// Reads per minute over the last hour, oldest first, ending at the
    /// last complete minute.
    pub minutes: Vec<f64>,
    /// Reads per five-minute slot, oldest first, ending at the last
    /// complete slot.
    pub history: Vec<f64>,
    pub forecast: Option<ForecastView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ForecastView {
    pub mode: String,
    /// Per lead (five-minute slots), in reads per slot.
    pub point: Vec<f64>,
    pub lower_95: Vec<f64>,
    pub upper_95: Vec<f64>,
    /// P(demand > the resource's capacity within the horizon).
    pub p_exceed: f64,
}

pub fn demand_view(ctx: &NodeCtx, resource: &str, slots: usize, now_ms: u64) -> DemandView {
    let capacity_rps = ctx.with_meta(|m| resource_capacity_rps(m, &replicas_hosted(m), resource)).unwrap_or(0.0);
    let end_ms = now_ms / FIVE_MIN_MS * FIVE_MIN_MS;
    let mut regions = ctx.placement.regions_of(resource);
    regions.push(REGION_TOTAL.to_string());
    let regions = regions
        .into_iter()
        .map(|region| {
            let key = DemandKey { resource: resource.to_string(), region: region.clone() };
            let history = series(&ctx.placement.lock().history, &key, end_ms, slots, Resolution::FiveMinutes);
            let minutes =
                series(&ctx.placement.lock().history, &key, now_ms / MINUTE_MS * MINUTE_MS, 60, Resolution::Minutes);
            let forecast = ctx.placement.lock().forecasters.get_mut(&key).map(|fed| {
                let f = fed.forecaster.forecast();
                let capacity_per_slot = capacity_rps * FIVE_MIN_MS as f64 / 1000.0;
                let leads = 1..=f.horizon_steps();
                ForecastView {
                    mode: f.mode.name().to_string(),
                    point: f.point.clone(),
                    lower_95: leads.clone().map(|l| f.interval(l, 0.95).0).collect(),
                    upper_95: leads.map(|l| f.interval(l, 0.95).1).collect(),
                    p_exceed: f.p_exceed(capacity_per_slot),
                }
            });
            RegionDemand { region, minutes, history, forecast }
        })
        .collect();
    DemandView { resource: resource.to_string(), now_ms, slot_ms: FIVE_MIN_MS, capacity_rps, regions }
}

/// Collects demand from every node.
async fn collect(ctx: &NodeCtx, now_ms: u64) {
    let Some(nodes) =
        ctx.with_meta(|m| m.nodes.values().map(|n| (n.node_id, n.labels.addr.clone())).collect::<Vec<_>>())
    else {
        return;
    };
    let me = ctx.identity().map(|i| i.node_id);
    for (node_id, addr) in nodes {
        let (reports, last_minute) = if Some(node_id) == me {
            drain_reports(ctx, now_ms)
        } else {
            match drain_remote(ctx, &addr).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::debug!(node_id, %error, "collecting demand");
                    continue;
                }
            }
        };
        ctx.placement.ingest(&reports, node_id, last_minute);
    }
}

/// This node's complete minutes, and its reads in the last one.
fn drain_reports(ctx: &NodeCtx, now_ms: u64) -> (Vec<MinuteReport>, u64) {
    let reports = ctx.demand.drain_complete(now_ms);
    let last = (now_ms / MINUTE_MS).saturating_sub(1) * MINUTE_MS;
    let last_minute = reports.iter().filter(|r| r.minute_start_ms == last).map(|r| r.reads).sum();
    (reports, last_minute)
}

async fn drain_remote(ctx: &NodeCtx, addr: &str) -> Result<(Vec<MinuteReport>, u64), String> {
    let mut client = ctx.peers.client(addr).map_err(|e| e.to_string())?;
    let call = client.drain_demand(peer::DrainDemandRequest {});
    let answer = tokio::time::timeout(Duration::from_millis(DRAIN_TIMEOUT_MS), call)
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?
        .into_inner();
    let reports = answer
        .minutes
        .into_iter()
        .map(|m| MinuteReport {
            minute_start_ms: m.minute_start_ms,
            key: DemandKey { resource: m.resource, region: m.region },
            reads: m.reads,
            peak_bucket_reads: m.peak_bucket_reads,
            shed_reads: m.shed_reads,
        })
        .collect();
    Ok((reports, answer.node_reads_last_minute))
}

/// A node's answer to `DrainDemand`.
pub fn drain_local(ctx: &NodeCtx, now_ms: u64) -> peer::DrainDemandResponse {
    let (reports, node_reads_last_minute) = drain_reports(ctx, now_ms);
    peer::DrainDemandResponse {
        minutes: reports
            .into_iter()
            .map(|r| peer::DemandMinute {
                minute_start_ms: r.minute_start_ms,
                resource: r.key.resource,
                region: r.key.region,
                reads: r.reads,
                peak_bucket_reads: r.peak_bucket_reads,
                shed_reads: r.shed_reads,
            })
            .collect(),
        node_reads_last_minute,
    }
}

fn record_of(plan: &Plan) -> Option<PlacementRecord> {
    let (action, nodes, reason) = match &plan.action {
        Action::Hold { .. } => return None,
        Action::AddShadows { nodes, added_rps, short_rps } => (
            "add-shadows",
            nodes.clone(),
            format!(
                "P(exceed) {:.2} >= {:.2}; +{added_rps:.0} rps ({short_rps:.0} rps short)",
                plan.inputs.p_exceed, plan.inputs.threshold
            ),
        ),
        Action::Retire { nodes, reason } => ("retire", nodes.clone(), reason.clone()),
    };
    Some(PlacementRecord {
        at_ms: plan.at_ms,
        action: action.to_string(),
        nodes,
        p_exceed_permille: (plan.inputs.p_exceed * 1000.0).round() as u32,
        reason,
    })
}

/// One planning pass on the meta leader.
pub async fn plan_once(ctx: &NodeCtx) {
    let now_ms = ctx.clock.now_ms();
    collect(ctx, now_ms).await;
    let Some(settings) = ctx.with_meta(|m| m.placement_settings.clone()) else { return };
    ctx.placement.feed(&settings, now_ms);
    let plans = plan_all(ctx, None, now_ms);
    for plan in &plans {
        let Some(record) = record_of(plan) else { continue };
        let current = ctx.with_meta(|m| m.placements.get(&plan.resource).cloned()).flatten();
        if current.as_ref().is_some_and(|c| c.action == record.action && c.nodes == record.nodes) {
            continue;
        }
        let span = tracing::info_span!("placement", resource = %plan.resource);
        let _enter = span.enter();
        tracing::info!(action = %record.action, nodes = ?record.nodes, reason = %record.reason, "plan");
        let cmd = MetaCommand::RecordPlacement { now_ms, resource: plan.resource.clone(), record };
        if let Err(error) = propose_meta(ctx, cmd).await {
            tracing::warn!(%error, "committing a placement plan");
        }
    }
    ctx.placement.lock().last_plans = plans;
}

/// Runs on every node; plans only while this node leads the meta group.
pub async fn run(ctx: Arc<NodeCtx>) {
    loop {
        let interval_ms = ctx
            .with_meta(|m| m.placement_settings.planning_interval_ms)
            .unwrap_or(PlacementSettings::default().planning_interval_ms);
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        if ctx.meta_group().is_some_and(|g| g.is_leader()) {
            plan_once(&ctx).await;
        }
    }
}
