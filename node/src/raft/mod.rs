//! The thin layer between shadowstore and openraft (pinned at
//! `=0.10.0-alpha.37`). Everything that names an openraft type lives here,
//! so an upgrade touches these files only.
//!
//! - [`types`]: the type configuration and the commands every group logs.
//! - [`log_store`]: `RaftLogStorage` over the storage engine.
//! - [`state_machine`]: `RaftStateMachine` over a group's in-memory state,
//!   with snapshots persisted in the engine.
//! - [`network`]: `RaftNetworkV2` over the peer transport (one channel per
//!   peer node, every message naming its group).
//! - [`config`]: openraft timing and snapshot settings.

pub mod config;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

pub use types::Command;
pub use types::CommandResponse;
pub use types::Runtime;
pub use types::TypeConfig;

/// A Raft group's handle.
pub type GroupRaft = openraft::Raft<TypeConfig, state_machine::StateMachineStore>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, bytes::Bytes>;
pub type Membership = openraft::Membership<shadowstore_base::ids::ReplicaId, shadowstore_base::ids::ReplicaNode>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
