//! The meta group: cluster membership and the resource directory.
//!
//! - [`state`]: the replicated state machine (members, directory, id
//!   allocation), a dispatch over its commands.
//! - [`command`]: the meta group's commands and answers (its log entries).
//! - [`placement`]: the placement sub-state (settings, decisions,
//!   priorities, prices, region distances) with its own apply.
//! - [`membership`]: forming or joining a cluster; managing the meta
//!   group's own voters and learners.
//! - [`reconciler`]: making each node host exactly the replicas the
//!   directory assigns it.

pub mod command;
pub mod membership;
pub mod placement;
pub mod reconciler;
pub mod state;
