//! The demand history a meta voter holds, and what goes with it: every
//! node's minutes added once each (per-node watermarks), kept on this
//! voter's disk (a journal of batches and a snapshot every
//! `store::SNAPSHOT_INTERVAL_MS`, `demand::store`), the marks of what a
//! majority of the voters has, each node's recent read rate and each
//! resource's size.
//!
//! A resource's total (region [`REGION_TOTAL`]) is the sum of its regions,
//! computed when read rather than stored twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;

use shadowstore_base::ids::NodeId;
use shadowstore_placement::demand::history::FIVE_MIN_MS;
use shadowstore_placement::demand::recorder::MINUTE_MS;
use shadowstore_placement::demand::{DemandHistory, DemandKey, MinuteReport};

use crate::demand::store;
use crate::storage::SharedEngine;

/// The region key of a resource's total demand.
pub const REGION_TOTAL: &str = "*";
/// Resources whose size the leader remembers (beyond it, size 0: no
/// storage or transfer cost).
const SIZES_MAX: usize = 1_000_000;

#[derive(Default)]
struct Inner {
    history: DemandHistory,
    /// Reads per second each node served in its last complete minute.
    node_rps: BTreeMap<NodeId, f64>,
    /// The first five-minute slot each key was seen in: a new forecaster
    /// is fed from there, never with made-up zeros from before.
    first_slot: BTreeMap<DemandKey, u64>,
    /// Bytes each resource retains (a full copy), as last reported.
    sizes: BTreeMap<String, u64>,
    /// When this node last collected demand from every node (as leader).
    collected_at_ms: u64,
    /// Per node: minutes starting before this are in the history (a
    /// minute reported again is not counted twice).
    ingested_before_ms: BTreeMap<NodeId, u64>,
    /// Per node: minutes starting before this reached a majority of the
    /// meta voters; the node is told so with its next `DrainDemand`.
    delivered_before_ms: BTreeMap<NodeId, u64>,
    /// The sequence number of the next journal record.
    next_journal_seq: u64,
}

/// Resolution of a series read from the history.
#[derive(Clone, Copy)]
pub enum Resolution {
    Minutes,
    FiveMinutes,
}

/// Clones are handles to one history.
#[derive(Clone, Default)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
    /// Where the history is kept across restarts; None keeps it in memory.
    store: Option<SharedEngine>,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The history kept in `engine`: what it holds is loaded (stored pairs,
    /// then the journal replayed over them).
    pub fn open(engine: SharedEngine) -> History {
        let loaded = match store::load(engine.as_ref()) {
            Ok(loaded) => loaded,
            Err(error) => {
                // Without knowing the last journal record, new ones could
                // overwrite old ones: keep the history in memory only.
                tracing::warn!(%error, "reading the stored demand history; keeping it in memory only");
                return History::default();
            }
        };
        let history = History { store: Some(engine), ..History::default() };
        {
            let mut guard = history.lock();
            let inner = &mut *guard;
            for (key, stored) in &loaded.pairs {
                if inner.history.restore(key.clone(), &stored.rings) {
                    note_first_slot(&mut inner.first_slot, key, stored.first_slot);
                }
            }
            inner.ingested_before_ms = loaded.marks.ingested_before_ms.iter().copied().collect();
            for (seq, record) in &loaded.journal {
                apply_journal(inner, record);
                inner.next_journal_seq = seq + 1;
            }
        }
        tracing::info!(
            pairs = loaded.pairs.len(),
            journal = loaded.journal.len(),
            skipped = loaded.skipped,
            "demand history loaded"
        );
        history
    }

    /// Adds `node`'s minutes to the history, each once: minutes starting
    /// before what was already taken from that node are skipped (reports
    /// come in minute order, and a node reports a minute again until it is
    /// delivered). With a store, the values they leave are journaled.
    pub fn ingest(&self, reports: &[MinuteReport], node: NodeId, node_reads_last_minute: u64) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let before = inner.ingested_before_ms.get(&node).copied().unwrap_or(0);
        let mut next_before = before;
        let mut slots = Vec::new();
        for report in reports.iter().filter(|r| r.minute_start_ms >= before) {
            next_before = next_before.max(report.minute_start_ms + MINUTE_MS);
            let report = &inner.history.bounded(report);
            if let Some(values) = inner.history.ingest(report) {
                note_first_slot(&mut inner.first_slot, &report.key, values.five_min);
                slots.push((report.key.clone(), values));
            }
        }
        inner.ingested_before_ms.insert(node, next_before);
        inner.node_rps.insert(node, node_reads_last_minute as f64 / 60.0);
        if let Some(engine) = &self.store
            && next_before > before
        {
            let records = store::journal_records(node, before, next_before, slots);
            let first_seq = inner.next_journal_seq;
            inner.next_journal_seq += records.len() as u64;
            if let Err(error) = store::append_journal(engine.as_ref(), first_seq, &records) {
                tracing::warn!(%error, %node, "journaling demand; a restart loses these minutes");
            }
        }
    }

    /// Writes every pair to the store and trims the journal (see
    /// `demand::store`); the lock is taken once per batch of pairs.
    pub async fn snapshot(&self) {
        let Some(engine) = &self.store else { return };
        let (keys, first_kept_seq) = {
            let inner = self.lock();
            (inner.history.keys().cloned().collect::<Vec<_>>(), inner.next_journal_seq)
        };
        if keys.is_empty() {
            return;
        }
        for chunk in keys.chunks(store::SNAPSHOT_PAIRS_PER_BATCH) {
            let pairs: Vec<(DemandKey, store::StoredPair)> = {
                let inner = self.lock();
                chunk
                    .iter()
                    .filter_map(|key| {
                        let rings = inner.history.record_of(key)?;
                        let first_slot = inner.first_slot.get(key).copied().unwrap_or(0);
                        Some((key.clone(), store::StoredPair { first_slot, rings }))
                    })
                    .collect()
            };
            if let Err(error) = store::write_pairs(engine.as_ref(), &pairs) {
                tracing::warn!(%error, "writing the demand history; the journal stays");
                return;
            }
            tokio::task::yield_now().await;
        }
        let marks = store::StoredMarks {
            ingested_before_ms: self.lock().ingested_before_ms.iter().map(|(n, m)| (*n, *m)).collect(),
        };
        if let Err(error) = store::finish_snapshot(engine.as_ref(), &marks, first_kept_seq) {
            tracing::warn!(%error, "trimming the demand journal");
        }
    }

    pub fn delivered_before_ms(&self, node: NodeId) -> u64 {
        self.lock().delivered_before_ms.get(&node).copied().unwrap_or(0)
    }

    /// Notes that `node`'s minutes starting before `before_ms` reached a
    /// majority of the meta voters.
    pub fn mark_delivered(&self, node: NodeId, before_ms: u64) {
        let mut inner = self.lock();
        let mark = inner.delivered_before_ms.entry(node).or_insert(0);
        *mark = (*mark).max(before_ms);
    }

    /// Notes that this node (as leader) collected every node's demand.
    pub fn set_collected_at(&self, now_ms: u64) {
        self.lock().collected_at_ms = now_ms;
    }

    /// A key's series of `len` values ending at `end_ms`, oldest first.
    pub fn series(&self, key: &DemandKey, end_ms: u64, len: usize, resolution: Resolution) -> Vec<f64> {
        series(&self.lock().history, key, end_ms, len, resolution)
    }

    /// Reads per second of `key` in the last minute collected from every
    /// node before `now_ms` (a dry run between planning passes must not
    /// read a minute that is over but not collected yet as zero).
    pub fn last_minute_rps(&self, key: &DemandKey, now_ms: u64) -> f64 {
        let inner = self.lock();
        let end = now_ms.min(inner.collected_at_ms) / MINUTE_MS * MINUTE_MS;
        series(&inner.history, key, end, 1, Resolution::Minutes)[0] / 60.0
    }

    /// The regions `resource` has demand from.
    pub fn regions_of(&self, resource: &str) -> Vec<String> {
        self.lock().history.keys_of(resource).map(|k| k.region.clone()).collect()
    }

    /// Every key with its first five-minute slot (totals included).
    pub fn first_slots(&self) -> BTreeMap<DemandKey, u64> {
        self.lock().first_slot.clone()
    }

    /// Reads per second each node served in its last complete minute.
    pub fn node_rps(&self, node: NodeId) -> f64 {
        self.lock().node_rps.get(&node).copied().unwrap_or(0.0)
    }

    /// Records the latest known size of each resource (reported by the
    /// node leading its group).
    pub fn note_sizes<'a>(&self, sizes: impl Iterator<Item = (&'a str, u64)>) {
        let mut inner = self.lock();
        for (resource, bytes) in sizes {
            if let Some(known) = inner.sizes.get_mut(resource) {
                *known = bytes;
            } else if inner.sizes.len() < SIZES_MAX {
                inner.sizes.insert(resource.to_string(), bytes);
            }
        }
    }

    pub fn size_of(&self, resource: &str) -> u64 {
        self.lock().sizes.get(resource).copied().unwrap_or(0)
    }

    pub fn memory_bytes(&self) -> usize {
        self.lock().history.memory_bytes()
    }

    /// Per node, the first minute not yet in the history.
    #[cfg(test)]
    pub fn ingested_before(&self) -> BTreeMap<NodeId, u64> {
        self.lock().ingested_before_ms.clone()
    }
}

/// Notes that `key` (and its resource's total) was seen in `slot`.
fn note_first_slot(first_slot: &mut BTreeMap<DemandKey, u64>, key: &DemandKey, slot: u64) {
    let total = DemandKey { resource: key.resource.clone(), region: REGION_TOTAL.to_string() };
    for key in [key.clone(), total] {
        let first = first_slot.entry(key).or_insert(slot);
        *first = (*first).min(slot);
    }
}

/// Replays one journal record (sets slots; idempotent).
fn apply_journal(inner: &mut Inner, record: &store::JournalRecord) {
    for (key, values) in &record.slots {
        inner.history.set(key, *values);
        note_first_slot(&mut inner.first_slot, key, values.five_min);
    }
    let mark = inner.ingested_before_ms.entry(record.node_id).or_insert(0);
    *mark = (*mark).max(record.ingested_before_ms);
}

/// A key's series; a resource's total (region `*`) is the sum of its
/// regions.
fn series(history: &DemandHistory, key: &DemandKey, end_ms: u64, len: usize, resolution: Resolution) -> Vec<f64> {
    let one = |k: &DemandKey| match resolution {
        Resolution::Minutes => history.minute_series(k, end_ms, len),
        Resolution::FiveMinutes => history.five_min_series(k, end_ms, len),
    };
    if key.region != REGION_TOTAL {
        return one(key);
    }
    let mut total = vec![0.0; len];
    for region_key in history.keys_of(&key.resource) {
        for (sum, value) in total.iter_mut().zip(one(region_key)) {
            *sum += value;
        }
    }
    total
}

/// The end of the last complete five-minute slot before `now_ms`.
pub fn slot_end_ms(now_ms: u64) -> u64 {
    now_ms / FIVE_MIN_MS * FIVE_MIN_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn minute(node_minute: u64, resource: &str, region: &str, reads: u64) -> MinuteReport {
        MinuteReport {
            minute_start_ms: node_minute * MINUTE_MS,
            key: DemandKey { resource: resource.to_string(), region: region.to_string() },
            reads,
            peak_bucket_reads: reads,
            shed_reads: 0,
        }
    }

    #[test]
    fn a_minute_reported_again_is_counted_once_per_node() {
        let history = History::default();
        let key = DemandKey { resource: "r".to_string(), region: "eu".to_string() };
        history.ingest(&[minute(10, "r", "eu", 60)], NodeId::new(1), 60);
        // Not delivered yet, so node 1 reports minute 10 again, with 11.
        history.ingest(&[minute(10, "r", "eu", 60), minute(11, "r", "eu", 120)], NodeId::new(1), 120);
        // Another node's minute 10 adds to it.
        history.ingest(&[minute(10, "r", "eu", 30)], NodeId::new(2), 30);
        assert_eq!(history.series(&key, 12 * MINUTE_MS, 2, Resolution::Minutes), vec![90.0, 120.0]);
        // Delivery marks only move forward.
        history.mark_delivered(NodeId::new(1), 12 * MINUTE_MS);
        history.mark_delivered(NodeId::new(1), 11 * MINUTE_MS);
        assert_eq!(
            (history.delivered_before_ms(NodeId::new(1)), history.delivered_before_ms(NodeId::new(2))),
            (12 * MINUTE_MS, 0)
        );
    }

    /// Everything a restart must keep: every key's series and first slot,
    /// and the per-node watermarks.
    fn kept(history: &History) -> (Vec<(DemandKey, Vec<f64>, Vec<f64>, u64)>, BTreeMap<NodeId, u64>) {
        let end_ms = 40 * MINUTE_MS;
        let keys = history
            .first_slots()
            .into_iter()
            .map(|(key, first)| {
                let minutes = history.series(&key, end_ms, 40, Resolution::Minutes);
                let slots = history.series(&key, end_ms, 8, Resolution::FiveMinutes);
                (key, minutes, slots, first)
            })
            .collect();
        (keys, history.ingested_before())
    }

    #[tokio::test]
    async fn the_demand_history_survives_a_restart() {
        let engine: SharedEngine = crate::storage::memory_engine::MemoryEngine::new();
        let history = History::open(engine.clone());
        for m in 0..20 {
            history.ingest(&[minute(m, "a", "eu", 10 + m), minute(m, "b", "us", 3)], NodeId::new(1), 0);
            history.ingest(&[minute(m, "a", "eu", 1)], NodeId::new(2), 0);
            if m == 12 {
                // A snapshot part way: the rest is only in the journal.
                history.snapshot().await;
            }
        }
        // A minute reported again is not counted twice.
        history.ingest(&[minute(19, "a", "eu", 10), minute(20, "a", "us", 7)], NodeId::new(1), 0);
        let before = kept(&history);
        let a_eu: f64 =
            before.0.iter().find(|(key, ..)| key.resource == "a" && key.region == "eu").expect("a/eu").1.iter().sum();
        assert_eq!(a_eu, (0..20).map(|m| 11.0 + m as f64).sum::<f64>(), "minute 19 of node 1 counted twice");
        let reopened = History::open(engine.clone());
        assert_eq!(kept(&reopened), before, "first restart");
        // Watermarks came back: a minute node 1 reports again is skipped.
        reopened.ingest(&[minute(20, "a", "us", 7)], NodeId::new(1), 0);
        assert_eq!(kept(&reopened), before, "re-reported minute counted");
        // A snapshot cut short (pairs written, journal not trimmed): the
        // journal replayed over newer pairs changes nothing.
        let pairs: Vec<(DemandKey, store::StoredPair)> = {
            let inner = reopened.lock();
            inner
                .history
                .keys()
                .map(|key| {
                    let rings = inner.history.record_of(key).expect("a pair");
                    (key.clone(), store::StoredPair { first_slot: inner.first_slot[key], rings })
                })
                .collect()
        };
        store::write_pairs(engine.as_ref(), &pairs).expect("write");
        assert_eq!(kept(&History::open(engine.clone())), before, "after a snapshot cut short");
        // A full snapshot trims the journal and keeps everything.
        reopened.snapshot().await;
        assert_eq!(store::load(engine.as_ref()).expect("load").journal.len(), 0);
        assert_eq!(kept(&History::open(engine)), before, "after a full snapshot");
    }

    #[test]
    fn a_large_batch_is_journaled_in_bounded_records_and_the_last_moves_the_mark() {
        let engine: SharedEngine = crate::storage::memory_engine::MemoryEngine::new();
        let history = History::open(engine.clone());
        // 100 keys × 250 minutes: 25,000 slots, more than one record (the
        // engine refuses a value over 56 KiB).
        let reports: Vec<MinuteReport> =
            (0..250).flat_map(|m| (0..100).map(move |k| minute(m, &format!("r{k:03}"), "eu", 1 + k))).collect();
        history.ingest(&reports, NodeId::new(7), 0);
        let loaded = store::load(engine.as_ref()).expect("load");
        assert!(loaded.journal.len() > 1, "one record for 25,000 slots");
        assert_eq!(loaded.journal.iter().map(|(_, r)| r.slots.len()).sum::<usize>(), 25_000);
        let marks: Vec<u64> = loaded.journal.iter().map(|(_, r)| r.ingested_before_ms).collect();
        let last = marks.len() - 1;
        assert!(marks[..last].iter().all(|m| *m == 0) && marks[last] == 250 * MINUTE_MS, "{marks:?}");
        assert_eq!(kept(&History::open(engine)), kept(&history));
    }

    #[test]
    fn a_dry_run_reads_the_last_collected_minute() {
        let history = History::default();
        let key = DemandKey { resource: "r".to_string(), region: "eu".to_string() };
        history.ingest(&[minute(0, "r", "eu", 120)], NodeId::new(1), 120);
        // Collected just after minute 0 ended; minute 1 is over but not
        // collected yet when the dry run asks during minute 2.
        history.set_collected_at(61_000);
        assert_eq!(history.last_minute_rps(&key, 150_000), 2.0);
        // Once minute 1 is collected (no reads in it), it is what counts.
        history.set_collected_at(121_000);
        assert_eq!(history.last_minute_rps(&key, 150_000), 0.0);
    }
}
