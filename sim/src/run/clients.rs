//! The simulated clients: client 0 creates the resources, then every
//! client runs random operations until the fault phase ends; client 0 then
//! reads every key once more (the liveness check and the final values the
//! durability check compares against).

use std::cell::Cell;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use super::LIVENESS_BOUND_MS;
use super::SETUP_MS;
use super::hosts::node_addr;
use super::mix;
use crate::history::Key;
use crate::history::Op;
use crate::history::OpKind;
use crate::history::Outcome;
use crate::workload;
use crate::workload::SimClient;

/// What the clients observed, read by the checks after the run.
#[derive(Default)]
pub struct Observed {
    pub history: RefCell<Vec<Op>>,
    /// Outcome of the final linearizable read of each key.
    pub finals: RefCell<BTreeMap<Key, Outcome>>,
    /// Set when resources could not be created or a key did not answer
    /// within the liveness bound.
    pub liveness_failure: RefCell<Option<String>>,
    /// What the operator's shadow actions answered, in order.
    pub shadow_ops: RefCell<Vec<String>>,
}

/// Registers `clients` clients against `nodes` nodes; they stop issuing
/// random operations at `fault_end_ms`.
pub fn start(sim: &mut turmoil::Sim<'_>, seed: u64, clients: u32, nodes: usize, fault_end_ms: u64) -> Rc<Observed> {
    let observed = Rc::new(Observed::default());
    let resources_ready = Rc::new(Cell::new(false));
    let values = Rc::new(RefCell::new(0u64));
    let clients_finished = Rc::new(Cell::new(0u32));
    for c in 0..clients {
        let (observed, ready, values, finished) =
            (observed.clone(), resources_ready.clone(), values.clone(), clients_finished.clone());
        let node_addrs: Vec<String> = (0..nodes).map(node_addr).collect();
        let client_seed = mix(seed, 100, c as u64);
        sim.client(format!("c{c}"), async move {
            let mut client = SimClient::new(c, node_addrs, client_seed);
            if c == 0 {
                tokio::time::sleep(Duration::from_millis(2_000)).await;
                if !client.create_resources().await {
                    *observed.liveness_failure.borrow_mut() = Some("resources could not be created".into());
                    return Ok(());
                }
                ready.set(true);
            }
            while !ready.get() {
                if workload::now_ms() > SETUP_MS + 30_000 {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut last_version = vec![None; (workload::RESOURCES * workload::VARIANTS) as usize];
            while workload::now_ms() < fault_end_ms {
                if let Some(op) = client.random_op(&values, &mut last_version).await {
                    observed.history.borrow_mut().push(op);
                }
            }
            finished.set(finished.get() + 1);
            if c == 0 {
                // The final reads start once every client's last operation
                // completed (or was given up), so they must see all of them.
                while finished.get() < clients {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                final_reads(&mut client, &observed, fault_end_ms + LIVENESS_BOUND_MS).await;
            }
            Ok(())
        });
    }
    // An operator adds, promotes, rolls back and removes shadow replicas
    // while the faults run (from its own seeded stream), so reads land on
    // shadows in every state and go through the linearizability checker.
    let node_addrs: Vec<String> = (0..nodes).map(node_addr).collect();
    let operator_seed = mix(seed, 300, 0);
    let (ready, shadow_ops) = (resources_ready.clone(), observed.clone());
    sim.client("operator", async move {
        let mut operator = SimClient::new(clients, node_addrs, operator_seed);
        while !ready.get() {
            if workload::now_ms() > SETUP_MS + 30_000 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut step = 0;
        while workload::now_ms() < fault_end_ms {
            let pause_ms = operator.pause_ms(OPERATOR_PAUSE_MS);
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            let what = operator.shadow_op(step).await;
            step += 1;
            tracing::info!(at_ms = workload::now_ms(), "operator: {what}");
            shadow_ops.shadow_ops.borrow_mut().push(what);
        }
        Ok(())
    });
    observed
}

/// Pause between two operator actions (drawn in this range).
const OPERATOR_PAUSE_MS: std::ops::Range<u64> = 1_500..5_000;

/// Liveness: every key answers a linearizable read before `bound_end_ms`
/// (the liveness bound after every fault healed).
async fn final_reads(client: &mut SimClient, observed: &Observed, bound_end_ms: u64) {
    for r in 0..workload::RESOURCES {
        for v in 0..workload::VARIANTS {
            let mut answered = None;
            while answered.is_none() && workload::now_ms() < bound_end_ms {
                answered = client.run_op((r, v), OpKind::Get).await;
            }
            match answered {
                Some(op) => {
                    observed.finals.borrow_mut().insert((r, v), op.outcome);
                    observed.history.borrow_mut().push(op);
                }
                None => {
                    *observed.liveness_failure.borrow_mut() =
                        Some(format!("key ({r}, {v}) did not answer within {LIVENESS_BOUND_MS} ms of healing"))
                }
            }
        }
    }
}
