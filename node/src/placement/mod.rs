//! Shadow placement in the cluster: the meta leader's planning service.
//! The policy (telemetry aggregation, forecasting, the planner, its cost
//! model) is the `shadowstore_placement` crate; this module runs it on
//! the cluster's data and keeps what it needs between passes.
//!
//! - [`collect`]: both sides of `DrainDemand` (every node's complete
//!   minutes of read counts, collected by the meta leader).
//! - [`history`]: the demand history a meta voter holds, on its disk.
//! - [`share`]: the drained demand, sent in order to every other meta
//!   voter so that the next leader holds the same history.
//! - [`forecasters`]: the leader's forecaster per (resource, region).
//! - [`inputs`]: the planner's view of the cluster, and the dry run.
//! - [`run`]: the planning loop; decisions are committed to the meta group.
//!
//! Executing a plan (adding the shadow as a Raft learner and shifting
//! traffic) is the shadow executor's job (`crate::shadow::executor`).

use std::sync::Arc;
use std::sync::Mutex;

use prometheus_client::metrics::histogram::Histogram;
use shadowstore_base::clock::SharedClock;
use shadowstore_placement::demand::DemandRecorder;
use shadowstore_placement::planner::Plan;

use crate::cluster::Cluster;
use crate::storage::SharedEngine;

pub mod collect;
pub mod forecasters;
pub mod history;
pub mod inputs;
pub mod run;
pub mod share;

/// The placement service of one node: the handles it uses and the state it
/// keeps (a meta voter's history; a leader's forecasters, share queues and
/// last plans).
pub struct Placement {
    pub cluster: Arc<Cluster>,
    /// This node's read counts, drained by the meta leader.
    pub recorder: Arc<DemandRecorder>,
    pub clock: SharedClock,
    /// This node's region: a resource's demand region before any is seen.
    pub region: String,
    pub history: history::History,
    pub forecasters: forecasters::ForecasterPool,
    /// What the leader still has to send to each other voter (its own
    /// lock, never held with another).
    queues: Mutex<share::ShareQueues>,
    last_plans: Mutex<Vec<Plan>>,
    /// (resource, shadow node) → since when demand without that shadow
    /// has been low, from the verdicts of the leader's earlier plans.
    low_since: Mutex<std::collections::BTreeMap<(String, shadowstore_base::ids::NodeId), u64>>,
    /// How long each phase of the leader's planning passes took (metrics).
    pub timings: PassTimings,
}

/// Durations of a planning pass's phases, in seconds.
#[derive(Debug)]
pub struct PassTimings {
    /// Draining demand from every node.
    pub collect: Histogram,
    /// Feeding the forecasters (fitting models where due).
    pub forecast: Histogram,
    /// Planning every resource.
    pub plan: Histogram,
}

impl Default for PassTimings {
    fn default() -> Self {
        let h = crate::telemetry::seconds_histogram;
        PassTimings { collect: h(), forecast: h(), plan: h() }
    }
}

impl Placement {
    /// The service of a node whose history is kept in `engine`.
    pub fn open(
        cluster: Arc<Cluster>,
        recorder: Arc<DemandRecorder>,
        clock: SharedClock,
        region: String,
        engine: SharedEngine,
    ) -> Placement {
        Placement {
            cluster,
            recorder,
            clock,
            region,
            history: history::History::open(engine),
            forecasters: forecasters::ForecasterPool::default(),
            queues: Mutex::new(share::ShareQueues::default()),
            last_plans: Mutex::new(Vec::new()),
            low_since: Mutex::new(std::collections::BTreeMap::new()),
            timings: PassTimings::default(),
        }
    }

    /// The leader's queues of demand for the other voters.
    pub fn share_queues(&self) -> std::sync::MutexGuard<'_, share::ShareQueues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn last_plans(&self) -> Vec<Plan> {
        self.last_plans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keeps `plans` and, from their shadow verdicts, since when demand
    /// without each shadow has been low (a verdict not low clears it).
    fn set_last_plans(&self, plans: Vec<Plan>, now_ms: u64) {
        {
            let mut low = self.low_since.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = std::collections::BTreeMap::new();
            for plan in &plans {
                for v in plan.shadows.iter().filter(|v| v.low_now) {
                    let key = (plan.resource.clone(), v.node_id);
                    let since = low.get(&key).copied().unwrap_or(now_ms);
                    next.insert(key, since);
                }
            }
            *low = next;
        }
        *self.last_plans.lock().unwrap_or_else(|p| p.into_inner()) = plans;
    }

    pub fn low_since(&self, resource: &str, node: shadowstore_base::ids::NodeId) -> Option<u64> {
        self.low_since.lock().unwrap_or_else(|p| p.into_inner()).get(&(resource.to_string(), node)).copied()
    }
}
