//! A 5-node cluster stays available when 2 nodes are lost: the meta group
//! (5 voters) and a resource with 5 primaries keep serving reads and
//! writes, and new resources can be created on the remaining nodes.

use std::time::Duration;

use shadowstore_tests::Cluster;
use shadowstore_tests::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_node_cluster_survives_losing_two() {
    let mut cluster = Cluster::start(5).await.expect("cluster");
    let c = cluster.client();
    let info = c.create_resource("wide", 5).await.unwrap();
    assert_eq!(info.replicas.len(), 5);
    let before = c.put("wide", "v", b"before".to_vec()).await.unwrap();

    // Lose the meta leader's node and the resource leader's node (or
    // another one if they coincide).
    let meta_leader = cluster.index_of(c.cluster_status().await.unwrap().meta_leader_node_id).await.unwrap();
    let res_leader = cluster.index_of(c.describe_resource("wide").await.unwrap().leader_node_id).await.unwrap();
    let second = if res_leader != meta_leader { res_leader } else { (meta_leader + 1) % 5 };
    cluster.kill(meta_leader);
    cluster.kill(second);
    let live: Vec<usize> = (0..5).filter(|i| *i != meta_leader && *i != second).collect();
    let c = cluster.client_via(live[0]);

    let after = eventually(Duration::from_secs(30), || {
        let c = c.clone();
        async move { Ok(c.put("wide", "v", b"after".to_vec()).await?) }
    })
    .await
    .expect("writes resume with 3 of 5 primaries");
    assert!(after > before);
    let got = c.get("wide", "v").await.unwrap();
    assert_eq!(&got.value[..], b"after");

    // The meta group still commits: a new resource on the live nodes.
    let fresh = eventually(Duration::from_secs(30), || {
        let c = c.clone();
        async move { Ok(c.create_resource("fresh", 3).await?) }
    })
    .await
    .expect("meta group available with 3 of 5 voters");
    let live_ids: Vec<u64> = {
        let s = c.cluster_status().await.unwrap();
        s.nodes.iter().filter(|n| n.health == "up" || n.health == "self").map(|n| n.node_id).collect()
    };
    for r in &fresh.replicas {
        assert!(live_ids.contains(&r.node_id), "new replica placed on a dead node {}", r.node_id);
    }
    c.put("fresh", "v", b"x".to_vec()).await.unwrap();
    assert_eq!(&c.get("fresh", "v").await.unwrap().value[..], b"x");
}
