//! A shadowstore node.
//!
//! A node hosts replicas of many Raft groups: one meta group (cluster
//! members, resource directory) and one group per resource. The modules are
//! named after the domain; docs/ARCHITECTURE.md has the picture.
//!
//! - `shadowstore_base` (crate): identities, explicit limits, the codec and
//!   the clock seam; `shadowstore_placement` (crate): demand telemetry,
//!   forecasting and the planner, as pure policy.
//! - [`storage`]: the storage engine seam (sled), group commit.
//! - [`raft`]: the thin openraft layer (types, log store, state machine,
//!   network).
//! - [`meta`], [`resource`]: the two kinds of replicated state machines.
//! - [`transport`]: the network seam and the peer channels.
//! - [`loops`]: supervision of the background loops.
//! - [`telemetry`]: the instruments: duration histograms and the per-call
//!   layer (counts, latency, request ids).
//! - [`operator`]: what a node tells its operators: the Prometheus
//!   families, the dashboard and the HTTP listener serving them.
//! - [`parts`]: the parts of a running node, as [`node`] assembles them.
//! - [`rng`]: the randomness seam.
//! - `planted` (feature `planted-bugs`, simulator only): deliberate bugs
//!   that prove the simulator's checkers catch what they claim to.

pub mod api;
pub mod blob;
pub mod cluster;
pub mod config;
pub mod dedup;
pub mod demand;
pub mod group;
pub mod loops;
pub mod membership;
pub mod meta;
pub mod node;
pub mod operator;
pub mod parts;
pub mod placement;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod raft;
pub mod resource;
pub mod rng;
pub mod shadow;
pub mod storage;
pub mod telemetry;
pub mod transport;
