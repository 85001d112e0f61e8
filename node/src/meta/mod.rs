//! The meta group: cluster membership and the resource directory.
//!
//! - [`state`]: the replicated state machine (members, directory, id
//!   allocation).

pub mod state;
