//! Sharing the demand the meta leader drains with the other meta voters,
//! so that whichever voter leads next holds the same history.
//!
//! Every planning pass the leader drains each node's complete minutes
//! (`collect`) and hands them here as one *batch*. Each other
//! voter has a queue of the batches it has not acknowledged, sent in order
//! by at most one task at a time (a queue's generation tells a task for an
//! earlier queue of the same voter to stop): a voter counts a node's
//! minute once and skips minutes older than the newest it has from that
//! node, so batches must never overtake each other. A voter that is down
//! or slow keeps its queue, up to `SHARE_BACKLOG_REPORTS_MAX` entries and
//! `SHARE_BACKLOG_BATCHES_MAX` batches (the oldest go first), and receives
//! it in order from the next pass after it answers again. A batch's minutes
//! are marked delivered once a majority of the voters (this one included)
//! has acknowledged it; the nodes forget them on their next drain. A voter
//! acknowledges before its journal reaches the disk (`demand::store`).
//!
//! The queues live on the leader only and are dropped when it stops
//! leading: a voter that misses batches while the leader changes, or more
//! than its queue holds, keeps a gap.

use shadowstore_base::ids::ReplicaId;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shadowstore_proto::peer;

use super::Placement;
use shadowstore_base::ids::NodeId;
use shadowstore_placement::demand::recorder::MINUTE_MS;

/// Entries (minute reports and resource sizes, ~100 bytes each) a voter's
/// queue holds at most: beyond it the oldest batches are dropped and that
/// voter's history has a gap.
pub const SHARE_BACKLOG_REPORTS_MAX: usize = 500_000;
/// Batches a voter's queue holds at most (a day of one-minute passes),
/// however small they are.
pub const SHARE_BACKLOG_BATCHES_MAX: usize = 1_440;
/// How long one `ShareDemand` call may take.
const SHARE_TIMEOUT_MS: u64 = 2_000;

/// One planning pass's drained demand, on its way to the other voters.
pub struct Batch {
    requests: Vec<peer::ShareDemandRequest>,
    reports: usize,
    /// Per node, the end of the last minute in the batch.
    ends: Vec<(NodeId, u64)>,
    /// Other voters that acknowledged it, and how many must for a majority.
    acks: AtomicUsize,
    acks_needed: usize,
}

impl Batch {
    fn new(requests: Vec<peer::ShareDemandRequest>, acks_needed: usize) -> Batch {
        let reports =
            requests.iter().filter_map(|r| r.demand.as_ref()).map(|d| d.minutes.len() + d.resource_sizes.len()).sum();
        let ends = requests
            .iter()
            .filter_map(|r| {
                let last = r.demand.as_ref()?.minutes.iter().map(|m| m.minute_start_ms).max()?;
                Some((NodeId::new(r.node_id), last + MINUTE_MS))
            })
            .collect();
        Batch { requests, reports, ends, acks: AtomicUsize::new(0), acks_needed }
    }

    /// Counts one voter's acknowledgement; true exactly when it makes the
    /// majority.
    fn acknowledge(&self) -> bool {
        self.acks.fetch_add(1, Ordering::Relaxed) + 1 == self.acks_needed
    }
}

/// The batches one voter has not acknowledged, oldest first.
#[derive(Default)]
pub struct VoterQueue {
    /// Tells this queue from an earlier one of the same voter (removed
    /// when it left the voters or this node stopped leading): a task
    /// started for an earlier queue stops instead of sending this one.
    generation: u64,
    batches: VecDeque<Arc<Batch>>,
    reports: usize,
    /// A task is sending this queue.
    sending: bool,
    /// Batches dropped over the bound (a gap in the voter's history).
    dropped: u64,
}

impl VoterQueue {
    /// Appends `batch`, dropping the oldest batches while the queue holds
    /// more than `reports_max` entries or `SHARE_BACKLOG_BATCHES_MAX`
    /// batches (the newest batch always stays).
    fn push(&mut self, batch: Arc<Batch>, reports_max: usize) {
        self.reports += batch.reports;
        self.batches.push_back(batch);
        while (self.reports > reports_max || self.batches.len() > SHARE_BACKLOG_BATCHES_MAX) && self.batches.len() > 1 {
            let dropped = self.batches.pop_front().expect("more than one batch");
            self.reports -= dropped.reports;
            self.dropped += 1;
        }
    }

    fn front(&self) -> Option<Arc<Batch>> {
        self.batches.front().cloned()
    }

    /// Removes the front batch once sent, if it is still `batch` (it may
    /// have been dropped over the bound meanwhile).
    fn sent(&mut self, batch: &Arc<Batch>) {
        if self.batches.front().is_some_and(|front| Arc::ptr_eq(front, batch)) {
            self.batches.pop_front();
            self.reports -= batch.reports;
        }
    }
}

/// The leader's queues, one per other meta voter.
#[derive(Default)]
pub struct ShareQueues {
    voters: BTreeMap<NodeId, VoterQueue>,
    generations: u64,
}

impl ShareQueues {
    /// Queues `batch` for each of `voters` (forgetting queues of nodes that
    /// are no longer voters) and returns the voters no task is sending to,
    /// with their queue's generation (the task's ticket).
    fn push(&mut self, batch: &Arc<Batch>, voters: &[NodeId], reports_max: usize) -> Vec<(NodeId, u64)> {
        self.voters.retain(|node, _| voters.contains(node));
        let mut idle = Vec::new();
        for node in voters {
            if !self.voters.contains_key(node) {
                self.generations += 1;
                self.voters.insert(*node, VoterQueue { generation: self.generations, ..VoterQueue::default() });
            }
            let queue = self.voters.get_mut(node).expect("inserted above");
            queue.push(batch.clone(), reports_max);
            if !queue.sending {
                queue.sending = true;
                idle.push((*node, queue.generation));
            }
        }
        idle
    }

    /// `node`'s queue, if it is still the one of `generation`.
    fn queue(&mut self, node: NodeId, generation: u64) -> Option<&mut VoterQueue> {
        self.voters.get_mut(&node).filter(|q| q.generation == generation)
    }

    /// The next batch for `node`, or None (and its task stops) when its
    /// queue is empty or no longer the task's.
    fn next(&mut self, node: NodeId, generation: u64) -> Option<Arc<Batch>> {
        let queue = self.queue(node, generation)?;
        let next = queue.front();
        if next.is_none() {
            queue.sending = false;
        }
        next
    }

    fn sent(&mut self, node: NodeId, generation: u64, batch: &Arc<Batch>) {
        if let Some(queue) = self.queue(node, generation) {
            queue.sent(batch);
        }
    }

    /// The task for `node` stops (the voter did not answer); the queue
    /// stays for the next pass.
    fn stalled(&mut self, node: NodeId, generation: u64) {
        if let Some(queue) = self.queue(node, generation) {
            queue.sending = false;
        }
    }

    /// Forgets every queue (this node no longer leads the meta group);
    /// their tasks stop at their next step.
    pub fn clear(&mut self) {
        self.voters.clear();
    }

    /// Per voter: (batches queued, reports queued, batches dropped).
    pub fn backlog(&self) -> BTreeMap<NodeId, (usize, usize, u64)> {
        self.voters.iter().map(|(node, q)| (*node, (q.batches.len(), q.reports, q.dropped))).collect()
    }
}

/// Queues the drained demand for every other meta voter and starts a
/// sender for each voter that has none (see the module comment).
pub fn share(p: &Arc<Placement>, drained: Vec<peer::ShareDemandRequest>) {
    if drained.is_empty() {
        return;
    }
    let Some(meta) = p.cluster.meta_group() else { return };
    let me = p.cluster.identity().map(|i| i.node_id);
    let voter_replicas: Vec<ReplicaId> = meta.metrics().membership_config.membership().voter_ids().collect();
    let others: Vec<NodeId> = p
        .cluster
        .with_meta(|m| {
            voter_replicas
                .iter()
                .filter_map(|replica| m.replica_addr(*replica).map(|(node, _)| node))
                .filter(|node| Some(*node) != me)
                .collect()
        })
        .unwrap_or_default();
    // Other voters that must have the batch for a majority.
    let batch = Arc::new(Batch::new(drained, voter_replicas.len() / 2));
    if batch.acks_needed == 0 {
        mark_delivered(p, &batch);
    }
    let idle = p.share_queues().push(&batch, &others, SHARE_BACKLOG_REPORTS_MAX);
    for (node, generation) in idle {
        tokio::spawn(send_queue(p.clone(), node, generation));
    }
}

fn mark_delivered(p: &Placement, batch: &Batch) {
    for (node, before_ms) in &batch.ends {
        p.history.mark_delivered(*node, *before_ms);
    }
}

/// Sends `voter`'s queue (of `generation`) in order until it is empty, is
/// replaced, or the voter fails to answer.
async fn send_queue(p: Arc<Placement>, voter: NodeId, generation: u64) {
    loop {
        // The guard must not live across the send.
        let next = p.share_queues().next(voter, generation);
        let Some(batch) = next else { return };
        if let Err(error) = send(&p, voter, &batch).await {
            tracing::debug!(%voter, %error, "sharing demand; the batch stays queued");
            p.share_queues().stalled(voter, generation);
            return;
        }
        p.share_queues().sent(voter, generation, &batch);
        if batch.acknowledge() {
            mark_delivered(&p, &batch);
        }
    }
}

async fn send(p: &Placement, voter: NodeId, batch: &Batch) -> Result<(), String> {
    let addr = p
        .cluster
        .with_meta(|m| m.nodes.get(&voter).map(|n| n.labels.addr.clone()))
        .flatten()
        .ok_or_else(|| "no longer a member".to_string())?;
    let mut client = p.cluster.peers.client(&addr).map_err(|e| e.to_string())?;
    for request in &batch.requests {
        let call = client.share_demand(request.clone());
        tokio::time::timeout(Duration::from_millis(SHARE_TIMEOUT_MS), call)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(node: NodeId, minutes: &[u64], acks_needed: usize) -> Arc<Batch> {
        let minutes = minutes
            .iter()
            .map(|m| peer::DemandMinute {
                minute_start_ms: m * MINUTE_MS,
                resource: "r".into(),
                region: "eu".into(),
                reads: 1,
                ..Default::default()
            })
            .collect();
        let demand = peer::DrainDemandResponse { minutes, ..Default::default() };
        Arc::new(Batch::new(vec![peer::ShareDemandRequest { node_id: node.get(), demand: Some(demand) }], acks_needed))
    }

    #[test]
    fn a_voter_gets_its_batches_in_order_after_failing() {
        let mut queues = ShareQueues::default();
        let (first, second) = (batch(NodeId::new(1), &[10, 11], 1), batch(NodeId::new(1), &[12], 1));
        // One sender starts for each voter; a second push starts none.
        assert_eq!(
            queues.push(&first, &[NodeId::new(2), NodeId::new(3)], 100),
            vec![(NodeId::new(2), 1), (NodeId::new(3), 2)]
        );
        assert!(queues.push(&second, &[NodeId::new(2), NodeId::new(3)], 100).is_empty());
        // Voter 2 answers, voter 3 does not: 3's sender stops and keeps
        // both batches, then resumes from the first at the next push.
        let next = queues.next(NodeId::new(2), 1).expect("a batch");
        assert!(Arc::ptr_eq(&next, &first));
        queues.sent(NodeId::new(2), 1, &next);
        assert!(next.acknowledge(), "one other voter makes the majority of three");
        assert!(!next.acknowledge(), "counted once");
        queues.stalled(NodeId::new(3), 2);
        let third = batch(NodeId::new(1), &[13], 1);
        assert_eq!(queues.push(&third, &[NodeId::new(2), NodeId::new(3)], 100), vec![(NodeId::new(3), 2)]);
        assert_eq!(queues.backlog()[&NodeId::new(3)], (3, 4, 0));
        for expected in [&first, &second, &third] {
            let next = queues.next(NodeId::new(3), 2).expect("a batch");
            assert!(Arc::ptr_eq(&next, expected), "out of order");
            queues.sent(NodeId::new(3), 2, &next);
        }
        assert!(queues.next(NodeId::new(3), 2).is_none());
        // The sender stopped on the empty queue: the next push starts one.
        assert_eq!(queues.push(&batch(NodeId::new(1), &[14], 1), &[NodeId::new(3)], 100), vec![(NodeId::new(3), 2)]);
        // Voter 2 left the voters: its queue is gone. When it is back, its
        // new queue has a new generation, and a task still running for
        // the old one stops instead of sending it.
        assert!(!queues.backlog().contains_key(&NodeId::new(2)));
        assert_eq!(
            queues.push(&batch(NodeId::new(1), &[15], 1), &[NodeId::new(2), NodeId::new(3)], 100),
            vec![(NodeId::new(2), 3)]
        );
        assert!(queues.next(NodeId::new(2), 1).is_none(), "a task of the old queue sent the new one");
        queues.stalled(NodeId::new(2), 1);
        assert!(queues.next(NodeId::new(2), 3).is_some());
        // Leadership lost: every queue goes, and their tasks stop.
        queues.clear();
        assert!(queues.next(NodeId::new(3), 2).is_none() && queues.backlog().is_empty());
    }

    #[test]
    fn a_queue_over_its_bound_drops_the_oldest_batches() {
        let mut queues = ShareQueues::default();
        for minute in 0..5 {
            queues.push(&batch(NodeId::new(1), &[minute, minute + 100], 1), &[NodeId::new(2)], 6);
        }
        // 2 reports each, at most 6: the two oldest of five were dropped.
        assert_eq!(queues.backlog()[&NodeId::new(2)], (3, 6, 2));
        let next = queues.next(NodeId::new(2), 1).expect("a batch");
        assert_eq!(next.ends, vec![(NodeId::new(1), 102 * MINUTE_MS + MINUTE_MS)]);
        // A batch larger than the bound still goes, alone.
        queues.push(&batch(NodeId::new(1), &(0..10).collect::<Vec<_>>(), 1), &[NodeId::new(2)], 6);
        assert_eq!(queues.backlog()[&NodeId::new(2)], (1, 10, 5));
        // A dropped batch that was being sent is not popped twice.
        queues.sent(NodeId::new(2), 1, &next);
        assert_eq!(queues.backlog()[&NodeId::new(2)], (1, 10, 5));
        // Empty batches (nothing but sizes, or nothing) are bounded too.
        for _ in 0..SHARE_BACKLOG_BATCHES_MAX + 5 {
            queues.push(&batch(NodeId::new(1), &[], 1), &[NodeId::new(2)], 6);
        }
        assert_eq!(queues.backlog()[&NodeId::new(2)].0, SHARE_BACKLOG_BATCHES_MAX);
    }
}
