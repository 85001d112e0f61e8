//! The families read from the node's state at each scrape: nothing here
//! runs between scrapes. Raft groups are aggregated (counts by role, the
//! largest term, apply and replication lag as max and sum), never one
//! series per group, and shadows are counted by phase, so the number of
//! series does not grow with the number of resources.
//!
//! Shadows, resources and cost come from this node's copy of the meta
//! state: every node reports the same cluster-wide figures (aggregate
//! them with `max`, not `sum`).

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use openraft::ServerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::demand::admission::ReadAdmission;
use crate::loops::Loops;
use crate::parts::NodeCtx;

/// What the collector reads.
pub struct NodeCollector {
    pub ctx: Arc<NodeCtx>,
    pub loops: Arc<Loops>,
    pub admission: Arc<ReadAdmission>,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector").field("addr", &self.ctx.addr).finish()
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One gauge family with a single label, one series per `(value, n)`.
fn gauges_by(e: &mut DescriptorEncoder, name: &str, help: &str, label: &str, series: &[(&str, i64)]) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
    for (value, n) in series {
        ConstGauge::new(*n).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Raft groups hosted on this node, aggregated.
#[derive(Default)]
struct GroupFigures {
    leader: i64,
    follower: i64,
    learner: i64,
    candidate: i64,
    shutdown: i64,
    without_leader: i64,
    term_max: u64,
    apply_lag_max: u64,
    apply_lag_sum: u64,
    replication_lag_max: u64,
}

impl NodeCollector {
    fn groups(&self) -> GroupFigures {
        let mut f = GroupFigures::default();
        for g in self.ctx.cluster.registry.all() {
            let m = g.metrics();
            match m.state {
                ServerState::Leader => f.leader += 1,
                ServerState::Follower => f.follower += 1,
                ServerState::Learner => f.learner += 1,
                ServerState::Candidate => f.candidate += 1,
                ServerState::Shutdown => f.shutdown += 1,
            }
            if m.current_leader.is_none() {
                f.without_leader += 1;
            }
            f.term_max = f.term_max.max(m.current_term);
            let committed = m.local_committed.as_ref().map_or(0, |l| l.index);
            let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
            let lag = committed.saturating_sub(applied);
            f.apply_lag_max = f.apply_lag_max.max(lag);
            f.apply_lag_sum = f.apply_lag_sum.saturating_add(lag);
            if let Some(replication) = &m.replication {
                let last = m.last_log_index.unwrap_or(0);
                for matched in replication.values() {
                    let behind = last.saturating_sub(matched.as_ref().map_or(0, |l| l.index));
                    f.replication_lag_max = f.replication_lag_max.max(behind);
                }
            }
        }
        f
    }
}

/// Shadows by phase, their read weights and the cost ledger, as this
/// node's meta state holds them.
#[derive(Default)]
struct ShadowFigures {
    by_phase: std::collections::BTreeMap<String, i64>,
    weight_permille_sum: i64,
    weight_permille_max: i64,
    retired_cost_micros: u64,
    resources: i64,
    nodes: i64,
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let ctx = &self.ctx;
        let node_id = ctx.cluster.identity().map_or(0, |i| i.node_id.get());
        let mut info = e.encode_descriptor(
            "shadowstore_node_info",
            "This node's identity and release (always 1)",
            None,
            ConstGauge::new(1i64).metric_type(),
        )?;
        let mut node_label = String::new();
        write!(node_label, "{node_id}")?;
        let labels = [
            ("node_id", node_label.as_str()),
            ("region", ctx.config.region.as_str()),
            ("version", env!("CARGO_PKG_VERSION")),
        ];
        ConstGauge::new(1i64).encode(info.encode_family(&labels)?)?;

        let g = self.groups();
        gauges_by(
            &mut e,
            "shadowstore_raft_groups",
            "Raft groups with a replica on this node, by this replica's role",
            "role",
            &[
                ("leader", g.leader),
                ("follower", g.follower),
                ("learner", g.learner),
                ("candidate", g.candidate),
                ("shutdown", g.shutdown),
            ],
        )?;
        gauge(
            &mut e,
            "shadowstore_raft_groups_without_leader",
            "Groups whose replica here knows no leader",
            g.without_leader,
        )?;
        gauge(
            &mut e,
            "shadowstore_raft_term_max",
            "The largest Raft term among this node's groups",
            g.term_max as i64,
        )?;
        gauges_by(
            &mut e,
            "shadowstore_raft_apply_lag_entries",
            "Committed entries not yet applied, over this node's groups (max and sum)",
            "stat",
            &[("max", g.apply_lag_max as i64), ("sum", g.apply_lag_sum as i64)],
        )?;
        gauge(
            &mut e,
            "shadowstore_raft_replication_lag_entries_max",
            "On the groups this node leads: how far the furthest-behind replica's matched log is from the last entry",
            g.replication_lag_max as i64,
        )?;
        counter(
            &mut e,
            "shadowstore_raft_group_restarts",
            "Group replicas restarted by the supervisor",
            load(&ctx.cluster.registry.restarts),
        )?;

        let sync = ctx.syncer.stats();
        counter(&mut e, "shadowstore_storage_syncs", "Storage syncs (group commit)", load(&sync.syncs))?;
        counter(&mut e, "shadowstore_storage_sync_waiters", "Writes made durable by those syncs", load(&sync.waiters))?;
        gauge(
            &mut e,
            "shadowstore_storage_failed",
            "1 once a storage sync failed (the node stops and must restart)",
            i64::from(ctx.syncer.failure().is_some()),
        )?;
        gauge(
            &mut e,
            "shadowstore_storage_disk_bytes",
            "Size of the data directory's storage on disk",
            ctx.engine.size_on_disk_bytes() as i64,
        )?;

        let blob = &ctx.data.stats;
        counter(&mut e, "shadowstore_blob_stripes_read", "Erasure-coded stripes read", load(&blob.stripes_read))?;
        counter(
            &mut e,
            "shadowstore_blob_degraded_stripes",
            "Stripes read with a parity shard because a data shard was missing, corrupt or unreachable",
            load(&blob.degraded_stripes),
        )?;
        let s = &ctx.data.scrubber.stats;
        counter(&mut e, "shadowstore_scrub_passes", "Scrub passes completed", load(&s.passes_completed))?;
        gauge(
            &mut e,
            "shadowstore_scrub_pass_shards_done",
            "Shards verified in the current pass",
            load(&s.pass_shards_done) as i64,
        )?;
        gauge(
            &mut e,
            "shadowstore_scrub_pass_shards_total",
            "Shards the current pass will verify",
            load(&s.pass_shards_total) as i64,
        )?;
        counter(
            &mut e,
            "shadowstore_scrub_bytes_verified",
            "Shard bytes whose checksums were verified",
            load(&s.bytes_verified),
        )?;
        counter(&mut e, "shadowstore_scrub_chunks_corrupt", "Chunks found corrupt", load(&s.chunks_corrupt))?;
        counter(&mut e, "shadowstore_scrub_chunks_missing", "Chunks found missing", load(&s.chunks_missing))?;
        counter(
            &mut e,
            "shadowstore_shard_chunks_repaired",
            "Chunks rebuilt from the other shards",
            load(&s.chunks_repaired),
        )?;
        counter(
            &mut e,
            "shadowstore_shard_repair_failures",
            "Repairs that could not rebuild a chunk",
            load(&s.repair_failures),
        )?;
        gauge(
            &mut e,
            "shadowstore_scrub_last_pass_finished_ms",
            "When the last scrub pass finished (Unix ms, 0: none yet)",
            load(&s.last_pass_finished_ms) as i64,
        )?;
        counter(
            &mut e,
            "shadowstore_gc_orphan_shards_collected",
            "Shards deleted by garbage collection because no manifest references them",
            load(&s.orphan_shards_collected),
        )?;
        counter(
            &mut e,
            "shadowstore_replicas_quarantined",
            "Replicas set aside because their records failed a checksum or a check",
            load(&s.replicas_quarantined),
        )?;

        counter(
            &mut e,
            "shadowstore_reads_admitted",
            "Reads admitted by this node's read capacity",
            load(&self.admission.admitted),
        )?;
        counter(
            &mut e,
            "shadowstore_reads_shed",
            "Reads refused with RESOURCE_EXHAUSTED because this node was at its read capacity (read_capacity_rps)",
            load(&self.admission.shed),
        )?;
        gauge(
            &mut e,
            "shadowstore_background_loops_dead",
            "Supervised background loops that stopped for good (health reports NOT_SERVING)",
            self.loops.dead().len() as i64,
        )?;

        let shadows = ctx
            .cluster
            .with_meta(|m| {
                let mut f = ShadowFigures {
                    resources: m.resources.len() as i64,
                    nodes: m.nodes.len() as i64,
                    ..Default::default()
                };
                for phase in ["Planned", "Syncing", "Ready", "Shifting", "Draining"] {
                    f.by_phase.insert(phase.to_string(), 0);
                }
                for r in m.shadows.resources.values() {
                    f.retired_cost_micros = f.retired_cost_micros.saturating_add(r.retired_cost_micros);
                    let mut weight = 0i64;
                    for s in r.shadows.values() {
                        *f.by_phase.entry(format!("{:?}", s.phase)).or_default() += 1;
                        weight += i64::from(s.weight_permille);
                    }
                    f.weight_permille_sum += weight;
                    f.weight_permille_max = f.weight_permille_max.max(weight);
                }
                f
            })
            .unwrap_or_default();
        gauge(&mut e, "shadowstore_resources", "Resources in the cluster's directory", shadows.resources)?;
        gauge(&mut e, "shadowstore_nodes", "Nodes registered in the cluster", shadows.nodes)?;
        let phases: Vec<(&str, i64)> = shadows.by_phase.iter().map(|(p, n)| (p.as_str(), *n)).collect();
        gauges_by(&mut e, "shadowstore_shadows", "Shadow replicas in the cluster, by phase", "phase", &phases)?;
        gauges_by(
            &mut e,
            "shadowstore_shadow_read_weight_permille",
            "Share of a resource's reads sent to its shadows (per mille): sum over resources and the largest one",
            "stat",
            &[("sum", shadows.weight_permille_sum), ("max", shadows.weight_permille_max)],
        )?;
        gauge(
            &mut e,
            "shadowstore_shadow_retired_cost_micros",
            "What retired shadows cost while they ran (micro-units of the operator's prices), over all resources",
            shadows.retired_cost_micros as i64,
        )?;
        Ok(())
    }
}
