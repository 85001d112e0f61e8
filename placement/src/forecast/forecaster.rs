//! A rolling forecaster for one demand series (one resource × region).
//!
//! Every step it is told the demand just observed ([`Forecaster::observe`])
//! and asked for a forecast over the horizon ([`Forecaster::forecast`]). It
//! runs every model of [`super::model`] at every origin and keeps their
//! forecasts until the truth arrives. That gives, per model and per lead:
//!
//! - a rolling backtest (mean absolute error in log space over the recent
//!   past) that picks the model to answer with, so a model that loses to a
//!   baseline is replaced by the baseline;
//! - a rolling conformal calibration: the recent residuals at each lead,
//!   whose empirical quantiles turn the point path into predictive
//!   quantiles. augurs' own intervals are not used: on the nyc_taxi trace
//!   its 95% interval covered 76% (DESIGN-NOTES.md).
//!
//! With too little history, or before any model has enough scored
//! forecasts, the answer is *reactive*: the last observation, no interval,
//! and P(exceed) is 1 exactly when the last observation already exceeds.
//!
//! MSTL + AutoETS is refitted every `refit_every_steps`; between refits the
//! fitted path is re-anchored on the latest observation (the residual at the
//! last point, decaying by `anchor_decay` per lead) so a surge that started
//! since the fit is not forgotten.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::model::{self, ModelKind, from_log, mstl_ets_path, naive_path, seasonal_naive_path, to_log};

/// Probability levels of the predictive quantile grid: 0.005, 0.010, ...,
/// 0.995. Every interval and P(exceed) is read off this grid.
pub const QUANTILE_GRID_LEN: usize = 199;

pub fn quantile_grid_level(index: usize) -> f64 {
    assert!(index < QUANTILE_GRID_LEN);
    (index + 1) as f64 * 0.005
}

/// Limits a forecaster configuration must respect (bounds memory and the
/// time of one fit), kept with every other bound in [`crate::bounds`].
pub use crate::bounds::{CALIBRATION_WINDOW_MAX, HISTORY_STEPS_MAX, HORIZON_STEPS_MAX};
use crate::bounds::{CALIBRATION_WINDOW_MIN, HISTORY_STEPS_FLOOR, REFIT_EVERY_STEPS_MAX, STEP_S};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecasterConfig {
    /// Length of one step of the series, seconds.
    pub step_s: u64,
    /// Leads forecast at each origin.
    pub horizon_steps: usize,
    /// Seasonal periods in steps (daily and weekly by default); a period is
    /// used once two full cycles of history exist.
    pub periods_steps: Vec<usize>,
    /// The model is fitted on at most this many recent steps.
    pub history_steps_max: usize,
    /// Below this many observed steps the forecaster is reactive.
    pub history_steps_min: usize,
    pub refit_every_steps: usize,
    /// Residuals kept per model and lead for the conformal quantiles.
    pub calibration_window: usize,
    /// Residuals per lead a model needs before it may answer.
    pub calibration_min: usize,
    /// Absolute residuals (all leads pooled) in a model's backtest score.
    pub backtest_window: usize,
    /// Weight of the latest residual kept per lead when re-anchoring the
    /// MSTL path between refits (0 = no anchoring).
    pub anchor_decay: f64,
}

pub use crate::bounds::RangeError as ConfigError;
use crate::bounds::check_range as check;

impl ForecasterConfig {
    /// Defaults for a series of `step_s` steps and a horizon of
    /// `horizon_s`: daily and weekly seasons, a fitting window of two
    /// weeks (what the demand history keeps at five minutes, and the two
    /// cycles the weekly season needs), a refit every six hours, reactive
    /// for the first day. The refit dominates a forecaster's CPU: ~190 ms
    /// with both seasons on two weeks of five-minute steps (`sim
    /// demand-memory --forecasters`, docs/PLACEMENT.md); between refits the
    /// anchored path carries the forecast.
    pub fn for_step(step_s: u64, horizon_s: u64) -> ForecasterConfig {
        assert!(step_s > 0);
        let steps = |seconds: u64| (seconds / step_s).max(1) as usize;
        let day = steps(86_400);
        ForecasterConfig {
            step_s,
            horizon_steps: steps(horizon_s),
            periods_steps: vec![day, steps(7 * 86_400)],
            history_steps_max: steps(14 * 86_400).min(HISTORY_STEPS_MAX),
            history_steps_min: day,
            refit_every_steps: steps(6 * 3_600),
            // Two days of residuals, and never fewer than 500: a 95%
            // interval read off fewer points is itself noisy.
            calibration_window: (2 * day).clamp(500, CALIBRATION_WINDOW_MAX),
            calibration_min: (day / 4).clamp(20, 200),
            backtest_window: (2 * day).clamp(500, CALIBRATION_WINDOW_MAX),
            anchor_decay: 0.95,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check("step_s", self.step_s as f64, *STEP_S.start() as f64, *STEP_S.end() as f64)?;
        check("horizon_steps", self.horizon_steps as f64, 1.0, HORIZON_STEPS_MAX as f64)?;
        check(
            "history_steps_max",
            self.history_steps_max as f64,
            HISTORY_STEPS_FLOOR as f64,
            HISTORY_STEPS_MAX as f64,
        )?;
        check("history_steps_min", self.history_steps_min as f64, 1.0, self.history_steps_max as f64)?;
        check("refit_every_steps", self.refit_every_steps as f64, 1.0, REFIT_EVERY_STEPS_MAX as f64)?;
        check(
            "calibration_window",
            self.calibration_window as f64,
            CALIBRATION_WINDOW_MIN as f64,
            CALIBRATION_WINDOW_MAX as f64,
        )?;
        check("calibration_min", self.calibration_min as f64, 1.0, self.calibration_window as f64)?;
        check("backtest_window", self.backtest_window as f64, 1.0, CALIBRATION_WINDOW_MAX as f64)?;
        check("anchor_decay", self.anchor_decay, 0.0, 1.0)?;
        for period in &self.periods_steps {
            check("periods_steps[]", *period as f64, 2.0, HISTORY_STEPS_MAX as f64 / 2.0)?;
        }
        Ok(())
    }
}

/// Which answer a forecast is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForecastMode {
    Model(ModelKind),
    /// Too little history or calibration: the last observation stands in.
    Reactive,
}

impl ForecastMode {
    pub fn name(self) -> &'static str {
        match self {
            ForecastMode::Model(kind) => kind.name(),
            ForecastMode::Reactive => "reactive",
        }
    }
}

/// A forecast over the horizon, in the series' units (requests per step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemandForecast {
    pub mode: ForecastMode,
    /// Steps observed when the forecast was made; lead 1 is that step.
    pub origin_step: u64,
    /// The last observed value.
    pub observed: f64,
    /// Point forecast per lead (the median in log space).
    pub point: Vec<f64>,
    /// Per lead, the predictive quantiles at `quantile_grid_level(i)`;
    /// empty when reactive.
    pub quantiles: Vec<Vec<f64>>,
    /// Backtest mean absolute log error of each model (`ModelKind::ALL`
    /// order), `None` until it has been scored.
    pub backtest_mae_log: Vec<Option<f64>>,
}

impl DemandForecast {
    /// A reactive forecast of `horizon_steps` leads at `observed`.
    pub fn reactive_at(observed: f64, horizon_steps: usize) -> DemandForecast {
        reactive(0, observed, horizon_steps, Vec::new())
    }

    /// The same forecast in other units (e.g. reads per slot → per second).
    pub fn scaled(mut self, factor: f64) -> DemandForecast {
        assert!(factor.is_finite() && factor > 0.0);
        self.observed *= factor;
        self.point.iter_mut().for_each(|v| *v *= factor);
        self.quantiles.iter_mut().flatten().for_each(|v| *v *= factor);
        self
    }

    pub fn horizon_steps(&self) -> usize {
        self.point.len()
    }

    pub fn is_reactive(&self) -> bool {
        self.mode == ForecastMode::Reactive
    }

    /// The predictive quantile `q` at `lead` (1-based), interpolated on the
    /// grid; the point forecast when reactive.
    pub fn quantile(&self, lead: usize, q: f64) -> f64 {
        assert!((1..=self.horizon_steps()).contains(&lead), "lead {lead} outside horizon");
        let Some(grid) = self.quantiles.get(lead - 1) else {
            return self.point[lead - 1];
        };
        let position = (q / 0.005 - 1.0).clamp(0.0, (QUANTILE_GRID_LEN - 1) as f64);
        let below = position.floor() as usize;
        let above = position.ceil() as usize;
        let weight = position - below as f64;
        grid[below] * (1.0 - weight) + grid[above] * weight
    }

    /// The central interval of probability `level` at `lead`.
    pub fn interval(&self, lead: usize, level: f64) -> (f64, f64) {
        let tail = (1.0 - level) / 2.0;
        (self.quantile(lead, tail), self.quantile(lead, 1.0 - tail))
    }

    /// P(demand > capacity) at `lead`, read off the quantile grid.
    pub fn p_exceed_at(&self, lead: usize, capacity: f64) -> f64 {
        let Some(grid) = self.quantiles.get(lead - 1) else {
            return if self.observed > capacity { 1.0 } else { 0.0 };
        };
        // Number of grid quantiles at or below the capacity, interpolated
        // between neighbours.
        let below = grid.partition_point(|value| *value <= capacity);
        let cdf = if below == 0 {
            0.0
        } else if below == QUANTILE_GRID_LEN {
            1.0
        } else {
            let (low, high) = (grid[below - 1], grid[below]);
            let fraction = if high > low { (capacity - low) / (high - low) } else { 0.0 };
            quantile_grid_level(below - 1) + 0.005 * fraction
        };
        (1.0 - cdf).clamp(0.0, 1.0)
    }

    /// P(demand > capacity at some step within the horizon). Errors at
    /// neighbouring leads are strongly correlated, so the largest per-lead
    /// probability is used (a lower bound of the union); its reliability is
    /// measured by the placement evaluation.
    pub fn p_exceed(&self, capacity: f64) -> f64 {
        self.p_exceed_from(1, capacity)
    }

    /// [`Self::p_exceed`] over leads `first_lead..=horizon` only.
    pub fn p_exceed_from(&self, first_lead: usize, capacity: f64) -> f64 {
        assert!((1..=self.horizon_steps()).contains(&first_lead), "lead {first_lead} outside horizon");
        (first_lead..=self.horizon_steps()).map(|lead| self.p_exceed_at(lead, capacity)).fold(0.0, f64::max)
    }

    /// The largest quantile `q` over leads `first_lead..=horizon`: the
    /// capacity that holds the forecast peak with probability about `q`.
    pub fn peak_quantile_from(&self, first_lead: usize, q: f64) -> f64 {
        assert!((1..=self.horizon_steps()).contains(&first_lead), "lead {first_lead} outside horizon");
        (first_lead..=self.horizon_steps()).map(|lead| self.quantile(lead, q)).fold(0.0, f64::max)
    }
}

struct FittedPath {
    /// Steps observed when fitted; `path[j]` forecasts step `origin + j`.
    origin: u64,
    path: Vec<f64>,
}

struct Pending {
    origin: u64,
    paths: [Option<Vec<f64>>; 3],
}

/// Per model: residuals per lead (calibration) and pooled absolute
/// residuals (backtest), in log space. `f32` halves the largest part of a
/// forecaster's memory; a log residual needs far less than its precision.
struct Scores {
    residuals_by_lead: Vec<VecDeque<f32>>,
    abs_residuals: VecDeque<f32>,
}

impl Scores {
    fn new(config: &ForecasterConfig) -> Scores {
        Scores {
            residuals_by_lead: (0..config.horizon_steps)
                .map(|_| VecDeque::with_capacity(config.calibration_window))
                .collect(),
            abs_residuals: VecDeque::with_capacity(config.backtest_window),
        }
    }

    fn backtest_mae(&self) -> Option<f64> {
        if self.abs_residuals.is_empty() {
            return None;
        }
        Some(self.abs_residuals.iter().map(|r| f64::from(*r)).sum::<f64>() / self.abs_residuals.len() as f64)
    }

    fn calibrated(&self, calibration_min: usize) -> bool {
        self.residuals_by_lead.iter().all(|r| r.len() >= calibration_min)
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, value: T, len_max: usize) {
    if queue.len() == len_max {
        queue.pop_front();
    }
    queue.push_back(value);
}

pub struct Forecaster {
    config: ForecasterConfig,
    /// Recent observations in log space, at most `history_steps_max`.
    history_log: VecDeque<f64>,
    steps_observed: u64,
    last_observed: f64,
    fitted: Option<FittedPath>,
    fit_failures: u64,
    /// In a warm start's replay: a fit that failed (other than on too
    /// short a history) is not retried every step, which would cost a fit
    /// per replayed step.
    warming: bool,
    fit_failed_warming: bool,
    pending: VecDeque<Pending>,
    scores: [Scores; 3],
    cached: Option<(u64, DemandForecast)>,
}

impl Forecaster {
    pub fn new(config: ForecasterConfig) -> Result<Forecaster, ConfigError> {
        config.validate()?;
        Ok(Forecaster {
            history_log: VecDeque::with_capacity(config.history_steps_max),
            steps_observed: 0,
            last_observed: 0.0,
            fitted: None,
            fit_failures: 0,
            warming: false,
            fit_failed_warming: false,
            pending: VecDeque::new(),
            scores: [Scores::new(&config), Scores::new(&config), Scores::new(&config)],
            cached: None,
            config,
        })
    }

    pub fn config(&self) -> &ForecasterConfig {
        &self.config
    }

    pub fn steps_observed(&self) -> u64 {
        self.steps_observed
    }

    pub fn fit_failures(&self) -> u64 {
        self.fit_failures
    }

    /// A forecaster for a key that has history but no forecaster yet (the
    /// keys of a new meta leader, or a key admitted under the cap), built
    /// from `history` (requests per step, oldest first; at most
    /// `history_steps_max` of it is kept).
    ///
    /// Only the last `calibration_window` steps are replayed with forecasts
    /// from every origin: that is what the backtest and the calibration
    /// keep. The steps before them are history for the fit only. The replay
    /// fits MSTL + AutoETS once, at its start, instead of every
    /// `refit_every_steps`, and the first [`Self::observe`] after it refits
    /// on the whole window. So a warm start with at least a day before the
    /// replay costs two fits whatever the history's length (a failed fit
    /// is not retried during the replay), and the weekly season is there
    /// at once when two weeks of history are. A younger key replays at the
    /// usual refit cadence, on its short history. The replay's residuals come from a fit up to
    /// `calibration_window` steps old (re-anchored every step); new steps
    /// replace them.
    pub fn warm_start(config: ForecasterConfig, history: &[f64]) -> Result<Forecaster, ConfigError> {
        let mut forecaster = Forecaster::new(config)?;
        let kept = &history[history.len().saturating_sub(forecaster.config.history_steps_max)..];
        let replayed = kept.len().min(forecaster.config.calibration_window);
        let (prefix, replay) = kept.split_at(kept.len() - replayed);
        for requests in prefix {
            forecaster.record(*requests);
        }
        // One fit for the replay needs a prefix worth fitting (a day);
        // a young key replays at the usual refit cadence, which is cheap
        // on its short history.
        let refit_every_steps = if prefix.len() >= forecaster.config.history_steps_min {
            replay.len()
        } else {
            forecaster.config.refit_every_steps
        };
        forecaster.warming = true;
        for requests in replay {
            forecaster.observe_refitting_every(*requests, refit_every_steps);
        }
        forecaster.warming = false;
        forecaster.fit_failed_warming = false;
        assert!(forecaster.pending.len() <= forecaster.config.horizon_steps, "pending forecasts outlive the horizon");
        Ok(forecaster)
    }

    /// Records the demand of the step that just ended and scores every
    /// pending forecast that predicted it.
    pub fn observe(&mut self, requests: f64) {
        self.observe_refitting_every(requests, self.config.refit_every_steps);
    }

    /// Appends an observation to the history, without forecasts.
    fn record(&mut self, requests: f64) {
        assert!(requests.is_finite() && requests >= 0.0, "demand must be finite and >= 0");
        self.steps_observed += 1;
        push_bounded(&mut self.history_log, to_log(requests), self.config.history_steps_max);
        self.last_observed = requests;
        self.cached = None;
    }

    fn observe_refitting_every(&mut self, requests: f64, refit_every_steps: usize) {
        assert!(requests.is_finite() && requests >= 0.0, "demand must be finite and >= 0");
        let value_log = to_log(requests);
        let index = self.steps_observed;
        let horizon = self.config.horizon_steps;
        for pending in &self.pending {
            debug_assert!(pending.origin <= index);
            let lead = (index - pending.origin) as usize + 1;
            if lead > horizon {
                continue;
            }
            for (kind_index, path) in pending.paths.iter().enumerate() {
                let Some(path) = path else { continue };
                let residual = value_log - path[lead - 1];
                let scores = &mut self.scores[kind_index];
                push_bounded(&mut scores.residuals_by_lead[lead - 1], residual as f32, self.config.calibration_window);
                push_bounded(&mut scores.abs_residuals, residual.abs() as f32, self.config.backtest_window);
            }
        }
        self.record(requests);
        self.pending.retain(|p| p.origin + horizon as u64 > self.steps_observed);
        // Every model forecasts from every origin, whether or not the
        // caller asks: that is what keeps the backtest and calibration
        // current.
        let paths = self.model_paths(refit_every_steps);
        self.pending.push_back(Pending { origin: self.steps_observed, paths });
        assert!(self.pending.len() <= horizon, "pending forecasts outlive the horizon");
    }

    /// The forecast for the next `horizon_steps` steps (cheap: the model
    /// paths were computed by `observe`). Calling it twice without an
    /// observation in between returns the same forecast.
    pub fn forecast(&mut self) -> DemandForecast {
        if let Some((origin, forecast)) = &self.cached
            && *origin == self.steps_observed
        {
            return forecast.clone();
        }
        let forecast = self.forecast_uncached();
        self.cached = Some((self.steps_observed, forecast.clone()));
        forecast
    }

    fn forecast_uncached(&mut self) -> DemandForecast {
        let horizon = self.config.horizon_steps;
        let observed = self.last_observed;
        let backtest_mae_log: Vec<Option<f64>> = self.scores.iter().map(Scores::backtest_mae).collect();
        let Some(latest) = self.pending.back().filter(|p| p.origin == self.steps_observed) else {
            return reactive(self.steps_observed, observed, horizon, backtest_mae_log);
        };
        let paths = &latest.paths;
        if self.history_log.len() < self.config.history_steps_min {
            return reactive(self.steps_observed, observed, horizon, backtest_mae_log);
        }
        // The backtest: the calibrated model with the lowest recent error.
        let chosen = ModelKind::ALL
            .iter()
            .copied()
            .filter(|kind| paths[kind.index()].is_some())
            .filter(|kind| self.scores[kind.index()].calibrated(self.config.calibration_min))
            .filter_map(|kind| backtest_mae_log[kind.index()].map(|mae| (kind, mae)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let Some((kind, _)) = chosen else {
            return reactive(self.steps_observed, observed, horizon, backtest_mae_log);
        };
        let path = paths[kind.index()].as_ref().expect("filtered on is_some");
        let scores = &self.scores[kind.index()];
        let mut quantiles = Vec::with_capacity(horizon);
        for (lead_index, residuals) in scores.residuals_by_lead.iter().enumerate() {
            let mut sorted: Vec<f64> = residuals.iter().map(|r| f64::from(*r)).collect();
            sorted.sort_by(f64::total_cmp);
            let grid: Vec<f64> = (0..QUANTILE_GRID_LEN)
                .map(|i| from_log(path[lead_index] + empirical_quantile(&sorted, quantile_grid_level(i))))
                .collect();
            quantiles.push(grid);
        }
        DemandForecast {
            mode: ForecastMode::Model(kind),
            origin_step: self.steps_observed,
            observed,
            point: path.iter().map(|v| from_log(*v)).collect(),
            quantiles,
            backtest_mae_log,
        }
    }

    /// Every model's path (log space) from the current origin.
    fn model_paths(&mut self, refit_every_steps: usize) -> [Option<Vec<f64>>; 3] {
        let horizon = self.config.horizon_steps;
        let history: &[f64] = self.history_log.make_contiguous();
        let seasonal = seasonal_naive_path(history, &self.config.periods_steps, horizon);
        let naive = naive_path(history, horizon);
        let mstl = self.mstl_path(refit_every_steps);
        [mstl, Some(seasonal), Some(naive)]
    }

    fn mstl_path(&mut self, refit_every_steps: usize) -> Option<Vec<f64>> {
        let horizon = self.config.horizon_steps;
        let now = self.steps_observed;
        let refit_due = match &self.fitted {
            None => true,
            // Also when the fitted path runs out (a warm start's path is
            // cut to its replay).
            Some(fitted) => {
                let offset = now - fitted.origin;
                offset >= refit_every_steps as u64 || offset as usize + horizon > fitted.path.len()
            }
        };
        if refit_due && self.warming && self.fit_failed_warming {
            return None;
        }
        if refit_due {
            let history: &[f64] = self.history_log.make_contiguous();
            let steps = refit_every_steps + horizon;
            match mstl_ets_path(history, &self.config.periods_steps, steps) {
                Ok(path) => self.fitted = Some(FittedPath { origin: now, path }),
                Err(error) => {
                    if !matches!(error, model::ModelError::TooShort { .. }) {
                        self.fit_failures += 1;
                        self.fit_failed_warming = self.warming;
                        tracing::debug!(%error, "MSTL/AutoETS fit failed; baselines answer");
                    }
                    self.fitted = None;
                    return None;
                }
            }
        }
        let fitted = self.fitted.as_ref()?;
        let offset = (now - fitted.origin) as usize;
        // Residual of the fitted path at the last observed step.
        let anchor =
            if offset > 0 { self.history_log.back().copied().unwrap_or(0.0) - fitted.path[offset - 1] } else { 0.0 };
        let mut weight = 1.0;
        Some(
            (0..horizon)
                .map(|lead_index| {
                    weight *= self.config.anchor_decay;
                    fitted.path[offset + lead_index] + anchor * weight
                })
                .collect(),
        )
    }
}

fn reactive(origin_step: u64, observed: f64, horizon: usize, backtest_mae_log: Vec<Option<f64>>) -> DemandForecast {
    DemandForecast {
        mode: ForecastMode::Reactive,
        origin_step,
        observed,
        point: vec![observed; horizon],
        quantiles: Vec::new(),
        backtest_mae_log,
    }
}

/// The `q` empirical quantile of sorted values (linear interpolation).
pub fn empirical_quantile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of no values");
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let weight = position - below as f64;
    sorted[below] * (1.0 - weight) + sorted[above] * weight
}
