//! The planning loop and the state behind the placement API, on the meta
//! leader.
//!
//! Every planning interval (a replicated setting, default 1 min) the meta
//! leader:
//! 1. collects every node's complete minutes of read counts (`DrainDemand`)
//!    into its [`DemandHistory`];
//! 2. feeds each (resource, region) series, and each resource's total
//!    (region `*`, the sum of its regions, not stored), into a
//!    [`Forecaster`] at five-minute resolution;
//! 3. plans every resource ([`super::planner::plan`]) against its
//!    capacity, and commits each decision that changed to the meta group
//!    (`RecordPlacement`), so a new leader sees the plans of the old one.
//!
//! The leader shares every node's minutes with the other meta voters
//! (`ShareDemand`, in order per voter: [`super::share`]), so each voter
//! keeps the same history in memory. A node
//! keeps its complete minutes and reports them again until the leader
//! acknowledges them in a later `DrainDemand`, which it does once a
//! majority of the voters (itself included) has them. So a leader that
//! fails before sharing loses nothing: the next leader collects the same
//! minutes. Every voter counts a node's minute once (`ingested_before_ms`).
//! Forecasters live only on the leader: a new leader warm-starts them from
//! its history (up to two weeks of it, a bounded number per pass, busiest
//! first), so it forecasts again at once, weekly season included.
//! Executing a plan (adding the shadow as a Raft learner and shifting
//! traffic) is not done here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use shadowstore_proto::peer;

use super::share::ShareQueues;
use crate::demand::store;
use crate::meta::membership::propose_meta;
use crate::meta::state::{MetaCommand, MetaState};
use crate::node::NodeCtx;
use crate::raft::state_machine::GroupData;
use crate::storage::SharedEngine;
use shadowstore_base::ids::{GroupId, NodeId};
use shadowstore_placement::demand::history::FIVE_MIN_MS;
use shadowstore_placement::demand::recorder::MINUTE_MS;
use shadowstore_placement::demand::{DemandHistory, DemandKey, MinuteReport};
use shadowstore_placement::forecast::forecaster::ForecasterConfig;
use shadowstore_placement::forecast::{DemandForecast, Forecaster};
use shadowstore_placement::planner::{Action, HostView, Plan, PlannerConfig, ResourceDemand, plan};
use shadowstore_placement::{PlacementAction, PlacementRecord, PlacementSettings};

/// The region key of a resource's total demand.
pub const REGION_TOTAL: &str = "*";
/// New forecasters started per planning pass, busiest keys first. Each
/// costs two model fits on up to two weeks of history
/// (`Forecaster::warm_start`; `sim demand-memory --forecasters` times
/// one), so a new meta leader with many keys spreads them over passes
/// instead of stalling one; keys still waiting are planned reactively.
pub const WARM_STARTS_PER_PASS_MAX: usize = 32;
/// How long the leader waits for one node's demand.
const DRAIN_TIMEOUT_MS: u64 = 2_000;
/// Forecasters the leader keeps (bounds memory and CPU; the busiest keys
/// win). Keys beyond it are planned reactively.
pub const FORECASTERS_MAX: usize = 20_000;
/// Recent demand that ranks keys for a forecaster: the last 6 hours.
const BUSY_WINDOW_SLOTS: usize = 72;
/// A key without a forecaster takes one from a forecast key only when its
/// recent reads exceed that key's by this factor (no churn at the margin:
/// a new forecaster costs two model fits).
const BUSY_EVICT_FACTOR: f64 = 2.0;
/// Resources whose size the leader remembers (beyond it, size 0: no
/// storage or transfer cost).
const SIZES_MAX: usize = 1_000_000;

struct Fed {
    forecaster: Forecaster,
    /// The five-minute slot (absolute index) fed last.
    next_slot: u64,
}

#[derive(Default)]
struct Inner {
    history: DemandHistory,
    /// Each behind its own lock: a fit holds only its key's forecaster.
    forecasters: BTreeMap<DemandKey, Arc<Mutex<Fed>>>,
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
    last_plans: Vec<Plan>,
    /// The sequence number of the next journal record.
    next_journal_seq: u64,
}

/// The leader-local placement state, shared by the loop, the API and the
/// tasks that share demand (clones are handles to one state).
#[derive(Clone, Default)]
pub struct PlacementState {
    inner: Arc<Mutex<Inner>>,
    /// What the leader still has to send to each other voter.
    queues: Arc<Mutex<ShareQueues>>,
    /// Where the history is kept across restarts (`demand::store`); None
    /// keeps it in memory only.
    store: Option<SharedEngine>,
}

fn forecaster_config(settings: &PlacementSettings) -> ForecasterConfig {
    ForecasterConfig::for_step(FIVE_MIN_MS / 1000, settings.horizon_s)
}

pub fn planner_config(settings: &PlacementSettings) -> PlannerConfig {
    PlannerConfig {
        threshold: settings.threshold_permille as f64 / 1000.0,
        ttl_ms: settings.ttl_ms,
        hysteresis_ms: settings.hysteresis_ms,
        ..PlannerConfig::default()
    }
}

impl PlacementState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("placement state lock poisoned")
    }

    /// The leader's queues of demand for the other voters (its own lock,
    /// never held with the state's).
    pub fn share_queues(&self) -> std::sync::MutexGuard<'_, ShareQueues> {
        self.queues.lock().expect("share queues lock poisoned")
    }

    /// The placement state of a node whose history is kept in `engine`:
    /// what the engine holds is loaded (stored pairs, then the journal
    /// replayed over them).
    pub fn open(engine: SharedEngine) -> PlacementState {
        let loaded = match store::load(engine.as_ref()) {
            Ok(loaded) => loaded,
            Err(error) => {
                // Without knowing the last journal record, new ones could
                // overwrite old ones: keep the history in memory only.
                tracing::warn!(%error, "reading the stored demand history; keeping it in memory only");
                return PlacementState::default();
            }
        };
        let state = PlacementState { store: Some(engine), ..PlacementState::default() };
        {
            let mut guard = state.lock();
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
        state
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
                tracing::warn!(%error, node, "journaling demand; a restart loses these minutes");
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

    fn delivered_before_ms(&self, node: NodeId) -> u64 {
        self.lock().delivered_before_ms.get(&node).copied().unwrap_or(0)
    }

    /// Notes that `node`'s minutes starting before `before_ms` reached a
    /// majority of the meta voters.
    pub(crate) fn mark_delivered(&self, node: NodeId, before_ms: u64) {
        let mut inner = self.lock();
        let mark = inner.delivered_before_ms.entry(node).or_insert(0);
        *mark = (*mark).max(before_ms);
    }

    /// Feeds every complete five-minute slot before `now_ms` to the
    /// forecasters, and starts forecasters for keys that have none (at
    /// most `WARM_STARTS_PER_PASS_MAX`, busiest first; over
    /// `FORECASTERS_MAX` keys, the busiest keys win). A fit takes up to
    /// ~0.2 s of CPU, so it runs outside the state's lock, and the task
    /// yields after every forecaster that did work.
    async fn feed(&self, settings: &PlacementSettings, now_ms: u64) {
        let end_slot = now_ms / FIVE_MIN_MS;
        let config = forecaster_config(settings);
        // Under the lock: which keys start a forecaster, with their
        // history. The fits run outside it, so a dry run is not kept
        // waiting.
        let starting: Vec<(DemandKey, Vec<f64>)> = {
            let mut inner = self.lock();
            let Inner { history, forecasters, first_slot, .. } = &mut *inner;
            // A horizon change starts every forecaster again.
            forecasters.retain(|_, fed| lock_fed(fed).forecaster.config().horizon_steps == config.horizon_steps);
            let recent = |key: &DemandKey| -> f64 {
                series(history, key, end_slot * FIVE_MIN_MS, BUSY_WINDOW_SLOTS, Resolution::FiveMinutes).iter().sum()
            };
            let waiting: Vec<(DemandKey, f64)> = first_slot
                .keys()
                .filter(|key| !forecasters.contains_key(*key))
                .map(|key| (key.clone(), recent(key)))
                .collect();
            // The kept keys' reads matter only when some must make room.
            let kept: Vec<(DemandKey, f64)> = if forecasters.len() + waiting.len() > FORECASTERS_MAX {
                forecasters.keys().map(|key| (key.clone(), recent(key))).collect()
            } else {
                Vec::new()
            };
            let (evict, admit) =
                rebalance_forecasters(forecasters.len(), kept, waiting, FORECASTERS_MAX, WARM_STARTS_PER_PASS_MAX);
            for key in evict {
                forecasters.remove(&key);
            }
            admit
                .into_iter()
                .map(|key| {
                    // From the first slot the key was seen, never with
                    // made-up zeros from before; at most the fitting window.
                    let seen = first_slot.get(&key).copied().unwrap_or(end_slot);
                    let start = end_slot.saturating_sub(config.history_steps_max as u64).max(seen);
                    let values = series(
                        history,
                        &key,
                        end_slot * FIVE_MIN_MS,
                        end_slot.saturating_sub(start) as usize,
                        Resolution::FiveMinutes,
                    );
                    (key, values)
                })
                .collect()
        };
        for (key, values) in starting {
            let Ok(forecaster) = Forecaster::warm_start(config.clone(), &values) else { continue };
            {
                let mut inner = self.lock();
                if inner.forecasters.len() < FORECASTERS_MAX {
                    let fed = Fed { forecaster, next_slot: end_slot };
                    inner.forecasters.entry(key).or_insert_with(|| Arc::new(Mutex::new(fed)));
                }
                assert!(inner.forecasters.len() <= FORECASTERS_MAX, "forecasters over their cap");
            }
            tokio::task::yield_now().await;
        }
        let held: Vec<(DemandKey, Arc<Mutex<Fed>>)> =
            self.lock().forecasters.iter().map(|(key, fed)| (key.clone(), fed.clone())).collect();
        for (key, fed) in held {
            let next_slot = lock_fed(&fed).next_slot;
            if next_slot >= end_slot {
                continue;
            }
            let slots = (end_slot - next_slot) as usize;
            let values = series(&self.lock().history, &key, end_slot * FIVE_MIN_MS, slots, Resolution::FiveMinutes);
            {
                let mut fed = lock_fed(&fed);
                values.into_iter().for_each(|value| fed.forecaster.observe(value));
                fed.next_slot = end_slot;
            }
            tokio::task::yield_now().await;
        }
    }

    /// The forecast of `key` per five-minute slot.
    fn forecast_per_slot(&self, key: &DemandKey) -> Option<DemandForecast> {
        let fed = self.lock().forecasters.get(key).cloned()?;
        Some(lock_fed(&fed).forecaster.forecast())
    }

    /// The forecast of `key` in requests per second.
    fn forecast_rps(&self, key: &DemandKey) -> Option<DemandForecast> {
        Some(self.forecast_per_slot(key)?.scaled(1000.0 / FIVE_MIN_MS as f64))
    }

    /// Reads per second of `key` in the last minute collected from every
    /// node before `now_ms` (a dry run between planning passes must not
    /// read a minute that is over but not collected yet as zero).
    fn last_minute_rps(&self, key: &DemandKey, now_ms: u64) -> f64 {
        let inner = self.lock();
        let end = now_ms.min(inner.collected_at_ms) / MINUTE_MS * MINUTE_MS;
        series(&inner.history, key, end, 1, Resolution::Minutes)[0] / 60.0
    }

    fn regions_of(&self, resource: &str) -> Vec<String> {
        self.lock().history.keys_of(resource).map(|k| k.region.clone()).collect()
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

    fn size_of(&self, resource: &str) -> u64 {
        self.lock().sizes.get(resource).copied().unwrap_or(0)
    }

    pub fn last_plans(&self) -> Vec<Plan> {
        self.lock().last_plans.clone()
    }

    pub fn memory_bytes(&self) -> usize {
        self.lock().history.memory_bytes()
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

fn lock_fed(fed: &Mutex<Fed>) -> std::sync::MutexGuard<'_, Fed> {
    fed.lock().expect("forecaster lock poisoned")
}

/// Which keys gain and lose a forecaster. `held` keys have one; `kept`
/// lists them with their recent reads when some may have to make room
/// (it may be empty otherwise), and `waiting` lists the keys without one.
/// Free places go to the busiest waiting keys; then the busiest waiting
/// key replaces the quietest kept one for as long as it is more than
/// `BUSY_EVICT_FACTOR` times busier. At most `admit_max` are admitted.
/// Returns (evict, admit), admit busiest first.
fn rebalance_forecasters(
    held: usize,
    mut kept: Vec<(DemandKey, f64)>,
    mut waiting: Vec<(DemandKey, f64)>,
    max: usize,
    admit_max: usize,
) -> (Vec<DemandKey>, Vec<DemandKey>) {
    assert!(held <= max, "more forecasters than the cap");
    assert!(kept.is_empty() || kept.len() == held, "kept lists every held key or none");
    waiting.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    kept.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let free = max - held;
    let mut admit: Vec<DemandKey> = Vec::new();
    let mut evict: Vec<DemandKey> = Vec::new();
    let mut waiting = waiting.into_iter();
    while admit.len() < free.min(admit_max)
        && let Some((key, _)) = waiting.next()
    {
        admit.push(key);
    }
    if admit.len() == free {
        for ((key, reads), (quiet_key, quiet_reads)) in waiting.zip(kept) {
            if admit.len() == admit_max || reads <= BUSY_EVICT_FACTOR * quiet_reads {
                break;
            }
            admit.push(key);
            evict.push(quiet_key);
        }
    }
    assert!(admit.len() <= (free + evict.len()).min(admit_max), "admitted past the cap");
    (evict, admit)
}

#[derive(Clone, Copy)]
enum Resolution {
    Minutes,
    FiveMinutes,
}

/// A key's series; a resource's total (region `*`) is the sum of its
/// regions, computed when read rather than stored twice.
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

/// Read capacity `resource` gets: each replica's node capacity shared
/// equally among the replicas that node hosts.
fn resource_capacity_rps(meta: &MetaState, hosted: &BTreeMap<NodeId, usize>, resource: &str) -> f64 {
    let Some(record) = meta.resources.get(resource) else { return 0.0 };
    record
        .replicas
        .iter()
        .map(|replica| {
            let shared_by = hosted.get(&replica.node_id).copied().unwrap_or(1).max(1);
            let capacity = meta.nodes.get(&replica.node_id).map(|n| n.labels.read_capacity_rps).unwrap_or(0);
            capacity as f64 / shared_by as f64
        })
        .sum()
}

/// Replicas each node hosts (one pass over the directory).
fn replicas_hosted(meta: &MetaState) -> BTreeMap<NodeId, usize> {
    let mut hosted = BTreeMap::new();
    for replica in meta.resources.values().flat_map(|r| r.replicas.iter()) {
        *hosted.entry(replica.node_id).or_insert(0) += 1;
    }
    hosted
}

/// Plans every resource (or one) now. Nothing is committed.
pub fn plan_all(ctx: &NodeCtx, only: Option<&str>, now_ms: u64) -> Vec<Plan> {
    let Some((settings, resources, hosts, regions)) = ctx.with_meta(|meta| {
        let hosted = replicas_hosted(meta);
        let resources: Vec<(String, Vec<NodeId>, f64, i32)> = meta
            .resources
            .values()
            .filter(|r| only.is_none_or(|name| name == r.name))
            .map(|r| {
                (
                    r.name.clone(),
                    r.replicas.iter().map(|x| x.node_id).collect(),
                    resource_capacity_rps(meta, &hosted, &r.name),
                    meta.placement.priorities.get(&r.name).copied().unwrap_or(0),
                )
            })
            .collect();
        let hosts: Vec<HostView> = meta
            .nodes
            .values()
            .map(|n| HostView {
                node_id: n.node_id,
                region: n.labels.region.clone(),
                healthy: Some(n.node_id) == ctx.identity().map(|i| i.node_id) || ctx.detector.is_up(n.node_id),
                read_capacity_rps: n.labels.read_capacity_rps as f64,
                load_rps: 0.0,
                // 0 means the node did not state its disk: not limited.
                disk_free_bytes: if n.labels.disk_capacity_bytes == 0 {
                    u64::MAX
                } else {
                    n.labels.disk_capacity_bytes
                },
                prices: meta.prices_of(n),
            })
            .collect();
        (meta.placement.settings.clone(), resources, hosts, meta.placement.region_distances.clone())
    }) else {
        return Vec::new();
    };
    let state = &ctx.placement;
    let hosts: Vec<HostView> = {
        let inner = state.lock();
        hosts
            .into_iter()
            .map(|h| HostView { load_rps: inner.node_rps.get(&h.node_id).copied().unwrap_or(0.0), ..h })
            .collect()
    };
    let config = planner_config(&settings);
    let mut plans = Vec::new();
    for (name, replica_nodes, capacity_rps, priority) in resources {
        let total = DemandKey { resource: name.clone(), region: REGION_TOTAL.to_string() };
        let observed_rps = state.last_minute_rps(&total, now_ms);
        // Reactive (too little history): act on the last complete minute,
        // not on a five-minute slot that may still be filling.
        let horizon_steps = forecaster_config(&settings).horizon_steps;
        let forecast = match state.forecast_rps(&total) {
            Some(forecast) if !forecast.is_reactive() => forecast,
            _ => DemandForecast::reactive_at(observed_rps, horizon_steps),
        };
        // The demand's region: the region with the most reads in the last hour.
        let region = state
            .regions_of(&name)
            .into_iter()
            .map(|region| {
                let key = DemandKey { resource: name.clone(), region: region.clone() };
                let reads: f64 = state.lock().history.minute_series(&key, now_ms, 60).iter().sum();
                (region, reads)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(region, _)| region)
            .unwrap_or_else(|| ctx.config.region.clone());
        let demand = ResourceDemand {
            resource: name.clone(),
            priority,
            // Zero until the node leading the group has reported it.
            size_bytes: state.size_of(&name),
            region,
            replica_nodes,
            capacity_rps,
            observed_rps,
            forecast,
            forecast_step_ms: FIVE_MIN_MS,
            shadows: Vec::new(),
        };
        plans.push(plan(&config, &demand, &hosts, &regions, now_ms));
    }
    plans
}

/// The per-region history and forecast of one resource, for
/// `shadowctl demand show`.
#[derive(Clone, Debug, Serialize)]
pub struct DemandView {
    pub resource: String,
    pub now_ms: u64,
    pub slot_ms: u64,
    pub capacity_rps: f64,
    pub regions: Vec<RegionDemand>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RegionDemand {
    pub region: String,
    /// Reads per minute over the last hour, oldest first, ending at the
    /// last complete minute.
    pub minutes: Vec<f64>,
    /// Reads per five-minute slot, oldest first, ending at the last
    /// complete slot.
    pub history: Vec<f64>,
    pub forecast: Option<ForecastView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ForecastView {
    pub mode: String,
    /// Per lead (five-minute slots), in reads per slot.
    pub point: Vec<f64>,
    pub lower_95: Vec<f64>,
    pub upper_95: Vec<f64>,
    /// P(demand > the resource's capacity within the horizon).
    pub p_exceed: f64,
}

pub fn demand_view(ctx: &NodeCtx, resource: &str, slots: usize, now_ms: u64) -> DemandView {
    let capacity_rps = ctx.with_meta(|m| resource_capacity_rps(m, &replicas_hosted(m), resource)).unwrap_or(0.0);
    let end_ms = now_ms / FIVE_MIN_MS * FIVE_MIN_MS;
    let mut regions = ctx.placement.regions_of(resource);
    regions.push(REGION_TOTAL.to_string());
    let regions = regions
        .into_iter()
        .map(|region| {
            let key = DemandKey { resource: resource.to_string(), region: region.clone() };
            let history = series(&ctx.placement.lock().history, &key, end_ms, slots, Resolution::FiveMinutes);
            let minutes =
                series(&ctx.placement.lock().history, &key, now_ms / MINUTE_MS * MINUTE_MS, 60, Resolution::Minutes);
            let forecast = ctx.placement.forecast_per_slot(&key).map(|f| {
                let capacity_per_slot = capacity_rps * FIVE_MIN_MS as f64 / 1000.0;
                let leads = 1..=f.horizon_steps();
                ForecastView {
                    mode: f.mode.name().to_string(),
                    point: f.point.clone(),
                    lower_95: leads.clone().map(|l| f.interval(l, 0.95).0).collect(),
                    upper_95: leads.map(|l| f.interval(l, 0.95).1).collect(),
                    p_exceed: f.p_exceed(capacity_per_slot),
                }
            });
            RegionDemand { region, minutes, history, forecast }
        })
        .collect();
    DemandView { resource: resource.to_string(), now_ms, slot_ms: FIVE_MIN_MS, capacity_rps, regions }
}

/// Collects demand from every node, and shares each node's minutes with
/// the other meta voters so that a new meta leader has the history.
async fn collect(ctx: &Arc<NodeCtx>, now_ms: u64) {
    let Some(nodes) =
        ctx.with_meta(|m| m.nodes.values().map(|n| (n.node_id, n.labels.addr.clone())).collect::<Vec<_>>())
    else {
        return;
    };
    let me = ctx.identity().map(|i| i.node_id);
    let mut drained = Vec::new();
    for (node_id, addr) in nodes {
        let delivered_before_ms = ctx.placement.delivered_before_ms(node_id);
        let demand = if Some(node_id) == me {
            drain_local(ctx, now_ms, delivered_before_ms)
        } else {
            match drain_remote(ctx, &addr, delivered_before_ms).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::debug!(node_id, %error, "collecting demand");
                    continue;
                }
            }
        };
        ingest(ctx, node_id, &demand);
        if !demand.minutes.is_empty() || !demand.resource_sizes.is_empty() {
            drained.push(peer::ShareDemandRequest { node_id, demand: Some(demand) });
        }
    }
    ctx.placement.lock().collected_at_ms = now_ms;
    super::share::share(ctx, drained);
}

/// Adds one node's drained minutes to this node's history (the meta
/// leader's own collection, and `ShareDemand` on the other meta voters).
pub fn ingest(ctx: &NodeCtx, node_id: NodeId, demand: &peer::DrainDemandResponse) {
    let reports: Vec<MinuteReport> = demand
        .minutes
        .iter()
        .map(|m| MinuteReport {
            minute_start_ms: m.minute_start_ms,
            key: DemandKey { resource: m.resource.clone(), region: m.region.clone() },
            reads: m.reads,
            peak_bucket_reads: m.peak_bucket_reads,
            shed_reads: m.shed_reads,
        })
        .collect();
    ctx.placement.ingest(&reports, node_id, demand.node_reads_last_minute);
    ctx.placement.note_sizes(demand.resource_sizes.iter().map(|s| (s.resource.as_str(), s.bytes)));
}

async fn drain_remote(
    ctx: &NodeCtx,
    addr: &str,
    delivered_before_ms: u64,
) -> Result<peer::DrainDemandResponse, String> {
    let mut client = ctx.peers.client(addr).map_err(|e| e.to_string())?;
    let call = client.drain_demand(peer::DrainDemandRequest { delivered_before_ms });
    Ok(tokio::time::timeout(Duration::from_millis(DRAIN_TIMEOUT_MS), call)
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?
        .into_inner())
}

/// This node's complete minutes not yet delivered (those starting before
/// `delivered_before_ms` are forgotten first), and its reads in the last
/// one: the answer to `DrainDemand`.
pub fn drain_local(ctx: &NodeCtx, now_ms: u64, delivered_before_ms: u64) -> peer::DrainDemandResponse {
    let reports = ctx.demand.complete_minutes(now_ms, delivered_before_ms);
    let last = (now_ms / MINUTE_MS).saturating_sub(1) * MINUTE_MS;
    let node_reads_last_minute = reports.iter().filter(|r| r.minute_start_ms == last).map(|r| r.reads).sum();
    // Sizes of the resource groups this node leads, then named through the
    // meta directory (one group's lock at a time, never nested).
    let led: Vec<(GroupId, u64)> = ctx
        .registry
        .all()
        .into_iter()
        .filter(|group| group.is_leader())
        .filter_map(|group| match &group.state.read().data {
            GroupData::Resource(r) => Some((group.id, r.inline_bytes + r.blob_bytes)),
            GroupData::Meta(_) => None,
        })
        .collect();
    let resource_sizes = ctx
        .with_meta(|m| {
            led.iter()
                .filter_map(|(group, bytes)| {
                    Some(peer::ResourceSize { resource: m.groups.get(group)?.clone(), bytes: *bytes })
                })
                .collect()
        })
        .unwrap_or_default();
    peer::DrainDemandResponse {
        minutes: reports
            .into_iter()
            .map(|r| peer::DemandMinute {
                minute_start_ms: r.minute_start_ms,
                resource: r.key.resource,
                region: r.key.region,
                reads: r.reads,
                peak_bucket_reads: r.peak_bucket_reads,
                shed_reads: r.shed_reads,
            })
            .collect(),
        node_reads_last_minute,
        resource_sizes,
    }
}

fn record_of(plan: &Plan) -> Option<PlacementRecord> {
    let (action, nodes, reason) = match &plan.action {
        Action::Hold { .. } => return None,
        Action::AddShadows { nodes, added_rps, short_rps } => (
            PlacementAction::AddShadows,
            nodes.clone(),
            format!(
                "P(exceed) {:.2} >= {:.2}; +{added_rps:.0} rps ({short_rps:.0} rps short)",
                plan.inputs.p_exceed, plan.inputs.threshold
            ),
        ),
        Action::Retire { nodes, reason } => (PlacementAction::Retire, nodes.clone(), reason.clone()),
    };
    Some(PlacementRecord {
        at_ms: plan.at_ms,
        action,
        nodes,
        p_exceed_permille: (plan.inputs.p_exceed * 1000.0).round() as u32,
        reason,
    })
}

/// One planning pass on the meta leader.
pub async fn plan_once(ctx: &Arc<NodeCtx>) {
    let now_ms = ctx.clock.now_ms();
    collect(ctx, now_ms).await;
    let Some(settings) = ctx.with_meta(|m| m.placement.settings.clone()) else { return };
    ctx.placement.feed(&settings, now_ms).await;
    let plans = plan_all(ctx, None, now_ms);
    for plan in &plans {
        let Some(record) = record_of(plan) else { continue };
        let current = ctx.with_meta(|m| m.placement.records.get(&plan.resource).cloned()).flatten();
        if current.as_ref().is_some_and(|c| c.action == record.action && c.nodes == record.nodes) {
            continue;
        }
        let span = tracing::info_span!("placement", resource = %plan.resource);
        let _enter = span.enter();
        tracing::info!(action = %record.action, nodes = ?record.nodes, reason = %record.reason, "plan");
        let cmd = MetaCommand::RecordPlacement { now_ms, resource: plan.resource.clone(), record };
        if let Err(error) = propose_meta(ctx, cmd).await {
            tracing::warn!(%error, "committing a placement plan");
        }
    }
    ctx.placement.lock().last_plans = plans;
}

/// The run loop wakes this often to read the planning interval, so a
/// new interval takes effect within it rather than after the old one.
const PLANNING_TICK_MS: u64 = 1_000;

/// Runs on every node: plans while this node leads the meta group, and
/// snapshots the demand history it holds every `SNAPSHOT_INTERVAL_MS`.
pub async fn run(ctx: Arc<NodeCtx>) {
    let mut last_pass = tokio::time::Instant::now();
    let mut last_snapshot = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(PLANNING_TICK_MS)).await;
        // Every node that holds history (the meta voters) keeps it on disk.
        if last_snapshot.elapsed() >= Duration::from_millis(store::SNAPSHOT_INTERVAL_MS) {
            last_snapshot = tokio::time::Instant::now();
            ctx.placement.snapshot().await;
        }
        let interval_ms = ctx
            .with_meta(|m| m.placement.settings.planning_interval_ms)
            .unwrap_or(PlacementSettings::default().planning_interval_ms);
        if last_pass.elapsed() < Duration::from_millis(interval_ms) {
            continue;
        }
        last_pass = tokio::time::Instant::now();
        if ctx.meta_group().is_some_and(|g| g.is_leader()) {
            plan_once(&ctx).await;
        } else {
            // Only a leader sends demand to the voters.
            ctx.placement.share_queues().clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[(&str, f64)]) -> Vec<(DemandKey, f64)> {
        names
            .iter()
            .map(|(name, reads)| (DemandKey { resource: name.to_string(), region: "eu".to_string() }, *reads))
            .collect()
    }

    fn names(keys: &[DemandKey]) -> Vec<&str> {
        keys.iter().map(|k| k.resource.as_str()).collect()
    }

    #[test]
    fn a_minute_reported_again_is_counted_once_per_node() {
        let state = PlacementState::default();
        let key = DemandKey { resource: "r".to_string(), region: "eu".to_string() };
        let at = |minute: u64, reads: u64| MinuteReport {
            minute_start_ms: minute * MINUTE_MS,
            key: key.clone(),
            reads,
            peak_bucket_reads: reads,
            shed_reads: 0,
        };
        state.ingest(&[at(10, 60)], 1, 60);
        // Not delivered yet, so node 1 reports minute 10 again, with 11.
        state.ingest(&[at(10, 60), at(11, 120)], 1, 120);
        // Another node's minute 10 adds to it.
        state.ingest(&[at(10, 30)], 2, 30);
        let minutes = state.lock().history.minute_series(&key, 12 * MINUTE_MS, 2);
        assert_eq!(minutes, vec![90.0, 120.0]);
        // Delivery marks only move forward.
        state.mark_delivered(1, 12 * MINUTE_MS);
        state.mark_delivered(1, 11 * MINUTE_MS);
        assert_eq!((state.delivered_before_ms(1), state.delivered_before_ms(2)), (12 * MINUTE_MS, 0));
    }

    fn minute(node_minute: u64, resource: &str, region: &str, reads: u64) -> MinuteReport {
        MinuteReport {
            minute_start_ms: node_minute * MINUTE_MS,
            key: DemandKey { resource: resource.to_string(), region: region.to_string() },
            reads,
            peak_bucket_reads: reads,
            shed_reads: 0,
        }
    }

    /// Everything a restart must keep: every key's series and first slot,
    /// and the per-node watermarks.
    fn kept(state: &PlacementState) -> (Vec<(DemandKey, Vec<f64>, Vec<f64>, u64)>, BTreeMap<NodeId, u64>) {
        let inner = state.lock();
        let end_ms = 40 * MINUTE_MS;
        let keys = inner
            .first_slot
            .iter()
            .map(|(key, first)| {
                (
                    key.clone(),
                    series(&inner.history, key, end_ms, 40, Resolution::Minutes),
                    series(&inner.history, key, end_ms, 8, Resolution::FiveMinutes),
                    *first,
                )
            })
            .collect();
        (keys, inner.ingested_before_ms.clone())
    }

    #[tokio::test]
    async fn the_demand_history_survives_a_restart() {
        let engine: SharedEngine = crate::storage::memory_engine::MemoryEngine::new();
        let state = PlacementState::open(engine.clone());
        for m in 0..20 {
            state.ingest(&[minute(m, "a", "eu", 10 + m), minute(m, "b", "us", 3)], 1, 0);
            state.ingest(&[minute(m, "a", "eu", 1)], 2, 0);
            if m == 12 {
                // A snapshot part way: the rest is only in the journal.
                state.snapshot().await;
            }
        }
        // A minute reported again is not counted twice.
        state.ingest(&[minute(19, "a", "eu", 10), minute(20, "a", "us", 7)], 1, 0);
        let before = kept(&state);
        let a_eu: f64 =
            before.0.iter().find(|(key, ..)| key.resource == "a" && key.region == "eu").expect("a/eu").1.iter().sum();
        assert_eq!(a_eu, (0..20).map(|m| 11.0 + m as f64).sum::<f64>(), "minute 19 of node 1 counted twice");
        let reopened = PlacementState::open(engine.clone());
        assert_eq!(kept(&reopened), before, "first restart");
        // Watermarks came back: a minute node 1 reports again is skipped.
        reopened.ingest(&[minute(20, "a", "us", 7)], 1, 0);
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
        assert_eq!(kept(&PlacementState::open(engine.clone())), before, "after a snapshot cut short");
        // A full snapshot trims the journal and keeps everything.
        reopened.snapshot().await;
        assert_eq!(store::load(engine.as_ref()).expect("load").journal.len(), 0);
        assert_eq!(kept(&PlacementState::open(engine)), before, "after a full snapshot");
    }

    #[test]
    fn a_large_batch_is_journaled_in_bounded_records_and_the_last_moves_the_mark() {
        let engine: SharedEngine = crate::storage::memory_engine::MemoryEngine::new();
        let state = PlacementState::open(engine.clone());
        // 100 keys × 250 minutes: 25,000 slots, more than one record (the
        // engine refuses a value over 56 KiB).
        let reports: Vec<MinuteReport> =
            (0..250).flat_map(|m| (0..100).map(move |k| minute(m, &format!("r{k:03}"), "eu", 1 + k))).collect();
        state.ingest(&reports, 7, 0);
        let loaded = store::load(engine.as_ref()).expect("load");
        assert!(loaded.journal.len() > 1, "one record for 25,000 slots");
        assert_eq!(loaded.journal.iter().map(|(_, r)| r.slots.len()).sum::<usize>(), 25_000);
        let marks: Vec<u64> = loaded.journal.iter().map(|(_, r)| r.ingested_before_ms).collect();
        let last = marks.len() - 1;
        assert!(marks[..last].iter().all(|m| *m == 0) && marks[last] == 250 * MINUTE_MS, "{marks:?}");
        assert_eq!(kept(&PlacementState::open(engine)), kept(&state));
    }

    #[test]
    fn a_dry_run_reads_the_last_collected_minute() {
        let state = PlacementState::default();
        let key = DemandKey { resource: "r".to_string(), region: "eu".to_string() };
        let report =
            MinuteReport { minute_start_ms: 0, key: key.clone(), reads: 120, peak_bucket_reads: 20, shed_reads: 0 };
        state.ingest(&[report], 1, 120);
        // Collected just after minute 0 ended; minute 1 is over but not
        // collected yet when the dry run asks during minute 2.
        state.lock().collected_at_ms = 61_000;
        assert_eq!(state.last_minute_rps(&key, 150_000), 2.0);
        // Once minute 1 is collected (no reads in it), it is what counts.
        state.lock().collected_at_ms = 121_000;
        assert_eq!(state.last_minute_rps(&key, 150_000), 0.0);
    }

    #[test]
    fn busiest_keys_win_forecasters_without_churn_at_the_margin() {
        // Room for one more: the busiest waiting key takes it.
        let (evict, admit) =
            rebalance_forecasters(1, keys(&[("a", 10.0)]), keys(&[("b", 1.0), ("c", 50.0), ("d", 5.0)]), 2, 32);
        assert!(evict.is_empty());
        assert_eq!(names(&admit), vec!["c"]);
        // Full: a waiting key replaces the quietest only when more than
        // twice as busy; "e" (30 vs 20) is not.
        let kept = keys(&[("a", 10.0), ("b", 20.0), ("c", 500.0)]);
        let waiting = keys(&[("d", 100.0), ("e", 30.0), ("f", 1.0)]);
        let (evict, admit) = rebalance_forecasters(3, kept, waiting, 3, 32);
        assert_eq!(names(&evict), vec!["a"]);
        assert_eq!(names(&admit), vec!["d"]);
        // Equal demand never churns.
        let (evict, admit) = rebalance_forecasters(1, keys(&[("a", 7.0)]), keys(&[("b", 7.0)]), 1, 32);
        assert!(evict.is_empty() && admit.is_empty());
    }

    #[test]
    fn forecasters_start_a_bounded_number_per_pass_busiest_first() {
        // Plenty of room: only `admit_max` start, the busiest.
        let waiting = keys(&[("a", 1.0), ("b", 9.0), ("c", 5.0), ("d", 7.0)]);
        let (evict, admit) = rebalance_forecasters(0, Vec::new(), waiting, 100, 2);
        assert!(evict.is_empty());
        assert_eq!(names(&admit), vec!["b", "d"]);
        // Full: no more replacements than the bound.
        let kept = keys(&[("a", 1.0), ("b", 1.0), ("c", 1.0)]);
        let waiting = keys(&[("x", 50.0), ("y", 40.0), ("z", 30.0)]);
        let (evict, admit) = rebalance_forecasters(3, kept, waiting, 3, 2);
        assert_eq!((names(&evict), names(&admit)), (vec!["a", "b"], vec!["x", "y"]));
    }

    #[tokio::test]
    async fn a_new_leader_starts_forecasters_from_the_whole_history_a_pass_at_a_time() {
        let state = PlacementState::default();
        let settings = PlacementSettings::default();
        let day_slots = 288;
        // 40 resources with nine days of steady demand, one minute per
        // five-minute slot (what a new leader holds from ShareDemand).
        let keys: Vec<DemandKey> =
            (0..40).map(|i| DemandKey { resource: format!("r{i:02}"), region: "eu".to_string() }).collect();
        let slots = 9 * day_slots as u64;
        for slot in 0..slots {
            let reports: Vec<MinuteReport> = keys
                .iter()
                .enumerate()
                .map(|(i, key)| MinuteReport {
                    minute_start_ms: slot * FIVE_MIN_MS,
                    key: key.clone(),
                    reads: 100 + i as u64 + slot % 7,
                    peak_bucket_reads: 20,
                    shed_reads: 0,
                })
                .collect();
            state.ingest(&reports, 1, 0);
        }
        let now_ms = slots * FIVE_MIN_MS;
        // Each key has a region key and a total key: 80 keys, 32 a pass.
        state.feed(&settings, now_ms).await;
        let (count, busiest_first) = {
            let inner = state.lock();
            (
                inner.forecasters.len(),
                inner.forecasters.contains_key(&DemandKey { region: REGION_TOTAL.into(), ..keys[39].clone() }),
            )
        };
        assert_eq!(count, WARM_STARTS_PER_PASS_MAX);
        assert!(busiest_first, "the busiest resource waited");
        state.feed(&settings, now_ms).await;
        state.feed(&settings, now_ms).await;
        let inner = state.lock();
        assert_eq!(inner.forecasters.len(), 80);
        // Every forecaster holds all nine days and answers at once.
        for (key, fed) in inner.forecasters.iter() {
            let fed = lock_fed(fed);
            assert_eq!(fed.forecaster.steps_observed(), slots, "{key:?}");
            assert_eq!(fed.next_slot, slots);
        }
        drop(inner);
        let forecast = state.forecast_rps(&keys[0]).expect("a forecaster");
        assert!(!forecast.is_reactive(), "answered {:?} with nine days of history", forecast.mode);
    }
}
