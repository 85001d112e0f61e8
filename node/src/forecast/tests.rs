//! Forecaster behaviour on synthetic series whose truth is known.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

/// Standard normal by Box–Muller.
fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A daily-seasonal demand (period `period` steps) with multiplicative
/// log-normal noise.
fn seasonal_series(len: usize, period: usize, noise_sigma: f64, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..len)
        .map(|t| {
            let phase = t as f64 * std::f64::consts::TAU / period as f64;
            let level = 200.0 * (1.0 + 0.6 * phase.sin());
            level * (noise_sigma * normal(&mut rng)).exp()
        })
        .collect()
}

fn config(period: usize) -> ForecasterConfig {
    ForecasterConfig {
        step_s: 300,
        horizon_steps: 6,
        periods_steps: vec![period],
        history_steps_max: 8 * period,
        history_steps_min: 2 * period,
        refit_every_steps: 12,
        calibration_window: 300,
        calibration_min: 50,
        backtest_window: 300,
        anchor_decay: 0.9,
    }
}

/// Runs the forecaster over the series and returns, over the scored tail,
/// the fraction of observations inside the 95% and 80% intervals at every
/// lead, and the forecasts' modes.
fn coverage(series: &[f64], config: ForecasterConfig, score_from: usize) -> (f64, f64, Vec<ForecastMode>) {
    let horizon = config.horizon_steps;
    let mut forecaster = Forecaster::new(config).expect("valid config");
    let (mut inside_95, mut inside_80, mut total) = (0usize, 0usize, 0usize);
    let mut modes = Vec::new();
    for t in 0..series.len() {
        forecaster.observe(series[t]);
        let forecast = forecaster.forecast();
        if t + 1 < score_from || t + horizon >= series.len() {
            continue;
        }
        modes.push(forecast.mode);
        if forecast.is_reactive() {
            continue;
        }
        for lead in 1..=horizon {
            let truth = series[t + lead];
            let (lo, hi) = forecast.interval(lead, 0.95);
            inside_95 += usize::from(lo <= truth && truth <= hi);
            let (lo, hi) = forecast.interval(lead, 0.80);
            inside_80 += usize::from(lo <= truth && truth <= hi);
            total += 1;
        }
    }
    assert!(total > 0, "no calibrated forecast was scored");
    (inside_95 as f64 / total as f64, inside_80 as f64 / total as f64, modes)
}

#[test]
fn conformal_intervals_cover_a_noisy_seasonal_series() {
    let period = 48;
    for seed in [1, 2, 3] {
        let series = seasonal_series(16 * period, period, 0.25, seed);
        let (cover_95, cover_80, modes) = coverage(&series, config(period), 8 * period);
        assert!((0.91..=0.99).contains(&cover_95), "seed {seed}: 95% interval covered {cover_95:.3}");
        assert!((0.73..=0.87).contains(&cover_80), "seed {seed}: 80% interval covered {cover_80:.3}");
        // On a seasonal series a seasonal model must win the backtest.
        let seasonal = modes
            .iter()
            .filter(|m| matches!(m, ForecastMode::Model(ModelKind::MstlEts | ModelKind::SeasonalNaive)))
            .count();
        assert!(seasonal * 10 >= modes.len() * 9, "seed {seed}: seasonal model chosen {seasonal}/{}", modes.len());
    }
}

#[test]
fn reactive_until_enough_history_then_a_model() {
    let period = 48;
    let series = seasonal_series(4 * period, period, 0.1, 7);
    let mut forecaster = Forecaster::new(config(period)).expect("valid config");
    for (t, value) in series.iter().enumerate() {
        forecaster.observe(*value);
        let forecast = forecaster.forecast();
        if t + 1 < 2 * period {
            assert!(forecast.is_reactive(), "step {t}: answered with {:?} on too little history", forecast.mode);
            assert_eq!(forecast.point, vec![*value; 6]);
            // Reactive P(exceed) is the observation against the capacity.
            assert_eq!(forecast.p_exceed(value * 0.9), 1.0);
            assert_eq!(forecast.p_exceed(value * 1.1), 0.0);
        }
    }
    assert!(!forecaster.forecast().is_reactive(), "still reactive after four seasons");
}

#[test]
fn p_exceed_falls_as_capacity_rises_and_matches_quantiles() {
    let period = 48;
    let series = seasonal_series(12 * period, period, 0.2, 11);
    let mut forecaster = Forecaster::new(config(period)).expect("valid config");
    for value in &series {
        forecaster.observe(*value);
    }
    let forecast = forecaster.forecast();
    assert!(!forecast.is_reactive());
    let mut last = 1.0;
    for capacity in (0..60).map(|i| i as f64 * 10.0) {
        let p = forecast.p_exceed(capacity);
        assert!(p <= last + 1e-12, "P(exceed) rose from {last} to {p} at capacity {capacity}");
        last = p;
    }
    // At lead 1, the 90% quantile is exceeded with probability ~0.1.
    let q90 = forecast.quantile(1, 0.9);
    let p = forecast.p_exceed_at(1, q90);
    assert!((p - 0.1).abs() < 0.01, "P(exceed q90) = {p}");
}

#[test]
fn a_surge_since_the_last_fit_moves_the_forecast() {
    let period = 48;
    let mut series = seasonal_series(10 * period, period, 0.05, 5);
    let mut forecaster = Forecaster::new(config(period)).expect("valid config");
    for value in &series {
        forecaster.observe(*value);
    }
    let before = forecaster.forecast().point[0];
    // Demand quadruples for three steps: the next forecast must follow it
    // rather than the seasonal path fitted before the surge.
    for _ in 0..3 {
        let surged = series[series.len() - period] * 4.0;
        series.push(surged);
        forecaster.observe(surged);
    }
    let after = forecaster.forecast();
    assert!(after.point[0] > 2.0 * before, "forecast {} did not follow a 4x surge (before {before})", after.point[0]);
}

#[test]
fn bad_config_is_rejected() {
    let mut bad = config(48);
    bad.horizon_steps = 0;
    assert!(Forecaster::new(bad).is_err());
    let mut bad = config(48);
    bad.anchor_decay = 1.5;
    assert!(Forecaster::new(bad).is_err());
}
