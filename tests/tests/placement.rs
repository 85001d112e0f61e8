//! Demand telemetry, read admission, the planner's dry run and committed
//! plans, and the placement settings on a real 4-node cluster.
//!
//! Every node has a read capacity of 2 reads/s, so a burst of reads is
//! mostly shed (RESOURCE_EXHAUSTED with a retry hint), is still counted as
//! demand, and makes the resource's three replicas (6 reads/s together)
//! too small: the meta leader's planner, reactive on so little history,
//! must choose the fourth node for a shadow and commit that decision.

use std::time::Duration;

use shadowstore_client::{Client, ClientOptions};
use shadowstore_proto::{REGION_METADATA, RETRY_AFTER_MS_METADATA, SHED_BEFORE_METADATA, v1};
use shadowstore_tests::{Cluster, eventually};
use tonic::Code;

const RESOURCE: &str = "hot";
const REGION: &str = "eu-test";
const BURST_READS: usize = 1_000;
const RETRIES: u32 = 200;

fn get_request(region: Option<&str>) -> tonic::Request<v1::GetRequest> {
    let mut req = tonic::Request::new(v1::GetRequest {
        resource: RESOURCE.to_string(),
        variant: "v".to_string(),
        version: None,
        consistency: v1::Consistency::StaleOk as i32,
        max_staleness_ms: 60_000,
    });
    if let Some(region) = region {
        req.metadata_mut().insert(REGION_METADATA, region.parse().expect("ascii region"));
    }
    req
}

/// Reads of `REGION` in the last hour of a `demand show` answer.
fn region_reads(view: &v1::DemandShowResponse) -> f64 {
    view.regions.iter().find(|x| x.region == REGION).map(|r| r.minutes.iter().sum()).unwrap_or(0.0)
}

fn settings(config: &v1::PlacementConfigResponse) -> v1::PlacementSettings {
    config.settings.clone().expect("settings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_admission_and_planning_on_four_nodes() {
    let mut cluster = Cluster::start_with(4, "read_capacity_rps = 2").await.expect("cluster");
    let c = cluster.client();
    let info = c.create_resource(RESOURCE, 3).await.expect("create");
    let replica_nodes: Vec<u64> = info.replicas.iter().map(|r| r.node_id).collect();
    c.put(RESOURCE, "v", b"value".to_vec()).await.expect("put");

    // --- settings: plan every second; bad input changes nothing. The
    // planner's decisions are only recorded here (mode manual): carrying
    // them out is tests/tests/shadows.rs.
    let config = c.set_placement_config("mode", "manual", None, None).await.expect("manual mode");
    assert_eq!(config.shift.get("mode").map(String::as_str), Some("manual"));
    let config = c.set_placement_config("planning_interval_ms", "1000", None, None).await.expect("set");
    assert_eq!(settings(&config).planning_interval_ms, 1000);
    for (key, value, node, resource) in [
        ("threshold", "1.5", None, None),
        ("no_such_key", "1", None, None),
        ("horizon_s", "301", None, None),
        ("steps", "10,25,50", None, None),
        ("mode", "sometimes", None, None),
        ("prices.transfer_gb_micros", "5", None, None),
        ("prices.transfer_gb_micros", "-5", Some(1), None),
        ("priority", "9", None, Some(RESOURCE)),
        ("priority", "1", None, None),
        ("region_distance.r1.r1", "3", None, None),
        ("region_distance.r1", "3", None, None),
        ("region_distance.r1.EU!", "3", None, None),
        ("region_distance.r1.r2", "0", None, None),
        ("region_distance.r1.r2", "1001", None, None),
    ] {
        let error = c.set_placement_config(key, value, node, resource).await.expect_err("bad setting accepted");
        assert_eq!(error.code(), Code::InvalidArgument, "{key}={value}: {error}");
    }
    let config = c.placement_config().await.expect("get");
    assert_eq!(settings(&config).threshold_permille, 800, "a refused setting changed the config");
    assert_eq!(settings(&config).planning_interval_ms, 1000, "changing one key kept the others");
    let priced = c.set_placement_config("prices.storage_gb_hour_micros", "7", Some(2), None).await.expect("price");
    let node2 = priced.prices.iter().find(|p| p.node_id == 2).expect("node 2").prices.clone().expect("prices");
    assert_eq!(node2.storage_gb_hour_micros, 7);
    let prioritised = c.set_placement_config("priority", "2", None, Some(RESOURCE)).await.expect("priority");
    assert_eq!(prioritised.priorities.get(RESOURCE), Some(&2));
    let missing = c.set_placement_config("priority", "2", None, Some("nothing-here")).await.expect_err("no resource");
    assert_eq!(missing.code(), Code::NotFound);
    // The demand's region is 7 from node region r2 and, by default, 1 from
    // the others.
    let distanced =
        c.set_placement_config(&format!("region_distance.r2.{REGION}"), "7", None, None).await.expect("distance");
    let pairs: Vec<(&str, &str, u32)> =
        distanced.region_distances.iter().map(|d| (d.a.as_str(), d.b.as_str(), d.distance)).collect();
    assert_eq!(pairs, vec![(REGION, "r2", 7)], "{distanced:?}");

    // --- admission: a burst far above 2 reads/s is shed with a retry hint.
    // Reads are admitted and counted where they are served: at a replica.
    let addr = info.replicas[0].address.clone();
    let mut stub = cluster.stub_at(&addr);
    let (mut served, mut shed) = (0usize, 0usize);
    for _ in 0..BURST_READS {
        match stub.get(get_request(Some(REGION))).await {
            Ok(_) => served += 1,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(status.metadata().get(RETRY_AFTER_MS_METADATA).is_some(), "shed without a retry hint");
                shed += 1;
            }
            Err(status) => panic!("unexpected {status}"),
        }
    }
    assert!(served >= 1 && shed >= BURST_READS / 2, "served {served}, shed {shed}");
    // Retries of shed reads are admitted or shed like any read but are not
    // new demand.
    for shed_before in 1..=RETRIES {
        let mut req = get_request(Some(REGION));
        req.metadata_mut().insert(SHED_BEFORE_METADATA, shed_before.to_string().parse().expect("ascii"));
        let _ = stub.get(req).await;
    }
    // A bad region is refused as such.
    let bad = stub.get(get_request(Some("EU West!"))).await.expect_err("bad region accepted");
    assert_eq!(bad.code(), Code::InvalidArgument);

    // --- telemetry: once the minute is over, the leader's history holds
    // every read of the burst (served and shed) under the client's region.
    let view = eventually(Duration::from_secs(100), || async {
        let view = c.demand_show(RESOURCE, 12).await?;
        let reads = region_reads(&view);
        anyhow::ensure!(reads >= BURST_READS as f64, "{reads} reads recorded so far");
        Ok(view)
    })
    .await
    .expect("demand recorded");
    assert_eq!(region_reads(&view), BURST_READS as f64, "every first attempt counted once, retries not at all");
    assert!((view.capacity_rps - 6.0).abs() < 1e-9, "{}", view.capacity_rps);

    // --- the planner: a shadow on the only node that is not a replica,
    // every other host explained, and the decision committed.
    let other = (1..=4u64).find(|n| !replica_nodes.contains(n)).expect("a fourth node");
    let committed = eventually(Duration::from_secs(30), || async {
        let answer = c.placement_plan(Some(RESOURCE)).await?;
        let record = answer.committed.get(RESOURCE).cloned();
        record.ok_or_else(|| anyhow::anyhow!("nothing committed yet: {answer:?}"))
    })
    .await
    .expect("a committed plan");
    assert_eq!(committed.action(), v1::PlacementAction::AddShadows, "{committed:?}");
    assert_eq!(committed.nodes, vec![other], "{committed:?}");

    // The dry run explains every host (it may already be back to holding
    // once the burst's minute has passed; the candidate list is only
    // filled when adding).
    let answer = c.placement_plan(Some(RESOURCE)).await.expect("plan");
    let plan = &answer.plans[0];
    let inputs = plan.inputs.clone().expect("inputs");
    assert_eq!(plan.resource, RESOURCE);
    assert!(inputs.p_exceed.is_finite() && inputs.capacity_rps == 6.0, "{plan:?}");
    // The group's leader reported the resource's size: one 5-byte value.
    assert_eq!(inputs.size_bytes, 5, "{plan:?}");
    assert!((inputs.threshold - 0.7).abs() < 1e-9, "priority 2 moves 0.8 to 0.7");
    if let Some(v1::plan_action::Action::AddShadows(_)) = plan.action.as_ref().and_then(|a| a.action.as_ref()) {
        assert_eq!(plan.candidates.len(), 4);
        for c in &plan.candidates {
            let verdict = c.verdict.as_ref().and_then(|v| v.verdict.as_ref()).expect("verdict");
            if c.node_id == other {
                assert!(matches!(verdict, v1::candidate_verdict::Verdict::Chosen(_)), "{c:?}");
            } else {
                assert!(matches!(verdict, v1::candidate_verdict::Verdict::AlreadyReplica(_)), "{c:?}");
            }
            let distance = if c.region == "r2" { 7 } else { 1 };
            assert_eq!(c.region_distance, distance, "the operator's distance table is used: {c:?}");
        }
    }

    // --- errors: an unknown resource is NOT_FOUND; a bad name INVALID_ARGUMENT.
    assert_eq!(c.demand_show("missing", 12).await.expect_err("missing").code(), Code::NotFound);
    assert_eq!(c.placement_plan(Some("Bad Name")).await.expect_err("bad").code(), Code::InvalidArgument);
    assert_eq!(c.demand_show(RESOURCE, 100_000).await.expect_err("too many slots").code(), Code::InvalidArgument);

    // A client with a region sends it on every read.
    let regional = Client::new_lazy(
        cluster.endpoints(),
        ClientOptions { region: Some("ap-test".to_string()), ..cluster.options() },
    )
    .expect("client");
    assert_eq!(&regional.get(RESOURCE, "v").await.expect("regional read").value[..], b"value");

    // --- the history survives a meta leader change: the leader shared
    // every drained minute with the other meta voters, so the new leader
    // still shows the burst, counted exactly once.
    let leader = c.cluster_status().await.expect("status").meta_leader_node_id;
    let leader_index = cluster.index_of(leader).await.expect("leader's process");
    cluster.kill(leader_index);
    let survivor = cluster.client_via((leader_index + 1) % 4);
    let after = eventually(Duration::from_secs(60), || async {
        let status = survivor.cluster_status().await?;
        anyhow::ensure!(status.meta_leader_node_id != leader, "no new meta leader yet");
        let view = survivor.demand_show(RESOURCE, 12).await?;
        anyhow::ensure!(region_reads(&view) > 0.0, "the new leader has no history yet: {view:?}");
        Ok(view)
    })
    .await
    .expect("the new meta leader has the history");
    assert_eq!(region_reads(&after), BURST_READS as f64, "the burst survives the leader change exactly once");
}
