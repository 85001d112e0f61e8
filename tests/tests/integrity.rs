//! Rot beneath the Raft layer on a real 3-node cluster with sled on disk: a
//! record of a resource group's Raft log is damaged in a stopped node's
//! sled file (above sled's own checks, beneath ours). When the node starts
//! again it must not run that replica; the cluster replaces it on the same
//! node (all three nodes host the resource) under a new replica id, and
//! nothing written is lost.

use std::time::Duration;

use shadowstore_tests::Cluster;
use shadowstore_tests::eventually;
use shadowstore_tests::pseudo_random;
use shadowstore_tests::rot_raft_record;
use shadowstore_tests::tail;
use shadowstore_tests::wait_replica_caught_up;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotted_raft_record_is_quarantined_and_its_replica_replaced_in_place() {
    let mut cluster = Cluster::start_with(3, "scrub_interval_ms = 500\n").await.expect("cluster");
    let c = cluster.client();
    let info = c.create_resource("docs", 3).await.unwrap();
    for i in 0..5 {
        c.put("docs", &format!("v{i}"), format!("value {i}").into_bytes()).await.unwrap();
    }
    // Above the inline limit: erasure-coded, one shard on every node.
    let big = pseudo_random(300 << 10, 5);
    c.put("docs", "big", big.clone()).await.unwrap();

    // A replica that does not lead the group.
    let before = c.describe_resource("docs").await.unwrap();
    let old = before
        .resource
        .unwrap()
        .replicas
        .into_iter()
        .find(|r| r.node_id != before.leader_node_id)
        .expect("a follower replica");
    // It holds the writes before it stops (a follower that has not started
    // its replica yet has no Raft record to rot).
    wait_replica_caught_up(&c, "docs", old.replica_id).await.expect("the follower catches up");
    let victim = cluster.index_of(old.node_id).await.unwrap();
    cluster.stop(victim);
    rot_raft_record(&cluster.nodes[victim].data_dir(), info.group_id).await;
    cluster.restart(victim).await.unwrap();

    let replaced = eventually(Duration::from_secs(90), || {
        let c = c.clone();
        async move {
            let d = c.describe_resource("docs").await?;
            let replicas = d.resource.map(|r| r.replicas).unwrap_or_default();
            anyhow::ensure!(replicas.iter().all(|r| r.replica_id != old.replica_id), "old replica still listed");
            let new = replicas
                .into_iter()
                .find(|r| r.node_id == old.node_id)
                .ok_or_else(|| anyhow::anyhow!("no replica on the node"))?;
            anyhow::ensure!(new.role == "voter", "replacement is a {:?}", new.role);
            Ok(new)
        }
    })
    .await
    .expect("the corrupt replica is replaced");
    assert!(replaced.replica_id > old.replica_id, "a new replica id");
    let log = std::fs::read_to_string(cluster.nodes[victim].log_path()).unwrap_or_default();
    assert!(
        log.contains("quarantined"),
        "the node did not report the quarantine:\n{}",
        tail(&cluster.nodes[victim].log_path())
    );

    // Nothing is lost, read through the replaced node too.
    let via_victim = cluster.client_via(victim);
    for reader in [&c, &via_victim] {
        for i in 0..5 {
            let got = reader.get("docs", &format!("v{i}")).await.unwrap();
            assert_eq!(got.value, format!("value {i}").into_bytes());
        }
        assert!(reader.get("docs", "big").await.unwrap().value == big, "the erasure-coded value changed");
    }
    // Writes go on, and the new replica stores them: the leader's view of
    // its progress reaches the write, and the old replica is no member.
    let version = c.put("docs", "after", b"after".to_vec()).await.unwrap();
    assert_eq!(via_victim.get("docs", "after").await.unwrap().value, b"after".to_vec());
    eventually(Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            let d = c.describe_resource("docs").await?;
            let matched = |id: u64| d.progress.iter().find(|p| p.replica_id == id).and_then(|p| p.matched_index);
            anyhow::ensure!(matched(old.replica_id).is_none(), "the leader still replicates to the old replica");
            let new = matched(replaced.replica_id).unwrap_or(0);
            anyhow::ensure!(new >= d.committed_index && new > 0, "new replica at {new} of {}", d.committed_index);
            Ok(version)
        }
    })
    .await
    .expect("the new replica replicates the latest write");
}
