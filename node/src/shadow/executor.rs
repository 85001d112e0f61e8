//! The shadow executor: on the meta leader, every second, moves each shadow
//! one transition along planned → syncing → ready → shifting → draining →
//! retired, and acts on the planner's committed decisions when the mode is
//! `auto`.
//!
//! Everything it decides is a compare-and-set command on the meta group
//! (`TransitionShadow` names the phase, step and weight it saw), so a tick
//! racing an operator or a new leader changes nothing twice, and a new
//! meta leader resumes from the replicated phases. What it keeps in memory
//! (the last counters of each shadow and the running analysis of its step)
//! is rebuilt by a new leader; that only restarts a step's analysis.
//!
//! Measurements come from the shadow's node (`ShadowReport`): cumulative
//! read counters, turned into a window every `MEASURE_PERIOD_MS`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_placement::PlacementAction;
use shadowstore_placement::PlacementMode;
use shadowstore_placement::ShadowPhase;
use shadowstore_placement::ShiftSettings;
use shadowstore_placement::shift::Gate;
use shadowstore_placement::shift::StepAnalysis;
use shadowstore_placement::shift::StepDecision;
use shadowstore_placement::shift::Window;
use shadowstore_placement::shift::judge;
use shadowstore_placement::shift::rollback_weight;
use shadowstore_placement::shift::step_decision;
use shadowstore_proto::peer::ShadowReportRequest;
use shadowstore_proto::peer::ShadowReportResponse;

use super::Shadows;
use crate::meta::command::MetaCommand;
use crate::meta::command::MetaResponse;
use crate::meta::shadow::ShadowRecord;
use crate::meta::state::MetaState;

/// How often the executor ticks.
pub const TICK_MS: u64 = 1_000;
/// How often a shifting shadow's reads are measured (one gate window).
pub const MEASURE_PERIOD_MS: u64 = 3_000;
/// A shadow whose node the failure detector has not seen up for this long
/// (or whose node left the cluster) is retired.
pub const SHADOW_NODE_LOST_MS: u64 = 15_000;
/// Deadline of one `ShadowReport` call (a read index, then up to as long
/// again copying what it committed).
pub const REPORT_TIMEOUT_MS: u64 = 5_000;

/// What the executor remembers of one shadow between ticks.
#[derive(Clone, Debug, Default)]
struct Tracked {
    /// Counters of the last window's end.
    last: Option<ShadowReportResponse>,
    last_measure: Option<tokio::time::Instant>,
    /// (phase, step, weight) the analysis is about.
    analysed: Option<(ShadowPhase, u8, u32)>,
    analysis: StepAnalysis,
    /// The resource's content version when the step's analysis began.
    content_version: Option<u64>,
    /// Since when the node has been seen down.
    down_since: Option<tokio::time::Instant>,
    /// The last window, for status.
    window: Window,
}

/// The executor's memory, per shadow replica.
#[derive(Default)]
pub struct Memory {
    tracked: Mutex<BTreeMap<ReplicaId, Tracked>>,
}

impl Memory {
    fn get(&self, r: ReplicaId) -> Tracked {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner()).get(&r).cloned().unwrap_or_default()
    }

    fn put(&self, r: ReplicaId, t: Tracked) {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner()).insert(r, t);
    }

    fn retain(&self, keep: impl Fn(&ReplicaId) -> bool) {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner()).retain(|r, _| keep(r));
    }

    /// The last measured window of `replica`, for status.
    pub fn window(&self, r: ReplicaId) -> Option<Window> {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner()).get(&r).map(|t| t.window)
    }
}

/// Runs on every node; acts while this node leads the meta group.
pub async fn run(s: Arc<Shadows>) {
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !s.data.cluster.meta_group().is_some_and(|g| g.is_leader()) {
            s.executor.retain(|_| false);
            continue;
        }
        tick_once(&s).await;
    }
}

/// One shadow as the tick sees it.
struct Seen {
    resource: String,
    group: shadowstore_base::ids::GroupId,
    shadow: ShadowRecord,
    addr: Option<String>,
    member: bool,
}

/// One pass over every shadow and every planner decision.
pub async fn tick_once(s: &Shadows) {
    let Some((settings, seen, decisions)) = s.data.cluster.with_meta(|m| {
        let mut seen = Vec::new();
        for (name, rs) in &m.shadows.resources {
            let Some(rec) = m.resources.get(name) else { continue };
            for sh in rs.shadows.values() {
                seen.push(Seen {
                    resource: name.clone(),
                    group: rec.group_id,
                    shadow: sh.clone(),
                    addr: m.addr_of(sh.node_id).map(String::from),
                    member: m.nodes.contains_key(&sh.node_id),
                });
            }
        }
        (m.shadows.settings.clone(), seen, planner_actions(m))
    }) else {
        return;
    };
    s.executor.retain(|r| seen.iter().any(|x| x.shadow.replica_id == *r));
    if settings.mode == PlacementMode::Auto {
        for d in decisions {
            let cmd = match d {
                Decision::Add { resource, node } => {
                    MetaCommand::AddShadow { now_ms: s.data.clock.now_ms(), resource, node, by_operator: false }
                }
                Decision::Retire { resource, shadow, reason } => drain_command(s, &resource, &shadow, &reason),
            };
            commit(s, cmd).await;
        }
    }
    for x in seen {
        let span = tracing::info_span!("shadow", resource = %x.resource, replica = %x.shadow.replica_id, node = %x.shadow.node_id);
        let _enter = span.enter();
        if let Some(cmd) = advance(s, &settings, &x).await {
            commit(s, cmd).await;
        }
    }
}

async fn commit(s: &Shadows, cmd: MetaCommand) {
    let what = cmd.to_string();
    match s.data.cluster.propose_meta(cmd).await {
        Ok(MetaResponse::Updated | MetaResponse::Created(_) | MetaResponse::Deleted) => tracing::info!("{what}"),
        Ok(other) => tracing::debug!(?other, "{what}: not applied"),
        Err(e) => tracing::warn!(error = %e, "{what}: not committed"),
    }
}

enum Decision {
    Add { resource: String, node: NodeId },
    Retire { resource: String, shadow: ShadowRecord, reason: String },
}

/// The planner's committed decisions not acted on yet. An `add-shadows`
/// decision is acted on once per node: not when the node already holds a
/// replica, nor when the history shows a shadow event on that node since
/// the decision (it was added, then retired). A `retire` decision drains
/// the shadows on its nodes that existed when it was made and are not
/// pinned.
fn planner_actions(m: &MetaState) -> Vec<Decision> {
    let mut out = Vec::new();
    for (resource, record) in &m.placement.records {
        let Some(rec) = m.resources.get(resource) else { continue };
        let rs = m.shadows.of(resource);
        match record.action {
            PlacementAction::AddShadows => {
                // One decision at a time: while a shadow is still syncing
                // its capacity is not counted, so a newer decision may
                // ask again for what it will give.
                if rs.is_some_and(|rs| rs.shadows.values().any(|s| !s.phase.is_ready())) {
                    continue;
                }
                for node in &record.nodes {
                    let acted =
                        rs.is_some_and(|rs| rs.history.iter().any(|e| e.node_id == *node && e.at_ms >= record.at_ms));
                    if rec.replica_on(*node).is_none() && !acted && m.nodes.contains_key(node) {
                        out.push(Decision::Add { resource: resource.clone(), node: *node });
                    }
                }
            }
            PlacementAction::Retire => {
                let Some(rs) = rs else { continue };
                for sh in rs.shadows.values() {
                    if record.nodes.contains(&sh.node_id)
                        && !sh.pinned
                        && sh.added_at_ms < record.at_ms
                        && sh.phase != ShadowPhase::Draining
                    {
                        out.push(Decision::Retire {
                            resource: resource.clone(),
                            shadow: sh.clone(),
                            reason: format!("planner: {}", record.reason),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The command that starts draining `shadow`.
pub fn drain_command(s: &Shadows, resource: &str, shadow: &ShadowRecord, reason: &str) -> MetaCommand {
    MetaCommand::TransitionShadow {
        now_ms: s.data.clock.now_ms(),
        resource: resource.to_string(),
        replica: shadow.replica_id,
        expect: shadow.expect(),
        to: ShadowPhase::Draining,
        step: 0,
        weight_permille: 0,
        kind: "draining".into(),
        text: reason.to_string(),
    }
}

fn transition(
    s: &Shadows,
    x: &Seen,
    to: ShadowPhase,
    step: u8,
    weight_permille: u32,
    kind: &str,
    text: String,
) -> MetaCommand {
    MetaCommand::TransitionShadow {
        now_ms: s.data.clock.now_ms(),
        resource: x.resource.clone(),
        replica: x.shadow.replica_id,
        expect: x.shadow.expect(),
        to,
        step,
        weight_permille,
        kind: kind.into(),
        text,
    }
}

async fn ask_report(s: &Shadows, x: &Seen) -> Option<ShadowReportResponse> {
    let addr = x.addr.as_ref()?;
    let mut client = s.data.cluster.peers.client(addr).ok()?;
    let mut req =
        tonic::Request::new(ShadowReportRequest { group_id: x.group.get(), replica_id: x.shadow.replica_id.get() });
    req.set_timeout(Duration::from_millis(REPORT_TIMEOUT_MS));
    match client.shadow_report(req).await {
        Ok(r) => Some(r.into_inner()),
        Err(e) => {
            tracing::debug!(error = %e.message(), "shadow report");
            None
        }
    }
}

/// The next command for one shadow, if any.
async fn advance(s: &Shadows, settings: &ShiftSettings, x: &Seen) -> Option<MetaCommand> {
    let sh = &x.shadow;
    let mut t = s.executor.get(sh.replica_id);
    let now_ms = s.data.clock.now_ms();
    // A lost node: the shadow is retired, never replaced.
    let up = x.member && s.data.cluster.detector.is_up(sh.node_id)
        || s.data.cluster.identity().is_some_and(|i| i.node_id == sh.node_id);
    if up {
        t.down_since = None;
    } else {
        let since = *t.down_since.get_or_insert_with(tokio::time::Instant::now);
        s.executor.put(sh.replica_id, t.clone());
        if sh.phase != ShadowPhase::Draining
            && (!x.member || since.elapsed() >= Duration::from_millis(SHADOW_NODE_LOST_MS))
        {
            return Some(transition(
                s,
                x,
                ShadowPhase::Draining,
                0,
                0,
                "draining",
                format!("node {} lost for {} ms: the shadow is retired", sh.node_id, since.elapsed().as_millis()),
            ));
        }
        if sh.phase == ShadowPhase::Draining && now_ms.saturating_sub(sh.since_ms) >= settings.drain_ms {
            return Some(remove_command(s, x, "drained (its node is down)".into()));
        }
        return None;
    }
    s.executor.put(sh.replica_id, t.clone());
    // A shadow whose copy turned out corrupt (its node quarantined the
    // replica) is retired like a lost one; it is never replaced.
    if s.data.cluster.is_quarantined(sh.node_id, sh.replica_id) {
        return match sh.phase {
            ShadowPhase::Draining if now_ms.saturating_sub(sh.since_ms) >= settings.drain_ms => {
                Some(remove_command(s, x, "drained (its replica was quarantined)".into()))
            }
            ShadowPhase::Draining => None,
            _ => Some(transition(
                s,
                x,
                ShadowPhase::Draining,
                0,
                0,
                "draining",
                format!("replica quarantined on node {} (corrupt durable state): the shadow is retired", sh.node_id),
            )),
        };
    }
    match sh.phase {
        ShadowPhase::Planned => {
            let r = ask_report(s, x).await?;
            r.open.then(|| {
                transition(s, x, ShadowPhase::Syncing, 0, 0, "syncing", "replica open; catching up and copying".into())
            })
        }
        ShadowPhase::Syncing => {
            let r = ask_report(s, x).await?;
            if !r.ready {
                return None;
            }
            let took_ms = now_ms.saturating_sub(sh.added_at_ms);
            Some(transition(
                s,
                x,
                ShadowPhase::Ready,
                0,
                0,
                "ready",
                format!(
                    "ready {took_ms} ms after it was added: caught up at index {}, {} blobs copied and verified",
                    r.applied_index, r.blobs_copied
                ),
            ))
        }
        ShadowPhase::Ready => {
            if settings.mode != PlacementMode::Auto || sh.halted {
                return None; // a shift starts on an operator's command
            }
            let share = s.data.cluster.with_meta(|m| m.shadow_share_permille(&x.resource, sh.replica_id)).unwrap_or(0);
            let weight = settings.weight_at(0, share);
            (weight > 0).then(|| {
                transition(
                    s,
                    x,
                    ShadowPhase::Shifting,
                    0,
                    weight,
                    "step",
                    format!(
                        "shift begins: step 1 of {} ({}% of a {share}‰ share)",
                        settings.steps_pct.len(),
                        settings.steps_pct[0]
                    ),
                )
            })
        }
        ShadowPhase::Shifting => measure_step(s, settings, x, t).await,
        ShadowPhase::Draining => {
            if now_ms.saturating_sub(sh.since_ms) < settings.drain_ms {
                return None;
            }
            // In-flight reads drain before the learner goes.
            let r = ask_report(s, x).await;
            if r.as_ref().is_some_and(|r| r.in_flight > 0) {
                return None;
            }
            Some(remove_command(
                s,
                x,
                format!("retired after draining {} ms at weight 0", now_ms.saturating_sub(sh.since_ms)),
            ))
        }
    }
}

/// The removal of a drained shadow, with what it cost over its life (the
/// reads it served as last reported) for the resource's ledger.
fn remove_command(s: &Shadows, x: &Seen, text: String) -> MetaCommand {
    let reads = s.executor.get(x.shadow.replica_id).last.map_or(0, |r| r.reads);
    let cost_micros = s.cost_so_far_micros(&x.resource, &x.shadow, reads).round() as u64;
    MetaCommand::RemoveShadow {
        now_ms: s.data.clock.now_ms(),
        resource: x.resource.clone(),
        replica: x.shadow.replica_id,
        text,
        cost_micros,
    }
}

/// One gate window of a shifting shadow, and what it leads to.
async fn measure_step(s: &Shadows, settings: &ShiftSettings, x: &Seen, mut t: Tracked) -> Option<MetaCommand> {
    let sh = &x.shadow;
    if t.last_measure.is_some_and(|at| at.elapsed() < Duration::from_millis(MEASURE_PERIOD_MS)) {
        return None;
    }
    let r = ask_report(s, x).await;
    let key = (sh.phase, sh.step, sh.weight_permille);
    let content_version = r.as_ref().map(|r| r.content_version).or(t.content_version).unwrap_or(0);
    // A new step, or a variant's version changing mid-step, restarts the
    // step's analysis.
    if t.analysed != Some(key) || t.content_version != Some(content_version) {
        if t.analysed == Some(key) {
            tracing::info!("a variant changed mid-step: the step's analysis restarts");
        }
        t.analysed = Some(key);
        t.analysis = StepAnalysis::default();
        t.content_version = Some(content_version);
    }
    let gate = match (&r, &t.last) {
        (Some(now), Some(before)) if now.reads >= before.reads => {
            let w = Window {
                reads: now.reads - before.reads,
                errors: now.errors.saturating_sub(before.errors),
                p99_ms: super::served::p99_ms(&before.latency_buckets, &now.latency_buckets),
            };
            t.window = w;
            judge(settings, &w)
        }
        (None, _) => Gate::Fail("the shadow's node did not report".into()),
        _ => Gate::NoData,
    };
    t.last_measure = Some(tokio::time::Instant::now());
    if r.is_some() {
        t.last = r;
    }
    let last_step = sh.step as usize + 1 >= settings.steps_pct.len();
    let step_age_ms = s.data.clock.now_ms().saturating_sub(sh.since_ms);
    let window = t.window;
    let decision = step_decision(settings, &mut t.analysis, gate, step_age_ms, last_step);
    s.executor.put(sh.replica_id, t);
    match decision {
        StepDecision::Stay => None,
        StepDecision::Promote if sh.halted => None,
        StepDecision::Promote => {
            let next = sh.step + 1;
            let share = s.data.cluster.with_meta(|m| m.shadow_share_permille(&x.resource, sh.replica_id)).unwrap_or(0);
            let weight = settings.weight_at(next as usize, share);
            Some(transition(
                s,
                x,
                ShadowPhase::Shifting,
                next,
                weight,
                "step",
                format!(
                    "step {} of {} ({}%): gates passed ({window})",
                    next + 1,
                    settings.steps_pct.len(),
                    settings.steps_pct[next as usize]
                ),
            ))
        }
        StepDecision::RollBack(reason) => Some(rollback_command(s, x, &format!("gate failed: {reason}"))),
    }
}

/// The rollback of `x`: its weight drops to 0, or back to the last healthy
/// weight when the primaries alone cannot carry the forecast.
fn rollback_command(s: &Shadows, x: &Seen, why: &str) -> MetaCommand {
    let sh = &x.shadow;
    let (primaries_rps, forecast_rps) = s
        .data
        .cluster
        .with_meta(|m| {
            let hosted = m.replicas_per_node();
            let primaries: f64 = m
                .resources
                .get(&x.resource)
                .map(|r| r.primaries().map(|p| m.replica_capacity_rps(p.node_id, &hosted)).sum())
                .unwrap_or(0.0);
            primaries
        })
        .map(|p| {
            let forecast = s
                .placement
                .last_plans()
                .iter()
                .find(|plan| plan.resource == x.resource)
                .map(|plan| plan.inputs.forecast_peak_rps.max(plan.inputs.observed_rps))
                .unwrap_or(0.0);
            (p, forecast)
        })
        .unwrap_or((0.0, 0.0));
    let target = rollback_weight(primaries_rps, forecast_rps, sh.last_healthy_permille).min(sh.weight_permille);
    let (to, step) =
        if target == 0 { (ShadowPhase::Ready, 0) } else { (ShadowPhase::Shifting, sh.step.saturating_sub(1)) };
    let text = format!(
        "{why}; weight {}‰ → {target}‰ (primaries {primaries_rps:.0} rps, forecast {forecast_rps:.0} rps)",
        sh.weight_permille
    );
    MetaCommand::TransitionShadow {
        now_ms: s.data.clock.now_ms(),
        resource: x.resource.clone(),
        replica: sh.replica_id,
        expect: sh.expect(),
        to,
        step,
        weight_permille: target,
        kind: "rollback".into(),
        text,
    }
}

/// The operator's rollback of one shadow (`shadowctl rollback`): weight 0
/// at once, back to ready. Returns `None` for a shadow with no weight.
pub fn manual_rollback(s: &Shadows, resource: &str, shadow: &ShadowRecord) -> Option<MetaCommand> {
    (shadow.phase == ShadowPhase::Shifting).then(|| MetaCommand::TransitionShadow {
        now_ms: s.data.clock.now_ms(),
        resource: resource.to_string(),
        replica: shadow.replica_id,
        expect: shadow.expect(),
        to: ShadowPhase::Ready,
        step: 0,
        weight_permille: 0,
        kind: "rollback".into(),
        text: format!("operator rollback from {}‰", shadow.weight_permille),
    })
}

/// The operator's promotion: to the next step, or to the last.
pub fn promote(s: &Shadows, resource: &str, shadow: &ShadowRecord, full: bool) -> Result<MetaCommand, String> {
    let (settings, share) = s
        .data
        .cluster
        .with_meta(|m| (m.shadows.settings.clone(), m.shadow_share_permille(resource, shadow.replica_id)))
        .ok_or("no meta state yet")?;
    let steps = settings.steps_pct.len();
    let next = match shadow.phase {
        ShadowPhase::Ready => 0,
        ShadowPhase::Shifting if (shadow.step as usize) + 1 < steps => shadow.step as usize + 1,
        ShadowPhase::Shifting => return Err(format!("shadow {} is at the last step already", shadow.replica_id)),
        other => {
            return Err(format!(
                "shadow {} is {other}: only a ready or shifting shadow is promoted",
                shadow.replica_id
            ));
        }
    };
    let next = if full { steps - 1 } else { next };
    let weight = settings.weight_at(next, share);
    Ok(MetaCommand::TransitionShadow {
        now_ms: s.data.clock.now_ms(),
        resource: resource.to_string(),
        replica: shadow.replica_id,
        expect: shadow.expect(),
        to: ShadowPhase::Shifting,
        step: next as u8,
        weight_permille: weight,
        kind: "step".into(),
        text: format!("operator promote to step {} of {steps} ({}%)", next + 1, settings.steps_pct[next]),
    })
}
