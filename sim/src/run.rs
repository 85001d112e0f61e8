//! One simulated run: cluster, clients, fault schedule, invariants, checks.

use std::cell::Cell;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::hash::Hash;
use std::hash::Hasher;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use shadowstore_base::ids::META_GROUP_ID;
use shadowstore_node::blob::shard_store::ChunkAddr;
use shadowstore_node::blob::shard_store::parse_chunk_key;
use shadowstore_node::config::NodeConfig;
use shadowstore_node::group::Group;
use shadowstore_node::node::Node;
use shadowstore_node::node::NodeCtx;
use shadowstore_node::node::Seams;
use shadowstore_node::raft::state_machine::GroupData;
use shadowstore_node::resource::manifest::BlobManifest;
use shadowstore_node::rng::NodeRng;
use shadowstore_node::storage::StorageEngine;
use shadowstore_node::storage::Tree;
use shadowstore_node::storage::memory_engine::MemoryEngine;

use crate::checker;
use crate::checker::Verdict;
use crate::clock::SkewedClock;
use crate::faults::Fault;
use crate::faults::Scheduled;
use crate::history::Key;
use crate::history::Op;
use crate::history::OpKind;
use crate::history::Outcome;
use crate::net::MessageFaults;
use crate::net::MessageRates;
use crate::net::TurmoilNetwork;
use crate::workload;
use crate::workload::SimClient;

/// Port every simulated node listens on.
const NODE_PORT: u16 = 7000;
/// Wall-clock time at the start of every run (2026-01-01T00:00:00Z).
const SIM_EPOCH_S: u64 = 1_767_225_600;
/// Simulated time for the cluster to form before faults start.
const SETUP_MS: u64 = 8_000;
/// After the last fault healed, every key must answer and every group
/// converge within this bound.
pub const LIVENESS_BOUND_MS: u64 = 30_000;
/// Delay before a node that failed to start is started again.
const RESTART_DELAY_MS: u64 = 1_000;
/// Invariants are sampled this often.
const SAMPLE_EVERY_MS: u64 = 50;
/// Step budget of the linearizability search per key.
pub const CHECK_STEP_BUDGET: u64 = 2_000_000;

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
}

fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn node_addr(i: usize) -> String {
    format!("{}:{NODE_PORT}", node_name(i))
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (seed, a, b).hash(&mut h);
    h.finish()
}

/// What the driver knows of one simulated node.
struct NodeSlot {
    engine: Arc<MemoryEngine>,
    /// Set by the running incarnation, cleared when it crashes.
    ctx: Option<Arc<NodeCtx>>,
    incarnation: u64,
    /// The disk was lost at least once: join, never bootstrap.
    wiped: bool,
    clock: SkewedClock,
}

#[derive(Default)]
struct Invariants {
    /// (group, term) → replica that led it.
    leaders: HashMap<(u64, u64), u64>,
    /// (node, incarnation, group, replica) → last applied index seen (a
    /// replica replaced in place starts from 0 under a new id).
    applied: HashMap<(usize, u64, u64, u64), u64>,
    /// (group, replica) seen quarantined.
    quarantined: HashSet<(u64, u64)>,
    violation: Option<String>,
}

impl Invariants {
    fn sample(&mut self, slots: &[NodeSlot]) {
        // (group, applied index) → first replica seen there.
        let mut at_index: HashMap<(u64, u64), (usize, Arc<Group>)> = HashMap::new();
        for (i, s) in slots.iter().enumerate() {
            let Some(ctx) = &s.ctx else { continue };
            self.quarantined.extend(ctx.cluster.registry.quarantined());
            for g in ctx.cluster.registry.all() {
                self.check_same_state(&mut at_index, i, &g);
                let m = g.metrics();
                if m.state.is_leader() {
                    let prev = *self.leaders.entry((g.id, m.current_term)).or_insert(g.replica_id);
                    if prev != g.replica_id && self.violation.is_none() {
                        self.violation = Some(format!(
                            "two leaders in group {} term {}: replicas {prev} and {}",
                            g.id, m.current_term, g.replica_id
                        ));
                    }
                }
                let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
                let last = self.applied.entry((i, s.incarnation, g.id, g.replica_id)).or_insert(applied);
                if applied < *last && self.violation.is_none() {
                    self.violation = Some(format!(
                        "applied index of group {} on {} went back: {} → {applied}",
                        g.id,
                        node_name(i),
                        *last
                    ));
                }
                *last = applied.max(*last);
            }
        }
    }

    /// State-machine safety: two replicas of a group that applied the same
    /// index hold the same state. A replica that applied a corrupt entry
    /// differs from the others even if no client reads from it.
    fn check_same_state(
        &mut self,
        at_index: &mut HashMap<(u64, u64), (usize, Arc<Group>)>,
        node: usize,
        g: &Arc<Group>,
    ) {
        let st = g.state.read();
        let index = st.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        match at_index.get(&(g.id, index)) {
            None => {
                drop(st);
                at_index.insert((g.id, index), (node, g.clone()));
            }
            Some((other_node, other)) => {
                if st.data != other.state.read().data && self.violation.is_none() {
                    self.violation = Some(format!(
                        "replicas {} on {} and {} on {} of group {} applied index {index} but hold different states",
                        other.replica_id,
                        node_name(*other_node),
                        g.replica_id,
                        node_name(node),
                        g.id
                    ));
                }
            }
        }
    }
}

/// Whether losing one more disk leaves every group a quorum of voters
/// that kept theirs: no running replica sees a joint (changing) membership
/// or a voter on a node that already lost its disk (`lost` node ids).
fn survives_disk_loss(slots: &[NodeSlot], lost: &HashSet<u64>) -> Result<(), String> {
    for s in slots {
        let Some(ctx) = &s.ctx else { continue };
        for g in ctx.cluster.registry.all() {
            let m = g.metrics();
            let membership = m.membership_config.membership();
            if membership.get_joint_config().len() != 1 {
                return Err(format!("group {} is changing membership", g.id));
            }
            for voter in membership.voter_ids() {
                let node = membership.get_node(&voter).map(|n| n.node_id);
                if node.is_some_and(|n| lost.contains(&n)) {
                    return Err(format!("group {} still has voter {voter} on lost node {node:?}", g.id));
                }
            }
        }
    }
    Ok(())
}

/// Bytes the simulator rotted on a node's disk, until the damage is gone.
struct Rot {
    node: usize,
    tree: Tree,
    key: Vec<u8>,
    bytes: Vec<u8>,
    /// For a rotted Raft record: the group and the replica it belongs to.
    replica: Option<(u64, u64)>,
}

impl Rot {
    /// Whether the damage still stands: the rotted bytes are on the disk
    /// or still what reads see, the replica they belonged to is
    /// quarantined, or it stopped running there and is still a member of
    /// its group (replacement not finished).
    fn outstanding(&self, slots: &[NodeSlot]) -> bool {
        let engine = &slots[self.node].engine;
        let rotted = Some(&self.bytes[..]);
        if engine.durable_value(self.tree, &self.key).as_deref() == rotted
            || engine.get(self.tree, &self.key).ok().flatten().as_deref() == rotted
        {
            return true;
        }
        let Some((group, replica)) = self.replica else { return false };
        let ctx = slots[self.node].ctx.as_ref();
        if ctx.is_some_and(|c| c.cluster.registry.quarantined().get(&group) == Some(&replica)) {
            return true;
        }
        let running = |s: &NodeSlot| s.ctx.as_ref().and_then(|c| c.cluster.registry.get(group));
        if running(&slots[self.node]).is_some_and(|g| g.replica_id == replica) {
            return false; // overwritten or purged before anything read it
        }
        slots.iter().filter_map(running).any(|g| {
            let m = g.metrics();
            m.membership_config.membership().nodes().any(|(id, _)| *id == replica)
        })
    }
}

/// Whether another rot or a disk loss may be applied: one rotted record
/// takes one copy out of a group (or one shard out of a stripe) until it
/// is repaired, which is all three replicas (or k = 2 of 3 shards)
/// tolerate.
fn no_damage_outstanding(rots: &[Rot]) -> Result<(), String> {
    match rots.first() {
        None => Ok(()),
        Some(r) => Err(format!("rot on {} in {} not repaired yet", node_name(r.node), r.tree.name())),
    }
}

/// Every resource group has a leader and all its replicas on running nodes
/// applied the same index, and no node holds a quarantined replica.
fn converged(slots: &[NodeSlot]) -> Result<(), String> {
    let mut groups: BTreeMap<u64, (bool, Vec<u64>)> = BTreeMap::new();
    for (i, s) in slots.iter().enumerate() {
        let Some(ctx) = &s.ctx else { continue };
        if let Some((group, replica)) = ctx.cluster.registry.quarantined().into_iter().next() {
            return Err(format!("{} still holds quarantined replica {replica} of group {group}", node_name(i)));
        }
        for g in ctx.cluster.registry.all() {
            let m = g.metrics();
            let e = groups.entry(g.id).or_default();
            e.0 |= m.state.is_leader();
            e.1.push(m.last_applied.map(|l| l.index).unwrap_or(0));
        }
    }
    for (gid, (has_leader, applied)) in groups {
        if gid == META_GROUP_ID {
            continue;
        }
        if !has_leader {
            return Err(format!("group {gid} has no leader"));
        }
        if applied.iter().min() != applied.iter().max() {
            return Err(format!("group {gid} replicas applied {applied:?}"));
        }
    }
    Ok(())
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
        ..NodeConfig::default()
    }
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
        .simulation_duration(Duration::from_secs(3_600))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(0))
        .max_message_latency(Duration::from_millis(max_latency_ms))
        .build();

    let slots: Rc<RefCell<Vec<NodeSlot>>> = Rc::new(RefCell::new(
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
    ));
    let message_rates = MessageRates::draw(&mut rng);
    let message_faults = MessageFaults::new(message_rates, mix(cfg.seed, 3, 0));
    let seed = cfg.seed;
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

    let history: Rc<RefCell<Vec<Op>>> = Rc::new(RefCell::new(Vec::new()));
    let finals: Rc<RefCell<BTreeMap<Key, Outcome>>> = Rc::new(RefCell::new(BTreeMap::new()));
    let liveness_failure: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let resources_ready = Rc::new(Cell::new(false));
    let values = Rc::new(RefCell::new(0u64));
    let clients_finished = Rc::new(Cell::new(0u32));
    let fault_end_ms = SETUP_MS + cfg.fault_phase_ms;
    for c in 0..cfg.clients {
        let (history, finals, liveness_failure, ready, values, finished) = (
            history.clone(),
            finals.clone(),
            liveness_failure.clone(),
            resources_ready.clone(),
            values.clone(),
            clients_finished.clone(),
        );
        let clients = cfg.clients;
        let node_addrs: Vec<String> = (0..nodes).map(node_addr).collect();
        let client_seed = mix(cfg.seed, 100, c as u64);
        sim.client(format!("c{c}"), async move {
            let mut client = SimClient::new(c, node_addrs, client_seed);
            if c == 0 {
                tokio::time::sleep(Duration::from_millis(2_000)).await;
                if !client.create_resources().await {
                    *liveness_failure.borrow_mut() = Some("resources could not be created".into());
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
                    history.borrow_mut().push(op);
                }
            }
            finished.set(finished.get() + 1);
            if c == 0 {
                // The final reads start once every client's last operation
                // completed (or was given up), so they must see all of them.
                while finished.get() < clients {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // Liveness: every key answers a linearizable read within the
                // bound once all faults healed (at fault_end_ms).
                let bound_end = fault_end_ms + LIVENESS_BOUND_MS;
                for r in 0..workload::RESOURCES {
                    for v in 0..workload::VARIANTS {
                        let mut answered = None;
                        while answered.is_none() && workload::now_ms() < bound_end {
                            answered = client.run_op((r, v), OpKind::Get).await;
                        }
                        match answered {
                            Some(op) => {
                                finals.borrow_mut().insert((r, v), op.outcome);
                                history.borrow_mut().push(op);
                            }
                            None => {
                                *liveness_failure.borrow_mut() = Some(format!(
                                    "key ({r}, {v}) did not answer within {LIVENESS_BOUND_MS} ms of healing"
                                ))
                            }
                        }
                    }
                }
            }
            Ok(())
        });
    }

    let mut faults = crate::faults::schedule(&mut rng, nodes, SETUP_MS, fault_end_ms);
    // (time, action) to undo each fault.
    let mut heals: Vec<(u64, Fault, Vec<usize>)> = Vec::new();
    let mut next_fault = 0;
    let mut invariants = Invariants::default();
    // Identities of nodes whose disk was lost.
    let mut lost_nodes: HashSet<u64> = HashSet::new();
    // Rotted records not yet repaired.
    let mut rots: Vec<Rot> = Vec::new();
    // Blobs on record at the last damage fault (see `exposed_blobs_healed`).
    let mut exposed: HashSet<(u64, u64)> = HashSet::new();
    let mut next_sample = 0;
    let mut failure: Option<String> = None;
    let mut trace = std::collections::hash_map::DefaultHasher::new();
    let mut clients_done;
    let mut converge_deadline = None;
    loop {
        match sim.step() {
            Ok(done) => clients_done = done,
            Err(e) => {
                failure = Some(format!("simulation error: {e}"));
                break;
            }
        }
        let now = sim.elapsed().as_millis() as u64;
        message_faults.set_enabled((SETUP_MS..fault_end_ms).contains(&now));
        while next_fault < faults.len() && faults[next_fault].at_ms <= now {
            let mut f = faults[next_fault].fault;
            next_fault += 1;
            rots.retain(|r| r.outstanding(&slots.borrow()));
            if let Fault::WipeDisk { node, down_ms } = f
                && let Err(why) = survives_disk_loss(&slots.borrow(), &lost_nodes)
                    .and_then(|()| no_damage_outstanding(&rots))
                    .and_then(|()| exposed_blobs_healed(&slots.borrow(), &exposed))
            {
                // Three replicas survive one lost disk, not a second one
                // before the first was re-replicated: that needs an
                // operator, so the simulator downgrades it to a crash (and
                // reports the fault it applied).
                tracing::info!(node, %why, "disk loss downgraded to a crash");
                f = Fault::Crash { node, down_ms, torn_batches: 0 };
                faults[next_fault - 1].fault = f;
            }
            if let Fault::WipeDisk { node, .. } = f {
                exposed = blobs_on_record(&slots.borrow());
                if let Some(id) = slots.borrow()[node].ctx.as_ref().and_then(|c| c.cluster.identity()) {
                    lost_nodes.insert(id.node_id);
                }
            }
            let isolated = match f {
                Fault::RotShard { .. } | Fault::RotRaft { .. } => {
                    let gate = no_damage_outstanding(&rots)
                        .and_then(|()| exposed_blobs_healed(&slots.borrow(), &exposed))
                        .and_then(|()| match f {
                            Fault::RotRaft { .. } => survives_disk_loss(&slots.borrow(), &lost_nodes),
                            _ => Ok(()),
                        });
                    match gate {
                        Ok(()) => {
                            let on_record = blobs_on_record(&slots.borrow());
                            if let Some(rot) = apply_rot(&slots.borrow(), f) {
                                rots.push(rot);
                                exposed = on_record;
                            }
                        }
                        Err(why) => tracing::info!(%why, "rot skipped"),
                    }
                    vec![]
                }
                _ => apply_fault(&mut sim, &slots, nodes, f),
            };
            (now, f, &isolated).hash(&mut trace);
            let dur = match f {
                Fault::Crash { down_ms, .. } | Fault::WipeDisk { down_ms, .. } | Fault::CrashLeader { down_ms, .. } => {
                    down_ms
                }
                Fault::RotShard { .. } | Fault::RotRaft { .. } => 0,
                Fault::Isolate { duration_ms, .. }
                | Fault::OneWay { duration_ms, .. }
                | Fault::IsolateLeader { duration_ms, .. } => duration_ms,
            };
            heals.push((now + dur, f, isolated));
        }
        let mut i = 0;
        while i < heals.len() {
            if heals[i].0 <= now || now >= fault_end_ms {
                let (_, f, isolated) = heals.swap_remove(i);
                heal_fault(&mut sim, nodes, f, &isolated);
                (now, "heal", f).hash(&mut trace);
            } else {
                i += 1;
            }
        }
        if now >= next_sample {
            next_sample = now + SAMPLE_EVERY_MS;
            invariants.sample(&slots.borrow());
            if let Some(v) = &invariants.violation {
                failure = Some(v.clone());
                break;
            }
        }
        if clients_done {
            let deadline = *converge_deadline.get_or_insert(now + LIVENESS_BOUND_MS);
            match converged(&slots.borrow()) {
                Ok(()) => break,
                Err(e) if now >= deadline => {
                    failure = Some(format!("not converged {LIVENESS_BOUND_MS} ms after the workload: {e}"));
                    break;
                }
                Err(_) => {}
            }
        }
    }
    let sim_ms = sim.elapsed().as_millis() as u64;
    drop(sim);
    let history = history.borrow().clone();
    for op in &history {
        op.hash(&mut trace);
    }
    if failure.is_none() {
        failure = liveness_failure.borrow().clone();
    }
    if failure.is_none() {
        failure = match checker::check(&history, CHECK_STEP_BUDGET) {
            Verdict::Linearizable => None,
            Verdict::Violation { key, ops } => Some(format!("not linearizable: key {key:?} ({ops} operations)")),
            Verdict::Unknown { key, steps } => {
                Some(format!("linearizability of key {key:?} unknown after {steps} steps (fails the seed)"))
            }
        };
    }
    if failure.is_none() {
        failure = checker::durability(&history, &finals.borrow()).err();
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
        faults,
        sim_ms,
        failure,
        history,
        message_rates,
        messages_faulted,
        replicas_quarantined: invariants.quarantined.len(),
    }
}

/// Applies `f`; returns the nodes it cut off (for the heal).
fn apply_fault(sim: &mut turmoil::Sim<'_>, slots: &Rc<RefCell<Vec<NodeSlot>>>, nodes: usize, f: Fault) -> Vec<usize> {
    let others = |n: usize| (0..nodes).filter(move |&j| j != n).map(node_name).collect::<Vec<_>>();
    match f {
        Fault::Crash { node, .. } | Fault::WipeDisk { node, .. } if !sim.is_host_running(node_name(node)) => vec![],
        Fault::Crash { node, torn_batches, .. } => {
            sim.crash(node_name(node));
            let mut all = slots.borrow_mut();
            all[node].ctx = None;
            all[node].engine.crash(torn_batches);
            vec![]
        }
        Fault::WipeDisk { node, .. } => {
            sim.crash(node_name(node));
            let mut all = slots.borrow_mut();
            all[node].ctx = None;
            all[node].engine = MemoryEngine::new();
            all[node].wiped = true;
            vec![]
        }
        // Applied by `apply_rot`, behind its gate.
        Fault::RotShard { .. } | Fault::RotRaft { .. } => vec![],
        Fault::Isolate { node, .. } => {
            for o in others(node) {
                sim.partition(node_name(node), o);
            }
            vec![node]
        }
        Fault::OneWay { from, to, .. } => {
            sim.partition_oneway(node_name(from), node_name(to));
            vec![from, to]
        }
        Fault::IsolateLeader { nth, .. } => match leader_node(&slots.borrow(), nth) {
            Some(node) => {
                for o in others(node) {
                    sim.partition(node_name(node), o);
                }
                vec![node]
            }
            None => vec![],
        },
        Fault::CrashLeader { nth, down_ms, torn_batches } => {
            let leader = leader_node(&slots.borrow(), nth);
            match leader {
                Some(node) => {
                    apply_fault(sim, slots, nodes, Fault::Crash { node, down_ms, torn_batches });
                    vec![node]
                }
                None => vec![],
            }
        }
    }
}

/// Flips one bit for a rot fault; returns what it rotted, if anything
/// could rot.
fn apply_rot(slots: &[NodeSlot], f: Fault) -> Option<Rot> {
    let (node, tree, key, replica, bit) = match f {
        Fault::RotShard { node, pick, bit } => {
            let candidates = rot_candidates(slots, node);
            let key = candidates.get(pick % candidates.len().max(1))?.clone();
            (node, Tree::Shards, key, None, bit)
        }
        Fault::RotRaft { node, pick, bit } => {
            let candidates = raft_rot_candidates(&slots[node]);
            let (tree, key, group, replica) = candidates.get(pick % candidates.len().max(1))?.clone();
            (node, tree, key, Some((group, replica)), bit)
        }
        _ => return None,
    };
    let engine = &slots[node].engine;
    // Only a value that reads see as it is on the disk: rotting the disk
    // under a newer unsynced value would leave reads on rotted bytes after
    // the sync wrote the clean ones (or the reverse).
    if engine.get(tree, &key).ok().flatten() != engine.durable_value(tree, &key) || !engine.rot(tree, &key, bit) {
        return None;
    }
    let bytes = engine.durable_value(tree, &key)?;
    tracing::info!(node, tree = tree.name(), ?replica, "bit rot applied");
    Some(Rot { node, tree, key, bytes, replica })
}

/// Durable Raft records (log parts, vote/committed/purge records,
/// snapshot manifest and chunks) of the resource groups `slot` runs, with
/// each record's group and the replica it belongs to. The meta group's are
/// left alone: a corrupt meta replica needs an operator (the node refuses
/// to start), which the simulator does not play.
fn raft_rot_candidates(slot: &NodeSlot) -> Vec<(Tree, Vec<u8>, u64, u64)> {
    let Some(ctx) = &slot.ctx else { return Vec::new() };
    let mut out = Vec::new();
    for tree in [Tree::Log, Tree::RaftState, Tree::Snapshot] {
        for key in slot.engine.durable_keys(tree) {
            let Some(group) = key.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else { continue };
            if group == META_GROUP_ID {
                continue;
            }
            if let Some(g) = ctx.cluster.registry.get(group) {
                out.push((tree, key, group, g.replica_id));
            }
        }
    }
    out
}

/// Chunks on `node` that may rot, weakest first: the chunks of retained
/// blobs whose stripe has the fewest shards stored on any disk (a blob
/// written while a holder was down, or not yet rebuilt), so a write
/// acknowledged with too little margin is what rot finds. Whether rotting
/// one now exceeds the durability promise is decided by the damage gate
/// (`exposed_blobs_healed`), not here.
fn rot_candidates(slots: &[NodeSlot], node: usize) -> Vec<Vec<u8>> {
    let retained = retained_manifests(slots);
    // (group, blob, stripe, chunk) → shards stored on some disk.
    let mut copies: HashMap<(u64, u64, u32, u16), HashSet<u8>> = HashMap::new();
    for s in slots {
        for a in s.engine.durable_keys(Tree::Shards).iter().filter_map(|k| parse_chunk_key(k)) {
            copies.entry((a.group, a.blob, a.stripe, a.chunk)).or_default().insert(a.shard);
        }
    }
    let mut mine: Vec<(usize, Vec<u8>)> = slots[node]
        .engine
        .durable_keys(Tree::Shards)
        .into_iter()
        .filter_map(|k| {
            let a = parse_chunk_key(&k)?;
            retained.contains_key(&(a.group, a.blob)).then_some(())?;
            let n = copies.get(&(a.group, a.blob, a.stripe, a.chunk)).map_or(0, |c| c.len());
            Some((n, k))
        })
        .collect();
    let weakest = mine.iter().map(|(n, _)| *n).min();
    mine.retain(|(n, _)| Some(*n) == weakest);
    mine.into_iter().map(|(_, k)| k).collect()
}

/// The retained blob manifests of every resource group, from the replica
/// that applied the most of it.
fn retained_manifests(slots: &[NodeSlot]) -> BTreeMap<(u64, u64), Arc<BlobManifest>> {
    let mut best: BTreeMap<u64, Arc<Group>> = BTreeMap::new();
    for s in slots {
        let Some(ctx) = &s.ctx else { continue };
        for g in ctx.cluster.registry.all() {
            if g.id == META_GROUP_ID {
                continue;
            }
            let applied = |g: &Group| g.state.applied_index();
            if best.get(&g.id).is_none_or(|b| applied(b) < applied(&g)) {
                best.insert(g.id, g);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (group, g) in best {
        let st = g.state.read();
        if let GroupData::Resource(rs) = &st.data {
            out.extend(rs.blobs().map(|m| ((group, m.blob_id), m.clone())));
        }
    }
    out
}

/// Every blob some disk holds a shard of or some state refers to: what a
/// damage fault applied now may hit.
fn blobs_on_record(slots: &[NodeSlot]) -> HashSet<(u64, u64)> {
    let mut out: HashSet<(u64, u64)> = retained_manifests(slots).into_keys().collect();
    for s in slots {
        out.extend(
            s.engine.durable_keys(Tree::Shards).iter().filter_map(|k| parse_chunk_key(k)).map(|a| (a.group, a.blob)),
        );
    }
    out
}

/// The damage gate of the durability promise (an acknowledged write
/// survives the loss of any one node, its disk or its replica, after the
/// acknowledgement): damage (a rot or a lost disk) may hit a blob that was
/// on record at the previous damage only once that blob healed, i.e.
/// every shard of it is again stored in full, matching its manifest, on
/// some disk. A second damage before that would be a second failure after
/// its acknowledgement, which the promise does not cover. Blobs written
/// since the previous damage take their first failure, whatever layout
/// they were written in.
fn exposed_blobs_healed(slots: &[NodeSlot], exposed: &HashSet<(u64, u64)>) -> Result<(), String> {
    let manifests = retained_manifests(slots);
    let mut stored: HashMap<ChunkAddr, Vec<Vec<u8>>> = HashMap::new();
    for s in slots {
        for k in s.engine.durable_keys(Tree::Shards) {
            let Some(a) = parse_chunk_key(&k) else { continue };
            if !exposed.contains(&(a.group, a.blob)) {
                continue;
            }
            if let Some(v) = s.engine.durable_value(Tree::Shards, &k) {
                stored.entry(a).or_default().push(v);
            }
        }
    }
    for (&(group, blob), m) in &manifests {
        if !exposed.contains(&(group, blob)) {
            continue;
        }
        for shard in 0..m.layout.shards() {
            for stripe in 0..m.layout.stripes() {
                for chunk in 0..m.layout.chunks_in_shard(stripe) {
                    let a = ChunkAddr { group, blob, shard: shard as u8, stripe, chunk: chunk as u16 };
                    let good = stored.get(&a).is_some_and(|copies| {
                        copies.iter().any(|c| {
                            c.len() == m.layout.chunk_len(stripe, chunk) as usize
                                && crc32fast::hash(c) == m.crc(stripe, shard, chunk)
                        })
                    });
                    if !good {
                        return Err(format!(
                            "blob {blob:x} of group {group} (on record at the last damage) still lacks chunk {stripe}/{chunk} of shard {shard}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The node leading the `nth` resource group (by group id, modulo their
/// number) right now.
fn leader_node(slots: &[NodeSlot], nth: usize) -> Option<usize> {
    let mut leaders: Vec<(u64, usize)> = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        let Some(ctx) = &s.ctx else { continue };
        for g in ctx.cluster.registry.all() {
            if g.id != META_GROUP_ID && g.is_leader() {
                leaders.push((g.id, i));
            }
        }
    }
    leaders.sort();
    leaders.get(nth % leaders.len().max(1)).map(|&(_, i)| i)
}

fn heal_fault(sim: &mut turmoil::Sim<'_>, nodes: usize, f: Fault, isolated: &[usize]) {
    match f {
        Fault::Crash { node, .. } | Fault::WipeDisk { node, .. } => {
            if !sim.is_host_running(node_name(node)) {
                sim.bounce(node_name(node));
            }
        }
        Fault::RotShard { .. } | Fault::RotRaft { .. } => {}
        Fault::CrashLeader { .. } => {
            for &node in isolated {
                if !sim.is_host_running(node_name(node)) {
                    sim.bounce(node_name(node));
                }
            }
        }
        Fault::Isolate { .. } | Fault::IsolateLeader { .. } => {
            for &node in isolated {
                for o in (0..nodes).filter(|&j| j != node) {
                    sim.repair(node_name(node), node_name(o));
                }
            }
        }
        Fault::OneWay { .. } => {
            if let [from, to] = isolated {
                sim.repair_oneway(node_name(*from), node_name(*to));
            }
        }
    }
}
