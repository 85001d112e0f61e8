//! The demand history every meta voter holds (and keeps on its disk,
//! `demand::store`): per (resource, region), the last six
//! hours at one-minute resolution (exact counts) and the last 14 days at
//! five-minute resolution (log-quantised to 16 bits, relative error below
//! 0.02%). Minute reports from every node are added in; a slot older than
//! its ring is dropped.
//!
//! Memory per pair: 360 × 4 B + 4032 × 2 B = 9,504 B of rings plus the key
//! and map overhead (~100 B): about 96 MB for 10,000 resources in one region
//! each ([`DemandHistory::memory_bytes`] counts it; `pair_memory_is_bounded`
//! tests it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::recorder::{DemandKey, MINUTE_MS, MinuteReport};

pub const MINUTE_SLOTS: usize = 6 * 60;
pub const FIVE_MIN_SLOTS: usize = 14 * 24 * 12;
pub const FIVE_MIN_MS: u64 = 5 * MINUTE_MS;
/// Pairs the history holds; reports for new pairs beyond it are dropped
/// (and counted).
pub use crate::bounds::HISTORY_PAIRS_MAX as PAIRS_MAX;

/// Fixed-point scale of `ln(1 + x)` in a 16-bit code: the largest code
/// stands for about 6.5e9 requests per five minutes.
const LOG_CODE_SCALE: f64 = 2_900.0;

pub fn encode_log_u16(requests: f64) -> u16 {
    (requests.max(0.0).ln_1p() * LOG_CODE_SCALE).round().min(u16::MAX as f64) as u16
}

pub fn decode_log_u16(code: u16) -> f64 {
    (code as f64 / LOG_CODE_SCALE).exp_m1()
}

/// A ring of `N` slots indexed by an absolute slot number.
struct Ring<T: Copy + Default, const N: usize> {
    slots: Box<[T; N]>,
    latest: Option<u64>,
}

impl<T: Copy + Default, const N: usize> Ring<T, N> {
    fn new() -> Self {
        Ring { slots: Box::new([T::default(); N]), latest: None }
    }

    /// The slot for `index`, clearing slots skipped since the latest;
    /// `None` when `index` has already left the ring.
    fn slot_mut(&mut self, index: u64) -> Option<&mut T> {
        let n = N as u64;
        match self.latest {
            Some(latest) if index + n <= latest => return None,
            Some(latest) if index > latest => {
                for skipped in (latest + 1).max(index.saturating_sub(n - 1))..=index {
                    self.slots[(skipped % n) as usize] = T::default();
                }
                self.latest = Some(index);
            }
            None => self.latest = Some(index),
            Some(_) => {}
        }
        Some(&mut self.slots[(index % n) as usize])
    }

    /// The slots in storage order and the latest index (for the disk).
    fn to_parts(&self) -> (Option<u64>, Vec<T>) {
        (self.latest, self.slots.to_vec())
    }

    /// A ring from [`Self::to_parts`]; None when the slot count is not `N`.
    fn from_parts(latest: Option<u64>, slots: &[T]) -> Option<Self> {
        let slots: Box<[T; N]> = slots.to_vec().into_boxed_slice().try_into().ok()?;
        Some(Ring { slots, latest })
    }

    /// Slots `[end - len, end)`; slots never written or out of the ring
    /// read as the default.
    fn series(&self, end: u64, len: usize, decode: impl Fn(T) -> f64) -> Vec<f64> {
        let n = N as u64;
        (end.saturating_sub(len as u64)..end)
            .map(|index| match self.latest {
                Some(latest) if index <= latest && index + n > latest => decode(self.slots[(index % n) as usize]),
                _ => 0.0,
            })
            .collect()
    }
}

struct PairHistory {
    minutes: Ring<u32, MINUTE_SLOTS>,
    five_min: Ring<u16, FIVE_MIN_SLOTS>,
}

/// One pair's rings as a meta voter stores them (`demand::store`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    pub minutes_latest: Option<u64>,
    pub minutes: Vec<u32>,
    pub five_min_latest: Option<u64>,
    pub five_min: Vec<u16>,
}

/// The values a report left in its two slots: what the journal keeps, so
/// replaying it sets slots rather than adding to them (replaying twice, or
/// over a newer stored pair, changes nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotValues {
    pub minute: u64,
    /// None when the minute had already left its ring.
    pub minute_reads: Option<u32>,
    pub five_min: u64,
    pub five_min_code: Option<u16>,
}

#[derive(Default)]
pub struct DemandHistory {
    pairs: BTreeMap<DemandKey, PairHistory>,
    dropped_reports: u64,
}

impl DemandHistory {
    pub fn new() -> DemandHistory {
        DemandHistory::default()
    }

    /// Adds one node's minute report; returns the values it left in its
    /// slots, or None when the report was dropped (too many pairs).
    pub fn ingest(&mut self, report: &MinuteReport) -> Option<SlotValues> {
        let pair = self.pair_mut(&report.key)?;
        let reads = u32::try_from(report.reads).unwrap_or(u32::MAX);
        let (minute, five_min) = (report.minute_start_ms / MINUTE_MS, report.minute_start_ms / FIVE_MIN_MS);
        let minute_reads = pair.minutes.slot_mut(minute).map(|slot| {
            *slot = slot.saturating_add(reads);
            *slot
        });
        let five_min_code = pair.five_min.slot_mut(five_min).map(|slot| {
            *slot = encode_log_u16(decode_log_u16(*slot) + report.reads as f64);
            *slot
        });
        Some(SlotValues { minute, minute_reads, five_min, five_min_code })
    }

    /// Sets `key`'s slots to `values` (a journal replay).
    pub fn set(&mut self, key: &DemandKey, values: SlotValues) {
        let Some(pair) = self.pair_mut(key) else { return };
        if let Some(reads) = values.minute_reads
            && let Some(slot) = pair.minutes.slot_mut(values.minute)
        {
            *slot = reads;
        }
        if let Some(code) = values.five_min_code
            && let Some(slot) = pair.five_min.slot_mut(values.five_min)
        {
            *slot = code;
        }
    }

    /// `report` as the history counts it: a region beyond a resource's
    /// `REGIONS_PER_RESOURCE_MAX` known ones is counted as
    /// [`REGION_OTHER`](super::recorder::REGION_OTHER).
    pub fn bounded(&self, report: &MinuteReport) -> MinuteReport {
        use super::recorder::REGION_OTHER;
        use super::recorder::REGIONS_PER_RESOURCE_MAX;
        let mut report = report.clone();
        if report.key.region != REGION_OTHER && !self.pairs.contains_key(&report.key) {
            let start = DemandKey { resource: report.key.resource.clone(), region: String::new() };
            let regions = self
                .pairs
                .range(start..)
                .take_while(|(k, _)| k.resource == report.key.resource)
                .filter(|(k, _)| k.region != REGION_OTHER)
                .count();
            if regions >= REGIONS_PER_RESOURCE_MAX {
                report.key.region = REGION_OTHER.to_string();
            }
        }
        report
    }

    fn pair_mut(&mut self, key: &DemandKey) -> Option<&mut PairHistory> {
        if !self.pairs.contains_key(key) && self.pairs.len() >= PAIRS_MAX {
            self.dropped_reports += 1;
            return None;
        }
        Some(
            self.pairs
                .entry(key.clone())
                .or_insert_with(|| PairHistory { minutes: Ring::new(), five_min: Ring::new() }),
        )
    }

    /// `key`'s rings for the disk.
    pub fn record_of(&self, key: &DemandKey) -> Option<PairRecord> {
        let pair = self.pairs.get(key)?;
        let (minutes_latest, minutes) = pair.minutes.to_parts();
        let (five_min_latest, five_min) = pair.five_min.to_parts();
        Some(PairRecord { minutes_latest, minutes, five_min_latest, five_min })
    }

    /// Puts back a pair read from the disk; false when the record does not
    /// fit the rings (or the history is full).
    pub fn restore(&mut self, key: DemandKey, record: &PairRecord) -> bool {
        let (Some(minutes), Some(five_min)) = (
            Ring::from_parts(record.minutes_latest, &record.minutes),
            Ring::from_parts(record.five_min_latest, &record.five_min),
        ) else {
            return false;
        };
        if !self.pairs.contains_key(&key) && self.pairs.len() >= PAIRS_MAX {
            return false;
        }
        self.pairs.insert(key, PairHistory { minutes, five_min });
        true
    }

    pub fn keys(&self) -> impl Iterator<Item = &DemandKey> {
        self.pairs.keys()
    }

    /// The pairs of one resource (a range of the ordered map, not a scan).
    pub fn keys_of<'a>(&'a self, resource: &'a str) -> impl Iterator<Item = &'a DemandKey> + 'a {
        let start = DemandKey { resource: resource.to_string(), region: String::new() };
        self.pairs.range(start..).map(|(key, _)| key).take_while(move |key| key.resource == resource)
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn dropped_reports(&self) -> u64 {
        self.dropped_reports
    }

    /// Reads per minute for the `len` minutes before `end_ms`.
    pub fn minute_series(&self, key: &DemandKey, end_ms: u64, len: usize) -> Vec<f64> {
        match self.pairs.get(key) {
            Some(pair) => pair.minutes.series(end_ms / MINUTE_MS, len, |v| v as f64),
            None => vec![0.0; len],
        }
    }

    /// Reads per five minutes for the `len` complete five-minute slots
    /// before `end_ms`.
    pub fn five_min_series(&self, key: &DemandKey, end_ms: u64, len: usize) -> Vec<f64> {
        match self.pairs.get(key) {
            Some(pair) => pair.five_min.series(end_ms / FIVE_MIN_MS, len, decode_log_u16),
            None => vec![0.0; len],
        }
    }

    /// Bytes held by the rings and keys (map overhead estimated at 64 B
    /// per pair).
    pub fn memory_bytes(&self) -> usize {
        const MAP_OVERHEAD_BYTES: usize = 64;
        self.pairs
            .keys()
            .map(|key| {
                std::mem::size_of::<PairHistory>()
                    + MINUTE_SLOTS * 4
                    + FIVE_MIN_SLOTS * 2
                    + key.resource.capacity()
                    + key.region.capacity()
                    + std::mem::size_of::<DemandKey>()
                    + MAP_OVERHEAD_BYTES
            })
            .sum()
    }
}
