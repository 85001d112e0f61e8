//! The placement part of the public API: the planner's dry run, demand
//! history and forecasts, and the placement settings. The meta leader holds
//! the demand history, so every call is served there; another node answers
//! UNAVAILABLE naming the leader (the client library follows it).

use shadowstore_proto::v1;
use tonic::Status;

use super::status;
use crate::meta::membership::propose_meta;
use crate::meta::state::{MetaCommand, MetaResponse};
use crate::node::NodeCtx;
use crate::placement::service;
use shadowstore_placement::bounds::{PRICE_MICROS_MAX, PRIORITY_ABS_MAX, REGION_DISTANCE_MAX};
use shadowstore_placement::demand::history::FIVE_MIN_SLOTS;
use shadowstore_placement::{PlacementSetting, PlacementSettings, PriceKind, Prices};

/// History slots `DemandShow` returns by default (one day).
pub const DEMAND_SHOW_SLOTS_DEFAULT: u32 = 288;

fn require_meta_leader(ctx: &NodeCtx, what: &str) -> Result<(), Status> {
    let meta = ctx.meta_group().ok_or_else(status::not_ready)?;
    if meta.is_leader() { Ok(()) } else { Err(status::redirect(what, ctx.leader_addr(&meta).as_deref())) }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, Status> {
    serde_json::to_string(value).map_err(|e| Status::internal(format!("serialising: {e}")))
}

pub async fn plan(ctx: &NodeCtx, req: v1::PlacementPlanRequest) -> Result<v1::PlacementPlanResponse, Status> {
    let only = if req.resource.is_empty() {
        None
    } else {
        super::validate::resource_name(&req.resource)?;
        Some(req.resource.as_str())
    };
    require_meta_leader(ctx, "placement plan")?;
    if let Some(name) = only
        && ctx.with_meta(|m| m.resources.contains_key(name)) != Some(true)
    {
        return Err(Status::not_found(format!("resource {name:?} does not exist")));
    }
    let plans = service::plan_all(ctx, only, ctx.clock.now_ms());
    let committed = ctx
        .with_meta(|m| {
            m.placement
                .records
                .iter()
                .filter(|(r, _)| only.is_none_or(|o| o == r.as_str()))
                .map(|(r, p)| (r.clone(), p.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
        .unwrap_or_default();
    let answer = serde_json::json!({ "plans": plans, "committed": committed });
    Ok(v1::PlacementPlanResponse { plans_json: json(&answer)? })
}

pub async fn demand_show(ctx: &NodeCtx, req: v1::DemandShowRequest) -> Result<v1::DemandShowResponse, Status> {
    super::validate::resource_name(&req.resource)?;
    let slots = match req.history_slots {
        0 => DEMAND_SHOW_SLOTS_DEFAULT,
        n if n as usize <= FIVE_MIN_SLOTS => n,
        n => return Err(Status::invalid_argument(format!("history_slots {n} exceeds {FIVE_MIN_SLOTS}"))),
    };
    require_meta_leader(ctx, "demand show")?;
    if ctx.with_meta(|m| m.resources.contains_key(&req.resource)) != Some(true) {
        return Err(Status::not_found(format!("resource {:?} does not exist", req.resource)));
    }
    let view = service::demand_view(ctx, &req.resource, slots as usize, ctx.clock.now_ms());
    Ok(v1::DemandShowResponse { demand_json: json(&view)? })
}

#[derive(serde::Serialize)]
struct ConfigView {
    settings: PlacementSettings,
    threshold: f64,
    prices: Vec<(u64, Prices)>,
    priorities: std::collections::BTreeMap<String, i32>,
    /// (region, region, distance) for every pair not 1 apart.
    region_distances: Vec<(String, String, u32)>,
}

fn config_view(ctx: &NodeCtx) -> Result<v1::PlacementConfigResponse, Status> {
    let view = ctx
        .with_meta(|m| ConfigView {
            settings: m.placement.settings.clone(),
            threshold: m.placement.settings.threshold(),
            prices: m.nodes.values().map(|n| (n.node_id, m.prices_of(n))).collect(),
            priorities: m.placement.priorities.clone(),
            region_distances: m
                .placement
                .region_distances
                .pairs
                .iter()
                .map(|((a, b), d)| (a.clone(), b.clone(), *d))
                .collect(),
        })
        .ok_or_else(status::not_ready)?;
    Ok(v1::PlacementConfigResponse { config_json: json(&view)? })
}

pub async fn get_config(ctx: &NodeCtx) -> Result<v1::PlacementConfigResponse, Status> {
    let meta = ctx.meta_group().ok_or_else(status::not_ready)?;
    ctx.linearize(&meta, "placement config").await?;
    config_view(ctx)
}

fn parse_u64(key: &str, value: &str, min: u64, max: u64) -> Result<u64, Status> {
    match value.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(Status::invalid_argument(format!("{key} takes a whole number in {min}..={max}, got {value:?}"))),
    }
}

pub async fn set_config(
    ctx: &NodeCtx,
    req: v1::SetPlacementConfigRequest,
) -> Result<v1::PlacementConfigResponse, Status> {
    let now_ms = ctx.clock.now_ms();
    ctx.with_meta(|_| ()).ok_or_else(status::not_ready)?;
    let key = req.key.as_str();
    let cmd = if key == "priority" {
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
        MetaCommand::SetResourcePriority { now_ms, resource: req.resource.clone(), priority }
    } else if let Some(pair) = key.strip_prefix("region_distance.") {
        let Some((a, b)) = pair.split_once('.') else {
            return Err(Status::invalid_argument(format!("{key}: name two regions, as region_distance.REGION.REGION")));
        };
        super::validate::region(a)?;
        super::validate::region(b)?;
        let max = REGION_DISTANCE_MAX as u64;
        let distance = parse_u64(key, &req.value, 1, max)? as u32;
        if a == b {
            return Err(Status::invalid_argument(format!("{key}: a region is 0 from itself")));
        }
        MetaCommand::SetRegionDistance { now_ms, a: a.to_string(), b: b.to_string(), distance }
    } else if let Some(part) = key.strip_prefix("prices.") {
        if req.node_id == 0 {
            return Err(Status::invalid_argument(format!("{key} needs the node whose prices change (node_id)")));
        }
        let mut prices = ctx
            .with_meta(|m| m.nodes.get(&req.node_id).map(|n| m.prices_of(n)))
            .flatten()
            .ok_or_else(|| Status::not_found(format!("node {} is not a member", req.node_id)))?;
        let value = parse_u64(key, &req.value, 0, PRICE_MICROS_MAX)?;
        let Some(kind) = PriceKind::from_name(part) else {
            let known: Vec<&str> = PriceKind::ALL.iter().map(|k| k.name()).collect();
            return Err(Status::invalid_argument(format!("unknown price {part:?}; known: {}", known.join(", "))));
        };
        prices.set(kind, value).map_err(Status::invalid_argument)?;
        MetaCommand::SetNodePrices { now_ms, node_id: req.node_id, prices }
    } else {
        let Some(setting) = PlacementSetting::parse(key, &req.value) else {
            return Err(Status::invalid_argument(format!(
                "unknown setting {key:?}; known: {}, priority, {}, region_distance.REGION.REGION",
                PlacementSetting::KEYS.join(", "),
                PriceKind::ALL.iter().map(|k| format!("prices.{}", k.name())).collect::<Vec<_>>().join(", ")
            )));
        };
        let setting = setting.map_err(|e| Status::invalid_argument(e.0))?;
        MetaCommand::SetPlacementSetting { now_ms, setting }
    };
    match propose_meta(ctx, cmd).await? {
        MetaResponse::Updated => config_view(ctx),
        MetaResponse::NotFound if key == "priority" => {
            Err(Status::not_found(format!("resource {:?} does not exist", req.resource)))
        }
        MetaResponse::NotFound => Err(Status::not_found(format!("node {} is not a member", req.node_id))),
        MetaResponse::Rejected { reason } => Err(Status::invalid_argument(format!("{key}: {reason}"))),
        other => Err(Status::internal(format!("meta group answered {other:?}"))),
    }
}
