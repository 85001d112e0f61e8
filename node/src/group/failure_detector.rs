//! One liveness check per peer node instead of one per group.
//!
//! Every `ping_interval` the node pings each other member. A peer with no
//! successful ping for `suspect_after` becomes suspect: every local group
//! whose leader lives there is woken (its tick turned back on), so its
//! election timer runs and a new leader is elected. Pings also carry how
//! many groups each node hosts and leads, for `ClusterStatus`.

use openraft::rt::WatchReceiver;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use shadowstore_proto::peer::PingResponse;

use super::Registry;
use super::quiesce::mono_ms;
use crate::transport::Peers;
use shadowstore_base::ids::NodeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up,
    Suspect,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Suspect => "suspect",
            Health::Down => "down",
        }
    }
}

#[derive(Clone, Debug)]
pub struct PeerView {
    pub health: Health,
    pub last_ok_ms: Option<u64>,
    pub last_answer: Option<PingResponse>,
}

#[derive(Clone, Debug)]
pub struct DetectorTiming {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub suspect_after: Duration,
    pub down_after: Duration,
}

impl Default for DetectorTiming {
    fn default() -> Self {
        DetectorTiming {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(1_000),
            suspect_after: Duration::from_millis(1_500),
            down_after: Duration::from_secs(10),
        }
    }
}

pub struct FailureDetector {
    timing: DetectorTiming,
    peers_view: RwLock<HashMap<NodeId, PeerView>>,
    started_ms: u64,
}

impl FailureDetector {
    pub fn new(timing: DetectorTiming) -> Self {
        FailureDetector { timing, peers_view: RwLock::new(HashMap::new()), started_ms: mono_ms() }
    }

    pub fn view(&self, node: NodeId) -> Option<PeerView> {
        self.peers_view.read().unwrap_or_else(|p| p.into_inner()).get(&node).cloned()
    }

    /// Whether `node` is believed alive. A peer never heard from counts as
    /// alive during the first `suspect_after` of this node's life.
    pub fn is_up(&self, node: NodeId) -> bool {
        match self.view(node) {
            Some(v) => v.health == Health::Up,
            None => mono_ms().saturating_sub(self.started_ms) < self.timing.suspect_after.as_millis() as u64,
        }
    }

    fn classify(&self, last_ok_ms: Option<u64>, now: u64) -> Health {
        let since = now.saturating_sub(last_ok_ms.unwrap_or(self.started_ms));
        if since < self.timing.suspect_after.as_millis() as u64 {
            Health::Up
        } else if since < self.timing.down_after.as_millis() as u64 {
            Health::Suspect
        } else {
            Health::Down
        }
    }

    /// Records a ping outcome; returns the previous and new health.
    fn record(&self, node: NodeId, answer: Option<PingResponse>) -> (Option<Health>, Health) {
        let now = mono_ms();
        let mut views = self.peers_view.write().unwrap_or_else(|p| p.into_inner());
        let entry = views.entry(node).or_insert(PeerView { health: Health::Up, last_ok_ms: None, last_answer: None });
        let before = entry.health;
        if let Some(a) = answer {
            entry.last_ok_ms = Some(now);
            entry.last_answer = Some(a);
        }
        entry.health = self.classify(entry.last_ok_ms, now);
        (Some(before), entry.health)
    }

    fn forget_except(&self, members: &[(NodeId, String)]) {
        let mut views = self.peers_view.write().unwrap_or_else(|p| p.into_inner());
        views.retain(|n, _| members.iter().any(|(m, _)| m == n));
    }
}

/// Wakes every local group whose current leader is hosted on `node`.
pub fn wake_groups_led_from(registry: &Registry, peers: &Peers, node: NodeId) -> usize {
    let mut woken = 0;
    for g in registry.all() {
        let leader = g.raft.metrics().borrow_watched().current_leader;
        let led_from_node = leader.and_then(|l| peers.replica_addr(l)).is_some_and(|(n, _)| n == node);
        if led_from_node && g.activity.is_quiesced() {
            g.touch();
            woken += 1;
        }
    }
    woken
}

/// Pings `members()` (other nodes, with addresses) forever.
pub async fn run(
    detector: Arc<FailureDetector>,
    registry: Arc<Registry>,
    peers: Arc<Peers>,
    self_id: NodeId,
    members: impl Fn() -> Vec<(NodeId, String)> + Send + 'static,
) {
    let mut tick = tokio::time::interval(detector.timing.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let others: Vec<_> = members().into_iter().filter(|(n, _)| *n != self_id).collect();
        detector.forget_except(&others);
        let pings = others.iter().map(|(node, addr)| {
            let peers = peers.clone();
            let timeout = detector.timing.ping_timeout;
            let (node, addr) = (*node, addr.clone());
            async move {
                let answer = peers.ping(&addr, self_id, timeout).await.filter(|r| r.node_id == node.get());
                (node, answer)
            }
        });
        for (node, answer) in futures::future::join_all(pings).await {
            let (before, after) = detector.record(node, answer);
            if after != Health::Up && before == Some(Health::Up) {
                let woken = wake_groups_led_from(&registry, &peers, node);
                tracing::warn!(%node, health = after.as_str(), woken, "peer stopped answering; woke its groups");
            } else if after == Health::Up && before.is_some_and(|b| b != Health::Up) {
                tracing::info!(%node, "peer answers again");
            }
        }
    }
}
