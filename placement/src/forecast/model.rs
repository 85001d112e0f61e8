//! The forecasting models, as pure functions over a demand series in log
//! space (`ln(1 + requests)`): MSTL seasonal decomposition with an AutoETS
//! trend (augurs), and the two baselines every forecast is judged against,
//! seasonal naive and naive.
//!
//! The log transform is applied to every series: read demand is bursty and
//! multiplicative (a surge doubles demand rather than adding a constant),
//! and errors in log space are comparable between a quiet and a busy
//! resource. [`super::forecaster`] turns these paths into calibrated
//! intervals.

use augurs_core::{Fit, Predict};
use augurs_ets::AutoETS;
use augurs_ets::trend::AutoETSTrendModel;
use augurs_mstl::MSTLModel;
use serde::{Deserialize, Serialize};

/// The models a forecaster keeps score of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// MSTL (one seasonal component per period) + AutoETS on the trend.
    MstlEts,
    /// The value one season (the shortest period) earlier.
    SeasonalNaive,
    /// The last observed value.
    Naive,
}

impl ModelKind {
    pub const ALL: [ModelKind; 3] = [ModelKind::MstlEts, ModelKind::SeasonalNaive, ModelKind::Naive];

    pub fn index(self) -> usize {
        match self {
            ModelKind::MstlEts => 0,
            ModelKind::SeasonalNaive => 1,
            ModelKind::Naive => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::MstlEts => "mstl-ets",
            ModelKind::SeasonalNaive => "seasonal-naive",
            ModelKind::Naive => "naive",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("series too short to fit: {len} points")]
    TooShort { len: usize },
    #[error("fitting MSTL/AutoETS: {0}")]
    Fit(String),
    #[error("predicting: {0}")]
    Predict(String),
}

/// The seasonal periods (in steps) that `len` points of history can
/// support: MSTL needs at least two full cycles of a period to estimate it.
pub fn usable_periods(periods_steps: &[usize], len: usize) -> Vec<usize> {
    periods_steps.iter().copied().filter(|p| *p >= 2 && len >= 2 * p).collect()
}

/// Fits MSTL + AutoETS to `history_log` and returns the next `steps` points.
/// With no usable seasonal period the trend model runs alone.
pub fn mstl_ets_path(history_log: &[f64], periods_steps: &[usize], steps: usize) -> Result<Vec<f64>, ModelError> {
    const FIT_POINTS_MIN: usize = 8;
    if history_log.len() < FIT_POINTS_MIN {
        return Err(ModelError::TooShort { len: history_log.len() });
    }
    let periods = usable_periods(periods_steps, history_log.len());
    let points = if periods.is_empty() {
        let fitted = AutoETS::non_seasonal().fit(history_log).map_err(|e| ModelError::Fit(e.to_string()))?;
        fitted.predict(steps, None).map_err(|e| ModelError::Predict(e.to_string()))?.point
    } else {
        let trend = AutoETSTrendModel::from(AutoETS::non_seasonal());
        let fitted = MSTLModel::new(periods, trend).fit(history_log).map_err(|e| ModelError::Fit(e.to_string()))?;
        fitted.predict(steps, None).map_err(|e| ModelError::Predict(e.to_string()))?.point
    };
    if points.len() != steps || points.iter().any(|p| !p.is_finite()) {
        return Err(ModelError::Predict(format!(
            "model returned {} points ({} wanted) or a non-finite value",
            points.len(),
            steps
        )));
    }
    Ok(points)
}

/// Seasonal naive: each lead repeats the value one season earlier (the
/// shortest usable period), or the last value when no season fits.
pub fn seasonal_naive_path(history_log: &[f64], periods_steps: &[usize], steps: usize) -> Vec<f64> {
    let len = history_log.len();
    assert!(len > 0, "seasonal naive needs at least one point");
    let Some(period) = periods_steps.iter().copied().filter(|p| *p >= 1 && len >= *p).min() else {
        return naive_path(history_log, steps);
    };
    (1..=steps)
        .map(|lead| {
            // The most recent observed point in the same phase as t + lead.
            let back = period * lead.div_ceil(period);
            let index = len + lead - back - 1;
            history_log[index.min(len - 1)]
        })
        .collect()
}

/// Naive: every lead repeats the last observed value.
pub fn naive_path(history_log: &[f64], steps: usize) -> Vec<f64> {
    let last = *history_log.last().expect("naive needs at least one point");
    vec![last; steps]
}

/// `ln(1 + x)` for a non-negative demand, and its inverse.
pub fn to_log(requests: f64) -> f64 {
    requests.max(0.0).ln_1p()
}

pub fn from_log(value_log: f64) -> f64 {
    value_log.exp_m1().max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_naive_repeats_the_last_season() {
        let history: Vec<f64> = (0..12).map(|i| (i % 4) as f64).collect();
        // period 4: the next four points repeat 0,1,2,3, then again.
        assert_eq!(seasonal_naive_path(&history, &[4], 6), vec![0.0, 1.0, 2.0, 3.0, 0.0, 1.0]);
        // No period fits in 3 points: falls back to naive.
        assert_eq!(seasonal_naive_path(&history[..3], &[4], 2), vec![2.0, 2.0]);
    }

    #[test]
    fn mstl_ets_follows_a_clean_season() {
        let history: Vec<f64> = (0..96).map(|i| 5.0 + (i as f64 * std::f64::consts::TAU / 12.0).sin()).collect();
        let path = mstl_ets_path(&history, &[12], 12).expect("fit");
        for (lead, value) in path.iter().enumerate() {
            let truth = 5.0 + ((96 + lead) as f64 * std::f64::consts::TAU / 12.0).sin();
            assert!((value - truth).abs() < 0.2, "lead {lead}: {value} vs {truth}");
        }
    }

    #[test]
    fn log_round_trips() {
        for x in [0.0, 1.0, 17.5, 1e6] {
            assert!((from_log(to_log(x)) - x).abs() < 1e-6 * (1.0 + x));
        }
    }
}
