//! Quiescing: an idle group stops its timers so 10,000 idle groups cost
//! (almost) nothing.
//!
//! openraft's tick drives election timeouts and leader heartbeats; each
//! costs CPU per group per second. A group idle for `quiesce_after_ms`
//! whose log is fully replicated (leader) or applied with a known leader
//! (follower) turns its tick and heartbeats off. Any request or Raft
//! message for the group turns them back on ([`Activity::touch`]). While a
//! group is quiesced nobody watches its leader: the node-level
//! [`failure_detector`](super::failure_detector) wakes it if the leader's
//! node stops answering.

use openraft::rt::WatchReceiver;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ServerState;

use super::Registry;
use crate::raft::GroupRaft;

/// Milliseconds on tokio's monotonic clock since the first call (simulated
/// under turmoil).
pub fn mono_ms() -> u64 {
    static BASE: OnceLock<tokio::time::Instant> = OnceLock::new();
    let base = *BASE.get_or_init(tokio::time::Instant::now);
    tokio::time::Instant::now()
        .saturating_duration_since(base)
        .as_millis() as u64
}

pub struct Activity {
    last_active_ms: AtomicU64,
    quiesced: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            last_active_ms: AtomicU64::new(mono_ms()),
            quiesced: AtomicBool::new(false),
        }
    }

    pub fn touch(&self, raft: &GroupRaft) {
        self.last_active_ms.store(mono_ms(), Ordering::Relaxed);
        if self.quiesced.swap(false, Ordering::AcqRel) {
            raft.runtime_config().tick(true);
            raft.runtime_config().heartbeat(true);
        }
    }

    pub fn is_quiesced(&self) -> bool {
        self.quiesced.load(Ordering::Acquire)
    }

    fn idle_ms(&self) -> u64 {
        mono_ms().saturating_sub(self.last_active_ms.load(Ordering::Relaxed))
    }
}

/// Whether the group's Raft state allows stopping its timers.
fn settled(raft: &GroupRaft) -> bool {
    let m = raft.metrics();
    let m = m.borrow_watched();
    if m.running_state.is_err() {
        return false;
    }
    let last_log = m.last_log_index;
    let applied = m.last_applied.as_ref().map(|l| l.index);
    match m.state {
        ServerState::Leader => {
            let Some(repl) = &m.replication else {
                return false;
            };
            applied == last_log
                && repl
                    .values()
                    .all(|matched| matched.as_ref().map(|l| l.index) == last_log)
        }
        ServerState::Follower | ServerState::Learner => {
            m.current_leader.is_some() && applied == m.local_committed.as_ref().map(|l| l.index)
        }
        ServerState::Candidate | ServerState::Shutdown => false,
    }
}

/// Quiesces groups idle longer than `quiesce_after`, every `period`.
pub async fn run(registry: Arc<Registry>, quiesce_after: Duration, period: Duration) {
    let after_ms = quiesce_after.as_millis() as u64;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for g in registry.all() {
            if g.activity.is_quiesced() || g.activity.idle_ms() < after_ms || !settled(&g.raft) {
                continue;
            }
            g.activity.quiesced.store(true, Ordering::Release);
            g.raft.runtime_config().heartbeat(false);
            g.raft.runtime_config().tick(false);
            tracing::trace!(group = g.id, "quiesced");
        }
    }
}
