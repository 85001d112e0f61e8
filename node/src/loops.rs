//! Supervision of a node's background loops (reconciliation, failure
//! detection, quiescing, planning, shadows, scrubbing, handoff, garbage
//! collection).
//!
//! Each loop runs in its own task under [`supervise`]. A loop that panics
//! or returns is logged, marked dead in [`Loops`] (which the node turns
//! into a NOT_SERVING health status: `node.rs`), and started again after a
//! backoff that grows while it keeps failing. Aborting the supervising
//! task aborts the loop with it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

/// First wait before a dead loop is started again.
pub const LOOP_RESTART_BACKOFF_MIN_MS: u64 = 1_000;
/// Longest wait before a dead loop is started again.
pub const LOOP_RESTART_BACKOFF_MAX_MS: u64 = 30_000;
/// A loop that ran this long before dying starts over with the shortest
/// backoff.
pub const LOOP_HEALTHY_AFTER_MS: u64 = 60_000;

/// Which loops are dead right now, and why.
pub struct Loops {
    dead: Mutex<BTreeMap<&'static str, String>>,
    /// Testing only (`fault.panic_loop_once`): the loop of this name
    /// panics on its first run.
    panic_once: Mutex<Option<String>>,
    /// The number of dead loops, for whoever reports health.
    changes: tokio::sync::watch::Sender<usize>,
}

impl Default for Loops {
    fn default() -> Self {
        Loops {
            dead: Mutex::new(BTreeMap::new()),
            panic_once: Mutex::new(None),
            changes: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Loops {
    pub fn new() -> Arc<Loops> {
        Arc::new(Loops::default())
    }

    /// Testing only: the loop `name` panics on its first run.
    pub fn inject_panic_once(&self, name: &str) {
        *self.panic_once.lock().unwrap_or_else(|p| p.into_inner()) = Some(name.to_string());
    }

    fn take_injected_panic(&self, name: &str) -> bool {
        let mut once = self.panic_once.lock().unwrap_or_else(|p| p.into_inner());
        if once.as_deref() == Some(name) {
            *once = None;
            return true;
        }
        false
    }

    /// The dead loops and why each died.
    pub fn dead(&self) -> Vec<(&'static str, String)> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// Follows the number of dead loops.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<usize> {
        self.changes.subscribe()
    }

    fn set(&self, name: &'static str, why: Option<String>) {
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        match why {
            Some(why) => dead.insert(name, why),
            None => dead.remove(name),
        };
        self.changes.send_replace(dead.len());
    }
}

/// Aborts the task it holds when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into()),
        Err(e) => e.to_string(),
    }
}

/// Runs the loop `start` makes, and makes and runs it again each time it
/// panics or returns.
pub fn supervise<F, Fut>(loops: Arc<Loops>, name: &'static str, start: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(LOOP_RESTART_BACKOFF_MIN_MS);
        loop {
            let started = tokio::time::Instant::now();
            let run = start();
            let mut running = if loops.take_injected_panic(name) {
                AbortOnDrop(tokio::spawn(async move {
                    drop(run);
                    panic!("fault injection: fault.panic_loop_once = {name:?}");
                }))
            } else {
                AbortOnDrop(tokio::spawn(run))
            };
            let why = match (&mut running.0).await {
                Ok(()) => "returned".to_string(),
                Err(e) if e.is_cancelled() => return,
                Err(e) => format!("panicked: {}", panic_message(e)),
            };
            if started.elapsed() >= Duration::from_millis(LOOP_HEALTHY_AFTER_MS) {
                backoff = Duration::from_millis(LOOP_RESTART_BACKOFF_MIN_MS);
            }
            tracing::error!(background_loop = name, %why, restart_in_ms = backoff.as_millis() as u64, "background loop died");
            loops.set(name, Some(why));
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(LOOP_RESTART_BACKOFF_MAX_MS));
            loops.set(name, None);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn a_panicked_loop_is_reported_dead_and_started_again() {
        let loops = Loops::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let handle = supervise(loops.clone(), "scrub", move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if run == 0 {
                    panic!("injected");
                }
                std::future::pending::<()>().await
            }
        });
        let mut watch = loops.watch();
        watch.wait_for(|dead| *dead == 1).await.unwrap();
        assert_eq!(loops.dead(), vec![("scrub", "panicked: injected".to_string())]);
        watch.wait_for(|dead| *dead == 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "started again once");
        assert!(loops.dead().is_empty());
        // Aborting the supervisor aborts the loop it runs.
        let alive = Arc::new(());
        let held = alive.clone();
        let h2 = supervise(loops.clone(), "gc", move || {
            let held = held.clone();
            async move {
                let _held = held;
                std::future::pending::<()>().await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(Arc::strong_count(&alive), 3, "the loop holds its clone");
        h2.abort();
        let _ = h2.await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(Arc::strong_count(&alive), 1, "the loop was aborted with its supervisor");
        handle.abort();
    }
}
