//! The gRPC services a node serves.
//!
//! - [`client`]: the public `ShadowStore` API.
//! - [`data`]: its data path: writing, resolving and streaming versions.
//! - [`peer`]: the node-to-node `Peer` service (Raft traffic, joins, pings,
//!   read indexes).
//! - [`placement`]: the planner's dry run, demand and placement settings.
//! - [`validate`]: names and sizes at the edge.
//! - [`status`]: internal outcomes as precise gRPC statuses.

pub mod client;
pub mod data;
pub mod peer;
pub mod placement;
pub mod status;
pub mod validate;
