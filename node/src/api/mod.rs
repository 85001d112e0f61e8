//! The gRPC services a node serves.
//!
//! - [`auth`]: who may call what (roles from the client certificate).
//! - [`client`]: the public `ShadowStore` API, one method per RPC.
//! - [`route`]: where a request is served, redirects, read admission.
//! - [`data`]: its data path: writing, resolving and streaming versions.
//! - [`peer`]: the node-to-node `Peer` service (Raft traffic, joins, pings,
//!   read indexes).
//! - [`placement`]: the planner's dry run, demand and placement settings.
//! - [`validate`]: names and sizes at the edge.
//! - [`page`]: pagination of the list answers.
//! - [`status`]: internal outcomes as precise gRPC statuses.

pub mod auth;
pub mod client;
pub mod data;
pub mod page;
pub mod peer;
pub mod placement;
pub mod route;
pub mod shadow;
pub mod status;
pub mod validate;
