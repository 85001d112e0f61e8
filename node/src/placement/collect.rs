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

/// How long the leader waits for one page of a node's demand.
const DRAIN_TIMEOUT_MS: u64 = 2_000;
/// Encoded bytes of the minutes one `DrainDemand` answer carries before it
/// says `more` (one minute always goes: at most `DEMAND_KEYS_PER_MINUTE_MAX`
/// keys of `DEMAND_KEY_BYTES_MAX`).
const DRAIN_PAGE_MINUTES_BYTES_MAX: usize = 3 * 1024 * 1024;
/// Resource sizes one answer carries at most.
const DRAIN_SIZES_MAX: usize = 2_000;
/// Pages the leader asks one node for per collection (a node holds at most
/// `PENDING_MINUTES_MAX` minutes, at least one per page).
const DRAIN_PAGES_MAX: usize = shadowstore_placement::demand::recorder::PENDING_MINUTES_MAX;
const _: () = assert!(
    shadowstore_placement::bounds::DEMAND_KEYS_PER_MINUTE_MAX * shadowstore_placement::bounds::DEMAND_KEY_BYTES_MAX
        <= DRAIN_PAGE_MINUTES_BYTES_MAX
);
const _: () = assert!(
    DRAIN_PAGE_MINUTES_BYTES_MAX + DRAIN_SIZES_MAX * (shadowstore_base::limits::RESOURCE_NAME_BYTES_MAX + 16)
        < shadowstore_base::limits::GRPC_MESSAGE_BYTES_MAX
);

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
        // Page by page: each page holds whole minutes, so ingesting (and
        // sharing) them one at a time keeps every delivery mark exact.
        let mut after: Option<u64> = None;
        for _ in 0..DRAIN_PAGES_MAX {
            let demand = if Some(node_id) == me {
                drain_local(p, now_ms, delivered_before_ms, after)
            } else {
                match drain_remote(p, &addr, delivered_before_ms, after).await {
                    Ok(answer) => answer,
                    Err(error) => {
                        tracing::debug!(%node_id, %error, "collecting demand");
                        break;
                    }
                }
            };
            ingest(p, node_id, &demand);
            let more = demand.more;
            after = demand.minutes.iter().map(|m| m.minute_start_ms).max();
            if !demand.minutes.is_empty() || !demand.resource_sizes.is_empty() {
                drained.push(peer::ShareDemandRequest { node_id: node_id.get(), demand: Some(demand) });
            }
            if !more || after.is_none() {
                break;
            }
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
    after_minute_start_ms: Option<u64>,
) -> Result<peer::DrainDemandResponse, String> {
    let mut client = p.cluster.peers.client(addr).map_err(|e| e.to_string())?;
    let call = client.drain_demand(peer::DrainDemandRequest { delivered_before_ms, after_minute_start_ms });
    Ok(tokio::time::timeout(Duration::from_millis(DRAIN_TIMEOUT_MS), call)
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?
        .into_inner())
}

/// One page of this node's complete minutes not yet delivered (those
/// starting before `delivered_before_ms` are forgotten first; only those
/// after `after_minute_start_ms` if given), and its reads in the last one:
/// the answer to `DrainDemand`. A page holds whole minutes, as many as fit
/// `DRAIN_PAGE_MINUTES_BYTES_MAX` (always one: a minute holds at most
/// `DEMAND_KEYS_PER_MINUTE_MAX` keys), so the receiver's per-minute
/// delivery marks stay exact; the first page also carries the sizes of up
/// to `DRAIN_SIZES_MAX` resources this node leads.
pub fn drain_local(
    p: &Placement,
    now_ms: u64,
    delivered_before_ms: u64,
    after_minute_start_ms: Option<u64>,
) -> peer::DrainDemandResponse {
    let reports = p.recorder.complete_minutes(now_ms, delivered_before_ms);
    let last = (now_ms / MINUTE_MS).saturating_sub(1) * MINUTE_MS;
    let node_reads_last_minute = reports.iter().filter(|r| r.minute_start_ms == last).map(|r| r.reads).sum();
    let (minutes, more) = page(&reports, after_minute_start_ms, DRAIN_PAGE_MINUTES_BYTES_MAX);
    let resource_sizes = if after_minute_start_ms.is_none() { led_sizes(p, now_ms) } else { Vec::new() };
    peer::DrainDemandResponse { minutes, node_reads_last_minute, resource_sizes, more }
}

/// The whole minutes of `reports` (in minute order) after
/// `after_minute_start_ms` that fit `bytes_max` encoded bytes (at least
/// one), and whether more follow.
fn page(
    reports: &[MinuteReport],
    after_minute_start_ms: Option<u64>,
    bytes_max: usize,
) -> (Vec<peer::DemandMinute>, bool) {
    let mut minutes: Vec<peer::DemandMinute> = Vec::new();
    let mut page_bytes = 0usize;
    let mut more = false;
    let after = after_minute_start_ms.map_or(0, |a| a.saturating_add(1));
    for chunk in reports.chunk_by(|a, b| a.minute_start_ms == b.minute_start_ms) {
        if chunk[0].minute_start_ms < after {
            continue;
        }
        let minute: Vec<peer::DemandMinute> = chunk
            .iter()
            .map(|r| peer::DemandMinute {
                minute_start_ms: r.minute_start_ms,
                resource: r.key.resource.clone(),
                region: r.key.region.clone(),
                reads: r.reads,
                peak_bucket_reads: r.peak_bucket_reads,
                shed_reads: r.shed_reads,
            })
            .collect();
        let bytes: usize = minute.iter().map(|m| prost::Message::encoded_len(m) + 4).sum();
        if !minutes.is_empty() && page_bytes + bytes > bytes_max {
            more = true;
            break;
        }
        page_bytes += bytes;
        minutes.extend(minute);
    }
    (minutes, more)
}

/// Sizes of up to `DRAIN_SIZES_MAX` resource groups this node leads (a
/// different window of them each minute when it leads more), named
/// through the meta directory (one group's lock at a time, never nested).
fn led_sizes(p: &Placement, now_ms: u64) -> Vec<peer::ResourceSize> {
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
    let windows = led.len().div_ceil(DRAIN_SIZES_MAX).max(1);
    let window = (now_ms / MINUTE_MS) as usize % windows;
    let led = led.iter().skip(window * DRAIN_SIZES_MAX).take(DRAIN_SIZES_MAX);
    p.cluster
        .with_meta(|m| {
            led.filter_map(|(group, bytes)| {
                Some(peer::ResourceSize { resource: m.groups.get(group)?.clone(), bytes: *bytes })
            })
            .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use shadowstore_placement::bounds::DEMAND_KEYS_PER_MINUTE_MAX;
    use shadowstore_placement::demand::DemandKey;

    use super::*;

    fn minute_of(minute: u64, keys: usize) -> Vec<MinuteReport> {
        (0..keys)
            .map(|k| MinuteReport {
                minute_start_ms: minute * MINUTE_MS,
                key: DemandKey { resource: format!("{k:0>128}"), region: "r".repeat(64) },
                reads: u64::MAX,
                peak_bucket_reads: u64::MAX,
                shed_reads: u64::MAX,
            })
            .collect()
    }

    /// Regression (issue 17): at about 16,000 pending keys a node's whole
    /// answer exceeded the 4 MiB message limit and its demand could no
    /// longer be collected. Pages of whole minutes, each under the limit,
    /// now cover every minute exactly once.
    #[test]
    fn pages_hold_whole_minutes_under_the_message_limit() {
        // 8 full minutes of the longest keys: about 24 MB in all.
        let reports: Vec<MinuteReport> = (100..108).flat_map(|m| minute_of(m, DEMAND_KEYS_PER_MINUTE_MAX)).collect();
        let mut after = None;
        let mut seen = Vec::new();
        loop {
            let (minutes, more) = page(&reports, after, DRAIN_PAGE_MINUTES_BYTES_MAX);
            assert!(!minutes.is_empty());
            let answer = peer::DrainDemandResponse {
                minutes,
                node_reads_last_minute: u64::MAX,
                resource_sizes: (0..DRAIN_SIZES_MAX)
                    .map(|i| peer::ResourceSize { resource: format!("{i:0>128}"), bytes: u64::MAX })
                    .collect(),
                more,
            };
            let bytes = prost::Message::encoded_len(&answer);
            assert!(bytes < shadowstore_base::limits::GRPC_MESSAGE_BYTES_MAX, "a page of {bytes} bytes");
            let first = answer.minutes.first().map(|m| m.minute_start_ms);
            let last = answer.minutes.last().map(|m| m.minute_start_ms);
            for m in &answer.minutes {
                seen.push(m.minute_start_ms);
            }
            // Whole minutes: every key of each minute in the page.
            let keys_of = |t: Option<u64>| answer.minutes.iter().filter(|m| Some(m.minute_start_ms) == t).count();
            assert_eq!(keys_of(first), DEMAND_KEYS_PER_MINUTE_MAX);
            assert_eq!(keys_of(last), DEMAND_KEYS_PER_MINUTE_MAX);
            if !more {
                break;
            }
            after = last;
        }
        assert_eq!(seen.len(), reports.len(), "every key once");
        // Small minutes share a page.
        let small: Vec<MinuteReport> = (0..5).flat_map(|m| minute_of(m, 10)).collect();
        let (minutes, more) = page(&small, None, DRAIN_PAGE_MINUTES_BYTES_MAX);
        assert_eq!((minutes.len(), more), (50, false));
        let (minutes, more) = page(&small, Some(2 * MINUTE_MS), DRAIN_PAGE_MINUTES_BYTES_MAX);
        assert_eq!((minutes.len(), more), (20, false), "only minutes after the given one");
    }
}
