//! Telemetry aggregation: 10-second buckets into minutes, minutes from
//! several nodes into one history, five-minute roll-up, ring expiry.

use super::history::{FIVE_MIN_MS, FIVE_MIN_SLOTS, MINUTE_SLOTS, decode_log_u16, encode_log_u16};
use super::recorder::{MINUTE_MS, REGION_UNKNOWN};
use super::*;

fn key(resource: &str, region: &str) -> DemandKey {
    DemandKey { resource: resource.to_string(), region: region.to_string() }
}

#[test]
fn buckets_roll_up_into_minute_reports() {
    let recorder = DemandRecorder::new();
    let t0 = 1_000 * MINUTE_MS;
    // Minute 0: 3 reads in the first bucket, 5 in the fourth (1 shed),
    // one from a client without a region.
    for _ in 0..3 {
        recorder.record("a", Some("eu"), t0 + 1_000, false);
    }
    for i in 0..5 {
        recorder.record("a", Some("eu"), t0 + 35_000, i == 0);
    }
    recorder.record("a", None, t0 + 59_999, false);
    // Minute 1 is still running: not drained.
    recorder.record("a", Some("eu"), t0 + MINUTE_MS, false);
    let reports = recorder.complete_minutes(t0 + MINUTE_MS + 1, 0);
    assert_eq!(reports.len(), 2);
    let eu = reports.iter().find(|r| r.key == key("a", "eu")).expect("eu report");
    assert_eq!((eu.minute_start_ms, eu.reads, eu.peak_bucket_reads, eu.shed_reads), (t0, 8, 5, 1));
    let unknown = reports.iter().find(|r| r.key == key("a", REGION_UNKNOWN)).expect("unknown region");
    assert_eq!(unknown.reads, 1);
    // Kept, and reported again, until delivered.
    assert_eq!(recorder.complete_minutes(t0 + MINUTE_MS + 2, 0), reports);
    assert!(recorder.complete_minutes(t0 + MINUTE_MS + 2, t0 + MINUTE_MS).is_empty(), "delivered minutes are gone");
    let next = recorder.complete_minutes(t0 + 2 * MINUTE_MS, t0 + MINUTE_MS);
    assert_eq!((next.len(), next[0].minute_start_ms, next[0].reads), (1, t0 + MINUTE_MS, 1));
}

fn report(minute: u64, resource: &str, reads: u64) -> MinuteReport {
    MinuteReport {
        minute_start_ms: minute * MINUTE_MS,
        key: key(resource, "eu"),
        reads,
        peak_bucket_reads: reads,
        shed_reads: 0,
    }
}

#[test]
fn history_adds_nodes_and_rolls_up_five_minutes() {
    let mut history = DemandHistory::new();
    let base = 12 * 60 * 24; // a five-minute-aligned minute
    for minute in 0..10 {
        // Two nodes report the same pair.
        history.ingest(&report(base + minute, "a", 10 + minute));
        history.ingest(&report(base + minute, "a", 1));
    }
    let end_ms = (base + 10) * MINUTE_MS;
    let minutes = history.minute_series(&key("a", "eu"), end_ms, 10);
    assert_eq!(minutes, (0..10).map(|m| (11 + m) as f64).collect::<Vec<_>>());
    let five = history.five_min_series(&key("a", "eu"), end_ms, 2);
    // Slot 1: minutes 0..5 = 11+12+13+14+15 = 65; slot 2: 16..=20 = 90.
    assert!((five[0] - 65.0).abs() < 0.05, "{five:?}");
    assert!((five[1] - 90.0).abs() < 0.05, "{five:?}");
    // A resource's pairs, and only those.
    history.ingest(&MinuteReport { key: key("ab", "us"), ..report(base, "x", 1) });
    history.ingest(&MinuteReport { key: key("a", "us"), ..report(base, "x", 1) });
    let regions: Vec<&str> = history.keys_of("a").map(|k| k.region.as_str()).collect();
    assert_eq!(regions, vec!["eu", "us"]);
    // Unknown pairs read as zeros.
    assert_eq!(history.minute_series(&key("b", "eu"), end_ms, 3), vec![0.0; 3]);
}

#[test]
fn rings_forget_what_they_cannot_hold() {
    let mut history = DemandHistory::new();
    history.ingest(&report(0, "a", 7));
    history.ingest(&report(MINUTE_SLOTS as u64 + 5, "a", 3));
    // Minute 0 left the minute ring; a late report for it is dropped.
    history.ingest(&report(0, "a", 100));
    let end_ms = (MINUTE_SLOTS as u64 + 6) * MINUTE_MS;
    let minutes = history.minute_series(&key("a", "eu"), end_ms, MINUTE_SLOTS + 6);
    assert_eq!(minutes.iter().sum::<f64>(), 3.0);
    // The five-minute ring still holds minute 0 (14 days), late report
    // included; minute 365 is in the running slot, not yet complete.
    let five = history.five_min_series(&key("a", "eu"), end_ms, 80);
    assert!((five.iter().sum::<f64>() - 107.0).abs() < 0.1, "{}", five.iter().sum::<f64>());
    let five = history.five_min_series(&key("a", "eu"), end_ms + FIVE_MIN_MS, 80);
    assert!((five.iter().sum::<f64>() - 110.0).abs() < 0.1, "{}", five.iter().sum::<f64>());
    // 14 days later it is gone.
    let late = FIVE_MIN_SLOTS as u64 * 5 + 400;
    history.ingest(&report(late, "a", 1));
    let all = history.five_min_series(&key("a", "eu"), (late + 5) * MINUTE_MS, FIVE_MIN_SLOTS);
    assert!((all.iter().sum::<f64>() - 1.0).abs() < 0.01);
    assert_eq!(FIVE_MIN_MS, 5 * MINUTE_MS);
}

#[test]
fn log_code_error_is_tiny() {
    for x in [0.0, 1.0, 2.0, 99.0, 12_345.0, 1e9] {
        let back = decode_log_u16(encode_log_u16(x));
        assert!((back - x).abs() <= 0.0002 * x + 0.0002, "{x} -> {back}");
    }
}

#[test]
fn pair_memory_is_bounded() {
    let mut history = DemandHistory::new();
    for resource in 0..1_000 {
        history.ingest(&report(1, &format!("resource-{resource:05}"), 1));
    }
    let per_pair = history.memory_bytes() / history.len();
    assert!(per_pair < 9_800, "{per_pair} bytes per pair");
    assert!(per_pair >= MINUTE_SLOTS * 4 + FIVE_MIN_SLOTS * 2);
}

#[test]
fn regions_per_resource_are_bounded() {
    use super::recorder::{REGION_OTHER, REGIONS_PER_RESOURCE_MAX};
    let recorder = DemandRecorder::new();
    let t0 = 2_000 * MINUTE_MS;
    for i in 0..REGIONS_PER_RESOURCE_MAX + 50 {
        recorder.record("a", Some(&format!("region-{i}")), t0, false);
    }
    recorder.record("b", Some("region-99"), t0, false);
    let reports = recorder.complete_minutes(t0 + MINUTE_MS, 0);
    let of_a: Vec<&MinuteReport> = reports.iter().filter(|r| r.key.resource == "a").collect();
    assert_eq!(of_a.len(), REGIONS_PER_RESOURCE_MAX + 1, "the first regions and `other`");
    let other = of_a.iter().find(|r| r.key.region == REGION_OTHER).expect("other");
    assert_eq!(other.reads, 50);
    assert!(reports.iter().any(|r| r.key == key("b", "region-99")), "another resource has its own regions");

    // The history folds regions beyond the bound the same way, whatever
    // the nodes report.
    let mut history = DemandHistory::new();
    for i in 0..REGIONS_PER_RESOURCE_MAX + 10 {
        let r = MinuteReport {
            minute_start_ms: t0,
            key: key("a", &format!("r{i}")),
            reads: 1,
            peak_bucket_reads: 1,
            shed_reads: 0,
        };
        let r = history.bounded(&r);
        history.ingest(&r);
    }
    assert_eq!(history.len(), REGIONS_PER_RESOURCE_MAX + 1);
}

#[test]
fn keys_per_minute_are_bounded_so_a_minute_fits_one_answer() {
    use super::recorder::DEMAND_KEYS_PER_MINUTE_MAX;
    let recorder = DemandRecorder::new();
    let t0 = 3_000 * MINUTE_MS;
    for i in 0..DEMAND_KEYS_PER_MINUTE_MAX + 25 {
        recorder.record(&format!("r{i}"), Some("eu"), t0, false);
    }
    // A key already counted this minute still counts; a new one does not.
    recorder.record("r0", Some("eu"), t0 + 1, false);
    assert_eq!(recorder.overflow_reads(), 25);
    // The next minute starts with room again.
    recorder.record("late", Some("eu"), t0 + MINUTE_MS, false);
    let reports = recorder.complete_minutes(t0 + 2 * MINUTE_MS, 0);
    let first: Vec<&MinuteReport> = reports.iter().filter(|r| r.minute_start_ms == t0).collect();
    assert_eq!(first.len(), DEMAND_KEYS_PER_MINUTE_MAX);
    assert_eq!(first.iter().find(|r| r.key.resource == "r0").map(|r| r.reads), Some(2));
    assert!(reports.iter().any(|r| r.key.resource == "late"));
    assert_eq!(recorder.overflow_reads(), 25);
}
