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

/// A daily cycle (period `day` steps) whose last two days of every week
/// run at a quarter of the weekday level, with log-normal noise.
fn weekly_series(len: usize, day: usize, noise_sigma: f64, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..len)
        .map(|t| {
            let phase = t as f64 * std::f64::consts::TAU / day as f64;
            let weekend = (t / day) % 7 >= 5;
            let level = 200.0 * (1.0 + 0.6 * phase.sin()) * if weekend { 0.25 } else { 1.0 };
            level * (noise_sigma * normal(&mut rng)).exp()
        })
        .collect()
}

/// Mean absolute log error of the point forecasts (every lead) of the
/// steps of `future` in `scored` while `forecaster` observes `future`.
fn point_mae_log(forecaster: &mut Forecaster, future: &[f64], scored: impl Fn(usize) -> bool) -> f64 {
    let horizon = forecaster.config().horizon_steps;
    let (mut sum, mut count) = (0.0, 0usize);
    for t in 0..future.len() {
        let forecast = forecaster.forecast();
        for lead in 1..=horizon {
            let Some(truth) = future.get(t + lead - 1) else { break };
            if !scored(t + lead - 1) {
                continue;
            }
            sum += (forecast.point[lead - 1].ln_1p() - truth.ln_1p()).abs();
            count += 1;
        }
        forecaster.observe(future[t]);
    }
    sum / count as f64
}

/// Share of `future` inside the 95% intervals (every lead) of the
/// non-reactive forecasts `forecaster` makes while observing it.
fn coverage_95_while_observing(forecaster: &mut Forecaster, future: &[f64]) -> f64 {
    let horizon = forecaster.config().horizon_steps;
    let (mut inside, mut total) = (0usize, 0usize);
    for t in 0..future.len() {
        let forecast = forecaster.forecast();
        if !forecast.is_reactive() {
            for lead in 1..=horizon {
                let Some(truth) = future.get(t + lead - 1) else { break };
                let (lo, hi) = forecast.interval(lead, 0.95);
                inside += usize::from(lo <= *truth && *truth <= hi);
                total += 1;
            }
        }
        forecaster.observe(future[t]);
    }
    assert!(total > 0, "no calibrated forecast was scored");
    inside as f64 / total as f64
}

#[test]
fn a_warm_start_forecasts_as_well_as_a_forecaster_fed_all_along() {
    let day = 48;
    let week = 7 * day;
    let config = ForecasterConfig {
        periods_steps: vec![day, week],
        history_steps_max: 2 * week,
        history_steps_min: day,
        calibration_window: 2 * day,
        backtest_window: 2 * day,
        calibration_min: 20,
        ..config(day)
    };
    // The future starts on a Tuesday: its weekend starts on its fifth day
    // and ends on its seventh. The first quarter day of each is where only
    // the weekly season tells what comes.
    let turns = |step: usize| [4 * day, 6 * day].iter().any(|turn| (*turn..turn + day / 4).contains(&step));
    let every = |_: usize| true;
    for seed in [1, 2, 3] {
        // Two weeks and a day of history, then a week to forecast.
        let series = weekly_series(3 * week + day, day, 0.1, seed);
        let (past, future) = series.split_at(2 * week + day);
        // The old leader: fed every step as it came.
        let all_along = || {
            let mut forecaster = Forecaster::new(config.clone()).expect("valid config");
            past.iter().for_each(|value| forecaster.observe(*value));
            forecaster
        };
        let warm = || Forecaster::warm_start(config.clone(), past).expect("valid config");
        // What a new leader did before warm starts: the last two days.
        let two_days = || Forecaster::warm_start(config.clone(), &past[past.len() - 2 * day..]).expect("valid config");
        assert_eq!(warm().steps_observed(), config.history_steps_max as u64, "seed {seed}: history kept");
        assert!(!warm().forecast().is_reactive(), "seed {seed}: a warm start with two weeks answered reactively");
        let (all_along_mae, warm_mae, two_days_mae) = (
            point_mae_log(&mut all_along(), future, every),
            point_mae_log(&mut warm(), future, every),
            point_mae_log(&mut two_days(), future, every),
        );
        assert!(
            warm_mae <= 1.05 * all_along_mae && two_days_mae > warm_mae,
            "seed {seed}: log error over the week: warm {warm_mae:.3}, fed all along {all_along_mae:.3}, \
             two days {two_days_mae:.3}"
        );
        let (all_along_mae, warm_mae, two_days_mae) = (
            point_mae_log(&mut all_along(), future, turns),
            point_mae_log(&mut warm(), future, turns),
            point_mae_log(&mut two_days(), future, turns),
        );
        assert!(
            warm_mae <= 1.05 * all_along_mae && two_days_mae > 1.3 * warm_mae,
            "seed {seed}: log error where the weekend starts and ends: warm {warm_mae:.3}, fed all along \
             {all_along_mae:.3}, two days {two_days_mae:.3}"
        );
        let cover_95 = coverage_95_while_observing(&mut warm(), future);
        assert!(
            (0.90..=0.99).contains(&cover_95),
            "seed {seed}: 95% interval covered {cover_95:.3} after a warm start"
        );
    }
}

#[test]
fn a_warm_start_with_too_little_history_is_reactive() {
    let period = 48;
    let series = seasonal_series(period, period, 0.1, 3);
    let mut forecaster = Forecaster::warm_start(config(period), &series).expect("valid config");
    assert!(forecaster.forecast().is_reactive());
    assert_eq!(forecaster.forecast().observed, *series.last().expect("not empty"));
    let mut empty = Forecaster::warm_start(config(period), &[]).expect("valid config");
    assert_eq!(empty.steps_observed(), 0);
    assert!(empty.forecast().is_reactive());
}
