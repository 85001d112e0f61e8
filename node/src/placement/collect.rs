//! Both sides of `DrainDemand`. Every node answers with its complete
//! minutes of read counts not yet delivered ([`drain_local`]) and the sizes
//! of the resource groups it leads; the meta leader collects every node's
//! answer into its history ([`collect`]) and hands the minutes to
//! `share` for the other meta voters. A node keeps its minutes and
//! reports them again until the leader says (with a later drain) that a
//! majority of the voters has them.

use std::time::Duration;

use shadowstore_base::ids::{GroupId, NodeId};
use shadowstore_placement::demand::recorder::MINUTE_MS;
use shadowstore_placement::demand::{DemandKey, MinuteReport};
use shadowstore_proto::peer;

use super::Placement;
use crate::meta::state::MetaState;
use crate::raft::state_machine::GroupData;

/// How long the leader waits for one node's demand.
const DRAIN_TIMEOUT_MS: u64 = 2_000;

/// Collects demand from every node into the history; returns what each
/// node reported, for the other meta voters.
pub async fn collect(p: &Placement, now_ms: u64) -> Vec<peer::ShareDemandRequest> {
    let Some(nodes) = p.cluster.with_meta(MetaState::node_addrs) else {
        return Vec::new();
    };
    let me = p.cluster.identity().map(|i| i.node_id);
    let mut drained = Vec::new();
    for (node_id, addr) in nodes {
        let delivered_before_ms = p.history.delivered_before_ms(node_id);
        let demand = if Some(node_id) == me {
            drain_local(p, now_ms, delivered_before_ms)
        } else {
            match drain_remote(p, &addr, delivered_before_ms).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::debug!(%node_id, %error, "collecting demand");
                    continue;
                }
            }
        };
        ingest(p, node_id, &demand);
        if !demand.minutes.is_empty() || !demand.resource_sizes.is_empty() {
            drained.push(peer::ShareDemandRequest { node_id: node_id.get(), demand: Some(demand) });
        }
    }
    p.history.set_collected_at(now_ms);
    drained
}

/// Adds one node's drained minutes to this node's history (the meta
/// leader's own collection, and `ShareDemand` on the other meta voters).
pub fn ingest(p: &Placement, node_id: NodeId, demand: &peer::DrainDemandResponse) {
    // A minute that has not ended by this node's clock (give or take the
    // skew between nodes) cannot have been counted: it is refused, or it
    // would make every later real minute of that node look delivered.
    let ahead_ms = p.clock.now_ms().saturating_add(shadowstore_placement::bounds::DEMAND_CLOCK_SKEW_MS_MAX);
    let reports: Vec<MinuteReport> = demand
        .minutes
        .iter()
        .filter(|m| m.minute_start_ms.saturating_add(MINUTE_MS) <= ahead_ms)
        .map(|m| MinuteReport {
            minute_start_ms: m.minute_start_ms,
            key: DemandKey { resource: m.resource.clone(), region: m.region.clone() },
            reads: m.reads,
            peak_bucket_reads: m.peak_bucket_reads,
            shed_reads: m.shed_reads,
        })
        .collect();
    p.history.ingest(&reports, node_id, demand.node_reads_last_minute);
    p.history.note_sizes(demand.resource_sizes.iter().map(|s| (s.resource.as_str(), s.bytes)));
}

async fn drain_remote(
    p: &Placement,
    addr: &str,
    delivered_before_ms: u64,
) -> Result<peer::DrainDemandResponse, String> {
    let mut client = p.cluster.peers.client(addr).map_err(|e| e.to_string())?;
    let call = client.drain_demand(peer::DrainDemandRequest { delivered_before_ms });
    Ok(tokio::time::timeout(Duration::from_millis(DRAIN_TIMEOUT_MS), call)
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?
        .into_inner())
}

/// This node's complete minutes not yet delivered (those starting before
/// `delivered_before_ms` are forgotten first), and its reads in the last
/// one: the answer to `DrainDemand`.
pub fn drain_local(p: &Placement, now_ms: u64, delivered_before_ms: u64) -> peer::DrainDemandResponse {
    let reports = p.recorder.complete_minutes(now_ms, delivered_before_ms);
    let last = (now_ms / MINUTE_MS).saturating_sub(1) * MINUTE_MS;
    let node_reads_last_minute = reports.iter().filter(|r| r.minute_start_ms == last).map(|r| r.reads).sum();
    // Sizes of the resource groups this node leads, then named through the
    // meta directory (one group's lock at a time, never nested).
    let led: Vec<(GroupId, u64)> = p
        .cluster
        .registry
        .all()
        .into_iter()
        .filter(|group| group.is_leader())
        .filter_map(|group| match &group.state.read().data {
            GroupData::Resource(r) => Some((group.id, r.inline_bytes + r.blob_bytes)),
            GroupData::Meta(_) => None,
        })
        .collect();
    let resource_sizes = p
        .cluster
        .with_meta(|m| {
            led.iter()
                .filter_map(|(group, bytes)| {
                    Some(peer::ResourceSize { resource: m.groups.get(group)?.clone(), bytes: *bytes })
                })
                .collect()
        })
        .unwrap_or_default();
    peer::DrainDemandResponse {
        minutes: reports
            .into_iter()
            .map(|r| peer::DemandMinute {
                minute_start_ms: r.minute_start_ms,
                resource: r.key.resource,
                region: r.key.region,
                reads: r.reads,
                peak_bucket_reads: r.peak_bucket_reads,
                shed_reads: r.shed_reads,
            })
            .collect(),
        node_reads_last_minute,
        resource_sizes,
    }
}
