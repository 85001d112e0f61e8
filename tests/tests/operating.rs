//! What an operator sees of real node processes: a Prometheus scrape of
//! `/metrics` holds every metric docs/OPERATING.md lists, with the calls
//! just made counted by method and code; JSON logs carry each call's
//! request id, which the answer echoes.

use shadowstore_tests::Cluster;
use shadowstore_tests::http_get;

/// The metric names in docs/OPERATING.md's table.
fn documented_metrics() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPERATING.md")).expect("doc");
    let names: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `shadowstore_"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| format!("shadowstore_{name}")))
        .collect();
    assert!(names.len() >= 30, "the metrics table lost rows: {names:?}");
    names
}

/// The value of the sample `series` (name and labels, exactly as
/// scraped), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_holds_every_documented_metric_and_logs_carry_request_ids() {
    // Peer handlers at debug: a shard read logs a line on the node serving
    // it, in the span of the request it serves.
    let config = "http_addr = \"127.0.0.1:0\"\nlog_format = \"json\"\nlog = \"info,openraft=warn,shadowstore_node::api::peer=debug\"\n";
    let cluster = Cluster::start_with(3, config).await.expect("cluster");
    let c = cluster.client();
    c.create_resource("m", 3).await.expect("create");
    c.put("m", "v", b"hello".to_vec()).await.expect("put");
    assert_eq!(&c.get("m", "v").await.expect("get").value[..], b"hello");
    c.get("m", "absent").await.expect_err("a variant that does not exist");

    // A refused call, with the caller's own request id.
    let mut reader = shadowstore_client::node_stub(&cluster.nodes[0].addr, Some(&cluster.tls("reader"))).expect("stub");
    let mut request = tonic::Request::new(shadowstore_proto::v1::PutRequest {
        resource: "m".into(),
        variant: "v".into(),
        value: b"no".to_vec().into(),
        ..Default::default()
    });
    request.metadata_mut().insert("x-request-id", "operating-test-42".parse().unwrap());
    let refused = reader.put(request).await.expect_err("a reader cannot put");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        refused.metadata().get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("operating-test-42"),
        "the answer echoes the request id"
    );

    let documented = documented_metrics();
    let mut puts_ok = 0.0;
    let mut not_found = 0.0;
    let mut groups_led = 0.0;
    for i in 0..cluster.nodes.len() {
        let addr = cluster.http_addr(i).await;
        let (status, headers, text) = http_get(&addr, "/metrics");
        assert!(status.contains(" 200 "), "node {i}: {status}");
        assert!(headers.contains("content-type: application/openmetrics-text"), "node {i}: {headers}");
        for name in &documented {
            assert!(text.contains(&format!("# TYPE {name} ")), "node {i}: {name} missing from the scrape:\n{text}");
        }
        let put = "shadowstore_grpc_requests_total{method=\"shadowstore.v1.ShadowStore/Put\",code=\"OK\"}";
        puts_ok += sample(&text, put).unwrap_or(0.0);
        let get = "shadowstore_grpc_requests_total{method=\"shadowstore.v1.ShadowStore/Get\",code=\"NotFound\"}";
        not_found += sample(&text, get).unwrap_or(0.0);
        groups_led += sample(&text, "shadowstore_raft_groups{role=\"leader\"}").expect("leader count");
        let node_info = text.lines().find(|l| l.starts_with("shadowstore_node_info{")).expect("node info");
        assert!(node_info.contains(&format!("region=\"r{}\"", i % 3)), "{node_info}");
        assert!(sample(&text, "shadowstore_storage_sync_duration_seconds_count").unwrap_or(0.0) > 0.0, "no sync timed");
        assert_eq!(sample(&text, "shadowstore_storage_failed"), Some(0.0));
        if i == 0 {
            let denied =
                "shadowstore_grpc_requests_total{method=\"shadowstore.v1.ShadowStore/Put\",code=\"PermissionDenied\"}";
            assert_eq!(sample(&text, denied), Some(1.0), "the refused put is counted on node 0");
        }
        let (status, _, _) = http_get(&addr, "/no-such-page");
        assert!(status.contains(" 404 "), "node {i}: {status}");
    }
    assert!(puts_ok >= 1.0, "the put was not counted");
    assert!(not_found >= 1.0, "the failed get was not counted with its code");
    assert!(groups_led >= 2.0, "the meta group and m each have a leader: {groups_led}");

    // JSON logs: the refused call's line carries its request id.
    let log = std::fs::read_to_string(cluster.nodes[0].log_path()).expect("log");
    let line = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.to_string().contains("operating-test-42"))
        .unwrap_or_else(|| {
            panic!("no JSON log line with the request id:\n{}", shadowstore_tests::tail(&cluster.nodes[0].log_path()))
        });
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["span"]["name"], "request", "{line}");
    assert_eq!(line["span"]["id"], "operating-test-42", "{line}");
    assert_eq!(line["span"]["method"], "shadowstore.v1.ShadowStore/Put", "{line}");

    // The id travels with the peer calls made for the request: reading an
    // erasure-coded value fetches shards from the other nodes, which log
    // their part under the caller's id.
    c.put("m", "big", vec![7u8; 200 * 1024]).await.expect("put an erasure-coded value");
    let mut served_by = None;
    for (i, addr) in cluster.endpoints().iter().enumerate() {
        let mut stub = shadowstore_client::node_stub(addr, Some(&cluster.tls("reader"))).expect("stub");
        let mut request = tonic::Request::new(shadowstore_proto::v1::GetRequest {
            resource: "m".into(),
            variant: "big".into(),
            ..Default::default()
        });
        request.metadata_mut().insert("x-request-id", "operating-hop-7".parse().unwrap());
        if let Ok(answer) = stub.get(request).await {
            assert_eq!(answer.into_inner().value.len(), 200 * 1024);
            served_by = Some(i);
            break;
        }
    }
    let served_by = served_by.expect("a node served the read");
    let hops: Vec<usize> = (0..cluster.nodes.len())
        .filter(|j| *j != served_by)
        .filter(|j| {
            std::fs::read_to_string(cluster.nodes[*j].log_path()).unwrap_or_default().lines().any(|l| {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { return false };
                v["fields"]["message"] == "read shard"
                    && v["span"]["id"] == "operating-hop-7"
                    && v["span"]["method"] == "shadowstore.peer.v1.Peer/ReadShard"
            })
        })
        .collect();
    assert!(!hops.is_empty(), "no other node logged a shard read under the request's id (served by node {served_by})");
}
