//! Restarts groups whose Raft core stopped.
//!
//! openraft stops a group's core for good on a panic or a storage error
//! (`Fatal`). The supervisor notices that in the group's metrics and
//! rebuilds the group from its durable state; a group that keeps failing is
//! retried with a growing delay, so a dead disk does not spin a core. A
//! group whose durable state fails its checksums is not restarted but
//! quarantined by the registry, to be replaced.
//!
//! Nothing is restarted once a storage sync has failed: sled's view in
//! memory may then hold writes the disk lost, and only a restart of the
//! node (which reads the disk again) is safe (`storage::syncer`).

use openraft::rt::WatchReceiver;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Registry;
use shadowstore_base::ids::GroupId;

const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A group healthy this long after a restart starts over with a short delay.
const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(60);

struct Backoff {
    not_before: tokio::time::Instant,
    delay: Duration,
    last_restart: tokio::time::Instant,
}

pub async fn run(registry: Arc<Registry>, period: Duration) {
    let mut backoff: HashMap<GroupId, Backoff> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(failure) = registry.syncer.failure() {
            tracing::error!(%failure, "storage failed: no group is restarted until the node restarts");
            std::future::pending::<()>().await;
        }
        let now = tokio::time::Instant::now();
        for g in registry.all() {
            let failed = match &g.raft.metrics().borrow_watched().running_state {
                Ok(()) => None,
                Err(e) => Some(e.to_string()),
            };
            let Some(reason) = failed else {
                if backoff.get(&g.id).is_some_and(|b| now - b.last_restart > RESTART_BACKOFF_RESET) {
                    backoff.remove(&g.id);
                }
                continue;
            };
            let delay = match backoff.get(&g.id) {
                Some(b) if now < b.not_before => continue,
                Some(b) => b.delay,
                None => period,
            };
            tracing::warn!(group = %g.id, replica = %g.replica_id, %reason, "raft core stopped; restarting group");
            if let Err(e) = registry.restart(g.id).await {
                tracing::error!(group = %g.id, error = %e, "group restart failed");
            }
            backoff.insert(
                g.id,
                Backoff { not_before: now + delay, delay: (delay * 2).min(RESTART_BACKOFF_MAX), last_restart: now },
            );
        }
    }
}
