//! The simulated nodes: one turmoil host per node, each running the real
//! `Node` on the in-memory storage engine with a skewed clock, restarted
//! by turmoil after a crash with the disk the crash left.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;
use shadowstore_node::config::NodeConfig;
use shadowstore_node::node::Node;
use shadowstore_node::node::NodeCtx;
use shadowstore_node::node::Seams;
use shadowstore_node::rng::NodeRng;
use shadowstore_node::storage::memory_engine::MemoryEngine;

use super::mix;
use crate::clock::SkewedClock;
use crate::net::MessageFaults;
use crate::net::TurmoilNetwork;

/// Port every simulated node listens on.
const NODE_PORT: u16 = 7000;
/// Delay before a node that failed to start is started again.
const RESTART_DELAY_MS: u64 = 1_000;

/// What the driver knows of one simulated node.
pub struct NodeSlot {
    pub engine: Arc<MemoryEngine>,
    /// Set by the running incarnation, cleared when it crashes.
    pub ctx: Option<Arc<NodeCtx>>,
    pub incarnation: u64,
    /// The disk was lost at least once: join, never bootstrap.
    pub wiped: bool,
    clock: SkewedClock,
}

/// The driver's view of every node, shared with the host closures.
pub type Slots = Rc<RefCell<Vec<NodeSlot>>>;

pub fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

pub fn node_addr(i: usize) -> String {
    format!("{}:{NODE_PORT}", node_name(i))
}

/// One slot per node, each with a clock skew drawn from `rng`.
pub fn slots(rng: &mut SmallRng, nodes: usize) -> Slots {
    Rc::new(RefCell::new(
        (0..nodes)
            .map(|_| NodeSlot {
                engine: MemoryEngine::new(),
                ctx: None,
                incarnation: 0,
                wiped: false,
                clock: SkewedClock {
                    offset_ms: rng.random_range(-2_000..=2_000),
                    drift_ppm: rng.random_range(-200..=200),
                },
            })
            .collect(),
    ))
}

fn node_config(i: usize, nodes: usize, bootstrap: bool) -> NodeConfig {
    NodeConfig {
        data_dir: format!("/sim/{}", node_name(i)).into(),
        listen_addr: format!("0.0.0.0:{NODE_PORT}"),
        advertise_addr: Some(node_addr(i)),
        bootstrap,
        join: if bootstrap { Vec::new() } else { (0..nodes).filter(|&j| j != i).map(node_addr).collect() },
        quiesce_after_ms: 2_000,
        // Often enough that rotted shards are found and repaired, removed
        // replicas' shards handed off and narrow blobs re-encoded in a run.
        scrub_interval_ms: 3_000,
        gc_interval_ms: 3_000,
        // TLS is a property of the real wire: the simulated network behind
        // the seam carries plaintext gRPC.
        insecure: true,
        ..NodeConfig::default()
    }
}

/// Registers one host per slot. Node 0 bootstraps (until its disk is
/// lost); the others join through everyone else.
pub fn start(sim: &mut turmoil::Sim<'_>, slots: &Slots, message_faults: &Arc<MessageFaults>, seed: u64) {
    let nodes = slots.borrow().len();
    for i in 0..nodes {
        let slots = slots.clone();
        let message_faults = message_faults.clone();
        sim.host(node_name(i), move || {
            let slots = slots.clone();
            let network = Arc::new(TurmoilNetwork { faults: message_faults.clone() });
            let (engine, incarnation, bootstrap, clock) = {
                let mut all = slots.borrow_mut();
                let s = &mut all[i];
                s.incarnation += 1;
                (s.engine.clone(), s.incarnation, i == 0 && !s.wiped, s.clock)
            };
            async move {
                let seams = Seams {
                    network,
                    engine: Some(engine),
                    clock: Arc::new(clock),
                    rng: Arc::new(NodeRng::from_seed(mix(seed, 2 + i as u64, incarnation))),
                };
                // As under a service manager: a node that cannot start (a
                // join refused while the cluster is partitioned) exits and
                // is started again.
                let node = loop {
                    let seams = Seams { rng: Arc::new(NodeRng::from_seed(seams.rng.next_u64())), ..seams.clone() };
                    match Node::start(node_config(i, nodes, bootstrap), seams).await {
                        Ok(node) => break node,
                        Err(e) => {
                            tracing::info!(node = i, error = %e, "simulated node failed to start; restarting");
                            tokio::time::sleep(Duration::from_millis(RESTART_DELAY_MS)).await;
                        }
                    }
                };
                slots.borrow_mut()[i].ctx = Some(node.ctx().clone());
                std::future::pending::<()>().await;
                drop(node);
                Ok(())
            }
        });
    }
}
