//! The clock seam in the simulator: simulated wall time with a per-node
//! offset and drift, so nodes disagree about the time as real ones do.

use shadowstore_base::clock::Clock;

#[derive(Debug, Clone, Copy)]
pub struct SkewedClock {
    pub offset_ms: i64,
    /// Parts per million the node's clock runs fast (positive) or slow.
    pub drift_ppm: i64,
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        let since_epoch_ms = turmoil::since_epoch().map(|d| d.as_millis() as i64).unwrap_or(0);
        let elapsed_ms = turmoil::sim_elapsed().map(|d| d.as_millis() as i64).unwrap_or(0);
        let drift_ms = elapsed_ms * self.drift_ppm / 1_000_000;
        (since_epoch_ms + self.offset_ms + drift_ms).max(0) as u64
    }
}
