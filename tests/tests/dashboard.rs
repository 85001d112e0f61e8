//! The dashboard every node serves, in a real headless browser (Chromium
//! from Debian's packages: `apt-get install chromium`): four real node
//! processes, a resource with a shadow taking its first step of reads,
//! and the meta leader's page rendered after its scripts ran. The DOM must
//! show the nodes and their health, the resource's replicas with the
//! shadow's phase and weight, the shadow's steps and cost, a demand chart
//! with capacity and axes, and the placement explanation. The screenshot
//! is written to `target/dashboard.png` and its path printed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use shadowstore_client::ShadowActionKind;
use shadowstore_tests::Cluster;
use shadowstore_tests::eventually;
use shadowstore_tests::http_get;

const RESOURCE: &str = "catalog";

/// Chromium's binary: `CHROMIUM`, else the first of Debian's names found.
fn chromium() -> String {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return path;
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success()) {
            return name.to_string();
        }
    }
    panic!("no Chromium found: install it (`apt-get install chromium`, as .ci/run does) or set CHROMIUM");
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or
/// `--screenshot=PATH`), giving the page's scripts 6 s of virtual time.
fn headless(url: &str, action: &str) -> std::process::Output {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1600",
            "--virtual-time-budget=6000",
            action,
            url,
        ])
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_live_loop_in_a_browser() {
    let cluster = Cluster::start_with(4, "http_addr = \"127.0.0.1:0\"\n").await.expect("cluster");
    let c = cluster.client();
    // Operators drive the steps: the shadow stays on its first step.
    for (key, value) in [("mode", "manual"), ("steps", "20,50,100"), ("dwell_ms", "3600000")] {
        c.set_placement_config(key, value, None, None).await.expect("placement setting");
    }
    let info = c.create_resource(RESOURCE, 3).await.expect("create");
    c.put(RESOURCE, "en/mobile", b"hello".to_vec()).await.expect("put");
    let primaries: Vec<u64> = info.replicas.iter().map(|r| r.node_id).collect();
    let host = (1..=4).find(|n| !primaries.contains(n)).expect("a fourth node");
    let shadow = c.add_shadow(RESOURCE, Some(host)).await.expect("add shadow").replica_id;
    eventually(Duration::from_secs(60), || async {
        let st = c.shadow_status(Some(RESOURCE)).await?;
        let ready = st.resources.iter().flat_map(|r| &r.replicas).any(|r| r.replica_id == shadow && r.phase == "ready");
        anyhow::ensure!(ready, "shadow not ready: {st:?}");
        Ok(())
    })
    .await
    .expect("the shadow is ready");
    c.shadow_action(RESOURCE, Some(shadow), ShadowActionKind::PromoteNext).await.expect("first step");
    for _ in 0..20 {
        c.get(RESOURCE, "en/mobile").await.expect("read");
    }

    // The meta leader's page holds plans and demand too.
    let leader = c.cluster_status().await.expect("status").meta_leader_node_id;
    let i = cluster.index_of(leader).await.expect("leader index");
    let addr = cluster.http_addr(i).await;
    let (status, headers, data) = http_get(&addr, "/api/dashboard");
    assert!(status.contains(" 200 "), "{status}");
    assert!(headers.contains("content-type: application/json"), "{headers}");
    let data: serde_json::Value = serde_json::from_str(&data).expect("dashboard json");
    assert_eq!(data["node"]["leads_meta"], true, "{data}");
    let url = format!("http://{addr}/");

    let dom = String::from_utf8(headless(&url, "--dump-dom").stdout).expect("utf-8 DOM");
    for node in cluster.endpoints() {
        assert!(dom.contains(&node), "node {node} missing from the page");
    }
    for expected in [
        "this node leads the meta group",
        "status: serving",
        RESOURCE,
        "<b>shifting</b> step 1",
        "reads per 5 min",
        "time (UTC)",
        "capacity ",
        "shadow cost so far",
        "Placement decisions",
        "P(exceed)",
    ] {
        assert!(dom.contains(expected), "{expected:?} missing from the rendered page:\n{dom}");
    }
    assert!(dom.contains(&format!("node {host}: shadow")), "the shadow's node and role are shown:\n{dom}");
    assert!(dom.contains("id=\"updated\">updated "), "the page's fetch failed:\n{dom}");

    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target).expect("target dir");
    let png = std::path::absolute(target.join("dashboard.png")).expect("path");
    let _ = std::fs::remove_file(&png);
    headless(&url, &format!("--screenshot={}", png.display()));
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "a blank or missing screenshot ({} bytes)",
        bytes.len()
    );
    println!("dashboard screenshot: {}", png.display());
}
