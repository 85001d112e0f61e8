//! The shadow part of the meta state: every shadow replica's phase, step
//! and read weight, each resource's routing version and bounded history
//! of steps, halts, rollbacks and retirements, and the shift settings.
//!
//! A shadow is also a `ReplicaRecord` with role `Shadow` in its resource's
//! directory entry (so the reconciler opens it and the group leader adds
//! it as a learner); this sub-state keeps what only shadows have. Every
//! change is a compare-and-set: the executor (`node/src/shadow/`) names
//! the phase and weight it saw, and a command whose expectation no longer
//! holds changes nothing. Invariants, asserted after every apply: a
//! shadow's weight is non-zero only while shifting; the weights of a
//! resource's shadows sum to at most 1000; every shadow record has its
//! directory replica and the reverse.

use std::collections::BTreeMap;
use std::collections::VecDeque;

use serde::Deserialize;
use serde::Serialize;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_placement::ShadowPhase;
use shadowstore_placement::ShiftSetting;
use shadowstore_placement::ShiftSettings;
use shadowstore_placement::bounds::EVENT_TEXT_BYTES_MAX;
use shadowstore_placement::bounds::HISTORY_EVENTS_MAX;
use shadowstore_placement::shift::ShadowExpect;

use super::command::MetaResponse;
use super::directory::ReplicaRole;

/// Read weights are per mille of a resource's reads.
pub const WEIGHT_TOTAL_PERMILLE: u32 = 1_000;

/// Field order is the stored encoding (postcard): append only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowRecord {
    pub replica_id: ReplicaId,
    pub node_id: NodeId,
    pub phase: ShadowPhase,
    /// Index into the step schedule while shifting.
    pub step: u8,
    pub weight_permille: u32,
    /// The last weight whose window passed its gates.
    pub last_healthy_permille: u32,
    /// The share of reads the shadow is meant to take at 100 %.
    pub share_permille: u32,
    pub added_at_ms: u64,
    /// When the current phase (or step) began.
    pub since_ms: u64,
    /// Operator override: the planner never retires a pinned shadow.
    pub pinned: bool,
    /// Operator halt: no promotion while set (gates still roll back).
    pub halted: bool,
    /// Added by an operator rather than by the planner.
    pub by_operator: bool,
}

/// One entry of a resource's placement history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowEvent {
    pub at_ms: u64,
    pub replica_id: ReplicaId,
    pub node_id: NodeId,
    /// added, syncing, ready, step, rollback, abort, halt, resume,
    /// draining, retired, pin, unpin.
    pub kind: String,
    pub from_permille: u32,
    pub to_permille: u32,
    /// Why, with the measurements that caused it.
    pub text: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceShadows {
    pub shadows: BTreeMap<ReplicaId, ShadowRecord>,
    /// Bumped whenever a read weight or the set of replicas changes.
    pub routing_version: u64,
    pub history: VecDeque<ShadowEvent>,
    /// The ledger of retired shadows: what they cost over their lives
    /// (micro-units), added when each is removed.
    pub retired_cost_micros: u64,
}

/// Field order is the stored encoding (postcard): append only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowMeta {
    pub settings: ShiftSettings,
    pub resources: BTreeMap<String, ResourceShadows>,
}

impl ShadowRecord {
    pub fn expect(&self) -> ShadowExpect {
        ShadowExpect { phase: self.phase, step: self.step, weight_permille: self.weight_permille }
    }
}

/// One replica's read weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteEntry {
    pub replica_id: ReplicaId,
    pub node_id: NodeId,
    pub role: ReplicaRole,
    pub weight_permille: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoutingTable {
    pub version: u64,
    pub entries: Vec<RouteEntry>,
}

impl ResourceShadows {
    pub(super) fn push_event(&mut self, mut event: ShadowEvent) {
        if event.text.len() > EVENT_TEXT_BYTES_MAX {
            let mut end = EVENT_TEXT_BYTES_MAX;
            while !event.text.is_char_boundary(end) {
                end -= 1;
            }
            event.text.truncate(end);
        }
        if self.history.len() >= HISTORY_EVENTS_MAX {
            self.history.pop_front();
        }
        self.history.push_back(event);
    }
}

impl ShadowMeta {
    pub fn of(&self, resource: &str) -> Option<&ResourceShadows> {
        self.resources.get(resource)
    }

    pub fn shadow(&self, resource: &str, replica: ReplicaId) -> Option<&ShadowRecord> {
        self.resources.get(resource)?.shadows.get(&replica)
    }

    pub fn routing_version(&self, resource: &str) -> u64 {
        self.resources.get(resource).map(|r| r.routing_version).unwrap_or(0)
    }

    pub fn set(&mut self, setting: ShiftSetting) -> MetaResponse {
        match self.settings.set(setting) {
            Ok(()) => MetaResponse::Updated,
            Err(e) => MetaResponse::Rejected { reason: e.0 },
        }
    }

    /// The replica set of `resource` changed (a replacement): clients
    /// must refetch its routing table.
    pub fn membership_changed(&mut self, resource: &str) {
        self.resources.entry(resource.to_string()).or_default().routing_version += 1;
    }

    pub fn forget_resource(&mut self, resource: &str) {
        self.resources.remove(resource);
    }
}
