//! A resource group: one named content item holding named, versioned
//! variants, replicated by its own Raft group.
//!
//! - [`state`]: the replicated state machine logic (deterministic, no I/O).
//! - [`manifest`]: what the state records about an erasure-coded blob.
//! - [`layout`]: where every byte of a blob goes (stripes, shards, chunks).

pub mod layout;
pub mod manifest;
pub mod state;

pub use state::ResourceCommand;
pub use state::ResourceResponse;
pub use state::ResourceState;
