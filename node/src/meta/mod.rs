//! The meta group: cluster membership and the resource directory.
//!
//! - [`state`]: the replicated state machine (members, directory, id
//!   allocation).
//! - [`membership`]: forming or joining a cluster; managing the meta
//!   group's own voters and learners.
//! - [`reconciler`]: making each node host exactly the replicas the
//!   directory assigns it.

pub mod membership;
pub mod reconciler;
pub mod state;
