//! A node's side of demand telemetry: shedding reads above the node's read
//! capacity, and a meta voter's copy of the demand history on its own disk.
//! The telemetry itself (counting, history) is policy and lives in the
//! placement crate (`shadowstore_placement::demand`).
//!
//! - [`admission`]: each node sheds reads above its read capacity.
//! - [`store`]: a meta voter's history journaled to its disk.
//!
//! Clients name their region in the `x-shadowstore-region` request header;
//! reads without one count under region `unknown`.

pub mod admission;
pub mod store;

/// The request header that carries the client's region.
pub use shadowstore_proto::REGION_METADATA as REGION_HEADER;
