//! The meta leader's demand history: per (resource, region), the last six
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

use super::recorder::{DemandKey, MINUTE_MS, MinuteReport};

pub const MINUTE_SLOTS: usize = 6 * 60;
pub const FIVE_MIN_SLOTS: usize = 14 * 24 * 12;
pub const FIVE_MIN_MS: u64 = 5 * MINUTE_MS;
/// Pairs the history holds; reports for new pairs beyond it are dropped
/// (and counted).
pub const PAIRS_MAX: usize = 200_000;

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

#[derive(Default)]
pub struct DemandHistory {
    pairs: BTreeMap<DemandKey, PairHistory>,
    dropped_reports: u64,
}

impl DemandHistory {
    pub fn new() -> DemandHistory {
        DemandHistory::default()
    }

    /// Adds one node's minute report.
    pub fn ingest(&mut self, report: &MinuteReport) {
        if !self.pairs.contains_key(&report.key) && self.pairs.len() >= PAIRS_MAX {
            self.dropped_reports += 1;
            return;
        }
        let pair = self
            .pairs
            .entry(report.key.clone())
            .or_insert_with(|| PairHistory { minutes: Ring::new(), five_min: Ring::new() });
        let reads = u32::try_from(report.reads).unwrap_or(u32::MAX);
        if let Some(slot) = pair.minutes.slot_mut(report.minute_start_ms / MINUTE_MS) {
            *slot = slot.saturating_add(reads);
        }
        if let Some(slot) = pair.five_min.slot_mut(report.minute_start_ms / FIVE_MIN_MS) {
            *slot = encode_log_u16(decode_log_u16(*slot) + report.reads as f64);
        }
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
