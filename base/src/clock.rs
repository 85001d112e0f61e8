//! The wall-clock seam.
//!
//! Timers and timeouts use tokio's clock (simulated under turmoil). Wall
//! time, used for timestamps that are stored or compared across nodes
//! (session expiry, telemetry buckets, TTLs), comes from a [`Clock`] so the
//! simulator can give each node its own offset and drift.

use std::sync::Arc;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch as this node believes it.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}

pub type SharedClock = Arc<dyn Clock>;
