//! A shadowstore node.
//!
//! A node hosts replicas of many Raft groups: one meta group (cluster
//! members, resource directory) and one group per resource. The modules are
//! named after the domain; docs/ARCHITECTURE.md has the picture.
//!
//! - [`ids`], [`limits`]: identities and explicit limits.
//! - [`storage`]: the storage engine seam (sled), group commit.
//! - [`raft`]: the thin openraft layer (types, log store, state machine,
//!   network).
//! - [`meta`], [`resource`]: the two kinds of replicated state machines.
//! - [`transport`]: the network seam and the peer channels.
//! - [`clock`], [`rng`]: the time and randomness seams.
//! - `planted` (feature `planted-bugs`, simulator only): deliberate bugs
//!   that prove the simulator's checkers catch what they claim to.

pub mod api;
pub mod blob;
pub mod clock;
pub mod codec;
pub mod config;
pub mod dedup;
pub mod demand;
pub mod forecast;
pub mod group;
pub mod ids;
pub mod limits;
pub mod meta;
pub mod node;
pub mod placement;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod raft;
pub mod resource;
pub mod rng;
pub mod storage;
pub mod transport;
