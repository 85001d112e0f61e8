//! A resource group: one named content item holding named, versioned
//! variants, replicated by its own Raft group.
//!
//! [`state`] is the replicated state machine logic (deterministic, no I/O).

pub mod state;

pub use state::ResourceCommand;
pub use state::ResourceResponse;
pub use state::ResourceState;
