//! The Raft groups a node hosts and the loops that keep them cheap and
//! alive.
//!
//! - [`registry`]: the running groups, created from and recorded in local
//!   storage; opening, removing and destroying a replica.
//! - [`quiesce`]: idle groups stop ticking and heartbeating; the first
//!   request or message wakes them.
//! - [`failure_detector`]: one node-level liveness check per peer; wakes
//!   the groups whose leader lived on a node that stopped answering.
//! - [`supervisor`]: restarts a group whose Raft core stopped (panic or
//!   storage error) from its durable state.

pub mod failure_detector;
pub mod quiesce;
pub mod registry;
pub mod supervisor;

pub use registry::Group;
pub use registry::Registry;
