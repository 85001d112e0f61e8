//! The gRPC services a node serves.
//!
//! - [`client`]: the public `ShadowStore` API.
//! - [`peer`]: the node-to-node `Peer` service (Raft traffic, joins, pings,
//!   read indexes).
//! - [`validate`]: names and sizes at the edge.
//! - [`status`]: internal outcomes as precise gRPC statuses.

pub mod client;
pub mod peer;
pub mod status;
pub mod validate;
