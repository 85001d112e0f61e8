//! Every bound of the placement crate, in one place: the ranges of the
//! replicated settings an operator may change, the limits on the planner's
//! and forecaster's tunables, and the sizes of what demand telemetry and
//! placement records may grow to. Each is checked where input enters
//! (`settings`, the configs' `validate`) and, for replicated settings, again
//! when the meta group applies them.

use std::ops::RangeInclusive;

/// A tunable outside its allowed range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field} must be in {min}..={max}, got {value}")]
pub struct RangeError {
    pub field: &'static str,
    pub value: f64,
    pub min: f64,
    pub max: f64,
}

/// Checks that `value` is finite and within `min..=max`.
pub fn check_range(field: &'static str, value: f64, min: f64, max: f64) -> Result<(), RangeError> {
    if value.is_finite() && value >= min && value <= max { Ok(()) } else { Err(RangeError { field, value, min, max }) }
}

// --- Replicated placement settings (`settings::PlacementSetting`).

/// The probability threshold, per mille (0.01..=0.99).
pub const THRESHOLD_PERMILLE: RangeInclusive<u32> = 10..=990;
/// The forecast horizon, seconds; a multiple of [`HORIZON_STEP_S`].
pub const HORIZON_S: RangeInclusive<u64> = 300..=6 * 3_600;
/// One forecast step (the history's five-minute slot), seconds.
pub const HORIZON_STEP_S: u64 = 300;
pub const PLANNING_INTERVAL_MS: RangeInclusive<u64> = 1_000..=3_600_000;
pub const TTL_MS: RangeInclusive<u64> = 60_000..=30 * 86_400_000;
pub const HYSTERESIS_MS: RangeInclusive<u64> = 0..=7 * 86_400_000;
/// Resource priorities range over -PRIORITY_ABS_MAX..=PRIORITY_ABS_MAX.
pub const PRIORITY_ABS_MAX: i32 = 5;
/// Largest price, micro-units.
pub const PRICE_MICROS_MAX: u64 = 1_000_000_000_000;
/// Largest distance between two regions.
pub const REGION_DISTANCE_MAX: u32 = 1_000;
/// Pairs of regions with a distance other than the default, at most.
pub const REGION_PAIRS_MAX: usize = 1_024;
/// Longest reason kept in a committed placement record.
pub const PLACEMENT_REASON_BYTES_MAX: usize = 512;

// --- The planner's tunables (`planner::PlannerConfig::validate`).

pub const SHADOWS_PER_RESOURCE_MAX: usize = 64;
pub const PRIORITY_STEP: RangeInclusive<f64> = 0.0..=0.2;
pub const SIZING_QUANTILE: RangeInclusive<f64> = 0.5..=0.995;
pub const TARGET_UTILISATION: RangeInclusive<f64> = 0.1..=1.0;
pub const EXPECTED_SHADOW_S: RangeInclusive<u64> = 60..=30 * 86_400;
pub const SHADOW_READY_MS: RangeInclusive<u64> = 0..=86_400_000;

// --- The forecaster's tunables (`forecast::ForecasterConfig::validate`).

/// Forecast leads at most (five days of five-minute steps).
pub const HORIZON_STEPS_MAX: usize = 1_440;
/// History one forecaster fits at most (two weeks of minute steps).
pub const HISTORY_STEPS_MAX: usize = 20_160;
/// Residuals kept for the conformal calibration at most.
pub const CALIBRATION_WINDOW_MAX: usize = 10_000;
pub const STEP_S: RangeInclusive<u64> = 1..=86_400;
pub const REFIT_EVERY_STEPS_MAX: usize = 100_000;
/// Fewest residuals a calibration window holds.
pub const CALIBRATION_WINDOW_MIN: usize = 10;
/// Fewest history steps a forecaster may be configured to keep.
pub const HISTORY_STEPS_FLOOR: usize = 8;

// --- Demand telemetry.

/// (resource, region) keys one node counts at once; reads of further keys
/// are counted under no key and reported as dropped.
pub const DEMAND_KEYS_MAX: usize = 100_000;
/// (resource, region) keys one node counts in one minute: a minute's
/// report is never split, so it must fit one `DrainDemand` answer page
/// (`DEMAND_KEY_BYTES_MAX` each, under the 4 MiB message limit). Reads
/// of further keys that minute are counted under no key, as above.
pub const DEMAND_KEYS_PER_MINUTE_MAX: usize = 12_000;
/// Largest encoding of one key's minute in a `DrainDemand` answer: a
/// resource name (128 bytes), a region (64 bytes), four counters and the
/// protobuf framing.
pub const DEMAND_KEY_BYTES_MAX: usize = 128 + 64 + 4 * 11 + 16;
/// Client regions counted per resource: reads from further regions are
/// counted under the region `other`, so a client inventing region names
/// cannot grow the telemetry or the history.
pub const REGIONS_PER_RESOURCE_MAX: usize = 32;
/// How far ahead of a receiver's clock a demand minute or a delivery mark
/// may be (clock skew between nodes); further ahead is refused, so a
/// forged future minute cannot make voters skip a node's real minutes.
pub const DEMAND_CLOCK_SKEW_MS_MAX: u64 = 60_000;
/// Complete minutes a node keeps until the meta leader collects them.
pub const PENDING_MINUTES_MAX: usize = 60;
/// (resource, region) pairs the demand history keeps at most.
pub const HISTORY_PAIRS_MAX: usize = 200_000;

// Shifting reads to shadows (`crate::shift`).

/// Longest step schedule.
pub const STEPS_MAX: usize = 10;
/// Least time at one step before it may be promoted, milliseconds.
pub const DWELL_MS: RangeInclusive<u64> = 1_000..=3_600_000;
/// The p99 gate: a window fails above this read latency, milliseconds.
pub const GATE_P99_MS: RangeInclusive<u64> = 1..=60_000;
/// The error gate: a window fails above this many failed reads per mille.
pub const GATE_ERROR_PERMILLE: RangeInclusive<u64> = 0..=1_000;
/// Consecutive windows to roll back (failures) or promote (successes).
pub const GATE_WINDOWS: RangeInclusive<u64> = 1..=100;
/// How long a retiring shadow drains at weight 0, milliseconds.
pub const DRAIN_MS: RangeInclusive<u64> = 0..=600_000;
/// Reads a window needs before its p99 and error rate are judged.
pub const GATE_READS_MIN: u64 = 5;
/// Events kept per resource in the placement history.
pub const HISTORY_EVENTS_MAX: usize = 64;
/// Bytes kept of an event's text.
pub const EVENT_TEXT_BYTES_MAX: usize = 256;
