//! Read admission: a node serves at most its configured read capacity
//! (`read_capacity_rps`) and sheds the excess at once with
//! RESOURCE_EXHAUSTED and a retry hint, rather than queueing without bound.
//!
//! A token bucket: `read_capacity_rps` tokens per second, holding at most
//! one second's worth (`BURST_S`), so a short burst up to the capacity is
//! absorbed and a sustained overload is shed.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// Seconds of capacity the bucket holds.
pub const BURST_S: f64 = 1.0;
/// Bounds on the retry hint given to a shed read.
pub const RETRY_AFTER_MS_MIN: u64 = 10;
pub const RETRY_AFTER_MS_MAX: u64 = 1_000;
/// The hint travels in `shadowstore_proto::RETRY_AFTER_MS_METADATA`; the
/// client library retries after it, on the next replica.

pub struct ReadAdmission {
    capacity_rps: f64,
    state: Mutex<Bucket>,
    /// Reads admitted and shed since start (metrics).
    pub admitted: AtomicU64,
    pub shed: AtomicU64,
}

struct Bucket {
    tokens: f64,
    last_ms: u64,
}

impl ReadAdmission {
    pub fn new(capacity_rps: u64, now_ms: u64) -> ReadAdmission {
        assert!(capacity_rps > 0, "read capacity must be positive");
        let capacity_rps = capacity_rps as f64;
        ReadAdmission {
            capacity_rps,
            state: Mutex::new(Bucket { tokens: capacity_rps * BURST_S, last_ms: now_ms }),
            admitted: AtomicU64::new(0),
            shed: AtomicU64::new(0),
        }
    }

    /// Reads per second admitted at most.
    pub fn capacity_rps(&self) -> u64 {
        self.capacity_rps as u64
    }

    /// Admits one read at `now_ms`, or returns the milliseconds after which
    /// a retry would find a token.
    pub fn try_admit(&self, now_ms: u64) -> Result<(), u64> {
        let mut bucket = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed_s = now_ms.saturating_sub(bucket.last_ms) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed_s * self.capacity_rps).min(self.capacity_rps * BURST_S);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            self.admitted.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.shed.fetch_add(1, Ordering::Relaxed);
        let wait_ms = ((1.0 - bucket.tokens) / self.capacity_rps * 1000.0).ceil() as u64;
        Err(wait_ms.clamp(RETRY_AFTER_MS_MIN, RETRY_AFTER_MS_MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_above_capacity_and_recovers() {
        let admission = ReadAdmission::new(100, 0);
        // One second's burst is admitted, then reads are shed.
        let admitted = (0..150).filter(|_| admission.try_admit(0).is_ok()).count();
        assert_eq!(admitted, 100);
        let retry = admission.try_admit(0).expect_err("bucket empty");
        assert_eq!(retry, RETRY_AFTER_MS_MIN, "one token accrues in 10 ms at 100 rps");
        // Over the next second, about 100 more reads are admitted.
        let later = (1..=1000u64).filter(|ms| admission.try_admit(*ms).is_ok()).count();
        assert!((99..=101).contains(&later), "{later}");
    }

    #[test]
    fn retry_hint_is_bounded() {
        let admission = ReadAdmission::new(1, 0);
        assert!(admission.try_admit(0).is_ok());
        assert_eq!(admission.try_admit(0), Err(RETRY_AFTER_MS_MAX));
    }
}
