//! The planning loop. Every node runs it: every planning interval (a
//! replicated setting, default 1 min) the node leading the meta group
//! collects demand, feeds the forecasters, plans every resource and
//! commits each decision that changed (`RecordPlacement`), so a new leader
//! sees the plans of the old one; every node that holds demand history
//! (the meta voters) snapshots it to its disk.

use std::sync::Arc;
use std::time::Duration;

use shadowstore_placement::planner::{Action, Plan};
use shadowstore_placement::{PlacementAction, PlacementRecord, PlacementSettings};

use super::Placement;
use super::collect::collect;
use super::inputs::plan_all;
use crate::demand::store;
use crate::meta::command::MetaCommand;

/// The loop wakes this often to read the planning interval, so a new
/// interval takes effect within it rather than after the old one.
const PLANNING_TICK_MS: u64 = 1_000;

/// The record the meta group keeps of a plan (none for holding).
fn record_of(plan: &Plan) -> Option<PlacementRecord> {
    let (action, nodes, reason) = match &plan.action {
        Action::Hold { .. } => return None,
        Action::AddShadows { nodes, added_rps, short_rps } => (
            PlacementAction::AddShadows,
            nodes.clone(),
            format!(
                "P(exceed) {:.2} >= {:.2}; +{added_rps:.0} rps ({short_rps:.0} rps short)",
                plan.inputs.p_exceed, plan.inputs.threshold
            ),
        ),
        Action::Retire { nodes, reason } => (PlacementAction::Retire, nodes.clone(), reason.clone()),
    };
    Some(PlacementRecord {
        at_ms: plan.at_ms,
        action,
        nodes,
        p_exceed_permille: (plan.inputs.p_exceed * 1000.0).round() as u32,
        reason,
    })
}

/// One planning pass on the meta leader.
pub async fn plan_once(p: &Arc<Placement>) {
    let now_ms = p.clock.now_ms();
    let started = std::time::Instant::now();
    let drained = collect(p, now_ms).await;
    p.timings.collect.observe(started.elapsed().as_secs_f64());
    super::share::share(p, drained);
    let Some(settings) = p.cluster.with_meta(|m| m.placement.settings.clone()) else { return };
    let started = std::time::Instant::now();
    p.forecasters.feed(&p.history, &settings, now_ms).await;
    p.timings.forecast.observe(started.elapsed().as_secs_f64());
    let started = std::time::Instant::now();
    let plans = plan_all(p, None, now_ms);
    p.timings.plan.observe(started.elapsed().as_secs_f64());
    for plan in &plans {
        let Some(record) = record_of(plan) else { continue };
        let (current, acted_since) = p
            .cluster
            .with_meta(|m| {
                let current = m.placement.records.get(&plan.resource).cloned();
                // A decision the executor carried out and that later ended
                // (the shadow was retired) is committed again when the
                // planner makes it again.
                let acted_since = current.as_ref().is_some_and(|c| {
                    m.shadows.of(&plan.resource).is_some_and(|rs| {
                        rs.history
                            .iter()
                            .any(|e| e.kind == "retired" && e.at_ms >= c.at_ms && c.nodes.contains(&e.node_id))
                    })
                });
                (current, acted_since)
            })
            .unwrap_or((None, false));
        if !acted_since && current.as_ref().is_some_and(|c| c.action == record.action && c.nodes == record.nodes) {
            continue;
        }
        let span = tracing::info_span!("placement", resource = %plan.resource);
        let _enter = span.enter();
        tracing::info!(action = %record.action, nodes = ?record.nodes, reason = %record.reason, "plan");
        let cmd = MetaCommand::RecordPlacement { now_ms, resource: plan.resource.clone(), record };
        if let Err(error) = p.cluster.propose_meta(cmd).await {
            tracing::warn!(%error, "committing a placement plan");
        }
    }
    p.set_last_plans(plans, now_ms);
}

/// Runs on every node: plans while this node leads the meta group, and
/// snapshots the demand history it holds every `SNAPSHOT_INTERVAL_MS`.
pub async fn run(p: Arc<Placement>) {
    let mut last_pass = tokio::time::Instant::now();
    let mut last_snapshot = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(PLANNING_TICK_MS)).await;
        // Every node that holds history (the meta voters) keeps it on disk.
        if last_snapshot.elapsed() >= Duration::from_millis(store::SNAPSHOT_INTERVAL_MS) {
            last_snapshot = tokio::time::Instant::now();
            p.history.snapshot().await;
        }
        let interval_ms = p
            .cluster
            .with_meta(|m| m.placement.settings.planning_interval_ms)
            .unwrap_or(PlacementSettings::default().planning_interval_ms);
        if last_pass.elapsed() < Duration::from_millis(interval_ms) {
            continue;
        }
        last_pass = tokio::time::Instant::now();
        if p.cluster.meta_group().is_some_and(|g| g.is_leader()) {
            plan_once(&p).await;
        } else {
            // Only a leader sends demand to the voters.
            p.share_queues().clear();
        }
    }
}
