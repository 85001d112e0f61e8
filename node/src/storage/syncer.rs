//! Group commit: one flush + fsync makes many groups' writes durable.
//!
//! Callers write to the engine first, then hand the syncer a completion.
//! The syncer task takes every completion queued so far, runs one
//! [`StorageEngine::sync`], and completes them all; completions that arrive
//! during a sync wait for the next one. Since a completion is queued only
//! after its write returned, the sync that serves it covers the write.
//!
//! A failed sync is final (the fsyncgate lesson): the kernel may have
//! dropped the dirty pages it could not write, so a later sync that
//! succeeds proves nothing about them. After the first failure every
//! completion, queued before or after, fails, and [`Syncer::failed`]
//! resolves; the node stops (`node.rs`) and recovers from what is on disk
//! when it is started again.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio::sync::oneshot;

use super::engine::SharedEngine;
use shadowstore_base::limits::SYNC_QUEUE_DEPTH_MAX;

type Completion = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Scheduler yields before each sync to gather waiters (see `run`).
const SYNC_GATHER_YIELDS: usize = 2;

#[derive(Debug)]
pub struct SyncStats {
    /// Syncs performed.
    pub syncs: AtomicU64,
    /// Completions served (waiters / syncs = average batch).
    pub waiters: AtomicU64,
    /// How long each sync took (metrics).
    pub seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            syncs: AtomicU64::new(0),
            waiters: AtomicU64::new(0),
            seconds: crate::telemetry::seconds_histogram(),
        }
    }
}

#[derive(Clone)]
pub struct Syncer {
    tx: mpsc::Sender<Completion>,
    stats: Arc<SyncStats>,
    /// The first sync failure; set once, never cleared.
    failure: tokio::sync::watch::Receiver<Option<String>>,
}

impl Syncer {
    /// Starts the syncer task on the current tokio runtime.
    pub fn start(engine: SharedEngine) -> Syncer {
        let (tx, rx) = mpsc::channel(SYNC_QUEUE_DEPTH_MAX);
        let stats = Arc::new(SyncStats::default());
        let (failed_tx, failure) = tokio::sync::watch::channel(None);
        tokio::spawn(run(engine, rx, stats.clone(), failed_tx));
        Syncer { tx, stats, failure }
    }

    /// The first sync failure, if storage has failed.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Resolves with the first sync failure (never, while storage works).
    pub async fn failed(&self) -> String {
        let mut rx = self.failure.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(f) => f.clone().unwrap_or_default(),
            // The syncer task is gone: the node is shutting down.
            Err(_) => std::future::pending().await,
        }
    }

    /// Queues `done` to be called after the next sync. If the syncer is
    /// gone (node shutting down), `done` is called with an error.
    pub async fn after_sync(&self, done: impl FnOnce(io::Result<()>) + Send + 'static) {
        if let Err(mpsc::error::SendError(done)) = self.tx.send(Box::new(done)).await {
            done(Err(io::Error::other("syncer stopped")));
        }
    }

    /// Waits until every write made before this call is durable.
    pub async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.after_sync(move |r| {
            let _ = tx.send(r);
        })
        .await;
        rx.await.unwrap_or_else(|_| Err(io::Error::other("syncer dropped a completion")))
    }

    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }
}

/// How often the syncer reports its batching at debug level.
const STATS_LOG_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

async fn run(
    engine: SharedEngine,
    mut rx: mpsc::Receiver<Completion>,
    stats: Arc<SyncStats>,
    failed: tokio::sync::watch::Sender<Option<String>>,
) {
    let mut batch: Vec<Completion> = Vec::new();
    let mut last_log = (tokio::time::Instant::now(), 0u64, 0u64);
    while let Some(first) = rx.recv().await {
        if last_log.0.elapsed() >= STATS_LOG_PERIOD {
            let syncs = stats.syncs.load(Ordering::Relaxed);
            let waiters = stats.waiters.load(Ordering::Relaxed);
            let secs = last_log.0.elapsed().as_secs_f64();
            let (ds, dw) = (syncs - last_log.1, waiters - last_log.2);
            tracing::debug!(
                syncs_per_s = format!("{:.0}", ds as f64 / secs),
                waiters_per_sync = format!("{:.2}", dw as f64 / ds.max(1) as f64),
                "group commit"
            );
            last_log = (tokio::time::Instant::now(), syncs, waiters);
        }
        batch.push(first);
        // Let tasks that are already runnable (other groups' appends on
        // this node) queue their completions first: more waiters per sync.
        // Yielding adds no delay when nothing else is runnable.
        for _ in 0..SYNC_GATHER_YIELDS {
            tokio::task::yield_now().await;
        }
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let earlier = failed.borrow().clone();
        let result = match earlier {
            Some(first) => Err(io::Error::other(format!(
                "storage failed earlier ({first}); nothing is synced until the node restarts"
            ))),
            None => {
                let started = std::time::Instant::now();
                let r = engine.clone().sync().await;
                stats.seconds.observe(started.elapsed().as_secs_f64());
                r
            }
        };
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        stats.waiters.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Err(e) = &result
            && failed.borrow().is_none()
        {
            tracing::error!(error = %e, waiters = batch.len(), "storage sync failed: the node stops");
            failed.send_replace(Some(e.to_string()));
        }
        for done in batch.drain(..) {
            done(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageEngine;
    use crate::storage::Tree;
    use crate::storage::WriteBatch;
    use crate::storage::memory_engine::MemoryEngine;

    #[tokio::test]
    async fn sync_makes_prior_writes_durable() {
        let engine = MemoryEngine::new();
        let syncer = Syncer::start(engine.clone());
        let mut b = WriteBatch::new(Tree::Log);
        b.put(b"k".to_vec(), b"v".to_vec());
        engine.write(b).unwrap();
        syncer.sync().await.unwrap();
        engine.crash(0);
        assert_eq!(engine.get(Tree::Log, b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[tokio::test]
    async fn many_waiters_share_few_syncs() {
        let engine = MemoryEngine::new();
        let syncer = Syncer::start(engine.clone());
        let mut waits = Vec::new();
        for _ in 0..100 {
            let s = syncer.clone();
            waits.push(tokio::spawn(async move { s.sync().await }));
        }
        for w in waits {
            w.await.unwrap().unwrap();
        }
        let syncs = syncer.stats().syncs.load(Ordering::Relaxed);
        assert_eq!(syncer.stats().waiters.load(Ordering::Relaxed), 100);
        assert!(syncs >= 1 && syncs < 100, "expected batching, got {syncs} syncs for 100 waiters");
    }

    #[tokio::test]
    async fn a_failed_sync_is_final() {
        let engine = MemoryEngine::new();
        let syncer = Syncer::start(engine.clone());
        syncer.sync().await.unwrap();
        assert_eq!(syncer.failure(), None);
        engine.set_sync_failing(true);
        assert!(syncer.sync().await.is_err());
        // The disk answers again, but what it dropped is not known: every
        // later sync fails too, and the failure is reported.
        engine.set_sync_failing(false);
        let e = syncer.sync().await.expect_err("a sync after a failure succeeded");
        assert!(e.to_string().contains("storage failed earlier"), "{e}");
        let syncs = engine.syncs();
        assert!(syncer.sync().await.is_err());
        assert_eq!(engine.syncs(), syncs, "the engine is not asked to sync after a failure");
        let reason = tokio::time::timeout(std::time::Duration::from_secs(1), syncer.failed()).await.unwrap();
        assert!(reason.contains("simulated fsync failure"), "{reason}");
        assert_eq!(syncer.failure(), Some(reason));
    }
}
