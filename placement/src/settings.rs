//! The placement settings an operator changes at run time, replicated in
//! the meta group so that every meta leader plans alike. Integers only (per
//! mille for probabilities): replicated state is compared bit for bit.
//!
//! A change names one setting ([`PlacementSetting`]), so two operators who
//! change different settings at once both win. Its value is checked against
//! [`crate::bounds`] where the request enters (`PlacementSetting::parse`)
//! and again when the meta group applies it (`PlacementSettings::set`).

use serde::{Deserialize, Serialize};

use crate::bounds::{HORIZON_S, HORIZON_STEP_S, HYSTERESIS_MS, PLANNING_INTERVAL_MS, THRESHOLD_PERMILLE, TTL_MS};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementSettings {
    pub threshold_permille: u32,
    pub horizon_s: u64,
    pub planning_interval_ms: u64,
    pub ttl_ms: u64,
    pub hysteresis_ms: u64,
}

impl Default for PlacementSettings {
    fn default() -> Self {
        PlacementSettings {
            threshold_permille: 800,
            horizon_s: 1_800,
            planning_interval_ms: 60_000,
            ttl_ms: 6 * 3_600_000,
            hysteresis_ms: 30 * 60_000,
        }
    }
}

/// One setting and its new value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementSetting {
    ThresholdPermille(u32),
    HorizonS(u64),
    PlanningIntervalMs(u64),
    TtlMs(u64),
    HysteresisMs(u64),
}

/// A setting change refused, with the reason an operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingError(pub String);

fn whole(key: &str, value: &str, range: &std::ops::RangeInclusive<u64>) -> Result<u64, SettingError> {
    match value.trim().parse::<u64>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(SettingError(format!(
            "{key} takes a whole number in {}..={}, got {value:?}",
            range.start(),
            range.end()
        ))),
    }
}

impl PlacementSetting {
    /// The settings' keys, as `shadowctl config set KEY VALUE` names them.
    pub const KEYS: [&'static str; 5] = ["threshold", "horizon_s", "planning_interval_ms", "ttl_ms", "hysteresis_ms"];

    pub fn key(&self) -> &'static str {
        match self {
            PlacementSetting::ThresholdPermille(_) => "threshold",
            PlacementSetting::HorizonS(_) => "horizon_s",
            PlacementSetting::PlanningIntervalMs(_) => "planning_interval_ms",
            PlacementSetting::TtlMs(_) => "ttl_ms",
            PlacementSetting::HysteresisMs(_) => "hysteresis_ms",
        }
    }

    /// Reads `value` for setting `key` (a threshold as a probability, the
    /// others as whole numbers) and checks it; `None` for an unknown key.
    pub fn parse(key: &str, value: &str) -> Option<Result<PlacementSetting, SettingError>> {
        let parsed = match key {
            "threshold" => {
                let (lo, hi) = (*THRESHOLD_PERMILLE.start(), *THRESHOLD_PERMILLE.end());
                match value.trim().parse::<f64>() {
                    Ok(t) if t.is_finite() => Ok(PlacementSetting::ThresholdPermille((t * 1000.0).round() as u32)),
                    _ => Err(SettingError(format!(
                        "threshold takes a number in {}..={}, got {value:?}",
                        lo as f64 / 1000.0,
                        hi as f64 / 1000.0
                    ))),
                }
            }
            "horizon_s" => whole(key, value, &HORIZON_S).map(PlacementSetting::HorizonS),
            "planning_interval_ms" => {
                whole(key, value, &PLANNING_INTERVAL_MS).map(PlacementSetting::PlanningIntervalMs)
            }
            "ttl_ms" => whole(key, value, &TTL_MS).map(PlacementSetting::TtlMs),
            "hysteresis_ms" => whole(key, value, &HYSTERESIS_MS).map(PlacementSetting::HysteresisMs),
            _ => return None,
        };
        Some(parsed.and_then(|s| s.validate().map(|()| s)))
    }

    /// Checks the value against its bounds.
    pub fn validate(&self) -> Result<(), SettingError> {
        let out_of = |v: u64, r: &std::ops::RangeInclusive<u64>| {
            SettingError(format!("{} takes a whole number in {}..={}, got {v}", self.key(), r.start(), r.end()))
        };
        match *self {
            PlacementSetting::ThresholdPermille(p) if !THRESHOLD_PERMILLE.contains(&p) => Err(SettingError(format!(
                "threshold takes a number in {}..={}, got {}",
                *THRESHOLD_PERMILLE.start() as f64 / 1000.0,
                *THRESHOLD_PERMILLE.end() as f64 / 1000.0,
                p as f64 / 1000.0
            ))),
            PlacementSetting::HorizonS(h) if !HORIZON_S.contains(&h) => Err(out_of(h, &HORIZON_S)),
            PlacementSetting::HorizonS(h) if h % HORIZON_STEP_S != 0 => Err(SettingError(format!(
                "horizon_s must be a multiple of {HORIZON_STEP_S} (the forecast step), got {h}"
            ))),
            PlacementSetting::PlanningIntervalMs(v) if !PLANNING_INTERVAL_MS.contains(&v) => {
                Err(out_of(v, &PLANNING_INTERVAL_MS))
            }
            PlacementSetting::TtlMs(v) if !TTL_MS.contains(&v) => Err(out_of(v, &TTL_MS)),
            PlacementSetting::HysteresisMs(v) if !HYSTERESIS_MS.contains(&v) => Err(out_of(v, &HYSTERESIS_MS)),
            _ => Ok(()),
        }
    }
}

impl PlacementSettings {
    /// Applies one checked change; an out-of-bounds value changes nothing.
    pub fn set(&mut self, setting: PlacementSetting) -> Result<(), SettingError> {
        setting.validate()?;
        match setting {
            PlacementSetting::ThresholdPermille(v) => self.threshold_permille = v,
            PlacementSetting::HorizonS(v) => self.horizon_s = v,
            PlacementSetting::PlanningIntervalMs(v) => self.planning_interval_ms = v,
            PlacementSetting::TtlMs(v) => self.ttl_ms = v,
            PlacementSetting::HysteresisMs(v) => self.hysteresis_ms = v,
        }
        Ok(())
    }

    /// Every setting as a change, in [`PlacementSetting::KEYS`] order.
    pub fn as_changes(&self) -> [PlacementSetting; 5] {
        [
            PlacementSetting::ThresholdPermille(self.threshold_permille),
            PlacementSetting::HorizonS(self.horizon_s),
            PlacementSetting::PlanningIntervalMs(self.planning_interval_ms),
            PlacementSetting::TtlMs(self.ttl_ms),
            PlacementSetting::HysteresisMs(self.hysteresis_ms),
        ]
    }

    /// Whether every setting is within its bounds.
    pub fn validate(&self) -> Result<(), SettingError> {
        self.as_changes().iter().try_for_each(|c| c.validate())
    }

    pub fn threshold(&self) -> f64 {
        self.threshold_permille as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_validate_and_change_one_key() {
        let mut s = PlacementSettings::default();
        assert!(s.validate().is_ok(), "the defaults are within bounds");
        let t = PlacementSetting::parse("threshold", "0.7").unwrap().unwrap();
        assert_eq!(t, PlacementSetting::ThresholdPermille(700));
        s.set(t).unwrap();
        assert_eq!(s.threshold_permille, 700);
        assert_eq!(s.horizon_s, PlacementSettings::default().horizon_s, "other keys unchanged");
        assert!(PlacementSetting::parse("threshold", "1.5").unwrap().is_err());
        assert!(PlacementSetting::parse("threshold", "nan").unwrap().is_err());
        assert!(PlacementSetting::parse("horizon_s", "301").unwrap().unwrap_err().0.contains("multiple of 300"));
        assert!(PlacementSetting::parse("horizon_s", "100000").unwrap().is_err());
        assert!(PlacementSetting::parse("ttl_ms", "-1").unwrap().is_err());
        assert!(PlacementSetting::parse("nope", "1").is_none());
        // Applying checks again: a value that skipped parsing is refused
        // and changes nothing.
        let before = s.clone();
        assert!(s.set(PlacementSetting::PlanningIntervalMs(5)).is_err());
        assert!(s.set(PlacementSetting::ThresholdPermille(1_000)).is_err());
        assert_eq!(s, before);
        for (key, change) in PlacementSetting::KEYS.iter().zip(s.as_changes()) {
            assert_eq!(*key, change.key());
        }
    }
}
