//! Shadow replicas on real 5-node clusters: the planner's surge decision
//! carried out on the cheapest capable node and retired when demand falls;
//! reads shifted step by step with observed shares following the weights;
//! writes during a shift; a meta leader killed mid-shift; manual and
//! automatic (gate) rollback; a shadow's node killed during sync; removal
//! deleting the shadow's data from disk.

use std::time::Duration;

use shadowstore_client::{Client, ShadowActionKind, v1};
use shadowstore_tests::{Cluster, eventually, group_records, pseudo_random};
use tonic::Code;

/// Shadows of `resource` and their served reads, as `placement status` shows them.
async fn status(c: &Client, resource: &str) -> anyhow::Result<v1::ResourceShadowStatus> {
    let s = c.shadow_status(Some(resource)).await?;
    s.resources.into_iter().next().ok_or_else(|| anyhow::anyhow!("no status for {resource}"))
}

fn shadow_on(st: &v1::ResourceShadowStatus, node: u64) -> Option<v1::ReplicaServing> {
    st.replicas.iter().find(|r| r.role == "shadow" && r.node_id == node).cloned()
}

async fn wait_phase(c: &Client, resource: &str, node: u64, phases: &[&str]) -> v1::ReplicaServing {
    eventually(Duration::from_secs(60), || async {
        let st = status(c, resource).await?;
        let s = shadow_on(&st, node).ok_or_else(|| anyhow::anyhow!("no shadow on node {node}: {st:?}"))?;
        anyhow::ensure!(phases.contains(&s.phase.as_str()), "shadow is {}: {st:?}", s.phase);
        Ok(s)
    })
    .await
    .expect("shadow phase")
}

async fn set(c: &Client, settings: &[(&str, &str)]) {
    for (k, v) in settings {
        c.set_placement_config(k, v, None, None).await.unwrap_or_else(|e| panic!("{k}={v}: {e}"));
    }
}

/// Reads served per replica (by replica id) so far.
async fn served(c: &Client, resource: &str) -> std::collections::BTreeMap<u64, u64> {
    status(c, resource).await.expect("status").replicas.iter().map(|r| (r.replica_id, r.reads)).collect()
}

/// The shadow's share (per mille) of `n` linearizable reads.
async fn shadow_share_of_reads(c: &Client, resource: &str, shadow: u64, n: usize) -> u64 {
    let before = served(c, resource).await;
    for _ in 0..n {
        c.get(resource, "small").await.expect("read");
    }
    let after = served(c, resource).await;
    let delta = |r: &u64| after.get(r).copied().unwrap_or(0) - before.get(r).copied().unwrap_or(0);
    let total: u64 = after.keys().map(delta).sum();
    assert!(total >= n as u64, "{total} reads counted of {n}");
    delta(&shadow) * 1000 / total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_adds_a_shadow_on_the_cheapest_node_and_falling_demand_retires_it() {
    const RESOURCE: &str = "surge";
    let mut cluster = Cluster::start_with(5, "read_capacity_rps = 2").await.expect("cluster");
    let c = cluster.client();
    set(&c, &[("planning_interval_ms", "1000"), ("hysteresis_ms", "0"), ("drain_ms", "1000")]).await;
    let info = c.create_resource(RESOURCE, 3).await.expect("create");
    c.put(RESOURCE, "v", b"value".to_vec()).await.expect("put");
    let primaries: Vec<u64> = info.replicas.iter().map(|r| r.node_id).collect();
    let others: Vec<u64> = (1..=5).filter(|n| !primaries.contains(n)).collect();
    let (dear, cheap) = (others[0], others[1]);
    c.set_placement_config("prices.million_requests_micros", "5000000", Some(dear), None).await.expect("price");
    c.set_placement_config("prices.million_requests_micros", "1", Some(cheap), None).await.expect("price");

    // A burst far above the three primaries' 6 reads/s, counted as demand
    // even where it is shed.
    let addr = info.replicas[0].address.clone();
    let mut stub = cluster.stub_at(&addr);
    for _ in 0..1_000 {
        let req = v1::GetRequest {
            resource: RESOURCE.into(),
            variant: "v".into(),
            version: None,
            consistency: v1::Consistency::StaleOk as i32,
            max_staleness_ms: 60_000,
        };
        let _ = stub.get(req).await;
    }

    // The planner decides, the executor adds the shadow on the cheaper of
    // the two capable nodes, it syncs and becomes ready.
    let first = eventually(Duration::from_secs(150), || async {
        let st = status(&c, RESOURCE).await?;
        let added = st.history.iter().find(|e| e.kind == "added").cloned();
        added.ok_or_else(|| anyhow::anyhow!("no shadow added yet: {st:?}"))
    })
    .await
    .expect("a shadow is added");
    assert_eq!(first.node_id, cheap, "the cheapest capable node wins: {first:?}");
    assert!(first.text.contains("planner"), "{first:?}");
    wait_phase(&c, RESOURCE, cheap, &["ready", "shifting"]).await;
    let describe = c.describe_resource(RESOURCE).await.expect("describe");
    let group = describe.resource.as_ref().expect("resource").group_id;
    assert!(
        describe.resource.expect("resource").replicas.iter().any(|r| r.node_id == cheap && r.role == "shadow"),
        "the directory lists the shadow with role shadow"
    );

    // Demand falls to nothing: the planner retires every shadow
    // (hysteresis 0), each drains and is removed.
    let st = eventually(Duration::from_secs(240), || async {
        let st = status(&c, RESOURCE).await?;
        anyhow::ensure!(st.replicas.iter().all(|r| r.role == "primary"), "shadows remain: {st:?}");
        anyhow::ensure!(st.history.iter().any(|e| e.kind == "retired" && e.node_id == cheap), "{st:?}");
        Ok(st)
    })
    .await
    .expect("the shadows retire");
    let retire = st.history.iter().find(|e| e.kind == "draining" && e.node_id == cheap).expect("drained first");
    assert!(retire.text.contains("planner"), "{retire:?}");
    assert_eq!(&c.get(RESOURCE, "v").await.expect("read after retirement").value[..], b"value");

    // Its node deleted the replica with its data.
    let index = cluster.index_of(cheap).await.expect("node");
    eventually(Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(cluster.nodes[index].log_path())?;
        anyhow::ensure!(text.contains("replica removed and its Raft state deleted"), "not removed yet");
        Ok(())
    })
    .await
    .expect("the shadow's node removes it");
    cluster.stop(index);
    assert_eq!(group_records(&cluster.nodes[index].data_dir(), group), 0, "the shadow's data is gone from disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_shift_in_steps_roll_back_and_survive_a_meta_leader_loss() {
    const RESOURCE: &str = "catalog";
    let mut cluster = Cluster::start(5).await.expect("cluster");
    let c = cluster.client();
    // Operators drive the steps (manual mode, a dwell no test waits out);
    // the gates still measure and roll back.
    set(
        &c,
        &[
            ("mode", "manual"),
            ("steps", "20,50,100"),
            ("dwell_ms", "3600000"),
            ("gate_p99_ms", "300"),
            ("gate_failures", "2"),
            ("drain_ms", "1000"),
        ],
    )
    .await;
    let info = c.create_resource(RESOURCE, 3).await.expect("create");
    let group = info.group_id;
    c.put(RESOURCE, "small", b"v0".to_vec()).await.expect("put");
    let big = pseudo_random(300 * 1024, 7);
    c.put(RESOURCE, "big", big.clone()).await.expect("put blob");
    let primaries: Vec<u64> = info.replicas.iter().map(|r| r.node_id).collect();
    let leader = c.cluster_status().await.expect("status").meta_leader_node_id;
    let mut others: Vec<u64> = (1..=5).filter(|n| !primaries.contains(n)).collect();
    others.sort_by_key(|n| *n == leader); // the shadow's node is not the meta leader
    let (node, spare) = (others[0], others[1]);

    // --- bad input is refused and changes nothing.
    let e = c.add_shadow(RESOURCE, Some(primaries[0])).await.expect_err("a primary's node");
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    assert_eq!(c.add_shadow("missing", None).await.expect_err("no resource").code(), Code::NotFound);
    assert_eq!(c.add_shadow(RESOURCE, Some(99)).await.expect_err("no node").code(), Code::NotFound);
    let e = c.set_placement_config("steps", "20,50", None, None).await.expect_err("must end at 100");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(status(&c, RESOURCE).await.expect("status").replicas.iter().all(|r| r.role == "primary"));

    // --- a shadow syncs a full copy (the erasure-coded blob included).
    let added = c.add_shadow(RESOURCE, Some(node)).await.expect("add");
    let shadow = added.replica_id;
    let s = wait_phase(&c, RESOURCE, node, &["ready"]).await;
    assert_eq!((s.blobs_copied, s.blobs_total), (1, 1), "{s:?}");
    assert_eq!(s.weight_permille, 0, "ready, not yet taking reads");
    assert_eq!(c.add_shadow(RESOURCE, Some(node)).await.expect_err("twice").code(), Code::AlreadyExists);

    // --- step 1 of 3: 20 % of the quarter of reads its capacity allows.
    c.shadow_action(RESOURCE, Some(shadow), ShadowActionKind::PromoteNext).await.expect("promote");
    let table = c.routing(RESOURCE).await.expect("routing");
    let weight = table.entries.iter().find(|e| e.replica_id == shadow).expect("shadow routed").weight_permille;
    assert_eq!(weight, 50, "{table:?}");
    assert_eq!(table.entries.iter().map(|e| e.weight_permille).sum::<u32>(), 1000);
    let share = shadow_share_of_reads(&c, RESOURCE, shadow, 1_000).await;
    assert!((15..=100).contains(&share), "shadow served {share}‰ of reads at a weight of 50‰");
    c.shadow_action(RESOURCE, Some(shadow), ShadowActionKind::PromoteFull).await.expect("promote full");
    let share = shadow_share_of_reads(&c, RESOURCE, shadow, 1_000).await;
    assert!((180..=320).contains(&share), "shadow served {share}‰ of reads at a weight of 250‰");

    // --- writes during the shift: every read sees the write before it,
    // whichever replica serves it, and the shadow copies new blobs.
    let mut by_shadow = 0;
    for i in 1..=40u32 {
        let value = format!("v{i}");
        c.put(RESOURCE, "small", value.clone().into_bytes()).await.expect("put");
        let r = c.get(RESOURCE, "small").await.expect("get");
        assert_eq!(r.value, value.as_bytes(), "read after write {i} served by node {}", r.served_by_node);
        by_shadow += usize::from(r.served_by_node == node);
    }
    assert!(by_shadow > 0, "no read of 40 went to the shadow");
    let big2 = pseudo_random(200 * 1024, 8);
    c.put(RESOURCE, "big", big2.clone()).await.expect("put blob 2");
    eventually(Duration::from_secs(30), || async {
        let r = c.get(RESOURCE, "big").await?;
        anyhow::ensure!(r.value == big2, "stale blob read from node {}", r.served_by_node);
        anyhow::ensure!(r.served_by_node == node, "served by {}", r.served_by_node);
        Ok(())
    })
    .await
    .expect("the shadow serves the new blob version");

    // --- manual rollback: weight 0 at once.
    c.shadow_action(RESOURCE, None, ShadowActionKind::Rollback).await.expect("rollback");
    let st = status(&c, RESOURCE).await.expect("status");
    let s = shadow_on(&st, node).expect("shadow");
    assert_eq!((s.phase.as_str(), s.weight_permille), ("ready", 0), "{st:?}");
    assert_eq!(st.history.last().expect("history").kind, "rollback");

    // --- the meta leader dies mid-shift; the new one has the state and
    // goes on from it.
    c.shadow_action(RESOURCE, Some(shadow), ShadowActionKind::PromoteNext).await.expect("promote");
    let leader_index = cluster.index_of(leader).await.expect("leader's process");
    cluster.kill(leader_index);
    let survivor = cluster.client_via(cluster.index_of(node).await.expect("shadow's process"));
    let s = eventually(Duration::from_secs(60), || async {
        let status_now = survivor.cluster_status().await?;
        anyhow::ensure!(status_now.meta_leader_node_id != leader, "no new meta leader yet");
        let st = status(&survivor, RESOURCE).await?;
        shadow_on(&st, node).ok_or_else(|| anyhow::anyhow!("shadow missing: {st:?}"))
    })
    .await
    .expect("the new leader knows the shadow");
    assert_eq!((s.phase.as_str(), s.step, s.weight_permille), ("shifting", 0, 50), "{s:?}");
    survivor.shadow_action(RESOURCE, Some(shadow), ShadowActionKind::PromoteFull).await.expect("promote again");
    assert_eq!(
        survivor
            .routing(RESOURCE)
            .await
            .expect("routing")
            .entries
            .iter()
            .find(|e| e.replica_id == shadow)
            .expect("routed")
            .weight_permille,
        250
    );
    cluster.restart(leader_index).await.expect("restart the old leader");

    // --- a slow shadow fails its gates and is rolled back automatically.
    let index = cluster.index_of(node).await.expect("shadow's process");
    cluster.stop(index);
    let config = &cluster.nodes[index].config;
    let mut text = std::fs::read_to_string(config).expect("config");
    text.push_str("\n[fault]\nshadow_read_delay_ms = 600\n");
    std::fs::write(config, text).expect("write config");
    cluster.restart(index).await.expect("restart the shadow's node");
    let reader = c.clone();
    let load = tokio::spawn(async move {
        for _ in 0..4_000 {
            let _ = reader.get(RESOURCE, "small").await;
        }
    });
    let rollback = eventually(Duration::from_secs(90), || async {
        let st = status(&c, RESOURCE).await?;
        let e = st.history.iter().rev().find(|e| e.kind == "rollback" && e.text.contains("gate failed")).cloned();
        e.ok_or_else(|| anyhow::anyhow!("no automatic rollback yet: {:?}", st.history.last()))
    })
    .await
    .expect("automatic rollback");
    load.abort();
    assert!(rollback.text.contains("p99"), "the measurement that caused it is recorded: {rollback:?}");
    assert_eq!(rollback.to_permille, 0, "the primaries carry the (idle) forecast alone: {rollback:?}");
    let s = wait_phase(&c, RESOURCE, node, &["ready"]).await;
    assert_eq!(s.weight_permille, 0);

    // --- a shadow whose node dies while it syncs is retired; nothing else
    // breaks.
    c.add_shadow(RESOURCE, Some(spare)).await.expect("second shadow");
    let spare_index = cluster.index_of(spare).await.expect("spare's process");
    cluster.kill(spare_index);
    eventually(Duration::from_secs(90), || async {
        let st = status(&c, RESOURCE).await?;
        anyhow::ensure!(shadow_on(&st, spare).is_none(), "still there: {st:?}");
        anyhow::ensure!(st.history.iter().any(|e| e.kind == "draining" && e.text.contains("lost")), "{st:?}");
        Ok(())
    })
    .await
    .expect("the lost shadow is retired");
    assert_eq!(c.get(RESOURCE, "big").await.expect("read").value, big2);

    // --- removal drains the shadow, then deletes it and its data.
    c.shadow_action(RESOURCE, Some(shadow), ShadowActionKind::Remove).await.expect("remove");
    eventually(Duration::from_secs(60), || async {
        let st = status(&c, RESOURCE).await?;
        anyhow::ensure!(st.replicas.iter().all(|r| r.role == "primary"), "{st:?}");
        let text = std::fs::read_to_string(cluster.nodes[index].log_path())?;
        anyhow::ensure!(text.contains("replica removed and its Raft state deleted"), "not removed on its node yet");
        Ok(())
    })
    .await
    .expect("removed");
    cluster.stop(index);
    assert_eq!(group_records(&cluster.nodes[index].data_dir(), group), 0, "the shadow's data is gone from disk");
    assert!(!big.is_empty());
}
