//! One simulated run, in four parts: the nodes ([`hosts`]), the clients
//! ([`clients`]), the faults ([`injector`], with [`damage`] for what may
//! rot and when damage is repaired), and the checks (invariants sampled
//! during the run in [`invariants`]; linearizability, durability and
//! liveness of the recorded history after it).

mod clients;
mod damage;
mod hosts;
mod injector;
mod invariants;

use std::hash::Hash;
use std::hash::Hasher;
use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::checker;
use crate::checker::Verdict;
use crate::faults::Scheduled;
use crate::history::Op;
use crate::history::Outcome;
use crate::net::MessageFaults;
use crate::net::MessageRates;
use clients::Observed;
use hosts::Slots;
use injector::Injector;
use invariants::Invariants;
use invariants::converged;

/// Wall-clock time at the start of every run (2026-01-01T00:00:00Z).
const SIM_EPOCH_S: u64 = 1_767_225_600;
/// Simulated time for the cluster to form before faults start.
const SETUP_MS: u64 = 8_000;
/// After the last fault healed, every key must answer and every group
/// converge within this bound.
pub const LIVENESS_BOUND_MS: u64 = 30_000;
/// Invariants are sampled this often.
const SAMPLE_EVERY_MS: u64 = 50;
/// Step budget of the linearizability search per key.
pub const CHECK_STEP_BUDGET: u64 = 2_000_000;
/// Longest simulated run turmoil allows.
const SIM_DURATION_MAX_S: u64 = 3_600;

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    /// 3..=7; `None` draws it from the seed.
    pub nodes: Option<usize>,
    pub clients: u32,
    /// Length of the workload-under-faults phase, simulated ms.
    pub fault_phase_ms: u64,
}

impl RunConfig {
    pub fn new(seed: u64) -> Self {
        RunConfig { seed, nodes: None, clients: 4, fault_phase_ms: 20_000 }
    }
}

#[derive(Debug)]
pub struct RunReport {
    pub seed: u64,
    pub nodes: usize,
    pub trace_hash: u64,
    pub ops: usize,
    pub indeterminate: usize,
    pub faults: Vec<Scheduled>,
    pub sim_ms: u64,
    /// `None` when every check passed.
    pub failure: Option<String>,
    pub history: Vec<Op>,
    /// Per-mille rates of Raft message faults in this run.
    pub message_rates: MessageRates,
    /// Raft messages dropped, delayed and duplicated.
    pub messages_faulted: [u64; 3],
    /// Replicas quarantined for a corrupt Raft record (rot detected).
    pub replicas_quarantined: usize,
    /// The operator's shadow actions and their answers, in order.
    pub shadow_ops: Vec<String>,
}

/// A seed for one part of the run, derived from the run's seed.
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (seed, a, b).hash(&mut h);
    h.finish()
}

pub fn run_seed(cfg: &RunConfig) -> RunReport {
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let nodes = cfg.nodes.unwrap_or_else(|| rng.random_range(3..=5));
    assert!((3..=7).contains(&nodes), "3 to 7 nodes");
    let max_latency_ms = rng.random_range(1..30);
    let mut sim = turmoil::Builder::new()
        .rng_seed(mix(cfg.seed, 1, 0))
        // A fixed wall-clock epoch: turmoil's default is the real time now,
        // which would leak into node clocks and so into the run.
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(SIM_EPOCH_S))
        .simulation_duration(Duration::from_secs(SIM_DURATION_MAX_S))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(0))
        .max_message_latency(Duration::from_millis(max_latency_ms))
        .build();

    let slots = hosts::slots(&mut rng, nodes);
    let message_rates = MessageRates::draw(&mut rng);
    let message_faults = MessageFaults::new(message_rates, mix(cfg.seed, 3, 0));
    hosts::start(&mut sim, &slots, &message_faults, cfg.seed);
    let fault_end_ms = SETUP_MS + cfg.fault_phase_ms;
    let observed = clients::start(&mut sim, cfg.seed, cfg.clients, nodes, fault_end_ms);
    let mut injector = Injector::new(crate::faults::schedule(&mut rng, nodes, SETUP_MS, fault_end_ms));

    let mut trace = std::collections::hash_map::DefaultHasher::new();
    let mut invariants = Invariants::default();
    let mut failure =
        drive(&mut sim, &slots, &message_faults, &mut injector, &mut invariants, fault_end_ms, &mut trace);
    let sim_ms = sim.elapsed().as_millis() as u64;
    drop(sim);

    let history = observed.history.borrow().clone();
    for op in &history {
        op.hash(&mut trace);
    }
    let shadow_ops = observed.shadow_ops.borrow().clone();
    shadow_ops.hash(&mut trace);
    if failure.is_none() {
        failure = check_history(&history, &observed);
    }
    let messages_faulted = [&message_faults.dropped, &message_faults.delayed, &message_faults.duplicated]
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed));
    messages_faulted.hash(&mut trace);
    RunReport {
        seed: cfg.seed,
        nodes,
        trace_hash: trace.finish(),
        ops: history.len(),
        indeterminate: history.iter().filter(|o| o.outcome == Outcome::Indeterminate).count(),
        faults: injector.into_faults(),
        sim_ms,
        failure,
        history,
        message_rates,
        messages_faulted,
        replicas_quarantined: invariants.quarantined.len(),
        shadow_ops,
    }
}

/// Steps the simulation until the clients are done and the cluster
/// converged, injecting and healing faults and sampling invariants on the
/// way. Returns the first failure seen while running.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    slots: &Slots,
    message_faults: &MessageFaults,
    injector: &mut Injector,
    invariants: &mut Invariants,
    fault_end_ms: u64,
    trace: &mut impl Hasher,
) -> Option<String> {
    let nodes = slots.borrow().len();
    let mut next_sample = 0;
    let mut converge_deadline = None;
    loop {
        let clients_done = match sim.step() {
            Ok(done) => done,
            Err(e) => return Some(format!("simulation error: {e}")),
        };
        let now = sim.elapsed().as_millis() as u64;
        message_faults.set_enabled((SETUP_MS..fault_end_ms).contains(&now));
        injector.inject_due(sim, slots, now, trace);
        injector.heal_due(sim, nodes, now, fault_end_ms, trace);
        if now >= next_sample {
            next_sample = now + SAMPLE_EVERY_MS;
            invariants.sample(&slots.borrow());
            if let Some(v) = &invariants.violation {
                return Some(v.clone());
            }
        }
        if clients_done {
            let deadline = *converge_deadline.get_or_insert(now + LIVENESS_BOUND_MS);
            match converged(&slots.borrow()) {
                Ok(()) => return None,
                Err(e) if now >= deadline => {
                    return Some(format!("not converged {LIVENESS_BOUND_MS} ms after the workload: {e}"));
                }
                Err(_) => {}
            }
        }
    }
}

/// The checks of the recorded history: liveness, per-key linearizability,
/// then durability of acknowledged writes against the final reads.
fn check_history(history: &[Op], observed: &Observed) -> Option<String> {
    if let Some(f) = observed.liveness_failure.borrow().clone() {
        return Some(f);
    }
    match checker::check(history, CHECK_STEP_BUDGET) {
        Verdict::Linearizable => {}
        Verdict::Violation { key, ops } => return Some(format!("not linearizable: key {key:?} ({ops} operations)")),
        Verdict::Unknown { key, steps } => {
            return Some(format!("linearizability of key {key:?} unknown after {steps} steps (fails the seed)"));
        }
    }
    checker::durability(history, &observed.finals.borrow()).err()
}
