//! Demand telemetry: what is read, from where, how often.
//!
//! - [`recorder`]: each node counts reads per (resource, client region) in
//!   10-second buckets and drains complete minutes as reports.
//! - [`admission`]: each node sheds reads above its read capacity.
//! - [`history`]: the meta leader adds every node's reports into a compact
//!   per-pair history (6 h at 1 min, 14 days at 5 min), the input of
//!   [`crate::forecast`].
//!
//! Clients name their region in the `x-shadowstore-region` request header;
//! reads without one count under region `unknown`.

pub mod admission;
pub mod history;
pub mod recorder;
pub mod store;

pub use history::DemandHistory;
pub use recorder::{DemandKey, DemandRecorder, MinuteReport};

/// The request header that carries the client's region.
pub use shadowstore_proto::REGION_METADATA as REGION_HEADER;

#[cfg(test)]
mod tests;
