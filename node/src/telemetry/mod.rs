//! What a node tells its operators. Counters and histograms live with the
//! component that moves them (the syncer's sync durations, the planner's
//! pass timings, read admission's sheds, the scrubber's progress); this
//! module names them for Prometheus and adds what only a scrape needs:
//!
//! - [`requests`]: the gRPC layer that counts and times every call by
//!   method and status code (refused calls included).
//! - [`collector`]: the families read from the node's state at each
//!   scrape (Raft groups aggregated by role, lag, storage, scrub, GC,
//!   sheds, shadows, cost), so their cardinality is bounded by design.
//! - [`http`]: the operator's HTTP listener (`http_addr`): `/metrics` in
//!   the OpenMetrics text format, and the [`dashboard`] page.
//!
//! The names and their meaning are listed in docs/OPERATING.md; a test
//! (`tests/tests/operating.rs`) scrapes a real node for every one.

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::histogram::exponential_buckets;

pub mod collector;
pub mod dashboard;
pub mod http;
pub mod requests;

/// Buckets of every duration histogram: 100 µs doubling to ~6.5 s.
const SECONDS_BUCKET_FIRST: f64 = 0.000_1;
const SECONDS_BUCKETS: u16 = 17;

/// Registers the histograms that components keep themselves (the
/// syncer's, the planner's).
pub fn register_components(registry: &mut prometheus_client::registry::Registry, ctx: &crate::node::NodeCtx) {
    registry.register(
        "shadowstore_storage_sync_duration_seconds",
        "How long each storage sync (one group commit) took",
        ctx.syncer.stats().seconds.clone(),
    );
    let t = &ctx.placement.timings;
    for (phase, histogram, what) in [
        ("collect", &t.collect, "draining every node's demand"),
        ("forecast", &t.forecast, "feeding the forecasters (fitting models where due)"),
        ("plan", &t.plan, "planning every resource"),
    ] {
        registry.register(
            format!("shadowstore_placement_{phase}_duration_seconds"),
            format!("Planning passes on the meta leader: time spent {what}"),
            histogram.clone(),
        );
    }
}

/// A histogram of durations in seconds, with the node's common buckets.
pub fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(SECONDS_BUCKET_FIRST, 2.0, SECONDS_BUCKETS))
}
