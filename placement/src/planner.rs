//! The placement planner: given one resource's demand forecast, its
//! replicas and the cluster's hosts, decide whether to add shadow replicas
//! (and where), retire one, or hold, and say why.
//!
//! The planner is a pure function ([`plan`]) so that the meta leader's
//! planning loop, `shadowctl placement plan` (a dry run) and the placement
//! evaluation (`sim placement-eval`) run exactly the same decision code.
//! What persists between plans (when a shadow was added, since when its
//! demand has been low) is the caller's state, passed in [`ShadowState`].
//!
//! Rules, in order:
//! 1. P(demand > capacity of the current replicas within the horizon) ≥
//!    the threshold (default 0.8, lowered by `priority_step` per unit of
//!    resource priority, raised for negative priority) → add shadows until
//!    capacity × target utilisation covers the forecast peak at
//!    `sizing_quantile`.
//!    Observed demand already above capacity counts as P(exceed) = 1
//!    (`act_on_observed_overload`): a forecast never vetoes a present
//!    overload.
//! 2. Candidate hosts: healthy, not already a replica, spare read capacity
//!    (capacity − load already committed to them), disk for a full copy.
//!    The nearest region to the demand first; within a region ring the
//!    cheapest per request/s contributed (cost model in [`super::cost`]).
//! 3. Otherwise shadows retire, newest first, when P(exceed) without them
//!    stayed below `retire_p_max` for `hysteresis_ms`, or when their TTL
//!    expired; never while observed demand still needs them. Several may
//!    retire in one plan: each is tested with the newer ones removed.

use serde::{Deserialize, Serialize};

use shadowstore_base::ids::NodeId;

use crate::bounds::{
    EXPECTED_SHADOW_S, HYSTERESIS_MS, PRIORITY_ABS_MAX, PRIORITY_STEP, SHADOW_READY_MS, SHADOWS_PER_RESOURCE_MAX,
    SIZING_QUANTILE, TARGET_UTILISATION, THRESHOLD_PERMILLE, TTL_MS,
};
use crate::cost::{CostBreakdown, Prices, expected_cost};
use crate::forecast::{DemandForecast, ForecastMode};
pub use crate::regions::RegionDistances;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannerConfig {
    /// P(exceed) at or above which shadows are added (priority 0).
    pub threshold: f64,
    /// Threshold change per unit of priority (higher priority acts sooner).
    pub priority_step: f64,
    /// The forecast quantile of the horizon's peak that capacity is sized to.
    pub sizing_quantile: f64,
    /// Fraction of read capacity planned to be used (headroom for noise).
    pub target_utilisation: f64,
    /// P(exceed) without a shadow below which its demand counts as low.
    pub retire_p_max: f64,
    /// How long demand must stay low before a shadow retires.
    pub hysteresis_ms: u64,
    /// A shadow retires after this long unless observed demand needs it.
    pub ttl_ms: u64,
    /// Expected life of a new shadow, for its storage cost.
    pub expected_shadow_s: u64,
    /// Expected time from adding a shadow until it serves (copy and
    /// warm-up). P(exceed) and sizing look only at forecast leads that end
    /// after it: a shadow cannot serve demand that comes sooner, so a
    /// forecast of that is no reason to add one (observed overload and
    /// admission cover it). Retirement still looks at the whole horizon,
    /// because a retired shadow takes this long to come back.
    pub shadow_ready_ms: u64,
    pub shadows_per_resource_max: usize,
    /// Treat observed demand above capacity as P(exceed) = 1 whatever the
    /// forecast says (the cluster's default; the evaluation's pure
    /// "predictive" policy turns it off).
    pub act_on_observed_overload: bool,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            threshold: 0.8,
            priority_step: 0.05,
            sizing_quantile: 0.95,
            target_utilisation: 0.9,
            retire_p_max: 0.2,
            hysteresis_ms: 30 * 60 * 1000,
            ttl_ms: 6 * 3600 * 1000,
            expected_shadow_s: 2 * 3600,
            shadow_ready_ms: 60_000,
            shadows_per_resource_max: 16,
            act_on_observed_overload: true,
        }
    }
}

pub use crate::bounds::RangeError as PlannerConfigError;
use crate::bounds::check_range as check;

/// A bound of whole numbers as the `(min, max)` that `check` takes.
fn span_u64(r: &std::ops::RangeInclusive<u64>) -> (f64, f64) {
    (*r.start() as f64, *r.end() as f64)
}

fn threshold_span() -> (f64, f64) {
    (*THRESHOLD_PERMILLE.start() as f64 / 1000.0, *THRESHOLD_PERMILLE.end() as f64 / 1000.0)
}

impl PlannerConfig {
    pub fn validate(&self) -> Result<(), PlannerConfigError> {
        let (t_min, t_max) = threshold_span();
        check("threshold", self.threshold, t_min, t_max)?;
        check("priority_step", self.priority_step, *PRIORITY_STEP.start(), *PRIORITY_STEP.end())?;
        check("sizing_quantile", self.sizing_quantile, *SIZING_QUANTILE.start(), *SIZING_QUANTILE.end())?;
        check("target_utilisation", self.target_utilisation, *TARGET_UTILISATION.start(), *TARGET_UTILISATION.end())?;
        check("retire_p_max", self.retire_p_max, 0.0, self.threshold)?;
        let (lo, hi) = span_u64(&HYSTERESIS_MS);
        check("hysteresis_ms", self.hysteresis_ms as f64, lo, hi)?;
        let (lo, hi) = span_u64(&TTL_MS);
        check("ttl_ms", self.ttl_ms as f64, lo, hi)?;
        let (lo, hi) = span_u64(&EXPECTED_SHADOW_S);
        check("expected_shadow_s", self.expected_shadow_s as f64, lo, hi)?;
        let (lo, hi) = span_u64(&SHADOW_READY_MS);
        check("shadow_ready_ms", self.shadow_ready_ms as f64, lo, hi)?;
        check("shadows_per_resource_max", self.shadows_per_resource_max as f64, 0.0, SHADOWS_PER_RESOURCE_MAX as f64)?;
        Ok(())
    }

    /// The threshold for a resource of `priority` (-5..=5).
    pub fn effective_threshold(&self, priority: i32) -> f64 {
        let priority = priority.clamp(-PRIORITY_ABS_MAX, PRIORITY_ABS_MAX);
        let (t_min, t_max) = threshold_span();
        (self.threshold - self.priority_step * priority as f64).clamp(t_min, t_max)
    }
}

/// A host as the planner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub node_id: NodeId,
    pub region: String,
    pub healthy: bool,
    pub read_capacity_rps: f64,
    /// Read load already expected on the host (its replicas' demand).
    pub load_rps: f64,
    pub disk_free_bytes: u64,
    pub prices: Prices,
}

impl HostView {
    pub fn spare_rps(&self) -> f64 {
        (self.read_capacity_rps - self.load_rps).max(0.0)
    }
}

/// A shadow of the resource and the planner's memory of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShadowState {
    pub node_id: NodeId,
    /// Read capacity the shadow gives the resource.
    pub capacity_rps: f64,
    pub added_at_ms: u64,
    /// Since when the demand without it has been low (set from
    /// [`ShadowVerdict::low_now`] of earlier plans).
    pub low_since_ms: Option<u64>,
    /// Pinned by an operator: never retired by the planner.
    pub pinned: bool,
}

/// One resource's demand, replicas and capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceDemand {
    pub resource: String,
    pub priority: i32,
    pub size_bytes: u64,
    /// The region the demand comes from.
    pub region: String,
    /// Every node holding a replica (voters, shadows, syncing shadows).
    pub replica_nodes: Vec<NodeId>,
    /// Read capacity the current replicas give the resource, shadows included.
    pub capacity_rps: f64,
    pub observed_rps: f64,
    /// The forecast, in requests per second.
    pub forecast: DemandForecast,
    /// Length of one forecast step (lead), milliseconds.
    pub forecast_step_ms: u64,
    pub shadows: Vec<ShadowState>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    Chosen {
        contributes_rps: f64,
    },
    /// Capable, but the need was met by nearer or cheaper hosts.
    NotNeeded,
    Unhealthy,
    AlreadyReplica,
    NoSpareCapacity {
        spare_rps: f64,
    },
    NotEnoughDisk {
        free_bytes: u64,
        needed_bytes: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub node_id: NodeId,
    pub region: String,
    pub region_distance: u32,
    pub spare_rps: f64,
    pub disk_free_bytes: u64,
    /// Expected cost if chosen (capable hosts only).
    pub cost: Option<CostBreakdown>,
    /// Expected cost per request/s contributed: the ranking key.
    pub cost_per_rps_micros: Option<f64>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanInputs {
    pub forecast_mode: ForecastMode,
    /// Size of a full copy (storage and transfer cost).
    pub size_bytes: u64,
    pub observed_rps: f64,
    pub capacity_rps: f64,
    pub p_exceed: f64,
    /// The first forecast lead P(exceed) and sizing looked at (leads that
    /// end before a new shadow could serve are skipped).
    pub first_lead: usize,
    pub threshold: f64,
    pub forecast_peak_rps: f64,
    pub sizing_quantile: f64,
    /// Capacity the sizing asks for: peak at the sizing quantile ÷ target
    /// utilisation.
    pub wanted_capacity_rps: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    Hold {
        reason: String,
    },
    AddShadows {
        nodes: Vec<NodeId>,
        added_rps: f64,
        short_rps: f64,
    },
    /// Retire these shadows (newest first); each verdict says why.
    Retire {
        nodes: Vec<NodeId>,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShadowVerdict {
    pub node_id: NodeId,
    pub p_exceed_without: f64,
    /// Whether demand without this shadow is low now (the caller keeps
    /// `low_since_ms` from this).
    pub low_now: bool,
    /// Retired by this plan.
    pub retire: bool,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub resource: String,
    pub at_ms: u64,
    pub inputs: PlanInputs,
    pub action: Action,
    pub candidates: Vec<Candidate>,
    pub shadows: Vec<ShadowVerdict>,
}

/// Hosts chosen to add `need_rps` of capacity, with every host's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostChoice {
    pub chosen: Vec<NodeId>,
    pub added_rps: f64,
    /// Capacity still missing when no capable host was left.
    pub short_rps: f64,
    pub candidates: Vec<Candidate>,
}

/// Chooses hosts for `need_rps` more capacity for `resource`, at most
/// `count_max` of them. Also used by the evaluation's reactive policies so
/// that every policy places shadows by the same rule.
pub fn choose_hosts(
    config: &PlannerConfig,
    resource: &ResourceDemand,
    hosts: &[HostView],
    regions: &RegionDistances,
    need_rps: f64,
    count_max: usize,
) -> HostChoice {
    assert!(need_rps.is_finite(), "need must be finite");
    let mut candidates: Vec<Candidate> = hosts
        .iter()
        .map(|host| {
            let distance = regions.distance(&host.region, &resource.region);
            let verdict = if !host.healthy {
                Verdict::Unhealthy
            } else if resource.replica_nodes.contains(&host.node_id) {
                Verdict::AlreadyReplica
            } else if host.spare_rps() <= 0.0 {
                Verdict::NoSpareCapacity { spare_rps: host.spare_rps() }
            } else if host.disk_free_bytes < resource.size_bytes {
                Verdict::NotEnoughDisk { free_bytes: host.disk_free_bytes, needed_bytes: resource.size_bytes }
            } else {
                Verdict::NotNeeded
            };
            let (cost, cost_per_rps_micros) = if verdict == Verdict::NotNeeded {
                let contributes = host.spare_rps();
                let requests = contributes * config.target_utilisation * config.expected_shadow_s as f64;
                let cost = expected_cost(&host.prices, resource.size_bytes, config.expected_shadow_s as f64, requests);
                let per_rps = cost.total_micros / contributes;
                (Some(cost), Some(per_rps))
            } else {
                (None, None)
            };
            Candidate {
                node_id: host.node_id,
                region: host.region.clone(),
                region_distance: distance,
                spare_rps: host.spare_rps(),
                disk_free_bytes: host.disk_free_bytes,
                cost,
                cost_per_rps_micros,
                verdict,
            }
        })
        .collect();
    // Nearest region first, then cheapest per rps, then node id.
    candidates.sort_by(|a, b| {
        let rank = |c: &Candidate| (c.cost_per_rps_micros.is_none(), c.region_distance);
        rank(a)
            .cmp(&rank(b))
            .then(a.cost_per_rps_micros.unwrap_or(0.0).total_cmp(&b.cost_per_rps_micros.unwrap_or(0.0)))
            .then(a.node_id.cmp(&b.node_id))
    });
    let mut chosen = Vec::new();
    let mut added_rps = 0.0;
    for candidate in candidates.iter_mut() {
        if added_rps >= need_rps || chosen.len() >= count_max {
            break;
        }
        if candidate.verdict != Verdict::NotNeeded {
            continue;
        }
        let contributes_rps = candidate.spare_rps;
        added_rps += contributes_rps;
        chosen.push(candidate.node_id);
        candidate.verdict = Verdict::Chosen { contributes_rps };
    }
    HostChoice { chosen, added_rps, short_rps: (need_rps - added_rps).max(0.0), candidates }
}

/// Plans one resource at `now_ms`.
pub fn plan(
    config: &PlannerConfig,
    resource: &ResourceDemand,
    hosts: &[HostView],
    regions: &RegionDistances,
    now_ms: u64,
) -> Plan {
    let forecast = &resource.forecast;
    let threshold = config.effective_threshold(resource.priority);
    let overloaded = config.act_on_observed_overload && resource.observed_rps > resource.capacity_rps;
    let first_lead = first_useful_lead(config, resource);
    let p_exceed = if overloaded { 1.0 } else { forecast.p_exceed_from(first_lead, resource.capacity_rps) };
    let forecast_peak_rps = forecast.peak_quantile_from(first_lead, config.sizing_quantile).max(resource.observed_rps);
    let wanted_capacity_rps = forecast_peak_rps / config.target_utilisation;
    let inputs = PlanInputs {
        forecast_mode: forecast.mode,
        size_bytes: resource.size_bytes,
        observed_rps: resource.observed_rps,
        capacity_rps: resource.capacity_rps,
        p_exceed,
        first_lead,
        threshold,
        forecast_peak_rps,
        sizing_quantile: config.sizing_quantile,
        wanted_capacity_rps,
    };
    let shadows = shadow_verdicts(config, resource, now_ms);
    let mut candidates = Vec::new();
    let action = if p_exceed >= threshold {
        let room = config.shadows_per_resource_max.saturating_sub(resource.shadows.len());
        let need_rps = wanted_capacity_rps - resource.capacity_rps;
        if room == 0 {
            Action::Hold {
                reason: format!(
                    "P(exceed) {p_exceed:.2} ≥ {threshold:.2} but the resource already has the maximum of {} shadows",
                    config.shadows_per_resource_max
                ),
            }
        } else if need_rps <= 0.0 {
            Action::Hold {
                reason: format!(
                    "P(exceed) {p_exceed:.2} ≥ {threshold:.2} but capacity {:.0} rps already covers the q{} peak",
                    resource.capacity_rps, config.sizing_quantile
                ),
            }
        } else {
            let choice = choose_hosts(config, resource, hosts, regions, need_rps, room);
            candidates = choice.candidates;
            if choice.chosen.is_empty() {
                Action::Hold {
                    reason: format!(
                        "P(exceed) {p_exceed:.2} ≥ {threshold:.2}: {need_rps:.0} rps needed but no host can take a shadow"
                    ),
                }
            } else {
                Action::AddShadows { nodes: choice.chosen, added_rps: choice.added_rps, short_rps: choice.short_rps }
            }
        }
    } else if shadows.first().is_some_and(|s| s.retire) {
        // Retirements form a prefix of the newest-first order: each one's
        // test already assumed the ones before it gone.
        let nodes: Vec<NodeId> = shadows.iter().take_while(|s| s.retire).map(|s| s.node_id).collect();
        let reason = format!("{} shadow(s) no longer needed: {}", nodes.len(), shadows[0].reason);
        Action::Retire { nodes, reason }
    } else {
        Action::Hold { reason: format!("P(exceed) {p_exceed:.2} < {threshold:.2}") }
    };
    Plan { resource: resource.resource.clone(), at_ms: now_ms, inputs, action, candidates, shadows }
}

/// The first lead (1-based) that ends after a shadow added now would be
/// ready: lead `l` covers `[(l-1)·step, l·step)` from now. At most the
/// last lead, so the horizon's end is always looked at.
pub fn first_useful_lead(config: &PlannerConfig, resource: &ResourceDemand) -> usize {
    assert!(resource.forecast_step_ms > 0, "forecast step must be positive");
    let horizon = resource.forecast.horizon_steps().max(1);
    ((config.shadow_ready_ms / resource.forecast_step_ms) as usize + 1).min(horizon)
}

/// Verdicts in retirement order: newest shadow first (last in, first
/// out), pinned shadows last and never retired. Shadow k's test removes
/// shadows 1..=k together, so several can retire in one plan without
/// leaving the resource short.
fn shadow_verdicts(config: &PlannerConfig, resource: &ResourceDemand, now_ms: u64) -> Vec<ShadowVerdict> {
    let mut order: Vec<&ShadowState> = resource.shadows.iter().collect();
    order.sort_by(|a, b| {
        a.pinned.cmp(&b.pinned).then(b.added_at_ms.cmp(&a.added_at_ms)).then(b.node_id.cmp(&a.node_id))
    });
    let mut without_rps = resource.capacity_rps;
    let mut prefix_retires = true;
    order
        .into_iter()
        .map(|shadow| {
            without_rps = (without_rps - shadow.capacity_rps).max(0.0);
            let p_exceed_without = resource.forecast.p_exceed(without_rps);
            let observed_needs_it = resource.observed_rps > without_rps * config.target_utilisation;
            let low_now = p_exceed_without < config.retire_p_max && !observed_needs_it;
            let low_for_ms = if low_now { shadow.low_since_ms.map(|since| now_ms.saturating_sub(since)) } else { None };
            let age_ms = now_ms.saturating_sub(shadow.added_at_ms);
            let (retire, reason) = if shadow.pinned {
                (false, "keep: pinned by an operator".to_string())
            } else if observed_needs_it {
                (
                    false,
                    format!(
                        "keep: observed {:.0} rps exceeds {:.0} rps without it (and newer shadows)",
                        resource.observed_rps,
                        without_rps * config.target_utilisation
                    ),
                )
            } else if low_for_ms.is_some_and(|ms| ms >= config.hysteresis_ms) {
                (
                    true,
                    format!(
                        "retire: P(exceed) without it {p_exceed_without:.2} < {:.2} for {} s",
                        config.retire_p_max,
                        low_for_ms.unwrap_or(0) / 1000
                    ),
                )
            } else if age_ms >= config.ttl_ms {
                (
                    true,
                    format!("retire: TTL of {} s expired and observed demand does not need it", config.ttl_ms / 1000),
                )
            } else if low_now {
                (
                    false,
                    format!(
                        "keep: demand low for {} s of the {} s hysteresis",
                        low_for_ms.unwrap_or(0) / 1000,
                        config.hysteresis_ms / 1000
                    ),
                )
            } else {
                (false, format!("keep: P(exceed) without it {p_exceed_without:.2} ≥ {:.2}", config.retire_p_max))
            };
            // Only a prefix retires: a shadow whose newer siblings stay
            // was tested as if they were gone.
            prefix_retires &= retire;
            let retire = prefix_retires;
            ShadowVerdict { node_id: shadow.node_id, p_exceed_without, low_now, retire, reason }
        })
        .collect()
}

#[cfg(test)]
mod tests;
