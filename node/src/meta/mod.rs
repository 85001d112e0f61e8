//! The meta group's state machine: cluster members and the resource
//! directory.
//!
//! - [`state`]: the replicated state machine (members, directory, id
//!   allocation), a dispatch over its commands.
//! - [`directory`]: members and resources as the directory records them.
//! - [`formats`]: the state as earlier formats stored it, for the upgrade.
//! - [`command`]: the meta group's commands and answers (its log entries).
//! - [`placement`]: the placement sub-state (settings, decisions,
//!   priorities, prices, region distances) with its own apply.
//! - [`shadow`]: the shadow sub-state (phases, weights, routing versions,
//!   history, shift settings); [`shadow_ops`]: the shadow commands applied
//!   to the state, the routing table and the shadow invariants.
//!
//! This module is the replicated state only; the loops that act on it
//! (formation, voters, replacement, reconciliation) are `membership`.

pub mod command;
pub mod directory;
pub mod formats;
pub mod placement;
pub mod shadow;
pub mod shadow_ops;
pub mod state;
