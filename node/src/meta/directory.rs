//! The records of the meta group's directory: members with the labels
//! they announce, resources with their replicas and storage parameters.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde::Serialize;
use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_placement::Prices;

/// What a node says about itself when it joins or restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLabels {
    pub addr: String,
    pub region: String,
    pub read_capacity_rps: u64,
    pub disk_capacity_bytes: u64,
    pub prices: Prices,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: NodeId,
    pub meta_replica_id: ReplicaId,
    pub labels: NodeLabels,
    pub joined_at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRole {
    /// A primary replica: a voter of the resource group.
    Primary,
    /// A shadow: a permanent learner with a full copy, serving reads by
    /// weight once ready (its life is in `meta::shadow`). Never a voter,
    /// never a shard holder, never replaced: a lost shadow is retired.
    Shadow,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    pub replica_id: ReplicaId,
    pub node_id: NodeId,
    pub role: ReplicaRole,
    /// The replica this one replaced (its shards move here).
    pub replaces: Option<ReplicaId>,
}

/// How a resource stores its values, fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageParams {
    /// Erasure code: k data shards + m parity shards, k + m = primaries.
    pub k: u8,
    pub m: u8,
    /// Values up to this size are stored inline through Raft.
    pub inline_threshold: u32,
    pub stripe_size: u32,
    /// Versions kept per variant past the read grace period.
    pub keep_versions: u32,
}

impl StorageParams {
    /// Defaults for `replication_factor` primaries: 3 → 2+1, 5 → 3+2.
    pub fn default_for(replication_factor: u32) -> StorageParams {
        let m = if replication_factor >= 5 { 2 } else { 1 };
        StorageParams {
            k: (replication_factor - m) as u8,
            m: m as u8,
            inline_threshold: shadowstore_base::limits::INLINE_VALUE_BYTES_MAX as u32,
            stripe_size: crate::resource::layout::STRIPE_SIZE_DEFAULT,
            keep_versions: 1,
        }
    }

    pub fn validate(&self, replication_factor: u32) -> Result<(), String> {
        use shadowstore_base::limits::{INLINE_VALUE_BYTES_MAX, KEEP_VERSIONS_MAX, STRIPE_SIZE_MAX, STRIPE_SIZE_MIN};
        if self.k == 0 || self.m == 0 {
            return Err(format!("erasure code {}+{} needs at least one data and one parity shard", self.k, self.m));
        }
        if self.k as u32 + self.m as u32 != replication_factor {
            return Err(format!(
                "erasure code {}+{} must add up to the replication factor {replication_factor}",
                self.k, self.m
            ));
        }
        if self.inline_threshold as usize > INLINE_VALUE_BYTES_MAX {
            return Err(format!("inline threshold {} exceeds {INLINE_VALUE_BYTES_MAX}", self.inline_threshold));
        }
        if !(STRIPE_SIZE_MIN..=STRIPE_SIZE_MAX).contains(&self.stripe_size) {
            return Err(format!("stripe size {} is outside {STRIPE_SIZE_MIN}..={STRIPE_SIZE_MAX}", self.stripe_size));
        }
        if self.keep_versions == 0 || self.keep_versions > KEEP_VERSIONS_MAX {
            return Err(format!("keep_versions {} is outside 1..={KEEP_VERSIONS_MAX}", self.keep_versions));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRecord {
    pub name: String,
    pub group_id: GroupId,
    pub replication_factor: u32,
    pub storage: StorageParams,
    pub replicas: Vec<ReplicaRecord>,
    /// The replicas the group was initialized with; the smallest of them
    /// initializes the Raft group.
    pub initial_replicas: BTreeSet<ReplicaId>,
    pub created_at_ms: u64,
}

impl ResourceRecord {
    pub fn replica_on(&self, node: NodeId) -> Option<&ReplicaRecord> {
        self.replicas.iter().find(|r| r.node_id == node)
    }

    /// The voters: replicas holding shards and electing leaders.
    pub fn primaries(&self) -> impl Iterator<Item = &ReplicaRecord> {
        self.replicas.iter().filter(|r| r.role == ReplicaRole::Primary)
    }

    pub fn shadows(&self) -> impl Iterator<Item = &ReplicaRecord> {
        self.replicas.iter().filter(|r| r.role == ReplicaRole::Shadow)
    }

    pub fn node_of(&self, replica: ReplicaId) -> Option<NodeId> {
        self.replicas.iter().find(|r| r.replica_id == replica).map(|r| r.node_id)
    }
}
