//! The placement part of the meta state: the settings every meta leader
//! plans with, the planner's committed decisions, resource priorities,
//! prices operators set for nodes and distances between regions. The types
//! and their bounds are policy (`shadowstore_placement`); this sub-state
//! keeps them replicated and applies the commands that change them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;
use shadowstore_base::ids::NodeId;
use shadowstore_placement::PlacementRecord;
use shadowstore_placement::PlacementSettings;
use shadowstore_placement::Prices;
use shadowstore_placement::RegionDistances;
use shadowstore_placement::bounds::PRIORITY_ABS_MAX;

use super::command::MetaCommand;
use super::command::MetaResponse;

/// Field order is the stored encoding (postcard): append only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlacementMeta {
    pub settings: PlacementSettings,
    /// resource → the planner's latest committed decision.
    pub records: BTreeMap<String, PlacementRecord>,
    /// resource → placement priority, when not 0.
    pub priorities: BTreeMap<String, i32>,
    /// Prices an operator set for a node (`shadowctl config set prices.*
    /// --node N`). They win over the prices the node announces from its
    /// config, so a restart does not undo them.
    pub price_overrides: BTreeMap<NodeId, Prices>,
    /// Distances between regions an operator set; unlisted pairs of
    /// regions are 1 apart.
    pub region_distances: RegionDistances,
}

impl PlacementMeta {
    /// A node's prices: the operator's, else what it announced.
    pub fn prices_of(&self, node: NodeId, announced: &Prices) -> Prices {
        self.price_overrides.get(&node).cloned().unwrap_or_else(|| announced.clone())
    }

    pub fn forget_resource(&mut self, name: &str) {
        self.records.remove(name);
        self.priorities.remove(name);
    }

    pub fn forget_node(&mut self, node: NodeId) {
        self.price_overrides.remove(&node);
    }

    /// Applies a placement command (`MetaCommand::is_placement`), checking
    /// every value again: a command that is out of bounds changes nothing.
    pub fn apply(
        &mut self,
        cmd: &MetaCommand,
        resource_exists: impl Fn(&str) -> bool,
        node_exists: impl Fn(NodeId) -> bool,
    ) -> MetaResponse {
        let rejected = |reason: String| MetaResponse::Rejected { reason };
        match cmd {
            MetaCommand::SetPlacementSettings { settings, .. } => match settings.validate() {
                Ok(()) => {
                    self.settings = settings.clone();
                    MetaResponse::Updated
                }
                Err(e) => rejected(e.0),
            },
            MetaCommand::SetPlacementSetting { setting, .. } => match self.settings.set(*setting) {
                Ok(()) => MetaResponse::Updated,
                Err(e) => rejected(e.0),
            },
            MetaCommand::SetNodePrices { node_id, prices, .. } => {
                if !node_exists(*node_id) {
                    return MetaResponse::NotFound;
                }
                if let Err(reason) = prices.validate() {
                    return rejected(reason);
                }
                self.price_overrides.insert(*node_id, prices.clone());
                MetaResponse::Updated
            }
            MetaCommand::SetResourcePriority { resource, priority, .. } => {
                if !resource_exists(resource) {
                    return MetaResponse::NotFound;
                }
                let priority = (*priority).clamp(-PRIORITY_ABS_MAX, PRIORITY_ABS_MAX);
                if priority == 0 {
                    self.priorities.remove(resource);
                } else {
                    self.priorities.insert(resource.clone(), priority);
                }
                MetaResponse::Updated
            }
            MetaCommand::SetRegionDistance { a, b, distance, .. } => match self.region_distances.set(a, b, *distance) {
                Ok(()) => MetaResponse::Updated,
                Err(reason) => rejected(reason),
            },
            MetaCommand::RecordPlacement { resource, record, .. } => {
                if !resource_exists(resource) {
                    return MetaResponse::NotFound;
                }
                let mut record = record.clone();
                record.bound_reason();
                self.records.insert(resource.clone(), record);
                MetaResponse::Updated
            }
            other => rejected(format!("not a placement command: {other}")),
        }
    }

    /// Everything kept per resource names a resource that exists.
    pub fn check_invariants(&self, resource_exists: impl Fn(&str) -> bool) -> Result<(), String> {
        if let Some(r) = self.records.keys().find(|r| !resource_exists(r)) {
            return Err(format!("placement of an unknown resource {r:?}"));
        }
        if let Some(r) = self.priorities.keys().find(|r| !resource_exists(r)) {
            return Err(format!("priority of an unknown resource {r:?}"));
        }
        Ok(())
    }
}
