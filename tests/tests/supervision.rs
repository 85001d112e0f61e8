//! Background loops are supervised: a loop that panics is reported (the
//! node's health goes NOT_SERVING while it is dead) and started again,
//! and the node keeps serving.

use std::time::Duration;

use shadowstore_tests::Cluster;
use shadowstore_tests::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_loop_is_reported_and_restarted() {
    let mut cluster = Cluster::start_with(3, "[fault]\npanic_loop_once = \"scrubber\"\n").await.expect("cluster");
    let c = cluster.client();
    for i in 0..cluster.nodes.len() {
        let log = cluster.nodes[i].log_path();
        eventually(Duration::from_secs(20), || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let died = text.contains("background loop died")
                    && text.contains("scrubber")
                    && text.contains("fault.panic_loop_once");
                let reported = text.contains("background loops dead: health NOT_SERVING");
                if died && reported { Ok(()) } else { Err(anyhow::anyhow!("not in the log yet")) }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("node {i}: {e}\n{}", shadowstore_tests::tail(&log)));
    }
    // Started again after the backoff: it died once, the node is whole.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cluster.running().len(), 3);
    c.create_resource("after", 3).await.expect("create");
    c.put("after", "v", b"x".to_vec()).await.expect("put");
    for status in c.scrub_status_all().await.expect("scrub status") {
        status.expect("every node's scrubber answers");
    }
    for node in &cluster.nodes {
        let text = std::fs::read_to_string(node.log_path()).unwrap_or_default();
        assert_eq!(text.matches("background loop died").count(), 1, "{}", shadowstore_tests::tail(&node.log_path()));
    }
}
