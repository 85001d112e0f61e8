//! `sim placement-eval`: the forecaster and planner of the node crate (the
//! same code, called as a library) run over real demand traces, against
//! reactive scaling and a perfect-foresight oracle.
//!
//! Per trace (one resource each):
//! 1. Scale: one replica serves half the median demand of the tuning part
//!    (`REPLICA_CAPACITY_RPS` requests/s), so the three primaries carry
//!    1.5× the median.
//! 2. Forecast: a [`Forecaster`] observes the trace step by step and
//!    forecasts at every step boundary (causal: only the past is seen).
//! 3. Tune each policy's knobs on the first 60% ([`TUNE_FRACTION`]): the
//!    fewest SLO-violation minutes within a replica-minute budget of
//!    `TUNE_BUDGET_VS_ORACLE` × the oracle's on that part. Nothing is
//!    tuned on the scored 40%.
//! 4. Score every policy on the last 40%, for each warm-up lag.
//!
//! [`fluid`] is the capacity model, [`report`] the table, JSON and SVG.

pub mod fluid;
pub mod report;
pub mod trace;

use shadowstore_base::ids::NodeId;
use std::path::PathBuf;

use serde::Serialize;
use shadowstore_placement::Prices;
use shadowstore_placement::bounds::SHADOWS_PER_RESOURCE_MAX;
use shadowstore_placement::forecast::forecaster::ForecasterConfig;
use shadowstore_placement::forecast::{ForecastMode, Forecaster};
use shadowstore_placement::planner::{HostView, PlannerConfig, RegionDistances};

use fluid::{ClusterModel, Metrics, PlanKnobs, Policy, Prepared, Reliability, simulate};
pub use trace::{Trace, load};

pub const REPLICA_CAPACITY_RPS: f64 = 1_000.0;
pub const PRIMARIES: usize = 3;
pub const TUNE_FRACTION: f64 = 0.6;
/// Tuning budget: replica-minutes within this factor of the oracle's on
/// the tuning part (see `better`).
pub const TUNE_BUDGET_VS_ORACLE: f64 = 1.2;
pub const HORIZON_S: u64 = 1_800;
/// Warm-up lags the policies are scored at: the measured time to ready of
/// a real shadow, then 2 and 10 minutes. Measured (docs/BENCHMARKS.md,
/// `shadowctl bench shadow`): 2.1 s for 100 MiB and 19.3 s for 1 GiB of
/// erasure-coded variants on loopback, so the evaluation's 2 GB resource
/// is ready within about 40 s: one step of the one-minute evaluation.
pub const MEASURED_READY_LAG_MIN: u64 = 1;
pub const WARM_UP_LAGS_MIN: [u64; 3] = [MEASURED_READY_LAG_MIN, 2, 10];
pub const RESOURCE_SIZE_BYTES: u64 = 2_000_000_000;

pub const REACTIVE_TARGETS: [f64; 5] = [0.5, 0.6, 0.7, 0.8, 0.9];
pub const THRESHOLDS: [f64; 5] = [0.1, 0.2, 0.3, 0.5, 0.8];
pub const SIZING_QUANTILES: [f64; 3] = [0.8, 0.9, 0.95];
pub const HYSTERESIS_MIN: [u64; 2] = [10, 30];

/// Every combination of the planner knobs tuned.
pub fn knob_grid() -> Vec<PlanKnobs> {
    let mut grid = Vec::new();
    for threshold in THRESHOLDS {
        for sizing_quantile in SIZING_QUANTILES {
            for hysteresis_min in HYSTERESIS_MIN {
                grid.push(PlanKnobs { threshold, sizing_quantile, hysteresis_min });
            }
        }
    }
    grid
}

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub traces: Vec<PathBuf>,
    /// Keep only the first `max_steps` steps of each trace (smoke tests).
    pub max_steps: Option<usize>,
    pub plots_dir: Option<PathBuf>,
    pub jobs: usize,
    /// Also score every candidate setting on the scored part, to report
    /// the lowest never-needed share any of them reaches (hindsight; see
    /// [`Frontier`]). Doubles the run time.
    pub frontier: bool,
    /// See [`ClusterModel::react_every_minute`].
    pub react_every_minute: bool,
}

/// With hindsight: of every candidate setting of the reactive, predictive
/// and predictive + reactive policies, scored on the scored part, the one
/// with the lowest share of never-needed shadows (ties: fewer violation
/// minutes). A bound on what tuning could reach on that metric; it is
/// never used to choose a setting.
#[derive(Clone, Debug, Serialize)]
pub struct Frontier {
    pub policy: Policy,
    pub never_needed_share: f64,
    pub scored: Metrics,
    pub candidates: usize,
    /// Every candidate's metrics on the scored part (for the joint
    /// frontier over traces in [`report::summarise`]; not in the JSON).
    #[serde(skip)]
    pub all: Vec<Metrics>,
}

/// The simulated cluster: 3 primaries in `east`, and 64 shadow hosts in
/// three regions with different prices (cheaper farther away).
pub fn cluster_model() -> ClusterModel {
    let mut hosts = Vec::new();
    let regions = [("east", 24, 100u64), ("west", 24, 60), ("eu", 16, 40)];
    let mut node_id = 10;
    for (region, count, storage_price) in regions {
        for i in 0..count {
            hosts.push(HostView {
                node_id: NodeId::new(node_id),
                region: region.to_string(),
                healthy: true,
                read_capacity_rps: REPLICA_CAPACITY_RPS,
                load_rps: 0.0,
                disk_free_bytes: 500_000_000_000,
                prices: Prices {
                    // Prices differ within a region too, so the choice matters.
                    storage_gb_hour_micros: storage_price + (i as u64 * 7) % 40,
                    transfer_gb_micros: 20_000,
                    million_requests_micros: 400_000 + (i as u64 * 13_000) % 100_000,
                },
            });
            node_id += 1;
        }
    }
    let mut distances = RegionDistances::default();
    distances.pairs.insert(("east".to_string(), "west".to_string()), 1);
    distances.pairs.insert(("east".to_string(), "eu".to_string()), 2);
    distances.pairs.insert(("eu".to_string(), "west".to_string()), 3);
    ClusterModel {
        replica_capacity_rps: REPLICA_CAPACITY_RPS,
        primaries: PRIMARIES,
        hosts,
        regions: distances,
        demand_region: "east".to_string(),
        resource_size_bytes: RESOURCE_SIZE_BYTES,
        planner: PlannerConfig { shadows_per_resource_max: SHADOWS_PER_RESOURCE_MAX, ..PlannerConfig::default() },
        react_every_minute: false,
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ForecastMetrics {
    /// MAE of the chosen model's point forecasts over all leads of the
    /// scored part, over the in-sample MAE of the daily seasonal naive on
    /// the tuning part (the MASE scale).
    pub mase: f64,
    /// The same for seasonal naive forecasts from the same origins.
    pub mase_seasonal_naive: f64,
    /// Fraction of (origin, lead) in the scored part inside the 95%
    /// interval (non-reactive forecasts).
    pub coverage_95: f64,
    pub covered_points: u64,
    /// Share of scored origins answered by each mode.
    pub modes: Vec<(String, f64)>,
    pub fit_failures: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PolicyResult {
    pub policy: Policy,
    /// Its metrics on the tuning part.
    pub tuned: Metrics,
    pub scored: Metrics,
}

#[derive(Clone, Debug, Serialize)]
pub struct LagResult {
    pub lag_min: u64,
    pub policies: Vec<PolicyResult>,
    /// Reliability of P(exceed) for the tuned predictive policy.
    pub reliability: Reliability,
    pub frontier: Option<Frontier>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TraceResult {
    pub trace: String,
    pub step_s: u64,
    pub steps: usize,
    /// Steps no row reached (gaps), carried forward from the last value.
    pub missing_steps: usize,
    pub scored_from_step: usize,
    pub rps_per_trace_unit: f64,
    pub forecast: ForecastMetrics,
    pub lags: Vec<LagResult>,
}

pub fn prepare(trace: &Trace, max_steps: Option<usize>) -> (Prepared, f64, u64) {
    let values = &trace.values[..max_steps.unwrap_or(usize::MAX).min(trace.values.len())];
    let tune_steps = (values.len() as f64 * TUNE_FRACTION) as usize;
    let mut tune: Vec<f64> = values[..tune_steps].to_vec();
    tune.sort_by(f64::total_cmp);
    let median = tune[tune.len() / 2].max(1e-9);
    let scale = REPLICA_CAPACITY_RPS / (median / 2.0);
    let rps: Vec<f64> = values.iter().map(|v| v * scale).collect();
    let config = ForecasterConfig::for_step(trace.step_s, HORIZON_S);
    let mut forecaster = Forecaster::new(config).expect("the default forecaster config is valid");
    let mut forecasts = Vec::with_capacity(rps.len());
    for step in 0..rps.len() {
        if step > 0 {
            // Observe the step that just ended, then forecast from here.
            forecaster.observe(rps[step - 1]);
        }
        forecasts.push(forecaster.forecast());
    }
    let step_min = (trace.step_s / 60).max(1);
    (Prepared { name: trace.name.clone(), step_min, rps, forecasts }, scale, forecaster.fit_failures())
}

fn forecast_metrics(prepared: &Prepared, period: usize, scored_from: usize, fit_failures: u64) -> ForecastMetrics {
    let rps = &prepared.rps;
    let scale_mae = {
        let diffs: Vec<f64> = (period..scored_from).map(|t| (rps[t] - rps[t - period]).abs()).collect();
        (diffs.iter().sum::<f64>() / diffs.len().max(1) as f64).max(1e-9)
    };
    let (mut model_err, mut naive_err, mut points) = (0.0, 0.0, 0u64);
    let (mut covered, mut interval_points) = (0u64, 0u64);
    let mut modes: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut origins = 0u64;
    for origin in scored_from..rps.len() {
        let forecast = &prepared.forecasts[origin];
        let horizon = forecast.horizon_steps();
        if origin + horizon > rps.len() {
            break;
        }
        origins += 1;
        *modes.entry(forecast.mode.name()).or_default() += 1;
        for lead in 1..=horizon {
            let truth = rps[origin + lead - 1];
            model_err += (forecast.point[lead - 1] - truth).abs();
            let back = period * lead.div_ceil(period);
            naive_err += (rps[origin + lead - 1 - back] - truth).abs();
            points += 1;
            if forecast.mode != ForecastMode::Reactive {
                let (lo, hi) = forecast.interval(lead, 0.95);
                covered += u64::from(lo <= truth && truth <= hi);
                interval_points += 1;
            }
        }
    }
    let points = points.max(1) as f64;
    ForecastMetrics {
        mase: model_err / points / scale_mae,
        mase_seasonal_naive: naive_err / points / scale_mae,
        coverage_95: covered as f64 / interval_points.max(1) as f64,
        covered_points: interval_points,
        modes: modes.into_iter().map(|(m, n)| (m.to_string(), n as f64 / origins.max(1) as f64)).collect(),
        fit_failures,
    }
}

/// The tuning rule, the same for every policy: among the settings whose
/// replica-minutes on the tuning part stay within `TUNE_BUDGET_VS_ORACLE`
/// × the oracle's on that part, the fewest SLO-violation minutes (ties:
/// fewer replica-minutes). With no setting in budget, the cheapest.
fn better(a: &Metrics, b: &Metrics, budget_replica_minutes: f64) -> bool {
    let (a_in, b_in) = (a.replica_minutes <= budget_replica_minutes, b.replica_minutes <= budget_replica_minutes);
    match (a_in, b_in) {
        (true, false) => true,
        (false, true) => false,
        (true, true) => (a.slo_violation_minutes, a.replica_minutes) < (b.slo_violation_minutes, b.replica_minutes),
        (false, false) => a.replica_minutes < b.replica_minutes,
    }
}

/// One trace at one warm-up lag: what every policy run shares.
struct LagRun<'a> {
    cluster: &'a ClusterModel,
    prepared: &'a Prepared,
    lag_min: u64,
    tune_end: u64,
    static_peak_rps: f64,
}

impl LagRun<'_> {
    fn tuning(&self, policy: Policy) -> fluid::RunResult {
        simulate(self.cluster, self.prepared, policy, self.lag_min, 0..self.tune_end, self.static_peak_rps)
    }

    fn scoring(&self, policy: Policy) -> fluid::RunResult {
        let window = self.tune_end..self.prepared.minutes();
        simulate(self.cluster, self.prepared, policy, self.lag_min, window, self.static_peak_rps)
    }

    /// Tunes over `candidates` on the tuning window, then scores the winner.
    fn tune_and_score(&self, candidates: &[Policy], budget_replica_minutes: f64) -> (PolicyResult, fluid::RunResult) {
        let mut best: Option<(Policy, Metrics)> = None;
        for policy in candidates {
            let tuned = self.tuning(*policy).metrics;
            if best.as_ref().is_none_or(|(_, b)| better(&tuned, b, budget_replica_minutes)) {
                best = Some((*policy, tuned));
            }
        }
        let (policy, tuned) = best.expect("at least one candidate");
        let scored = self.scoring(policy);
        (PolicyResult { policy, tuned, scored: scored.metrics.clone() }, scored)
    }

    /// The hindsight frontier over `candidates` (see [`Frontier`]).
    fn frontier(&self, candidates: &[Policy]) -> Frontier {
        let share = |m: &Metrics| m.shadows_never_needed as f64 / m.shadows_added.max(1) as f64;
        let all: Vec<(Policy, Metrics)> =
            candidates.iter().map(|policy| (*policy, self.scoring(*policy).metrics)).collect();
        let (policy, scored) = all
            .iter()
            .min_by(|a, b| {
                share(&a.1).total_cmp(&share(&b.1)).then(a.1.slo_violation_minutes.cmp(&b.1.slo_violation_minutes))
            })
            .cloned()
            .expect("at least one candidate");
        Frontier {
            policy,
            never_needed_share: share(&scored),
            scored,
            candidates: candidates.len(),
            all: all.into_iter().map(|(_, metrics)| metrics).collect(),
        }
    }
}

pub fn evaluate_trace(trace: &Trace, options: &EvalOptions) -> TraceResult {
    let cluster = ClusterModel { react_every_minute: options.react_every_minute, ..cluster_model() };
    let (prepared, scale, fit_failures) = prepare(trace, options.max_steps);
    let steps = prepared.rps.len();
    let scored_from = (steps as f64 * TUNE_FRACTION) as usize;
    let tune_end = scored_from as u64 * prepared.step_min;
    let static_peak_rps = prepared.rps[..scored_from].iter().copied().fold(0.0, f64::max);
    let period = (86_400 / trace.step_s) as usize;
    let forecast = forecast_metrics(&prepared, period, scored_from, fit_failures);

    let reactive: Vec<Policy> = REACTIVE_TARGETS.iter().map(|t| Policy::Reactive { target_utilisation: *t }).collect();
    let predictive: Vec<Policy> = knob_grid().into_iter().map(|knobs| Policy::Predictive { knobs }).collect();
    let combined: Vec<Policy> = knob_grid()
        .into_iter()
        .flat_map(|knobs| {
            REACTIVE_TARGETS.iter().map(move |t| Policy::PredictiveReactive { knobs, target_utilisation: *t })
        })
        .collect();
    let mut lags = Vec::new();
    let mut capacities = Vec::new();
    for lag_min in WARM_UP_LAGS_MIN {
        let run = LagRun { cluster: &cluster, prepared: &prepared, lag_min, tune_end, static_peak_rps };
        let budget = TUNE_BUDGET_VS_ORACLE * run.tuning(Policy::Oracle).metrics.replica_minutes;
        let mut policies = Vec::new();
        let mut reliability = Reliability::default();
        let mut lag_capacities = Vec::new();
        for candidates in
            [vec![Policy::StaticPeak], reactive.clone(), predictive.clone(), combined.clone(), vec![Policy::Oracle]]
        {
            let (result, scored) = run.tune_and_score(&candidates, budget);
            if matches!(result.policy, Policy::Predictive { .. }) {
                reliability = scored.reliability.clone();
            }
            lag_capacities.push((result.policy.name(), scored.capacity_by_step));
            policies.push(result);
        }
        capacities.push((lag_min, lag_capacities));
        let frontier = options.frontier.then(|| {
            let all: Vec<Policy> = reactive.iter().chain(&predictive).chain(&combined).copied().collect();
            run.frontier(&all)
        });
        lags.push(LagResult { lag_min, policies, reliability, frontier });
    }
    if let Some(dir) = &options.plots_dir {
        for (lag_min, lag_capacities) in &capacities {
            let path = dir.join(format!("{}-lag{}.svg", trace.name, lag_min));
            let svg = report::svg_plot(&prepared, scored_from, *lag_min, lag_capacities);
            if let Err(error) = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, svg)) {
                eprintln!("could not write {}: {error}", path.display());
            }
        }
    }
    TraceResult {
        trace: trace.name.clone(),
        step_s: trace.step_s,
        steps,
        missing_steps: trace.missing_steps(),
        scored_from_step: scored_from,
        rps_per_trace_unit: scale,
        forecast,
        lags,
    }
}

/// Evaluates every trace, `jobs` at a time, in the order given.
pub fn evaluate(traces: &[Trace], options: &EvalOptions) -> Vec<TraceResult> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<TraceResult>>> = Mutex::new(vec![None; traces.len()]);
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(trace) = traces.get(index) else { break };
                    let result = evaluate_trace(trace, options);
                    results.lock().expect("results lock")[index] = Some(result);
                }
            });
        }
    });
    results.into_inner().expect("results lock").into_iter().map(|r| r.expect("every trace evaluated")).collect()
}
