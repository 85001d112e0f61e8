//! The fluid capacity model: one resource's demand (requests/s, constant
//! within a trace step) against the read capacity of its replicas, minute
//! by minute, under a placement policy.
//!
//! - The resource has `primaries` voters, each serving
//!   `replica_capacity_rps`; shadows add the capacity of their host.
//! - A shadow added at minute m serves from minute m + warm-up lag; it
//!   counts as a replica (and costs) from m. Reads are routed by ready
//!   capacity only, so no weight ever lands on a shadow that is not ready.
//! - A minute violates the SLO when demand exceeds ready capacity; the
//!   excess is unserved.
//!
//! Policies decide at trace-step boundaries (the planning interval equals
//! the trace's step), except the oracle, which knows the future and acts
//! every minute. Shadows are placed by the planner's host choice in every
//! policy, so costs are comparable.

use std::collections::VecDeque;

use serde::Serialize;
use shadowstore_base::ids::NodeId;
use shadowstore_placement::cost::CostLedger;
use shadowstore_placement::forecast::DemandForecast;
use shadowstore_placement::planner::{
    Action, HostView, PlannerConfig, RegionDistances, ResourceDemand, ShadowState, choose_hosts, plan,
};

/// Everything about the simulated cluster that is not the policy.
#[derive(Clone, Debug)]
pub struct ClusterModel {
    pub replica_capacity_rps: f64,
    pub primaries: usize,
    pub hosts: Vec<HostView>,
    pub regions: RegionDistances,
    pub demand_region: String,
    pub resource_size_bytes: u64,
    pub planner: PlannerConfig,
    /// The reactive rule (alone and in predictive + reactive) runs every
    /// minute on the last minute's demand, as the cluster's planner does,
    /// instead of at step boundaries on the last step's. Demand is constant
    /// within a step here, so the last minute tells the rest of the step:
    /// an optimistic reading of reaction within a step.
    pub react_every_minute: bool,
}

/// A trace prepared for simulation: demand per step in requests/s and the
/// forecast made at each step boundary.
pub struct Prepared {
    pub name: String,
    pub step_min: u64,
    pub rps: Vec<f64>,
    /// `forecasts[b]` was made after observing steps `0..b` and covers
    /// steps `b..b + horizon`.
    pub forecasts: Vec<DemandForecast>,
}

impl Prepared {
    pub fn minutes(&self) -> u64 {
        self.rps.len() as u64 * self.step_min
    }

    fn demand_at(&self, minute: u64) -> f64 {
        self.rps[(minute / self.step_min) as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum Policy {
    /// Enough shadows for the tuning part's peak, all the time.
    StaticPeak,
    /// The Kubernetes HPA rule on observed demand.
    Reactive { target_utilisation: f64 },
    /// The planner on the forecast.
    Predictive { knobs: PlanKnobs },
    /// The larger of the predictive and reactive decisions.
    PredictiveReactive { knobs: PlanKnobs, target_utilisation: f64 },
    /// Perfect foresight: each shadow added exactly one warm-up lag before
    /// demand needs it, retired when it is no longer needed.
    Oracle,
}

impl Policy {
    pub fn name(&self) -> &'static str {
        match self {
            Policy::StaticPeak => "static-peak",
            Policy::Reactive { .. } => "reactive",
            Policy::Predictive { .. } => "predictive",
            Policy::PredictiveReactive { .. } => "predictive+reactive",
            Policy::Oracle => "oracle",
        }
    }
}

/// The planner settings the evaluation tunes (the rest are defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PlanKnobs {
    pub threshold: f64,
    pub sizing_quantile: f64,
    pub hysteresis_min: u64,
}

impl PlanKnobs {
    pub fn apply(&self, config: &PlannerConfig) -> PlannerConfig {
        PlannerConfig {
            threshold: self.threshold,
            sizing_quantile: self.sizing_quantile,
            hysteresis_ms: self.hysteresis_min * 60_000,
            retire_p_max: config.retire_p_max.min(self.threshold),
            // The predictive policies act on the forecast only; reacting
            // to observed load is the reactive policy's job.
            act_on_observed_overload: false,
            ..config.clone()
        }
    }
}

/// HPA: tolerance around the target ratio, and scale-down stabilisation.
pub const HPA_TOLERANCE: f64 = 0.1;
pub const HPA_SCALE_DOWN_WINDOW_MIN: u64 = 5;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub minutes: u64,
    pub slo_violation_minutes: u64,
    pub unserved_requests: f64,
    pub replica_minutes: f64,
    pub shadow_minutes: f64,
    pub cost_micros: f64,
    pub shadows_added: u64,
    pub shadows_never_needed: u64,
    pub weight_over_ready_events: u64,
}

impl Metrics {
    /// Adds another run's metrics (totals over traces).
    pub fn add(&mut self, other: &Metrics) {
        self.minutes += other.minutes;
        self.slo_violation_minutes += other.slo_violation_minutes;
        self.unserved_requests += other.unserved_requests;
        self.replica_minutes += other.replica_minutes;
        self.shadow_minutes += other.shadow_minutes;
        self.cost_micros += other.cost_micros;
        self.shadows_added += other.shadows_added;
        self.shadows_never_needed += other.shadows_never_needed;
        self.weight_over_ready_events += other.weight_over_ready_events;
    }
}

/// The reliability of P(exceed) ≥ 0.8 decisions and its calibration bins.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Reliability {
    /// (bin lower bound, forecasts in bin, of which exceeded).
    pub bins: Vec<(f64, u64, u64)>,
}

pub const RELIABILITY_BINS: [f64; 5] = [0.0, 0.2, 0.5, 0.8, 0.95];

impl Reliability {
    fn record(&mut self, p: f64, exceeded: bool) {
        if self.bins.is_empty() {
            self.bins = RELIABILITY_BINS.iter().map(|lo| (*lo, 0, 0)).collect();
        }
        let bin = RELIABILITY_BINS.iter().rposition(|lo| p >= *lo).unwrap_or(0);
        self.bins[bin].1 += 1;
        self.bins[bin].2 += u64::from(exceeded);
    }

    /// Of forecasts with P ≥ `p_min`, the fraction that exceeded.
    pub fn hit_rate(&self, p_min: f64) -> Option<(f64, u64)> {
        let (n, hit) =
            self.bins.iter().filter(|(lo, _, _)| *lo >= p_min).fold((0, 0), |(n, h), (_, bn, bh)| (n + bn, h + bh));
        (n > 0).then(|| (hit as f64 / n as f64, n))
    }
}

struct Shadow {
    node_id: NodeId,
    capacity_rps: f64,
    added_min: u64,
    ready_min: u64,
    low_since_ms: Option<u64>,
    needed: bool,
}

pub struct RunResult {
    pub metrics: Metrics,
    /// Ready capacity (requests/s) at the end of each step in the window.
    pub capacity_by_step: Vec<f64>,
    pub reliability: Reliability,
}

struct Sim<'a> {
    cluster: &'a ClusterModel,
    trace: &'a Prepared,
    lag_min: u64,
    window: std::ops::Range<u64>,
    shadows: Vec<Shadow>,
    ledger: CostLedger,
    metrics: Metrics,
    /// HPA recommendations: (minute, desired replicas).
    recommendations: VecDeque<(u64, usize)>,
}

impl<'a> Sim<'a> {
    fn in_window(&self, minute: u64) -> bool {
        self.window.contains(&minute)
    }

    fn replicas(&self) -> usize {
        self.cluster.primaries + self.shadows.len()
    }

    fn total_capacity_rps(&self) -> f64 {
        self.cluster.primaries as f64 * self.cluster.replica_capacity_rps
            + self.shadows.iter().map(|s| s.capacity_rps).sum::<f64>()
    }

    fn ready_capacity_rps(&self, minute: u64) -> f64 {
        self.cluster.primaries as f64 * self.cluster.replica_capacity_rps
            + self.shadows.iter().filter(|s| s.ready_min <= minute).map(|s| s.capacity_rps).sum::<f64>()
    }

    fn resource_view(&self, forecast: DemandForecast, observed_rps: f64) -> ResourceDemand {
        let primaries = (1..=self.cluster.primaries as u64).map(NodeId::new).collect::<Vec<_>>();
        ResourceDemand {
            resource: self.trace.name.clone(),
            priority: 0,
            size_bytes: self.cluster.resource_size_bytes,
            region: self.cluster.demand_region.clone(),
            replica_nodes: primaries.into_iter().chain(self.shadows.iter().map(|s| s.node_id)).collect(),
            capacity_rps: self.total_capacity_rps(),
            observed_rps,
            forecast,
            forecast_step_ms: self.trace.step_min * 60_000,
            shadows: self
                .shadows
                .iter()
                .map(|s| ShadowState {
                    node_id: s.node_id,
                    capacity_rps: s.capacity_rps,
                    added_at_ms: s.added_min * 60_000,
                    low_since_ms: s.low_since_ms,
                    pinned: false,
                })
                .collect(),
        }
    }

    fn host(&self, node_id: NodeId) -> &HostView {
        self.cluster.hosts.iter().find(|h| h.node_id == node_id).expect("shadow hosts come from the pool")
    }

    fn add(&mut self, nodes: &[NodeId], minute: u64) {
        for node_id in nodes {
            let host = self.host(*node_id);
            let capacity_rps = host.spare_rps().min(self.cluster.replica_capacity_rps);
            if self.in_window(minute) {
                let prices = host.prices.clone();
                self.ledger.charge_transfer(&self.trace.name, *node_id, &prices, self.cluster.resource_size_bytes);
                self.metrics.shadows_added += 1;
            }
            self.shadows.push(Shadow {
                node_id: *node_id,
                capacity_rps,
                added_min: minute,
                ready_min: minute + self.lag_min,
                low_since_ms: None,
                needed: false,
            });
        }
    }

    /// Adds `count` shadows chosen by the planner's host rule.
    fn add_count(&mut self, count: usize, minute: u64) {
        if count == 0 {
            return;
        }
        // Host choice does not read the forecast.
        let view = self.resource_view(DemandForecast::reactive_at(0.0, 1), 0.0);
        let need = count as f64 * self.cluster.replica_capacity_rps;
        let choice =
            choose_hosts(&self.cluster.planner, &view, &self.cluster.hosts, &self.cluster.regions, need, count);
        self.add(&choice.chosen, minute);
    }

    fn retire(&mut self, node_id: NodeId, minute: u64) {
        let index = self.shadows.iter().position(|s| s.node_id == node_id).expect("retiring a live shadow");
        let shadow = self.shadows.remove(index);
        if self.in_window(minute) && shadow.added_min >= self.window.start && !shadow.needed {
            self.metrics.shadows_never_needed += 1;
        }
    }

    /// Retires the most recently added shadows until `replicas` remain.
    fn retire_to(&mut self, replicas: usize, minute: u64) {
        while self.replicas() > replicas.max(self.cluster.primaries) {
            let newest = self.shadows.last().expect("more replicas than primaries").node_id;
            self.retire(newest, minute);
        }
    }

    fn shadows_max(&self) -> usize {
        self.cluster.planner.shadows_per_resource_max
    }

    /// The HPA rule; returns the desired replica count.
    fn hpa_desired(&mut self, observed_rps: f64, target: f64, minute: u64) -> usize {
        let current = self.replicas();
        let ratio = observed_rps / (current as f64 * self.cluster.replica_capacity_rps * target);
        let mut desired =
            if (ratio - 1.0).abs() <= HPA_TOLERANCE { current } else { (current as f64 * ratio).ceil() as usize };
        desired = desired.clamp(self.cluster.primaries, self.cluster.primaries + self.shadows_max());
        self.recommendations.push_back((minute, desired));
        while self.recommendations.front().is_some_and(|(m, _)| *m + HPA_SCALE_DOWN_WINDOW_MIN < minute) {
            self.recommendations.pop_front();
        }
        if desired < current {
            // Scale down only to the highest recommendation in the window.
            desired = self.recommendations.iter().map(|(_, d)| *d).max().unwrap_or(desired).min(current);
        }
        desired
    }

    /// The planner's decision at a step boundary; returns the retirements
    /// it proposed (applied by the caller).
    fn predictive(&mut self, step: usize, knobs: PlanKnobs, minute: u64) -> Vec<NodeId> {
        let observed = if step == 0 { 0.0 } else { self.trace.rps[step - 1] };
        let config = PlannerConfig { shadow_ready_ms: self.lag_min * 60_000, ..knobs.apply(&self.cluster.planner) };
        let view = self.resource_view(self.trace.forecasts[step].clone(), observed);
        let now_ms = minute * 60_000;
        let decision = plan(&config, &view, &self.cluster.hosts, &self.cluster.regions, now_ms);
        for verdict in &decision.shadows {
            if let Some(shadow) = self.shadows.iter_mut().find(|s| s.node_id == verdict.node_id) {
                shadow.low_since_ms = if verdict.low_now { shadow.low_since_ms.or(Some(now_ms)) } else { None };
            }
        }
        match decision.action {
            Action::AddShadows { nodes, .. } => {
                self.add(&nodes, minute);
                Vec::new()
            }
            Action::Retire { nodes, .. } => nodes,
            Action::Hold { .. } => Vec::new(),
        }
    }

    /// Serves one minute and accounts for it.
    fn serve(&mut self, minute: u64) {
        let demand = self.trace.demand_at(minute);
        let base = self.cluster.primaries as f64 * self.cluster.replica_capacity_rps;
        // A ready shadow is needed when demand exceeds what the primaries
        // and the shadows added before it give.
        let mut below = base;
        for shadow in self.shadows.iter_mut().filter(|s| s.ready_min <= minute) {
            if demand > below {
                shadow.needed = true;
            }
            below += shadow.capacity_rps;
        }
        if !self.in_window(minute) {
            return;
        }
        let ready = self.ready_capacity_rps(minute);
        let served = demand.min(ready);
        self.metrics.minutes += 1;
        if demand > ready * (1.0 + 1e-9) {
            self.metrics.slo_violation_minutes += 1;
            self.metrics.unserved_requests += (demand - ready) * 60.0;
        }
        self.metrics.replica_minutes += self.replicas() as f64;
        self.metrics.shadow_minutes += self.shadows.len() as f64;
        // Routing by ready capacity: each ready replica gets its share.
        let shadow_ready: f64 = self.shadows.iter().filter(|s| s.ready_min <= minute).map(|s| s.capacity_rps).sum();
        let routed_to_shadows = served * shadow_ready / ready;
        if routed_to_shadows > shadow_ready * (1.0 + 1e-9) && ready > demand {
            self.metrics.weight_over_ready_events += 1;
        }
        for index in 0..self.shadows.len() {
            let shadow = &self.shadows[index];
            let requests = if shadow.ready_min <= minute { served * shadow.capacity_rps / ready * 60.0 } else { 0.0 };
            let (node_id, prices) = (shadow.node_id, self.host(shadow.node_id).prices.clone());
            self.ledger.charge_interval(
                &self.trace.name,
                node_id,
                &prices,
                self.cluster.resource_size_bytes,
                60.0,
                requests,
            );
        }
    }
}

/// Runs `policy` over the whole trace and accounts for the minutes in
/// `window`. `static_peak_rps` sizes the static policy (from the tuning
/// part only).
pub fn simulate(
    cluster: &ClusterModel,
    trace: &Prepared,
    policy: Policy,
    lag_min: u64,
    window: std::ops::Range<u64>,
    static_peak_rps: f64,
) -> RunResult {
    assert!(window.end <= trace.minutes(), "window beyond the trace");
    let mut sim = Sim {
        cluster,
        trace,
        lag_min,
        window: window.clone(),
        shadows: Vec::new(),
        ledger: CostLedger::default(),
        metrics: Metrics::default(),
        recommendations: VecDeque::new(),
    };
    let mut capacity_by_step = Vec::new();
    let mut reliability = Reliability::default();
    let cap = cluster.replica_capacity_rps;
    let needed_replicas = |rps: f64| {
        ((rps / cap - 1e-9).ceil() as usize)
            .clamp(cluster.primaries, cluster.primaries + cluster.planner.shadows_per_resource_max)
    };
    for minute in 0..window.end {
        let boundary = minute % trace.step_min == 0;
        let step = (minute / trace.step_min) as usize;
        // When the reactive rule runs, and the demand it reacts to.
        let react = if cluster.react_every_minute { minute > 0 } else { boundary && step > 0 };
        let reacted_rps = if minute > 0 { trace.demand_at(minute - 1) } else { 0.0 };
        match policy {
            Policy::StaticPeak if minute == 0 => {
                let replicas = ((static_peak_rps / (cap * cluster.planner.target_utilisation)).ceil() as usize)
                    .clamp(cluster.primaries, cluster.primaries + sim.shadows_max());
                sim.add_count(replicas - cluster.primaries, minute);
            }
            Policy::StaticPeak => {}
            Policy::Reactive { target_utilisation } if react => {
                let desired = sim.hpa_desired(reacted_rps, target_utilisation, minute);
                let current = sim.replicas();
                if desired > current {
                    sim.add_count(desired - current, minute);
                } else {
                    sim.retire_to(desired, minute);
                }
            }
            Policy::Reactive { .. } => {}
            Policy::Predictive { knobs } if boundary => {
                if sim.in_window(minute) {
                    let horizon = trace.forecasts[step].horizon_steps();
                    if step + horizon <= trace.rps.len() {
                        let capacity = sim.total_capacity_rps();
                        let p = trace.forecasts[step].p_exceed(capacity);
                        let peak = trace.rps[step..step + horizon].iter().copied().fold(0.0, f64::max);
                        reliability.record(p, peak > capacity);
                    }
                }
                for node in sim.predictive(step, knobs, minute) {
                    sim.retire(node, minute);
                }
            }
            Policy::Predictive { .. } => {}
            Policy::PredictiveReactive { knobs, target_utilisation } if boundary || react => {
                let retire = if boundary { sim.predictive(step, knobs, minute) } else { Vec::new() };
                if react {
                    let desired = sim.hpa_desired(reacted_rps, target_utilisation, minute);
                    let current = sim.replicas();
                    if desired > current {
                        sim.add_count(desired - current, minute);
                    } else {
                        // Retire what the planner proposes, down to what the
                        // reactive rule still wants.
                        for node in retire.into_iter().take(current - desired) {
                            sim.retire(node, minute);
                        }
                    }
                }
            }
            Policy::PredictiveReactive { .. } => {}
            Policy::Oracle => {
                let last = (minute + lag_min).min(trace.minutes() - 1);
                let desired =
                    (minute..=last).map(|m| needed_replicas(trace.demand_at(m))).max().unwrap_or(cluster.primaries);
                let current = sim.replicas();
                if desired > current {
                    sim.add_count(desired - current, minute);
                } else {
                    sim.retire_to(desired, minute);
                }
            }
        }
        sim.serve(minute);
        if sim.in_window(minute) && (minute + 1) % trace.step_min == 0 {
            capacity_by_step.push(sim.ready_capacity_rps(minute));
        }
    }
    // Shadows still live at the end that were never needed count too.
    let end = window.end;
    let never =
        sim.shadows.iter().filter(|s| s.added_min >= window.start && s.added_min < end && !s.needed).count() as u64;
    sim.metrics.shadows_never_needed += never;
    sim.metrics.cost_micros = sim.ledger.total_micros();
    RunResult { metrics: sim.metrics, capacity_by_step, reliability }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement_eval::cluster_model;

    /// Five-minute steps at 2,000 rps (within the primaries' 3,000) with
    /// one step at 5,000 rps.
    fn one_burst() -> Prepared {
        let mut rps = vec![2_000.0; 12];
        rps[6] = 5_000.0;
        let forecasts = rps.iter().map(|r| DemandForecast::reactive_at(*r, 6)).collect();
        Prepared { name: "burst".to_string(), step_min: 5, rps, forecasts }
    }

    fn reactive_run(react_every_minute: bool) -> Metrics {
        let cluster = ClusterModel { react_every_minute, ..cluster_model() };
        let trace = one_burst();
        let minutes = trace.minutes();
        simulate(&cluster, &trace, Policy::Reactive { target_utilisation: 1.0 }, 2, 0..minutes, 0.0).metrics
    }

    #[test]
    fn reacting_every_minute_catches_a_one_step_burst_within_the_step() {
        // At step boundaries: the burst step is over before anything
        // reacts, so its five minutes violate and the shadows added after
        // it are never needed.
        let boundaries = reactive_run(false);
        assert_eq!(boundaries.slo_violation_minutes, 5);
        assert!(boundaries.shadows_added >= 2, "{boundaries:?}");
        assert_eq!(boundaries.shadows_never_needed, boundaries.shadows_added);
        // Every minute: seen after its first minute, served after the
        // two-minute warm-up, so three minutes violate and the shadows serve.
        let minutes = reactive_run(true);
        assert_eq!(minutes.slo_violation_minutes, 3);
        assert_eq!(minutes.shadows_never_needed, 0, "{minutes:?}");
        assert_eq!(minutes.shadows_added, boundaries.shadows_added);
    }
}
