//! The durability promise of erasure-coded writes on real processes with
//! sled on disk: an acknowledged blob survives the loss of any one node
//! afterwards, also when it was written while a holder was down; and a
//! removed (quarantined) replica's shards are handed to their new holder
//! before they are deleted.

use std::time::Duration;

use shadowstore_client::Client;
use shadowstore_client::ReadOptions;
use shadowstore_node::blob::shard_store::ShardStore;
use shadowstore_node::storage::StorageEngine;
use shadowstore_node::storage::Tree;
use shadowstore_node::storage::keys;
use shadowstore_node::storage::sled_engine::SledEngine;
use shadowstore_proto::v1;
use shadowstore_tests::Cluster;
use shadowstore_tests::eventually;
use shadowstore_tests::pseudo_random;
use shadowstore_tests::rot_raft_record;
use shadowstore_tests::tail;
use shadowstore_tests::wait_replica_caught_up;

/// Fast maintenance loops so repairs, handoffs and re-encoding happen
/// within a test.
const FAST_MAINTENANCE: &str = "scrub_interval_ms = 500\n\
     gc_interval_ms = 500\n\
     orphan_grace_ms = 2000\n\
     superseded_grace_ms = 2000\n";

async fn read_all(c: &Client, resource: &str, variant: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    c.get_to_writer(resource, variant, ReadOptions::linearizable(), &mut out, None).await?;
    Ok(out)
}

async fn current_shards(c: &Client, resource: &str, variant: &str) -> anyhow::Result<Vec<v1::ShardHealth>> {
    let d = c.describe_resource(resource).await?;
    let v = d.variants.iter().find(|v| v.name == variant).ok_or_else(|| anyhow::anyhow!("no variant"))?;
    let cur = v
        .versions
        .iter()
        .find(|x| x.version == v.current_version)
        .ok_or_else(|| anyhow::anyhow!("no current version"))?;
    Ok(cur.shards.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_written_with_a_holder_down_survives_losing_another_nodes_disk() {
    let mut cluster = Cluster::start_with(3, FAST_MAINTENANCE).await.expect("cluster");
    let c = cluster.client();
    let info = c.create_resource("keep", 3).await.unwrap();
    assert_eq!((info.data_shards, info.parity_shards), (2, 1));
    c.put("keep", "warm", b"up".to_vec()).await.unwrap();
    let d = c.describe_resource("keep").await.unwrap();
    let leader = cluster.index_of(d.leader_node_id).await.unwrap();
    // The node whose disk is lost later must not be the bootstrap node (0).
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (down, lost) = if followers[0] == 0 { (followers[0], followers[1]) } else { (followers[1], followers[0]) };
    assert_ne!(lost, 0);

    // One holder down: the write is acknowledged, in a layout that keeps a
    // margin among the two live holders (a mirror: two shards, each whole).
    cluster.kill(down);
    let data = pseudo_random(2 << 20, 17);
    let via_leader = cluster.client_via(leader);
    let version = eventually(Duration::from_secs(30), || {
        let (c, data) = (via_leader.clone(), data.clone());
        async move { Ok(c.put("keep", "blob", data).await?) }
    })
    .await
    .expect("a write with one holder down is acknowledged");
    let shards = current_shards(&via_leader, "keep", "blob").await.unwrap();
    assert_eq!(shards.len(), 2, "written as a mirror on the two live holders: {shards:?}");
    assert!(shards.iter().all(|s| s.state == "healthy"), "{shards:?}");

    // After the acknowledgement, another node loses its disk; the holder
    // that was down comes back (the group needs two of its three voters).
    cluster.kill(lost);
    std::fs::remove_dir_all(cluster.nodes[lost].data_dir()).unwrap();
    cluster.restart(down).await.unwrap();
    let back = eventually(Duration::from_secs(60), || {
        let c = via_leader.clone();
        async move { read_all(&c, "keep", "blob").await }
    })
    .await
    .expect("the blob is readable after losing a second node's data");
    assert!(back == data, "the blob changed");

    // The lost node rejoins with an empty disk; its replica is replaced,
    // and once every holder is live the blob is re-encoded in the group's
    // code (2+1, three shards) and its shards are all healthy.
    cluster.restart(lost).await.unwrap();
    let shards = eventually(Duration::from_secs(120), || {
        let c = via_leader.clone();
        async move {
            let shards = current_shards(&c, "keep", "blob").await?;
            anyhow::ensure!(shards.len() == 3, "still {} shards", shards.len());
            anyhow::ensure!(shards.iter().all(|s| s.state == "healthy"), "{shards:?}");
            Ok(shards)
        }
    })
    .await
    .expect("the mirrored blob is re-encoded as 2+1");
    assert_eq!(shards.len(), 3);
    let d = via_leader.describe_resource("keep").await.unwrap();
    let v = d.variants.iter().find(|v| v.name == "blob").unwrap();
    assert_eq!(v.current_version, version, "re-encoding keeps the version");
    for reader in [cluster.client_via(lost), cluster.client_via(down)] {
        assert!(read_all(&reader, "keep", "blob").await.unwrap() == data, "the re-encoded blob changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_replicas_shards_are_handed_off_before_they_are_deleted() {
    let mut cluster = Cluster::start_with(4, FAST_MAINTENANCE).await.expect("cluster");
    let c = cluster.client();
    let info = c.create_resource("q", 3).await.unwrap();
    let data = pseudo_random(3 << 20, 23);
    c.put("q", "blob", data.clone()).await.unwrap();
    let before = c.describe_resource("q").await.unwrap();
    let old = before
        .resource
        .clone()
        .unwrap()
        .replicas
        .into_iter()
        .find(|r| r.node_id != before.leader_node_id)
        .expect("a follower replica");
    wait_replica_caught_up(&c, "q", old.replica_id).await.expect("the follower holds the writes");
    eventually(Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            let shards = current_shards(&c, "q", "blob").await?;
            anyhow::ensure!(shards.iter().all(|s| s.state == "healthy"), "{shards:?}");
            Ok(())
        }
    })
    .await
    .expect("every shard is stored");
    let victim = cluster.index_of(old.node_id).await.unwrap();
    cluster.stop(victim);
    rot_raft_record(&cluster.nodes[victim].data_dir(), info.group_id).await;
    cluster.restart(victim).await.unwrap();

    // The quarantined replica is replaced on the fourth node (the only one
    // hosting none of the resource's replicas); its shards are handed off
    // there, and only then deleted on the quarantined node.
    let used: Vec<u64> = before.resource.unwrap().replicas.iter().map(|r| r.node_id).collect();
    eventually(Duration::from_secs(120), || {
        let c = c.clone();
        let used = used.clone();
        async move {
            let d = c.describe_resource("q").await?;
            let replicas = d.resource.map(|r| r.replicas).unwrap_or_default();
            anyhow::ensure!(replicas.iter().all(|r| r.replica_id != old.replica_id), "old replica still listed");
            anyhow::ensure!(replicas.iter().any(|r| !used.contains(&r.node_id)), "not replaced on the free node");
            let shards = current_shards(&c, "q", "blob").await?;
            anyhow::ensure!(shards.iter().all(|s| s.state == "healthy"), "{shards:?}");
            anyhow::ensure!(shards.iter().all(|s| s.replica_id != old.replica_id), "{shards:?}");
            Ok(())
        }
    })
    .await
    .expect("the quarantined replica is replaced and its shard placed");
    let log_path = cluster.nodes[victim].log_path();
    eventually(Duration::from_secs(60), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move {
            anyhow::ensure!(log.contains("every shard of the removed replica is placed"), "handoff not finished");
            Ok(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&log_path)));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("handed off; local copy deleted"), "no shard was handed off:\n{}", tail(&log_path));

    // On the quarantined node's disk: no shard of the group and no retired
    // record are left.
    cluster.stop(victim);
    while cluster.nodes[victim].is_running() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let engine = SledEngine::open(&cluster.nodes[victim].data_dir(), 8 << 20).expect("open stopped node's sled");
        let held = ShardStore::new(engine.clone()).held(shadowstore_base::ids::GroupId::new(info.group_id)).unwrap();
        assert!(held.is_empty(), "shards left behind: {held:?}");
        let (s, e) = keys::retired_replicas_range();
        assert!(engine.range(Tree::Local, &s, &e, usize::MAX).unwrap().is_empty(), "retired record left");
    }
    cluster.restart(victim).await.unwrap();
    assert!(read_all(&c, "q", "blob").await.unwrap() == data, "the blob changed");
}
