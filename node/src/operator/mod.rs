//! The operator's surface of a node, on top of everything else: the
//! Prometheus registry's scrape-time families ([`collector`]), the
//! [`dashboard`] and the HTTP listener that serves both ([`http`]). The
//! instruments themselves (duration histograms, the per-call layer) are
//! `crate::telemetry`, which the components below use.

pub mod collector;
pub mod dashboard;
pub mod http;

/// Registers the histograms that components keep themselves (the
/// syncer's, the planner's).
pub fn register_components(registry: &mut prometheus_client::registry::Registry, ctx: &crate::parts::NodeCtx) {
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
