//! Demand telemetry: what is read, from where, how often.
//!
//! - [`recorder`]: each node counts reads per (resource, client region) in
//!   10-second buckets and drains complete minutes as reports.
//! - [`history`]: the meta leader adds every node's reports into a compact
//!   per-pair history (6 h at 1 min, 14 days at 5 min), the input of
//!   [`crate::forecast`].
//!
//! Clients name their region in a request header; reads without one count
//! under region `unknown`.

pub mod history;
pub mod recorder;

pub use history::DemandHistory;
pub use recorder::{DemandKey, DemandRecorder, MinuteReport};

#[cfg(test)]
mod tests;
