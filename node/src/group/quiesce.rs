//! Quiescing: idle groups stop their timers so 10,000 idle groups cost
//! (almost) nothing.
//!
//! openraft's tick drives election timeouts and leader heartbeats; both
//! cost CPU and messages per group per second. Quiescing is led by the
//! leader (as in TiKV's hibernating regions):
//!
//! 1. a leader idle for `quiesce_after` whose log is fully replicated asks
//!    every other member to quiesce (`Peer.Quiesce`, naming its term and
//!    last log index);
//! 2. a follower agrees only if it follows that leader in that term and has
//!    applied that index; it then stops its election timer;
//! 3. only when every member agreed does the leader stop heartbeating and
//!    ticking.
//!
//! A follower therefore never times out on a leader that merely went quiet.
//! Entries, votes and requests wake a group ([`Activity::touch`]); empty
//! heartbeats do not. While a group is quiesced nobody watches its leader:
//! the node-level [`failure_detector`](super::failure_detector) wakes it if
//! the leader's node stops answering.

use shadowstore_base::ids::ReplicaId;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ServerState;
use openraft::rt::WatchReceiver;
use shadowstore_proto::peer::QuiesceRequest;

use super::Group;
use super::Registry;
use crate::raft::GroupRaft;
use crate::transport::Peers;

/// Deadline of one quiesce request.
const QUIESCE_RPC_TIMEOUT: Duration = Duration::from_millis(500);

/// Milliseconds on tokio's monotonic clock since the first call in this
/// tokio runtime (simulated under turmoil).
///
/// The base is per runtime because each simulated host runs its own paused
/// runtime whose clock starts at the real instant the runtime was built: a
/// base shared across runtimes would leak real time (and its sub-millisecond
/// rounding) into simulated decisions.
pub fn mono_ms() -> u64 {
    let now = tokio::time::Instant::now();
    now.saturating_duration_since(runtime_base(now)).as_millis() as u64
}

#[cfg(tokio_unstable)]
fn runtime_base(now: tokio::time::Instant) -> tokio::time::Instant {
    use std::cell::Cell;
    use std::sync::Mutex;
    use tokio::runtime::Handle;
    use tokio::runtime::Id;
    /// Bases of the runtimes seen; a process has a handful of runtimes, or
    /// one per simulated host incarnation in the simulator.
    static BASES: Mutex<Vec<(Id, tokio::time::Instant)>> = Mutex::new(Vec::new());
    thread_local! {
        /// The base last used on this thread: worker threads stay in one
        /// runtime, so the shared list is consulted about once per thread.
        static LAST: Cell<Option<(Id, tokio::time::Instant)>> = const { Cell::new(None) };
    }
    let Ok(handle) = Handle::try_current() else { return now };
    let id = handle.id();
    if let Some((_, base)) = LAST.get().filter(|(last_id, _)| *last_id == id) {
        return base;
    }
    let base = {
        let mut bases = BASES.lock().unwrap_or_else(|p| p.into_inner());
        match bases.iter().find(|(i, _)| *i == id) {
            Some((_, base)) => *base,
            None => {
                bases.push((id, now));
                now
            }
        }
    };
    LAST.set(Some((id, base)));
    base
}

#[cfg(not(tokio_unstable))]
fn runtime_base(now: tokio::time::Instant) -> tokio::time::Instant {
    use std::sync::OnceLock;
    static BASE: OnceLock<tokio::time::Instant> = OnceLock::new();
    *BASE.get_or_init(|| now)
}

pub struct Activity {
    last_active_ms: AtomicU64,
    quiesced: AtomicBool,
    /// A leader-side quiesce round is in flight.
    quiescing: AtomicBool,
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
            quiescing: AtomicBool::new(false),
        }
    }

    /// Records activity and turns the group's timers back on if it was
    /// quiesced.
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

    fn last_active_ms(&self) -> u64 {
        self.last_active_ms.load(Ordering::Relaxed)
    }

    fn stop_timers(&self, raft: &GroupRaft) {
        self.quiesced.store(true, Ordering::Release);
        raft.runtime_config().heartbeat(false);
        raft.runtime_config().tick(false);
    }
}

/// Serves a leader's quiesce request on a follower: stops the election
/// timer if this replica follows `leader` in `term` and has applied
/// `last_log_index`.
pub fn follower_quiesce(g: &Group, req: &QuiesceRequest) -> bool {
    let ok = {
        let m = g.raft.metrics();
        let m = m.borrow_watched();
        m.running_state.is_ok()
            && matches!(m.state, ServerState::Follower | ServerState::Learner)
            && m.current_leader == Some(ReplicaId::new(req.leader_replica_id))
            && m.current_term == req.term
            && m.last_log_index == Some(req.last_log_index)
            && m.last_applied.as_ref().map(|l| l.index) == Some(req.last_log_index)
    };
    if ok {
        g.activity.stop_timers(&g.raft);
    }
    ok
}

/// What a leader asks its followers, if it may quiesce now.
fn leader_request(g: &Group) -> Option<(u64, Vec<ReplicaId>)> {
    let m = g.raft.metrics();
    let m = m.borrow_watched();
    if m.running_state.is_err() || m.state != ServerState::Leader {
        return None;
    }
    let last = m.last_log_index?;
    let repl = m.replication.as_ref()?;
    let settled = m.last_applied.as_ref().map(|l| l.index) == Some(last)
        && repl.values().all(|matched| matched.as_ref().map(|l| l.index) == Some(last));
    if !settled {
        return None;
    }
    let others = m.membership_config.membership().nodes().map(|(id, _)| *id).filter(|id| *id != g.replica_id).collect();
    Some((last, others))
}

/// One quiesce round for a leader: ask, then stop timers if all agreed and
/// nothing happened meanwhile.
async fn quiesce_leader(g: Arc<Group>, peers: Arc<Peers>) {
    let Some((last, others)) = leader_request(&g) else { return };
    let term = g.raft.metrics().borrow_watched().current_term;
    let started_ms = g.activity.last_active_ms();
    let asks = others.iter().map(|replica| {
        let peers = peers.clone();
        let req = QuiesceRequest {
            group_id: g.id.get(),
            target_replica_id: replica.get(),
            leader_replica_id: g.replica_id.get(),
            term,
            last_log_index: last,
        };
        async move {
            let Some((_, addr)) = peers.replica_addr(ReplicaId::new(req.target_replica_id)) else { return false };
            let Ok(mut client) = peers.client(&addr) else { return false };
            let mut r = tonic::Request::new(req);
            r.set_timeout(QUIESCE_RPC_TIMEOUT);
            matches!(client.quiesce(r).await, Ok(resp) if resp.get_ref().quiesced)
        }
    });
    let all_agreed = futures::future::join_all(asks).await.into_iter().all(|ok| ok);
    let unchanged = g.activity.last_active_ms() == started_ms
        && leader_request(&g).is_some_and(|(l, _)| l == last)
        && g.raft.metrics().borrow_watched().current_term == term;
    if all_agreed && unchanged {
        g.activity.stop_timers(&g.raft);
        tracing::trace!(group = %g.id, "quiesced");
    }
}

/// Every `period`, starts a quiesce round for each local leader idle longer
/// than `quiesce_after`.
pub async fn run(registry: Arc<Registry>, peers: Arc<Peers>, quiesce_after: Duration, period: Duration) {
    let after_ms = quiesce_after.as_millis() as u64;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = mono_ms();
        let mut led = 0;
        for g in registry.all() {
            let leader = g.is_leader();
            led += leader as u64;
            let a = &g.activity;
            if !leader || a.is_quiesced() || now.saturating_sub(a.last_active_ms()) < after_ms {
                continue;
            }
            if a.quiescing.swap(true, Ordering::AcqRel) {
                continue;
            }
            let peers = peers.clone();
            tokio::spawn(async move {
                quiesce_leader(g.clone(), peers).await;
                g.activity.quiescing.store(false, Ordering::Release);
            });
        }
        registry.led.store(led, Ordering::Relaxed);
    }
}
