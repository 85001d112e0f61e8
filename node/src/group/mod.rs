//! The Raft groups a node hosts and the loops that keep them cheap and
//! alive.
//!
//! - [`replica`]: one running replica ([`Group`]) and proposing through it.
//! - [`registry`]: the replicas this node hosts; opening, quarantining,
//!   removing and destroying one.
//! - [`local_records`]: the node's records of its replicas (and of removed
//!   ones whose shards it keeps) in the `local` tree.
//! - [`quiesce`]: idle groups stop ticking and heartbeating; the first
//!   request or message wakes them.
//! - [`failure_detector`]: one node-level liveness check per peer; wakes
//!   the groups whose leader lived on a node that stopped answering.
//! - [`supervisor`]: restarts a group whose Raft core stopped (panic or
//!   storage error) from its durable state.

pub mod failure_detector;
pub mod local_records;
pub mod quiesce;
pub mod registry;
pub mod replica;
pub mod supervisor;

pub use registry::Registry;
pub use replica::Group;
