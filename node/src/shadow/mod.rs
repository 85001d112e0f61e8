//! Shadow replicas in action: the node-side half (keeping a shadow's full
//! copies current, answering how ready it is, counting the reads each
//! replica serves) and the executor that drives every shadow through its
//! life from the meta leader.
//!
//! The replicated state (phase, step, weight, routing version, history,
//! settings) is `meta::shadow`; the policy (steps, gates, rollback weight)
//! is `shadowstore_placement::shift`. Here:
//! - [`served`]: reads served per local replica, with latency histograms.
//! - [`Shadows::sync_loop`]: on every node, copies what its shadows lack
//!   (`blob::copy`).
//! - [`Shadows::report`]: a shadow's readiness and counters, for the
//!   executor (the `ShadowReport` peer RPC).
//! - [`executor`]: on the meta leader, every second, the compare-and-set
//!   transitions planned → syncing → ready → shifting → draining → retired.

pub mod executor;
pub mod served;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::META_GROUP_ID;
use shadowstore_base::ids::ReplicaId;
use shadowstore_placement::cost::expected_cost;
use shadowstore_proto::peer::ShadowReportResponse;
use tonic::Status;

use crate::blob::DataPlane;
use crate::blob::copy;
use crate::config::FaultConfig;
use crate::meta::shadow::ShadowRecord;
use crate::placement::Placement;
use crate::rng::NodeRng;
use served::ServedReads;

/// How often a node looks for copies its shadows lack.
pub const SYNC_PERIOD_MS: u64 = 1_000;
/// Longest a readiness check waits for the read index, and then for the
/// copies of what it committed.
pub const READINESS_CHECK_TIMEOUT_MS: u64 = 2_000;

/// The shadow machinery of one node.
pub struct Shadows {
    pub data: Arc<DataPlane>,
    pub placement: Arc<Placement>,
    pub served: ServedReads,
    fault: FaultConfig,
    rng: Arc<NodeRng>,
    /// The executor's per-shadow memory (only used on the meta leader).
    pub(crate) executor: executor::Memory,
}

impl Shadows {
    pub fn new(data: Arc<DataPlane>, placement: Arc<Placement>, fault: FaultConfig, rng: Arc<NodeRng>) -> Self {
        Shadows { data, placement, served: ServedReads::default(), fault, rng, executor: executor::Memory::default() }
    }

    /// The local replicas of `group` that are shadows.
    fn local_shadow(&self, group: GroupId) -> Option<Arc<crate::group::Group>> {
        let g = self.data.cluster.registry.get(group)?;
        self.data.cluster.is_shadow(&g).then_some(g)
    }

    /// Applies the test-only faults of the config to a read served by a
    /// shadow replica of `group` on this node.
    pub async fn inject_read_fault(&self, group: GroupId) -> Result<(), Status> {
        if self.fault == FaultConfig::default() || self.local_shadow(group).is_none() {
            return Ok(());
        }
        if self.fault.shadow_read_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.fault.shadow_read_delay_ms)).await;
        }
        if self.rng.below(1_000) < self.fault.shadow_read_error_permille as u64 {
            return Err(Status::unavailable("injected shadow read fault (fault.shadow_read_error_permille)"));
        }
        Ok(())
    }

    /// What `shadow` of `resource` has cost so far, micro-units: its node's
    /// prices applied to the resource's size over the time since it was
    /// added (storage and one transfer) and to the `reads` it served.
    pub fn cost_so_far_micros(&self, resource: &str, shadow: &ShadowRecord, reads: u64) -> f64 {
        let prices = self
            .data
            .cluster
            .with_meta(|m| m.nodes.get(&shadow.node_id).map(|n| m.prices_of(n)))
            .flatten()
            .unwrap_or_default();
        let alive_s = self.data.clock.now_ms().saturating_sub(shadow.added_at_ms) as f64 / 1_000.0;
        expected_cost(&prices, self.placement.history.size_of(resource), alive_s, reads as f64).total_micros
    }

    /// On every node: keeps the full copies of the shadows it hosts current.
    pub async fn sync_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(SYNC_PERIOD_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut known: BTreeMap<GroupId, ReplicaId> = BTreeMap::new();
        loop {
            tick.tick().await;
            let hosted = self.data.cluster.registry.hosted();
            // Counters of replicas that went are dropped.
            for (group, replica) in &known {
                if hosted.get(group) != Some(replica) {
                    self.served.forget(*group);
                }
            }
            known = hosted;
            for g in self.data.cluster.registry.all() {
                if g.id == META_GROUP_ID || !self.data.cluster.is_shadow(&g) {
                    continue;
                }
                let span = tracing::info_span!("shadow sync", group = %g.id, replica = %g.replica_id);
                let _enter = span.enter();
                match copy::sync_copies(&self.data, &g).await {
                    Ok(p) if p.bytes_copied > 0 => {
                        tracing::info!(
                            copied = p.blobs_copied,
                            total = p.blobs_total,
                            bytes = p.bytes_copied,
                            "shadow copies"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "shadow copy failed; retrying"),
                }
            }
        }
    }

    /// How shadow `replica` of `group` is, as this node sees it.
    pub async fn report(&self, group: GroupId, replica: ReplicaId) -> ShadowReportResponse {
        let Some(g) = self.data.cluster.registry.get(group).filter(|g| g.replica_id == replica) else {
            return ShadowReportResponse { detail: "replica not open on this node".into(), ..Default::default() };
        };
        let counters = self.served.get(group);
        let check = tokio::time::timeout(
            Duration::from_millis(READINESS_CHECK_TIMEOUT_MS),
            self.data.cluster.linearize(&g, "shadow readiness"),
        )
        .await;
        let caught_up = matches!(check, Ok(Ok(())));
        // Copies of what the state held at the read index: a resource that
        // is written all the time is ready once the copies of every version
        // committed before the check are in, not once writes stop.
        let shadow = self.data.cluster.is_shadow(&g);
        if caught_up && shadow {
            let copied = tokio::time::timeout(
                Duration::from_millis(READINESS_CHECK_TIMEOUT_MS),
                copy::sync_copies(&self.data, &g),
            )
            .await;
            if let Ok(Err(e)) = copied {
                tracing::debug!(%group, error = %e, "copying before the readiness check");
            }
        }
        let kept = if shadow { copy::kept_shards(&g, true) } else { Vec::new() };
        let store = crate::blob::shard_store::ShardStore::new(self.data.engine.clone());
        let mut blobs: BTreeMap<u64, bool> = BTreeMap::new();
        for (m, j) in &kept {
            let held = store.held_shard(group, m.blob_id, *j).ok().flatten().is_some();
            let e = blobs.entry(m.blob_id).or_insert(true);
            *e &= held;
        }
        let blobs_copied = blobs.values().filter(|c| **c).count() as u64;
        let blobs_total = blobs.len() as u64;
        let ready = caught_up && blobs_copied == blobs_total;
        let detail = match (caught_up, blobs_copied == blobs_total) {
            (true, true) => String::new(),
            (false, _) => {
                format!("not caught up with the leader ({:?})", check.map(|r| r.err().map(|e| e.to_string())))
            }
            (true, false) => format!("{blobs_copied} of {blobs_total} blobs copied"),
        };
        let content_version = match &g.state.read().data {
            crate::raft::state_machine::GroupData::Resource(rs) => rs.content_version(),
            _ => 0,
        };
        ShadowReportResponse {
            content_version,
            open: true,
            caught_up,
            applied_index: g.state.applied_index(),
            blobs_total,
            blobs_copied,
            ready,
            reads: counters.reads,
            errors: counters.errors,
            latency_buckets: counters.buckets,
            in_flight: counters.in_flight,
            detail,
        }
    }
}
