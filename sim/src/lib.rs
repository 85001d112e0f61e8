//! The deterministic simulator: real shadowstore nodes (the same crates,
//! the same tonic stack) on turmoil's simulated network and clock, with the
//! in-memory storage engine, under faults drawn from one seed.
//!
//! A run ([`run::run_seed`]) builds a cluster, lets clients put, get and
//! delete while faults hit it, heals everything, checks that every group
//! converges and every key answers, and then checks the recorded history:
//! per-key linearizability ([`checker`]), durability of acknowledged
//! writes, and invariants sampled during the run (one leader per term per
//! group, applied index never going back). The trace hash of a run is a
//! function of the seed alone (same commit, same toolchain).

#[cfg(not(tokio_unstable))]
compile_error!(
    "the simulator needs `--cfg tokio_unstable` (set for the whole workspace in .cargo/config.toml); \
     without it tokio's scheduler is not deterministic"
);

pub mod checker;
pub mod clock;
pub mod faults;
pub mod history;
pub mod net;
pub mod placement_eval;
pub mod run;
pub mod workload;
