//! Durability and availability under leader crashes on a real 3-node
//! cluster: 50 resources × 20 variants written through the client library
//! while the meta leader and resource-group leaders are SIGKILLed and
//! restarted; every acknowledged write must be readable at its latest
//! acknowledged version (or a later attempted one), also after the whole
//! cluster is SIGKILLed and restarted.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shadowstore_tests::Cluster;
use shadowstore_tests::ledger;
use shadowstore_tests::ledger::Load;

const LOAD: Load = Load { resources: 50, variants: 20, writers: 25, blob_every: 0 };

async fn verify(client: &shadowstore_client::Client, ledger: &ledger::Ledger) {
    let checked = ledger::verify(LOAD, client, ledger).await;
    assert!(checked >= LOAD.resources * LOAD.variants * 9 / 10, "only {checked} variants were ever acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leader_crashes_and_full_restart() {
    let mut cluster = Cluster::start(3).await.expect("cluster");
    let admin = cluster.client();
    ledger::create_resources(&admin, LOAD).await.unwrap();
    let ledger = ledger::new_ledger();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..LOAD.writers {
        writers.push(tokio::spawn(ledger::writer(LOAD, w, cluster.client(), ledger.clone(), stop.clone())));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Crash the meta leader, then the nodes leading several resource
    // groups, one node at a time so a quorum always survives.
    for round in 0..3 {
        let victim = if round == 0 {
            let s = admin.cluster_status().await.unwrap();
            cluster.index_of(s.meta_leader_node_id).await.unwrap()
        } else {
            let d = admin.describe_resource(&format!("res-{}", round * 7)).await.unwrap();
            cluster.index_of(d.leader_node_id).await.unwrap()
        };
        eprintln!("round {round}: SIGKILL node process {victim}");
        cluster.kill(victim);
        tokio::time::sleep(Duration::from_secs(6)).await;
        cluster.restart(victim).await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acks = 0;
    for w in writers {
        acks += w.await.unwrap();
    }
    eprintln!("{acks} acknowledged writes");
    assert!(acks > (LOAD.resources * LOAD.variants) as u64, "writers made too little progress: {acks}");
    verify(&admin, &ledger).await;

    // Every node crashes at once; everything acknowledged is still there.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i).await.unwrap();
    }
    cluster.wait_formed(3).await.unwrap();
    verify(&cluster.client(), &ledger).await;
}

/// Regression (issue 17): replication batches were bounded by count only,
/// so a follower that missed more than about 64 writes of 64 KiB got one
/// AppendEntries above the 4 MiB message limit, again and again, until the
/// next snapshot (10,000 entries later). Now it catches up from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_missed_many_large_writes_catches_up() {
    let mut cluster = Cluster::start(3).await.expect("cluster");
    let c = cluster.client();
    let info = c.create_resource("catch-up", 3).await.expect("create");
    c.put("catch-up", "warm", b"x".to_vec()).await.expect("first write");
    let d = c.describe_resource("catch-up").await.expect("describe");
    let follower = info.replicas.iter().find(|r| r.replica_id != d.leader_replica_id).expect("a follower");
    let index = cluster.nodes.iter().position(|n| n.addr == follower.address).expect("its node");
    cluster.kill(index);
    const WRITES: usize = 100;
    for i in 0..WRITES {
        let value = shadowstore_tests::pseudo_random(64 * 1024, i as u64);
        c.put("catch-up", &format!("v{i}"), value).await.expect("a 64 KiB inline write");
    }
    cluster.restart(index).await.expect("restart the follower");
    shadowstore_tests::wait_replica_caught_up(&c, "catch-up", follower.replica_id)
        .await
        .expect("the follower catches up from the log");
    // It holds the values: read through its node.
    let via = cluster.client_via(index);
    let last = via.get("catch-up", &format!("v{}", WRITES - 1)).await.expect("read via the follower's node");
    assert_eq!(last.value.to_vec(), shadowstore_tests::pseudo_random(64 * 1024, WRITES as u64 - 1));
}
