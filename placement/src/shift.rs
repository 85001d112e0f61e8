//! Moving read traffic onto a shadow replica, and off it again: the
//! lifecycle phases, the step schedule, the health gates and the decision
//! the executor takes on each measurement window. Pure policy: the node's
//! executor (`node/src/shadow/executor.rs`) gathers the measurements and
//! commits what this module decides as compare-and-set commands on the
//! meta group.
//!
//! A shadow goes planned → syncing → ready → shifting → draining →
//! retired. While shifting it takes `steps_pct[step]` percent of the read
//! share it is meant to take (its capacity's share of the resource's ready
//! capacity). Each step dwells at least `dwell_ms`; it is promoted after
//! `successes_min` consecutive passing windows, rolled back after
//! `failures_max` failing ones.

use serde::{Deserialize, Serialize};

use crate::bounds::{DRAIN_MS, DWELL_MS, GATE_ERROR_PERMILLE, GATE_P99_MS, GATE_READS_MIN, GATE_WINDOWS, STEPS_MAX};
use crate::settings::SettingError;

/// Where a shadow is in its life. Variant order is the stored encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ShadowPhase {
    /// Recorded in the directory; its replica is not yet open.
    Planned,
    /// A learner catching up and copying the resource's variants.
    Syncing,
    /// Caught up and every current version verified; weight 0.
    Ready,
    /// Taking a share of reads, step by step.
    Shifting,
    /// Weight 0, letting in-flight reads finish before removal.
    Draining,
}

impl ShadowPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowPhase::Planned => "planned",
            ShadowPhase::Syncing => "syncing",
            ShadowPhase::Ready => "ready",
            ShadowPhase::Shifting => "shifting",
            ShadowPhase::Draining => "draining",
        }
    }

    /// Whether a shadow in this phase has a verified full copy (it may
    /// serve reads and count as capacity).
    pub fn is_ready(self) -> bool {
        matches!(self, ShadowPhase::Ready | ShadowPhase::Shifting | ShadowPhase::Draining)
    }
}

impl std::fmt::Display for ShadowPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a transition of a shadow expects to find: the meta group applies
/// it only if the shadow is still so (compare-and-set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowExpect {
    pub phase: ShadowPhase,
    pub step: u8,
    pub weight_permille: u32,
}

/// Who drives shadows: the planner's decisions (`Auto`) or operators only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementMode {
    Auto,
    Manual,
}

/// How reads shift to a shadow. Replicated in the meta group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftSettings {
    pub mode: PlacementMode,
    /// Percent of the shadow's intended share per step; ends at 100.
    pub steps_pct: Vec<u8>,
    /// Least time at one step before it may be promoted.
    pub dwell_ms: u64,
    /// A window fails when the shadow's read p99 exceeds this.
    pub gate_p99_ms: u64,
    /// A window fails when this many reads per mille fail.
    pub gate_error_permille: u64,
    /// Consecutive failing windows that roll a step back.
    pub gate_failures_max: u64,
    /// Consecutive passing windows (past the dwell) to promote a step.
    pub gate_successes_min: u64,
    /// How long a retiring shadow serves in-flight reads at weight 0.
    pub drain_ms: u64,
}

impl Default for ShiftSettings {
    fn default() -> Self {
        ShiftSettings {
            mode: PlacementMode::Auto,
            steps_pct: vec![10, 25, 50, 100],
            dwell_ms: 30_000,
            gate_p99_ms: 500,
            gate_error_permille: 50,
            gate_failures_max: 2,
            gate_successes_min: 3,
            drain_ms: 5_000,
        }
    }
}

/// One shift setting and its new value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShiftSetting {
    Mode(PlacementMode),
    Steps(Vec<u8>),
    DwellMs(u64),
    GateP99Ms(u64),
    GateErrorPermille(u64),
    GateFailuresMax(u64),
    GateSuccessesMin(u64),
    DrainMs(u64),
}

impl ShiftSetting {
    pub const KEYS: [&'static str; 8] = [
        "mode",
        "steps",
        "dwell_ms",
        "gate_p99_ms",
        "gate_error_permille",
        "gate_failures",
        "gate_successes",
        "drain_ms",
    ];

    /// Reads `value` for `key`; `None` for a key that is not a shift setting.
    pub fn parse(key: &str, value: &str) -> Option<Result<ShiftSetting, SettingError>> {
        let whole = |range: &std::ops::RangeInclusive<u64>| match value.trim().parse::<u64>() {
            Ok(v) if range.contains(&v) => Ok(v),
            _ => Err(SettingError(format!(
                "{key} takes a whole number in {}..={}, got {value:?}",
                range.start(),
                range.end()
            ))),
        };
        let parsed = match key {
            "mode" => match value.trim() {
                "auto" => Ok(ShiftSetting::Mode(PlacementMode::Auto)),
                "manual" => Ok(ShiftSetting::Mode(PlacementMode::Manual)),
                other => Err(SettingError(format!("mode is auto or manual, got {other:?}"))),
            },
            "steps" => value
                .split(',')
                .map(|s| s.trim().parse::<u8>())
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| SettingError(format!("steps takes percentages like 10,25,50,100, got {value:?}")))
                .map(ShiftSetting::Steps),
            "dwell_ms" => whole(&DWELL_MS).map(ShiftSetting::DwellMs),
            "gate_p99_ms" => whole(&GATE_P99_MS).map(ShiftSetting::GateP99Ms),
            "gate_error_permille" => whole(&GATE_ERROR_PERMILLE).map(ShiftSetting::GateErrorPermille),
            "gate_failures" => whole(&GATE_WINDOWS).map(ShiftSetting::GateFailuresMax),
            "gate_successes" => whole(&GATE_WINDOWS).map(ShiftSetting::GateSuccessesMin),
            "drain_ms" => whole(&DRAIN_MS).map(ShiftSetting::DrainMs),
            _ => return None,
        };
        Some(parsed.and_then(|s| validate_steps(&s).map(|()| s)))
    }
}

fn validate_steps(s: &ShiftSetting) -> Result<(), SettingError> {
    let ShiftSetting::Steps(steps) = s else { return Ok(()) };
    if steps.is_empty() || steps.len() > STEPS_MAX {
        return Err(SettingError(format!("steps takes 1..={STEPS_MAX} percentages, got {}", steps.len())));
    }
    if steps.last() != Some(&100) {
        return Err(SettingError(format!("steps must end at 100, got {steps:?}")));
    }
    if steps[0] == 0 || steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(SettingError(format!("steps must rise strictly from above 0, got {steps:?}")));
    }
    Ok(())
}

impl ShiftSettings {
    /// Applies one change, checked again; a bad value changes nothing.
    pub fn set(&mut self, setting: ShiftSetting) -> Result<(), SettingError> {
        validate_steps(&setting)?;
        let within = |key: &str, v: u64, r: &std::ops::RangeInclusive<u64>| {
            if r.contains(&v) {
                Ok(v)
            } else {
                Err(SettingError(format!("{key} takes a whole number in {}..={}, got {v}", r.start(), r.end())))
            }
        };
        match setting {
            ShiftSetting::Mode(m) => self.mode = m,
            ShiftSetting::Steps(s) => self.steps_pct = s,
            ShiftSetting::DwellMs(v) => self.dwell_ms = within("dwell_ms", v, &DWELL_MS)?,
            ShiftSetting::GateP99Ms(v) => self.gate_p99_ms = within("gate_p99_ms", v, &GATE_P99_MS)?,
            ShiftSetting::GateErrorPermille(v) => {
                self.gate_error_permille = within("gate_error_permille", v, &GATE_ERROR_PERMILLE)?
            }
            ShiftSetting::GateFailuresMax(v) => self.gate_failures_max = within("gate_failures", v, &GATE_WINDOWS)?,
            ShiftSetting::GateSuccessesMin(v) => self.gate_successes_min = within("gate_successes", v, &GATE_WINDOWS)?,
            ShiftSetting::DrainMs(v) => self.drain_ms = within("drain_ms", v, &DRAIN_MS)?,
        }
        Ok(())
    }

    /// Every setting as `(key, value)` text, in [`ShiftSetting::KEYS`] order.
    pub fn as_text(&self) -> Vec<(&'static str, String)> {
        let steps: Vec<String> = self.steps_pct.iter().map(|s| s.to_string()).collect();
        vec![
            ("mode", if self.mode == PlacementMode::Auto { "auto" } else { "manual" }.to_string()),
            ("steps", steps.join(",")),
            ("dwell_ms", self.dwell_ms.to_string()),
            ("gate_p99_ms", self.gate_p99_ms.to_string()),
            ("gate_error_permille", self.gate_error_permille.to_string()),
            ("gate_failures", self.gate_failures_max.to_string()),
            ("gate_successes", self.gate_successes_min.to_string()),
            ("drain_ms", self.drain_ms.to_string()),
        ]
    }

    /// The weight (per mille of the resource's reads) of a shadow meant
    /// to take `share_permille` at step `step`.
    pub fn weight_at(&self, step: usize, share_permille: u32) -> u32 {
        let pct = self.steps_pct.get(step).copied().unwrap_or(100) as u32;
        share_permille * pct / 100
    }
}

/// What one measurement window of a shadow's reads showed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub reads: u64,
    pub errors: u64,
    pub p99_ms: u64,
}

impl Window {
    pub fn error_permille(&self) -> u64 {
        if self.reads == 0 { 0 } else { self.errors * 1000 / self.reads }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} reads, {} errors ({}‰), p99 {} ms", self.reads, self.errors, self.error_permille(), self.p99_ms)
    }
}

/// A window judged against the gates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    Pass,
    Fail(String),
    /// Too few reads to judge.
    NoData,
}

pub fn judge(settings: &ShiftSettings, w: &Window) -> Gate {
    // Errors count even in a thin window: a shadow failing every read
    // must not pass for want of volume.
    if w.errors > 0 && w.error_permille() > settings.gate_error_permille {
        return Gate::Fail(format!("error rate {}‰ > {}‰ ({w})", w.error_permille(), settings.gate_error_permille));
    }
    if w.reads < GATE_READS_MIN {
        return Gate::NoData;
    }
    if w.p99_ms > settings.gate_p99_ms {
        return Gate::Fail(format!("p99 {} ms > {} ms ({w})", w.p99_ms, settings.gate_p99_ms));
    }
    Gate::Pass
}

/// The executor's running analysis of one step (not replicated: a new
/// meta leader restarts it, which only delays a promotion).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepAnalysis {
    pub successes: u64,
    pub failures: u64,
}

/// What to do after a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepDecision {
    Stay,
    Promote,
    RollBack(String),
}

/// Folds `gate` into `analysis` and decides, given how long the step has
/// lasted.
pub fn step_decision(
    settings: &ShiftSettings,
    analysis: &mut StepAnalysis,
    gate: Gate,
    step_age_ms: u64,
    last_step: bool,
) -> StepDecision {
    match gate {
        Gate::Pass => {
            analysis.successes += 1;
            analysis.failures = 0;
        }
        Gate::Fail(reason) => {
            analysis.successes = 0;
            analysis.failures += 1;
            if analysis.failures >= settings.gate_failures_max {
                return StepDecision::RollBack(reason);
            }
        }
        Gate::NoData => {}
    }
    if !last_step && step_age_ms >= settings.dwell_ms && analysis.successes >= settings.gate_successes_min {
        return StepDecision::Promote;
    }
    StepDecision::Stay
}

/// Where a rollback takes a shadow's weight: to 0 when the primaries can
/// carry the forecast alone, else back to the last weight that passed.
pub fn rollback_weight(primaries_capacity_rps: f64, forecast_rps: f64, last_healthy_permille: u32) -> u32 {
    if primaries_capacity_rps >= forecast_rps { 0 } else { last_healthy_permille }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_must_end_at_100_and_rise() {
        assert!(ShiftSetting::parse("steps", "10,25,50,100").unwrap().is_ok());
        let e = ShiftSetting::parse("steps", "10,25,50").unwrap().unwrap_err();
        assert!(e.0.contains("end at 100"), "{e}");
        assert!(ShiftSetting::parse("steps", "50,25,100").unwrap().is_err());
        assert!(ShiftSetting::parse("steps", "0,100").unwrap().is_err());
        assert!(ShiftSetting::parse("steps", "ten").unwrap().is_err());
        let mut s = ShiftSettings::default();
        let before = s.clone();
        assert!(s.set(ShiftSetting::Steps(vec![10, 20])).is_err());
        assert!(s.set(ShiftSetting::DwellMs(1)).is_err());
        assert_eq!(s, before, "a refused setting changes nothing");
        assert!(ShiftSetting::parse("mode", "sometimes").unwrap().is_err());
        assert!(ShiftSetting::parse("threshold", "0.5").is_none(), "not a shift setting");
        for (key, (k, _)) in ShiftSetting::KEYS.iter().zip(s.as_text()) {
            assert_eq!(*key, k);
            assert!(ShiftSetting::parse(k, &s.as_text().iter().find(|x| x.0 == k).unwrap().1).unwrap().is_ok());
        }
    }

    #[test]
    fn gates_fail_on_latency_or_errors_and_wait_for_data() {
        let s = ShiftSettings::default();
        assert_eq!(judge(&s, &Window { reads: 100, errors: 0, p99_ms: 20 }), Gate::Pass);
        assert!(matches!(judge(&s, &Window { reads: 100, errors: 0, p99_ms: 900 }), Gate::Fail(_)));
        assert!(matches!(judge(&s, &Window { reads: 100, errors: 10, p99_ms: 1 }), Gate::Fail(_)));
        assert!(
            matches!(judge(&s, &Window { reads: 2, errors: 2, p99_ms: 1 }), Gate::Fail(_)),
            "errors in a thin window"
        );
        assert_eq!(judge(&s, &Window { reads: 2, errors: 0, p99_ms: 9_000 }), Gate::NoData);
    }

    #[test]
    fn a_step_promotes_after_dwell_and_successes_and_rolls_back_after_failures() {
        let s = ShiftSettings { dwell_ms: 10_000, gate_successes_min: 2, gate_failures_max: 2, ..Default::default() };
        let mut a = StepAnalysis::default();
        assert_eq!(step_decision(&s, &mut a, Gate::Pass, 1_000, false), StepDecision::Stay);
        assert_eq!(step_decision(&s, &mut a, Gate::Pass, 5_000, false), StepDecision::Stay, "dwell not over");
        assert_eq!(step_decision(&s, &mut a, Gate::Pass, 10_000, false), StepDecision::Promote);
        assert_eq!(step_decision(&s, &mut a, Gate::Pass, 10_000, true), StepDecision::Stay, "no step after the last");
        let mut a = StepAnalysis::default();
        let fail = || Gate::Fail("slow".into());
        assert_eq!(step_decision(&s, &mut a, fail(), 20_000, false), StepDecision::Stay);
        assert_eq!(step_decision(&s, &mut a, Gate::Pass, 20_000, false), StepDecision::Stay, "a pass resets failures");
        assert_eq!(step_decision(&s, &mut a, fail(), 20_000, false), StepDecision::Stay);
        assert!(matches!(step_decision(&s, &mut a, fail(), 20_000, false), StepDecision::RollBack(_)));
    }

    #[test]
    fn weights_follow_the_schedule_and_rollback_keeps_capacity() {
        let s = ShiftSettings::default();
        assert_eq!(s.weight_at(0, 250), 25);
        assert_eq!(s.weight_at(3, 250), 250);
        assert_eq!(s.weight_at(9, 250), 250, "past the schedule is full share");
        assert_eq!(rollback_weight(300.0, 200.0, 125), 0);
        assert_eq!(rollback_weight(150.0, 200.0, 125), 125);
    }
}
