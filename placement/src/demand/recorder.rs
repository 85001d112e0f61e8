//! Node-local read counting: every read a node serves (or sheds) is counted
//! per (resource, client region) in 10-second buckets. Complete minutes are
//! reported as [`MinuteReport`]s, the unit the node reports to the meta
//! leader, which keeps the history ([`super::history`]). A node keeps a
//! complete minute, and reports it again, until the leader says it reached
//! a majority of the meta voters, so a leader failing in between loses
//! nothing (the history counts each node's minute once).
//!
//! Counting is one mutex-protected map increment per read. The number of
//! distinct keys in flight is bounded by `DEMAND_KEYS_MAX`; reads beyond it
//! are counted in `overflow_reads` rather than growing memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub const BUCKET_MS: u64 = 10_000;
pub const MINUTE_MS: u64 = 60_000;
pub const BUCKETS_PER_MINUTE: usize = (MINUTE_MS / BUCKET_MS) as usize;
pub use crate::bounds::DEMAND_KEYS_MAX;
pub use crate::bounds::DEMAND_KEYS_PER_MINUTE_MAX;
pub use crate::bounds::PENDING_MINUTES_MAX;
/// The region of requests that do not name one.
pub const REGION_UNKNOWN: &str = "unknown";
/// The region reads of a resource are counted under once it has
/// `REGIONS_PER_RESOURCE_MAX` regions.
pub const REGION_OTHER: &str = "other";
pub use crate::bounds::REGIONS_PER_RESOURCE_MAX;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DemandKey {
    pub resource: String,
    pub region: String,
}

/// One (resource, region)'s reads during one minute on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteReport {
    pub minute_start_ms: u64,
    pub key: DemandKey,
    pub reads: u64,
    /// Reads in the busiest 10-second bucket of the minute.
    pub peak_bucket_reads: u64,
    /// Reads shed with RESOURCE_EXHAUSTED (already included in `reads`).
    pub shed_reads: u64,
}

#[derive(Default)]
struct Counts {
    buckets: [u64; BUCKETS_PER_MINUTE],
    shed: u64,
}

/// resource → region → counts, ordered so reports come out sorted.
type MinuteCounts = BTreeMap<String, BTreeMap<String, Counts>>;

/// One pending minute: resource → region → counts, and how many keys.
#[derive(Default)]
struct Minute {
    keys: usize,
    resources: MinuteCounts,
}

#[derive(Default)]
struct State {
    /// minute index → its counts.
    minutes: BTreeMap<u64, Minute>,
    /// Keys held across all pending minutes (bounded by `DEMAND_KEYS_MAX`).
    tracked: usize,
    overflow_reads: u64,
}

#[derive(Default)]
pub struct DemandRecorder {
    state: Mutex<State>,
}

impl DemandRecorder {
    pub fn new() -> DemandRecorder {
        DemandRecorder::default()
    }

    /// Counts one read of `resource` from `region` at `now_ms` (wall clock
    /// of the node); `shed` when it was refused for capacity. On the read
    /// path: a key already seen this minute costs two map lookups and no
    /// allocation.
    pub fn record(&self, resource: &str, region: Option<&str>, now_ms: u64, shed: bool) {
        let minute = now_ms / MINUTE_MS;
        let bucket = ((now_ms % MINUTE_MS) / BUCKET_MS) as usize;
        let mut region = region.filter(|r| !r.is_empty()).unwrap_or(REGION_UNKNOWN);
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        let pending = state.minutes.entry(minute).or_default();
        let entries = &mut pending.resources;
        let regions = entries.get(resource);
        if regions.is_some_and(|r| !r.contains_key(region) && r.len() >= REGIONS_PER_RESOURCE_MAX) {
            region = REGION_OTHER;
        }
        let known = entries.get(resource).is_some_and(|regions| regions.contains_key(region));
        if !known {
            // Both bounds: what one node holds, and what one minute's
            // report may carry (it must fit one DrainDemand answer).
            if state.tracked >= DEMAND_KEYS_MAX || pending.keys >= DEMAND_KEYS_PER_MINUTE_MAX {
                state.overflow_reads += 1;
                return;
            }
            state.tracked += 1;
            pending.keys += 1;
            entries.entry(resource.to_string()).or_default().insert(region.to_string(), Counts::default());
        }
        let Some(counts) = entries.get_mut(resource).and_then(|r| r.get_mut(region)) else {
            debug_assert!(false, "a key just found or inserted is missing");
            return;
        };
        counts.buckets[bucket] += 1;
        counts.shed += u64::from(shed);
        while state.minutes.len() > PENDING_MINUTES_MAX {
            if let Some((_, dropped)) = state.minutes.pop_first() {
                state.tracked -= dropped.keys;
            }
        }
    }

    /// Forgets the minutes starting before `delivered_before_ms`, then
    /// returns every minute that ended before `now_ms` (kept until
    /// delivered).
    pub fn complete_minutes(&self, now_ms: u64, delivered_before_ms: u64) -> Vec<MinuteReport> {
        let current = now_ms / MINUTE_MS;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = state.minutes.first_entry() {
            if entry.key() * MINUTE_MS >= delivered_before_ms {
                break;
            }
            let (_, dropped) = entry.remove_entry();
            state.tracked -= dropped.keys;
        }
        let mut reports = Vec::new();
        for (minute, pending) in state.minutes.range(..current) {
            for (resource, regions) in &pending.resources {
                for (region, counts) in regions {
                    reports.push(MinuteReport {
                        minute_start_ms: minute * MINUTE_MS,
                        key: DemandKey { resource: resource.clone(), region: region.clone() },
                        reads: counts.buckets.iter().sum(),
                        peak_bucket_reads: counts.buckets.iter().copied().max().unwrap_or(0),
                        shed_reads: counts.shed,
                    });
                }
            }
        }
        reports
    }

    pub fn overflow_reads(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).overflow_reads
    }
}
