//! Three nodes in one process over loopback TCP, each on the in-memory
//! storage engine (the simulator's seam), to reach inside: the supervisor
//! restarts a group whose Raft core stopped on a storage failure, idle
//! groups quiesce and wake on the first request, the standard gRPC
//! health and reflection services answer, a replica whose Raft records
//! rotted on disk is quarantined and replaced under a new replica id, and
//! a meta voter that restarts keeps its demand history and receives what
//! it missed while away.

use std::sync::Arc;
use std::time::Duration;

use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_node::config::NodeConfig;
use shadowstore_node::node::Node;
use shadowstore_node::node::Seams;
use shadowstore_node::raft::Command;
use shadowstore_node::resource::ResourceCommand;
use shadowstore_node::rng::NodeRng;
use shadowstore_node::storage::memory_engine::MemoryEngine;
use shadowstore_proto::v1;
use shadowstore_proto::v1::shadow_store_client::ShadowStoreClient;
use tonic::transport::Channel;

struct TestNode {
    node: Node,
    engine: Arc<MemoryEngine>,
}

async fn start_node(i: u64, join: Option<String>) -> TestNode {
    start_node_on(i, join, MemoryEngine::new()).await
}

/// Starts node `i` on `engine` (a restart when the engine holds a node).
async fn start_node_on(i: u64, join: Option<String>, engine: Arc<MemoryEngine>) -> TestNode {
    let config = NodeConfig {
        data_dir: format!("/nonexistent/in-process-{i}").into(),
        listen_addr: "127.0.0.1:0".into(),
        bootstrap: join.is_none(),
        join: join.into_iter().collect(),
        quiesce_after_ms: 1_000,
        // In-process nodes on memory engines, for the API's internals;
        // TLS is exercised by the real processes in tests/.
        insecure: true,
        ..NodeConfig::default()
    };
    let seams = Seams {
        network: Arc::new(shadowstore_node::transport::TcpNetwork),
        engine: Some(engine.clone()),
        clock: Arc::new(shadowstore_base::clock::SystemClock),
        rng: Arc::new(NodeRng::from_seed(i)),
    };
    let node = Node::start(config, seams).await.expect("node starts");
    TestNode { node, engine }
}

async fn stub(addr: &str) -> ShadowStoreClient<Channel> {
    ShadowStoreClient::connect(format!("http://{addr}")).await.unwrap()
}

/// Retries `f` against every node until one succeeds (following no
/// redirects: one of the three is the right node).
async fn on_any<T, F, Fut>(nodes: &[TestNode], mut f: F) -> T
where
    F: FnMut(ShadowStoreClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for n in nodes {
            if let Ok(r) = f(stub(n.node.addr()).await).await {
                return r.into_inner();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no node succeeded within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn put(variant: &str, value: &[u8]) -> v1::PutRequest {
    v1::PutRequest {
        resource: "r".into(),
        variant: variant.into(),
        value: value.to_vec().into(),
        if_version: None,
        request_id: None,
    }
}

/// Three nodes with three meta voters and resource "r" on all of them,
/// holding one write; returns the nodes and the group id of "r".
async fn three_nodes_with_a_resource() -> (Vec<TestNode>, GroupId) {
    let first = start_node(1, None).await;
    let seed = first.node.addr().to_string();
    let mut nodes = vec![first];
    for i in 2..=3 {
        nodes.push(start_node(i, Some(seed.clone())).await);
    }
    // Wait for three meta voters.
    on_any(&nodes, |mut s| async move {
        let st = s.cluster_status(v1::ClusterStatusRequest {}).await?;
        if st.get_ref().nodes.iter().filter(|n| n.meta_voter).count() == 3 {
            Ok(st)
        } else {
            Err(tonic::Status::unavailable("forming"))
        }
    })
    .await;
    let created = on_any(&nodes, |mut s| async move {
        s.create_resource(v1::CreateResourceRequest { name: "r".into(), replication_factor: 3, ..Default::default() })
            .await
    })
    .await;
    let group = GroupId::new(created.resource.unwrap().group_id);
    on_any(&nodes, |mut s| async move { s.put(put("v", b"1")).await }).await;
    (nodes, group)
}

/// Waits up to `within` for `f` to give a value.
async fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_raft_records_rotted_is_quarantined_and_replaced_in_place() {
    use shadowstore_node::storage::Tree;
    use shadowstore_node::storage::keys;

    let (mut nodes, group) = three_nodes_with_a_resource().await;
    let mut last = 0;
    for i in 0..3 {
        last =
            on_any(&nodes, |mut s| async move { s.put(put("v", format!("value-{i}").as_bytes())).await }).await.version;
    }
    // A follower (not the meta leader, whose restart would move the meta
    // group too) stops; one bit of one of its group's records rots. It
    // must have received the writes (they commit on two of the three
    // replicas): a replica the leader has not reached yet holds no record.
    let victim = eventually(Duration::from_secs(30), "a follower that applied the writes", || {
        nodes.iter().position(|n| {
            let ctx = n.node.ctx();
            ctx.cluster.registry.get(group).is_some_and(|g| !g.is_leader() && g.state.applied_index() >= last)
                && ctx.cluster.meta_group().is_some_and(|m| !m.is_leader())
        })
    })
    .await;
    let node_id = nodes[victim].node.ctx().cluster.node_id().unwrap();
    let old_replica = nodes[victim].node.ctx().cluster.registry.get(group).unwrap().replica_id;
    let TestNode { node, engine } = nodes.remove(victim);
    node.shutdown().await;
    // The last log entry, which a start reads; if a snapshot already
    // purged the log, the vote record, which a start reads too.
    let last_entry =
        engine.durable_keys(Tree::Log).into_iter().filter(|k| k.starts_with(&keys::group_start(group))).next_back();
    let (tree, key) = match last_entry {
        Some(k) => (Tree::Log, k),
        None => (Tree::RaftState, keys::raft_state(group, keys::VOTE_TAG)),
    };
    assert!(engine.rot(tree, &key, 77), "nothing to rot in {}", tree.name());

    // It restarts on the same disk: the replica must not start from the
    // rotted log, and the cluster replaces it on the same node (all three
    // nodes host "r"), under a new replica id.
    nodes.push(start_node_on(node_id.get(), None, engine).await);
    let restarted = nodes.last().unwrap().node.ctx().clone();
    let new_replica = eventually(Duration::from_secs(60), "replacement replica running", || {
        let g = restarted.cluster.registry.get(group)?;
        (g.replica_id != old_replica && g.metrics().running_state.is_ok()).then_some(g)
    })
    .await;
    let record = restarted.cluster.with_meta(|m| m.resource_by_group(group).cloned()).flatten().expect("resource r");
    let mine = record.replica_on(node_id).expect("r keeps a replica on the node");
    assert_eq!(mine.replica_id, new_replica.replica_id);
    assert_eq!(mine.replaces, Some(old_replica));
    assert!(restarted.cluster.registry.quarantined().is_empty(), "the quarantined replica's data was not removed");
    // The new replica holds everything that was written, and serves on.
    let last = on_any(&nodes, |mut s| async move { s.put(put("v", b"after")).await }).await.version;
    eventually(Duration::from_secs(30), "new replica caught up", || {
        (new_replica.state.applied_index() >= last).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "old replica out of the membership", || {
        let m = new_replica.metrics();
        let members: Vec<ReplicaId> = m.membership_config.membership().nodes().map(|(id, _)| *id).collect();
        (!members.contains(&old_replica) && members.contains(&new_replica.replica_id)).then_some(())
    })
    .await;
    for n in nodes {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_quiescing_health_and_reflection() {
    let (mut nodes, group) = three_nodes_with_a_resource().await;

    // --- health and reflection
    let channel = Channel::from_shared(format!("http://{}", nodes[0].node.addr())).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest { service: "shadowstore.v1.ShadowStore".into() })
        .await
        .unwrap();
    assert_eq!(h.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    use tonic_reflection::pb::v1 as refl;
    let mut reflection = refl::server_reflection_client::ServerReflectionClient::new(channel);
    let request = refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(refl::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().expect("a reflection answer");
    let Some(refl::server_reflection_response::MessageResponse::ListServicesResponse(list)) = answer.message_response
    else {
        panic!("unexpected reflection answer {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["shadowstore.v1.ShadowStore", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from reflection: {names:?}");
    }
    // The peer service is for nodes: reflection does not advertise it.
    assert!(!names.iter().any(|n| n == "shadowstore.peer.v1.Peer"), "reflection lists the peer service: {names:?}");

    // --- quiescing: every group on every node stops its timers when idle,
    // and a request wakes the group.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for n in &nodes {
        for g in n.node.ctx().cluster.registry.all() {
            assert!(g.activity.is_quiesced(), "group {} not quiesced on {}", g.id, n.node.addr());
        }
    }
    on_any(&nodes, |mut s| async move { s.put(put("v", b"2")).await }).await;
    let leader = nodes
        .iter()
        .find_map(|n| n.node.ctx().cluster.registry.get(group).filter(|g| g.is_leader()))
        .expect("a leader");
    assert!(!leader.activity.is_quiesced(), "a put did not wake the group's leader");

    // A quiesced leader sent no heartbeats, so its leader lease lapsed;
    // an internal proposal (here an expiry, as garbage collection makes)
    // must still commit on the first call.
    let quiet = tokio::time::timeout(Duration::from_secs(10), async {
        while !leader.activity.is_quiesced() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(quiet.is_ok(), "the group did not quiesce again");
    // The lease is the maximum election timeout (2 s) past the last
    // quorum acknowledgement.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let expire = ResourceCommand::Expire { now_ms: 0, grace_ms: 0, keep_versions: 1 };
    let r = leader.propose(Command::Resource(expire)).await;
    assert!(r.is_ok(), "proposal to a quiesced leader failed: {r:?}");

    // --- a failed sync stops the node (fsyncgate): a follower's disk
    // fails; its syncer fails for good, nothing is restarted from sled's
    // memory even once the disk answers again, and the node reports that
    // it stopped. Started again on the same disk (what was not synced is
    // lost), it catches up.
    let victim = nodes
        .iter()
        .position(|n| n.node.ctx().cluster.registry.get(group).is_some_and(|g| !g.is_leader()))
        .expect("a follower");
    nodes[victim].engine.set_sync_failing(true);
    for i in 0..5 {
        on_any(&nodes, |mut s| async move { s.put(put("v", format!("during-{i}").as_bytes())).await }).await;
    }
    let ctx = nodes[victim].node.ctx().clone();
    eventually(Duration::from_secs(10), "the follower's storage failure is noticed", || ctx.syncer.failure()).await;
    nodes[victim].engine.set_sync_failing(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(ctx.syncer.sync().await.is_err(), "a sync succeeded after a failed one");
    assert_eq!(
        ctx.cluster.registry.restarts.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a group was restarted from memory after a failed sync"
    );
    let TestNode { mut node, engine } = nodes.remove(victim);
    let stopped = tokio::time::timeout(Duration::from_secs(5), node.serve_until_stopped()).await;
    assert!(
        matches!(stopped, Ok(Err(shadowstore_node::node::NodeError::StorageFailed(_)))),
        "the node did not stop on a failed sync"
    );
    let node_id = ctx.cluster.node_id().unwrap();
    drop(ctx);
    node.shutdown().await;
    engine.crash(0);
    nodes.push(start_node_on(node_id.get(), None, engine).await);
    let back = nodes.last().unwrap().node.ctx().clone();
    let last = on_any(&nodes, |mut s| async move { s.put(put("v", b"after")).await }).await.version;
    let caught_up = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(g) = back.cluster.registry.get(group)
                && g.state.applied_index() >= last
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if caught_up.is_err() {
        // What each node sees of the group, to tell a slow catch-up from
        // a stuck one.
        let views: Vec<String> = nodes
            .iter()
            .map(|n| match n.node.ctx().cluster.registry.get(group) {
                Some(g) => {
                    let m = g.metrics();
                    format!(
                        "{}: leader {:?} term {} last log {:?} applied {:?} replication {:?}",
                        n.node.addr(),
                        m.current_leader,
                        m.current_term,
                        m.last_log_index,
                        m.last_applied,
                        m.replication
                    )
                }
                None => format!("{}: no replica of the group", n.node.addr()),
            })
            .collect();
        panic!("the restarted node did not catch up to {last} within 60 s: {views:#?}");
    }

    for n in nodes {
        n.node.shutdown().await;
    }
}

/// 40 reads of "r", each answered by one of `nodes`.
async fn read_40(nodes: &[TestNode]) {
    for _ in 0..40 {
        on_any(nodes, |mut s| async move {
            s.get(v1::GetRequest { resource: "r".into(), variant: "v".into(), ..Default::default() }).await
        })
        .await;
    }
}

/// Reads of "r" in the last hour of `ctx`'s demand history.
fn reads_last_hour(ctx: &shadowstore_node::node::NodeCtx) -> f64 {
    use shadowstore_node::placement::history::{REGION_TOTAL, Resolution};
    use shadowstore_placement::demand::DemandKey;
    use shadowstore_placement::demand::recorder::MINUTE_MS;
    let now_ms = ctx.clock.now_ms();
    let total = DemandKey { resource: "r".to_string(), region: REGION_TOTAL.to_string() };
    ctx.placement.history.series(&total, now_ms / MINUTE_MS * MINUTE_MS, 60, Resolution::Minutes).iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_voter_keeps_its_demand_history_across_a_restart_and_receives_what_it_missed() {
    let (mut nodes, _group) = three_nodes_with_a_resource().await;
    on_any(&nodes, |mut s| async move {
        let request = v1::SetPlacementConfigRequest {
            key: "planning_interval_ms".into(),
            value: "1000".into(),
            ..Default::default()
        };
        s.set_placement_config(request).await
    })
    .await;
    // A meta voter that does not lead the meta group holds some reads, in
    // memory and in its journal on disk.
    let away = nodes
        .iter()
        .position(|n| n.node.ctx().cluster.meta_group().is_some_and(|m| !m.is_leader()))
        .expect("a meta follower");
    let voter = nodes[away].node.ctx().clone();
    read_40(&nodes).await;
    eventually(Duration::from_secs(90), "the voter holds the first reads", || {
        (reads_last_hour(&voter) > 0.0).then_some(())
    })
    .await;
    let before_away = reads_last_hour(&voter);
    drop(voter);
    // It goes away.
    let node_id = nodes[away].node.ctx().cluster.node_id().unwrap();
    let TestNode { node, engine } = nodes.remove(away);
    node.shutdown().await;
    // Reads while it is away. The leader collects them once their minute
    // is over; the other voter makes the majority, so the nodes forget them.
    read_40(&nodes).await;
    let leader = nodes
        .iter()
        .find(|n| n.node.ctx().cluster.meta_group().is_some_and(|m| m.is_leader()))
        .expect("a meta leader")
        .node
        .ctx()
        .clone();
    eventually(Duration::from_secs(90), "the leader holds the reads", || {
        (reads_last_hour(&leader) >= before_away + 40.0).then_some(())
    })
    .await;
    // A few more passes: the minutes are delivered and forgotten by the
    // nodes, so only the leader's queue for the absent voter holds them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = reads_last_hour(&leader);
    // It comes back on the same disk: it loads what it held, and the
    // leader sends it what it missed, in order.
    nodes.push(start_node_on(node_id.get(), None, engine).await);
    let back = nodes.last().unwrap().node.ctx().clone();
    assert!(reads_last_hour(&back) >= before_away, "the history on disk was not loaded");
    eventually(Duration::from_secs(60), "the returning voter holds the reads it missed", || {
        (reads_last_hour(&back) >= held).then_some(())
    })
    .await;
    // Minutes collected since keep joining the voter's queue; it drains
    // to empty once the voter answers again, and nothing was dropped.
    let dropped = eventually(Duration::from_secs(30), "the voter's share queue drains", || {
        let backlog = leader.placement.share_queues().backlog();
        backlog.get(&node_id).and_then(|(batches, _, dropped)| (*batches == 0).then_some(*dropped))
    })
    .await;
    assert_eq!(dropped, 0, "batches for the returning voter were dropped");
    for n in nodes {
        n.node.shutdown().await;
    }
}
