//! The instruments the node's components record into: counters and
//! histograms live with the component that moves them (the syncer's sync
//! durations, the planner's pass timings, read admission's sheds, the
//! scrubber's progress), built with [`seconds_histogram`]; and
//! [`requests`], the gRPC layer that counts and times every call by method
//! and status code (refused calls included) and gives it its request id.
//! `crate::operator` names all of them for Prometheus and serves them.
//!
//! The names and their meaning are listed in docs/OPERATING.md; a test
//! (`tests/tests/operating.rs`) scrapes a real node for every one.

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::histogram::exponential_buckets;

pub mod requests;

/// Buckets of every duration histogram: 100 µs doubling to ~6.5 s.
const SECONDS_BUCKET_FIRST: f64 = 0.000_1;
const SECONDS_BUCKETS: u16 = 17;

/// A histogram of durations in seconds, with the node's common buckets.
pub fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(SECONDS_BUCKET_FIRST, 2.0, SECONDS_BUCKETS))
}
