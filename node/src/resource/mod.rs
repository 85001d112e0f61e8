//! A resource group: one named content item holding named, versioned
//! variants, replicated by its own Raft group.
//!
//! - [`command`]: the commands its log carries and the answers they get.
//! - [`state`]: the replicated state machine logic (deterministic, no I/O).
//! - [`manifest`]: what the state records about an erasure-coded blob.
//! - [`layout`]: where every byte of a blob goes (stripes, shards, chunks).

pub mod command;
pub mod layout;
pub mod manifest;
pub mod state;

pub use command::ResourceCommand;
pub use command::ResourceResponse;
pub use state::ResourceState;
