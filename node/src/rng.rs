//! The one source of randomness of a node.
//!
//! Everything random in a node (openraft's election timeouts, jitter,
//! request ids the node makes itself) is derived from one seed: random in
//! production, chosen by the simulator so a run can be replayed.
//! openraft draws through `DeterministicRng`, which reads a task-local seed;
//! [`NodeRng::openraft_scope`] gives every Raft group its own sub-seed.

use std::future::Future;
use std::sync::Mutex;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;

pub struct NodeRng {
    seed: u64,
    inner: Mutex<SmallRng>,
}

impl NodeRng {
    pub fn from_seed(seed: u64) -> Self {
        NodeRng { seed, inner: Mutex::new(SmallRng::seed_from_u64(seed)) }
    }

    /// A seed from the operating system, for production nodes.
    pub fn from_entropy() -> Self {
        Self::from_seed(rand::rng().random())
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn next_u64(&self) -> u64 {
        self.lock().random()
    }

    /// A uniformly random value in `[0, bound)`; `bound` must be positive.
    pub fn below(&self, bound: u64) -> u64 {
        assert!(bound > 0, "NodeRng::below needs a positive bound");
        self.lock().random_range(0..bound)
    }

    /// Runs `fut` (which creates or drives openraft tasks) with a fresh
    /// sub-seed for openraft's deterministic RNG.
    pub fn openraft_scope<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        let seed = self.next_u64();
        crate::raft::Runtime::scope(seed, fut)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmallRng> {
        // The lock only guards an RNG; a panic while holding it cannot leave
        // it inconsistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
