//! The placement part of the public API: the planner's dry run, demand
//! history and forecasts, and the placement settings, as typed messages.
//! The meta leader holds the demand history, so every call is served
//! there; another node answers UNAVAILABLE naming the leader (the client
//! library follows it).

use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::numbers;
use shadowstore_placement::bounds::{PRICE_MICROS_MAX, PRIORITY_ABS_MAX, REGION_DISTANCE_MAX};
use shadowstore_placement::demand::DemandKey;
use shadowstore_placement::demand::history::{FIVE_MIN_MS, FIVE_MIN_SLOTS};
use shadowstore_placement::demand::recorder::MINUTE_MS;
use shadowstore_placement::planner::{Action, Candidate, Plan, Verdict};
use shadowstore_placement::{CostBreakdown, PlacementAction, PlacementRecord, PlacementSetting, PriceKind, Prices};
use shadowstore_proto::v1;
use tonic::Status;

use super::status;
use crate::meta::command::{MetaCommand, MetaResponse};
use crate::meta::state::MetaState;
use crate::placement::Placement;
use crate::placement::history::{REGION_TOTAL, Resolution, slot_end_ms};
use crate::placement::inputs::{plan_all, resource_capacity_rps};

/// History slots `DemandShow` returns by default (one day).
pub const DEMAND_SHOW_SLOTS_DEFAULT: u32 = 288;

fn require_meta_leader(p: &Placement, what: &str) -> Result<(), Status> {
    let meta = p.cluster.meta_group().ok_or_else(status::not_ready)?;
    if meta.is_leader() { Ok(()) } else { Err(p.cluster.not_leader(what, &meta).into()) }
}

pub async fn plan(p: &Placement, req: v1::PlacementPlanRequest) -> Result<v1::PlacementPlanResponse, Status> {
    let only = if req.resource.is_empty() {
        None
    } else {
        super::validate::resource_name(&req.resource)?;
        Some(req.resource.as_str())
    };
    require_meta_leader(p, "placement plan")?;
    if let Some(name) = only
        && p.cluster.with_meta(|m| m.resources.contains_key(name)) != Some(true)
    {
        return Err(Status::not_found(format!("resource {name:?} does not exist")));
    }
    let plans = plan_all(p, only, p.clock.now_ms());
    let committed = p
        .cluster
        .with_meta(|m| {
            m.placement
                .records
                .iter()
                .filter(|(r, _)| only.is_none_or(|o| o == r.as_str()))
                .map(|(r, record)| (r.clone(), record_message(record)))
                .collect()
        })
        .unwrap_or_default();
    Ok(v1::PlacementPlanResponse { plans: plans.iter().map(plan_message).collect(), committed })
}

pub async fn demand_show(p: &Placement, req: v1::DemandShowRequest) -> Result<v1::DemandShowResponse, Status> {
    super::validate::resource_name(&req.resource)?;
    let slots = match req.history_slots {
        0 => DEMAND_SHOW_SLOTS_DEFAULT,
        n if n as usize <= FIVE_MIN_SLOTS => n,
        n => return Err(Status::invalid_argument(format!("history_slots {n} exceeds {FIVE_MIN_SLOTS}"))),
    } as usize;
    require_meta_leader(p, "demand show")?;
    let resource = req.resource.as_str();
    let capacity_rps = p
        .cluster
        .with_meta(|m| {
            m.resources.contains_key(resource).then(|| resource_capacity_rps(m, &m.replicas_per_node(), resource))
        })
        .flatten()
        .ok_or_else(|| Status::not_found(format!("resource {resource:?} does not exist")))?;
    let now_ms = p.clock.now_ms();
    let mut regions = p.history.regions_of(resource);
    regions.push(REGION_TOTAL.to_string());
    let capacity_per_slot = capacity_rps * FIVE_MIN_MS as f64 / 1000.0;
    let regions = regions
        .into_iter()
        .map(|region| {
            let key = DemandKey { resource: resource.to_string(), region: region.clone() };
            let history = p.history.series(&key, slot_end_ms(now_ms), slots, Resolution::FiveMinutes);
            let minutes = p.history.series(&key, now_ms / MINUTE_MS * MINUTE_MS, 60, Resolution::Minutes);
            let forecast = p.forecasters.forecast_per_slot(&key).map(|f| {
                let leads = 1..=f.horizon_steps();
                v1::RegionForecast {
                    mode: f.mode.name().to_string(),
                    point: f.point.clone(),
                    lower_95: leads.clone().map(|l| f.interval(l, 0.95).0).collect(),
                    upper_95: leads.map(|l| f.interval(l, 0.95).1).collect(),
                    p_exceed: f.p_exceed(capacity_per_slot),
                }
            });
            v1::RegionDemand { region, minutes, history, forecast }
        })
        .collect();
    Ok(v1::DemandShowResponse { resource: resource.to_string(), now_ms, slot_ms: FIVE_MIN_MS, capacity_rps, regions })
}

fn prices_message(p: &Prices) -> v1::Prices {
    v1::Prices {
        storage_gb_hour_micros: p.storage_gb_hour_micros,
        transfer_gb_micros: p.transfer_gb_micros,
        million_requests_micros: p.million_requests_micros,
    }
}

fn config_message(m: &MetaState) -> v1::PlacementConfigResponse {
    let s = &m.placement.settings;
    v1::PlacementConfigResponse {
        settings: Some(v1::PlacementSettings {
            threshold_permille: s.threshold_permille,
            horizon_s: s.horizon_s,
            planning_interval_ms: s.planning_interval_ms,
            ttl_ms: s.ttl_ms,
            hysteresis_ms: s.hysteresis_ms,
        }),
        prices: m
            .nodes
            .values()
            .map(|n| v1::NodePrices { node_id: n.node_id.get(), prices: Some(prices_message(&m.prices_of(n))) })
            .collect(),
        priorities: m.placement.priorities.iter().map(|(r, p)| (r.clone(), *p)).collect(),
        region_distances: m
            .placement
            .region_distances
            .pairs
            .iter()
            .map(|((a, b), d)| v1::RegionDistance { a: a.clone(), b: b.clone(), distance: *d })
            .collect(),
        shift: m.shadows.settings.as_text().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

fn config_view(p: &Placement) -> Result<v1::PlacementConfigResponse, Status> {
    p.cluster.with_meta(config_message).ok_or_else(status::not_ready)
}

pub async fn get_config(p: &Placement) -> Result<v1::PlacementConfigResponse, Status> {
    let meta = p.cluster.meta_group().ok_or_else(status::not_ready)?;
    p.cluster.linearize(&meta, "placement config").await?;
    config_view(p)
}

fn parse_u64(key: &str, value: &str, min: u64, max: u64) -> Result<u64, Status> {
    match value.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(Status::invalid_argument(format!("{key} takes a whole number in {min}..={max}, got {value:?}"))),
    }
}

/// The meta command one `config set KEY VALUE` asks for, every value
/// checked before anything is proposed.
fn setting_command(p: &Placement, req: &v1::SetPlacementConfigRequest, now_ms: u64) -> Result<MetaCommand, Status> {
    let key = req.key.as_str();
    if key == "priority" {
        super::validate::resource_name(&req.resource)?;
        let limit = PRIORITY_ABS_MAX;
        let priority = match req.value.trim().parse::<i32>() {
            Ok(p) if (-limit..=limit).contains(&p) => p,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "priority takes a whole number in -{limit}..={limit}, got {:?}",
                    req.value
                )));
            }
        };
        return Ok(MetaCommand::SetResourcePriority { now_ms, resource: req.resource.clone(), priority });
    }
    if let Some(pair) = key.strip_prefix("region_distance.") {
        let Some((a, b)) = pair.split_once('.') else {
            return Err(Status::invalid_argument(format!("{key}: name two regions, as region_distance.REGION.REGION")));
        };
        super::validate::region(a)?;
        super::validate::region(b)?;
        let distance = parse_u64(key, &req.value, 1, REGION_DISTANCE_MAX as u64)? as u32;
        if a == b {
            return Err(Status::invalid_argument(format!("{key}: a region is 0 from itself")));
        }
        return Ok(MetaCommand::SetRegionDistance { now_ms, a: a.to_string(), b: b.to_string(), distance });
    }
    if let Some(part) = key.strip_prefix("prices.") {
        if req.node_id == 0 {
            return Err(Status::invalid_argument(format!("{key} needs the node whose prices change (node_id)")));
        }
        let mut prices = p
            .cluster
            .with_meta(|m| m.nodes.get(&NodeId::new(req.node_id)).map(|n| m.prices_of(n)))
            .flatten()
            .ok_or_else(|| Status::not_found(format!("node {} is not a member", req.node_id)))?;
        let value = parse_u64(key, &req.value, 0, PRICE_MICROS_MAX)?;
        let Some(kind) = PriceKind::from_name(part) else {
            let known: Vec<&str> = PriceKind::ALL.iter().map(|k| k.name()).collect();
            return Err(Status::invalid_argument(format!("unknown price {part:?}; known: {}", known.join(", "))));
        };
        prices.set(kind, value).map_err(Status::invalid_argument)?;
        return Ok(MetaCommand::SetNodePrices { now_ms, node_id: NodeId::new(req.node_id), prices });
    }
    if let Some(setting) = shadowstore_placement::ShiftSetting::parse(key, &req.value) {
        let setting = setting.map_err(|e| Status::invalid_argument(e.0))?;
        return Ok(MetaCommand::SetShiftSetting { now_ms, setting });
    }
    let Some(setting) = PlacementSetting::parse(key, &req.value) else {
        return Err(Status::invalid_argument(format!(
            "unknown setting {key:?}; known: {}, {}, priority, {}, region_distance.REGION.REGION",
            PlacementSetting::KEYS.join(", "),
            shadowstore_placement::ShiftSetting::KEYS.join(", "),
            PriceKind::ALL.iter().map(|k| format!("prices.{}", k.name())).collect::<Vec<_>>().join(", ")
        )));
    };
    let setting = setting.map_err(|e| Status::invalid_argument(e.0))?;
    Ok(MetaCommand::SetPlacementSetting { now_ms, setting })
}

pub async fn set_config(
    p: &Placement,
    req: v1::SetPlacementConfigRequest,
) -> Result<v1::PlacementConfigResponse, Status> {
    p.cluster.with_meta(|_| ()).ok_or_else(status::not_ready)?;
    let cmd = setting_command(p, &req, p.clock.now_ms())?;
    let key = req.key.as_str();
    match p.cluster.propose_meta(cmd).await? {
        MetaResponse::Updated => config_view(p),
        MetaResponse::NotFound if key == "priority" => {
            Err(Status::not_found(format!("resource {:?} does not exist", req.resource)))
        }
        MetaResponse::NotFound => Err(Status::not_found(format!("node {} is not a member", req.node_id))),
        MetaResponse::Rejected { reason } => Err(Status::invalid_argument(format!("{key}: {reason}"))),
        other => Err(Status::internal(format!("meta group answered {other:?}"))),
    }
}

// --- Domain types as messages.

fn record_message(r: &PlacementRecord) -> v1::PlacementRecord {
    let action = match r.action {
        PlacementAction::AddShadows => v1::PlacementAction::AddShadows,
        PlacementAction::Retire => v1::PlacementAction::Retire,
    };
    v1::PlacementRecord {
        at_ms: r.at_ms,
        action: action as i32,
        nodes: numbers(&r.nodes),
        p_exceed_permille: r.p_exceed_permille,
        reason: r.reason.clone(),
    }
}

fn cost_message(c: &CostBreakdown) -> v1::CostBreakdown {
    v1::CostBreakdown {
        storage_micros: c.storage_micros,
        transfer_micros: c.transfer_micros,
        serving_micros: c.serving_micros,
        total_micros: c.total_micros,
    }
}

fn candidate_message(c: &Candidate) -> v1::Candidate {
    use v1::candidate_verdict as cv;
    let verdict = match &c.verdict {
        Verdict::Chosen { contributes_rps } => cv::Verdict::Chosen(cv::Chosen { contributes_rps: *contributes_rps }),
        Verdict::NotNeeded => cv::Verdict::NotNeeded(cv::Empty {}),
        Verdict::Unhealthy => cv::Verdict::Unhealthy(cv::Empty {}),
        Verdict::AlreadyReplica => cv::Verdict::AlreadyReplica(cv::Empty {}),
        Verdict::NoSpareCapacity { spare_rps } => {
            cv::Verdict::NoSpareCapacity(cv::NoSpareCapacity { spare_rps: *spare_rps })
        }
        Verdict::NotEnoughDisk { free_bytes, needed_bytes } => {
            cv::Verdict::NotEnoughDisk(cv::NotEnoughDisk { free_bytes: *free_bytes, needed_bytes: *needed_bytes })
        }
    };
    v1::Candidate {
        node_id: c.node_id.get(),
        region: c.region.clone(),
        region_distance: c.region_distance,
        spare_rps: c.spare_rps,
        disk_free_bytes: c.disk_free_bytes,
        cost: c.cost.as_ref().map(cost_message),
        cost_per_rps_micros: c.cost_per_rps_micros,
        verdict: Some(v1::CandidateVerdict { verdict: Some(verdict) }),
    }
}

fn plan_message(plan: &Plan) -> v1::Plan {
    use v1::plan_action as pa;
    let i = &plan.inputs;
    let action = match &plan.action {
        Action::Hold { reason } => pa::Action::Hold(pa::Hold { reason: reason.clone() }),
        Action::AddShadows { nodes, added_rps, short_rps } => pa::Action::AddShadows(pa::AddShadows {
            nodes: numbers(nodes),
            added_rps: *added_rps,
            short_rps: *short_rps,
        }),
        Action::Retire { nodes, reason } => {
            pa::Action::Retire(pa::Retire { nodes: numbers(nodes), reason: reason.clone() })
        }
    };
    v1::Plan {
        resource: plan.resource.clone(),
        at_ms: plan.at_ms,
        inputs: Some(v1::PlanInputs {
            forecast_mode: i.forecast_mode.name().to_string(),
            size_bytes: i.size_bytes,
            observed_rps: i.observed_rps,
            capacity_rps: i.capacity_rps,
            p_exceed: i.p_exceed,
            first_lead: i.first_lead as u32,
            threshold: i.threshold,
            forecast_peak_rps: i.forecast_peak_rps,
            sizing_quantile: i.sizing_quantile,
            wanted_capacity_rps: i.wanted_capacity_rps,
        }),
        action: Some(v1::PlanAction { action: Some(action) }),
        candidates: plan.candidates.iter().map(candidate_message).collect(),
        shadows: plan
            .shadows
            .iter()
            .map(|s| v1::ShadowVerdict {
                node_id: s.node_id.get(),
                p_exceed_without: s.p_exceed_without,
                low_now: s.low_now,
                retire: s.retire,
                reason: s.reason.clone(),
            })
            .collect(),
    }
}
