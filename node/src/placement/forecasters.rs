//! The meta leader's pool of forecasters, one per (resource, region) and
//! per resource total, fed from the demand history at five-minute
//! resolution.
//!
//! Forecasters live only on the leader: a new leader warm-starts them from
//! its history (up to two weeks of it, `WARM_STARTS_PER_PASS_MAX` per pass,
//! busiest keys first), so it forecasts again at once, weekly season
//! included. Over `FORECASTERS_MAX` keys the busiest win; keys without a
//! forecaster are planned reactively. A fit takes up to ~0.2 s of CPU, so
//! fits run outside every lock and the task yields after each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;

use shadowstore_placement::PlacementSettings;
use shadowstore_placement::demand::DemandKey;
use shadowstore_placement::demand::history::FIVE_MIN_MS;
use shadowstore_placement::forecast::forecaster::ForecasterConfig;
use shadowstore_placement::forecast::{DemandForecast, Forecaster};

use super::history::History;
use super::history::Resolution;

/// New forecasters started per planning pass, busiest keys first. Each
/// costs two model fits on up to two weeks of history
/// (`Forecaster::warm_start`; `sim demand-memory --forecasters` times
/// one), so a new meta leader with many keys spreads them over passes
/// instead of stalling one; keys still waiting are planned reactively.
pub const WARM_STARTS_PER_PASS_MAX: usize = 32;
/// Forecasters the leader keeps (bounds memory and CPU; the busiest keys
/// win). Keys beyond it are planned reactively.
pub const FORECASTERS_MAX: usize = 20_000;
/// Recent demand that ranks keys for a forecaster: the last 6 hours.
const BUSY_WINDOW_SLOTS: usize = 72;
/// A key without a forecaster takes one from a forecast key only when its
/// recent reads exceed that key's by this factor (no churn at the margin:
/// a new forecaster costs two model fits).
const BUSY_EVICT_FACTOR: f64 = 2.0;

struct Fed {
    forecaster: Forecaster,
    /// The five-minute slot (absolute index) fed last.
    next_slot: u64,
}

/// Each forecaster behind its own lock: a fit holds only its key's.
#[derive(Default)]
pub struct ForecasterPool {
    fed: Mutex<BTreeMap<DemandKey, Arc<Mutex<Fed>>>>,
}

pub fn forecaster_config(settings: &PlacementSettings) -> ForecasterConfig {
    ForecasterConfig::for_step(FIVE_MIN_MS / 1000, settings.horizon_s)
}

fn lock_fed(fed: &Mutex<Fed>) -> std::sync::MutexGuard<'_, Fed> {
    fed.lock().unwrap_or_else(|p| p.into_inner())
}

impl ForecasterPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<DemandKey, Arc<Mutex<Fed>>>> {
        self.fed.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Feeds every complete five-minute slot before `now_ms` to the
    /// forecasters, and starts forecasters for keys that have none (see the
    /// module comment).
    pub async fn feed(&self, history: &History, settings: &PlacementSettings, now_ms: u64) {
        let end_slot = now_ms / FIVE_MIN_MS;
        let end_ms = end_slot * FIVE_MIN_MS;
        let config = forecaster_config(settings);
        // Which keys start a forecaster, with their history; the fits run
        // outside the locks, so a dry run is not kept waiting.
        let first_slots = history.first_slots();
        let recent = |key: &DemandKey| -> f64 {
            history.series(key, end_ms, BUSY_WINDOW_SLOTS, Resolution::FiveMinutes).iter().sum()
        };
        let admit = {
            let mut fed = self.lock();
            // A horizon change starts every forecaster again.
            fed.retain(|_, f| lock_fed(f).forecaster.config().horizon_steps == config.horizon_steps);
            let waiting: Vec<(DemandKey, f64)> = first_slots
                .keys()
                .filter(|key| !fed.contains_key(*key))
                .map(|key| (key.clone(), recent(key)))
                .collect();
            // The kept keys' reads matter only when some must make room.
            let kept: Vec<(DemandKey, f64)> = if fed.len() + waiting.len() > FORECASTERS_MAX {
                fed.keys().map(|key| (key.clone(), recent(key))).collect()
            } else {
                Vec::new()
            };
            let (evict, admit) = rebalance(fed.len(), kept, waiting, FORECASTERS_MAX, WARM_STARTS_PER_PASS_MAX);
            for key in evict {
                fed.remove(&key);
            }
            admit
        };
        for key in admit {
            // From the first slot the key was seen, never with made-up
            // zeros from before; at most the fitting window.
            let seen = first_slots.get(&key).copied().unwrap_or(end_slot);
            let start = end_slot.saturating_sub(config.history_steps_max as u64).max(seen);
            let values = history.series(&key, end_ms, end_slot.saturating_sub(start) as usize, Resolution::FiveMinutes);
            let Ok(forecaster) = Forecaster::warm_start(config.clone(), &values) else { continue };
            {
                let mut fed = self.lock();
                if fed.len() < FORECASTERS_MAX {
                    let f = Fed { forecaster, next_slot: end_slot };
                    fed.entry(key).or_insert_with(|| Arc::new(Mutex::new(f)));
                }
                assert!(fed.len() <= FORECASTERS_MAX, "forecasters over their cap");
            }
            tokio::task::yield_now().await;
        }
        let held: Vec<(DemandKey, Arc<Mutex<Fed>>)> = self.lock().iter().map(|(k, f)| (k.clone(), f.clone())).collect();
        for (key, fed) in held {
            let next_slot = lock_fed(&fed).next_slot;
            if next_slot >= end_slot {
                continue;
            }
            let values = history.series(&key, end_ms, (end_slot - next_slot) as usize, Resolution::FiveMinutes);
            {
                let mut fed = lock_fed(&fed);
                values.into_iter().for_each(|value| fed.forecaster.observe(value));
                fed.next_slot = end_slot;
            }
            tokio::task::yield_now().await;
        }
    }

    /// The forecast of `key` per five-minute slot.
    pub fn forecast_per_slot(&self, key: &DemandKey) -> Option<DemandForecast> {
        let fed = self.lock().get(key).cloned()?;
        Some(lock_fed(&fed).forecaster.forecast())
    }

    /// The forecast of `key` in requests per second.
    pub fn forecast_rps(&self, key: &DemandKey) -> Option<DemandForecast> {
        Some(self.forecast_per_slot(key)?.scaled(1000.0 / FIVE_MIN_MS as f64))
    }

    /// Steps each forecaster has seen, by key (tests).
    #[cfg(test)]
    fn observed(&self) -> BTreeMap<DemandKey, (u64, u64)> {
        self.lock()
            .iter()
            .map(|(k, f)| {
                let f = lock_fed(f);
                (k.clone(), (f.forecaster.steps_observed(), f.next_slot))
            })
            .collect()
    }
}

/// Which keys gain and lose a forecaster. `held` keys have one; `kept`
/// lists them with their recent reads when some may have to make room
/// (it may be empty otherwise), and `waiting` lists the keys without one.
/// Free places go to the busiest waiting keys; then the busiest waiting
/// key replaces the quietest kept one for as long as it is more than
/// `BUSY_EVICT_FACTOR` times busier. At most `admit_max` are admitted.
/// Returns (evict, admit), admit busiest first.
fn rebalance(
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

#[cfg(test)]
mod tests {
    use shadowstore_base::ids::NodeId;
    use shadowstore_placement::demand::MinuteReport;

    use super::*;
    use crate::placement::history::REGION_TOTAL;

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
    fn busiest_keys_win_forecasters_without_churn_at_the_margin() {
        // Room for one more: the busiest waiting key takes it.
        let (evict, admit) = rebalance(1, keys(&[("a", 10.0)]), keys(&[("b", 1.0), ("c", 50.0), ("d", 5.0)]), 2, 32);
        assert!(evict.is_empty());
        assert_eq!(names(&admit), vec!["c"]);
        // Full: a waiting key replaces the quietest only when more than
        // twice as busy; "e" (30 vs 20) is not.
        let kept = keys(&[("a", 10.0), ("b", 20.0), ("c", 500.0)]);
        let waiting = keys(&[("d", 100.0), ("e", 30.0), ("f", 1.0)]);
        let (evict, admit) = rebalance(3, kept, waiting, 3, 32);
        assert_eq!(names(&evict), vec!["a"]);
        assert_eq!(names(&admit), vec!["d"]);
        // Equal demand never churns.
        let (evict, admit) = rebalance(1, keys(&[("a", 7.0)]), keys(&[("b", 7.0)]), 1, 32);
        assert!(evict.is_empty() && admit.is_empty());
    }

    #[test]
    fn forecasters_start_a_bounded_number_per_pass_busiest_first() {
        // Plenty of room: only `admit_max` start, the busiest.
        let waiting = keys(&[("a", 1.0), ("b", 9.0), ("c", 5.0), ("d", 7.0)]);
        let (evict, admit) = rebalance(0, Vec::new(), waiting, 100, 2);
        assert!(evict.is_empty());
        assert_eq!(names(&admit), vec!["b", "d"]);
        // Full: no more replacements than the bound.
        let kept = keys(&[("a", 1.0), ("b", 1.0), ("c", 1.0)]);
        let waiting = keys(&[("x", 50.0), ("y", 40.0), ("z", 30.0)]);
        let (evict, admit) = rebalance(3, kept, waiting, 3, 2);
        assert_eq!((names(&evict), names(&admit)), (vec!["a", "b"], vec!["x", "y"]));
    }

    #[tokio::test]
    async fn a_new_leader_starts_forecasters_from_the_whole_history_a_pass_at_a_time() {
        let history = History::default();
        let pool = ForecasterPool::default();
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
            history.ingest(&reports, NodeId::new(1), 0);
        }
        let now_ms = slots * FIVE_MIN_MS;
        // Each key has a region key and a total key: 80 keys, 32 a pass.
        pool.feed(&history, &settings, now_ms).await;
        assert_eq!(pool.len(), WARM_STARTS_PER_PASS_MAX);
        let busiest = DemandKey { region: REGION_TOTAL.into(), ..keys[39].clone() };
        assert!(pool.observed().contains_key(&busiest), "the busiest resource waited");
        pool.feed(&history, &settings, now_ms).await;
        pool.feed(&history, &settings, now_ms).await;
        let observed = pool.observed();
        assert_eq!(observed.len(), 80);
        // Every forecaster holds all nine days and answers at once.
        for (key, (steps, next_slot)) in &observed {
            assert_eq!((*steps, *next_slot), (slots, slots), "{key:?}");
        }
        let forecast = pool.forecast_rps(&keys[0]).expect("a forecaster");
        assert!(!forecast.is_reactive(), "answered {:?} with nine days of history", forecast.mode);
    }
}
