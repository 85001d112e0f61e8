//! The compose cluster across containers (`deploy/compose/test.sh`): the
//! FROM-scratch image of this build's binaries, three nodes in their own
//! containers, volumes and regions with mutual TLS; writes and reads
//! through the client, a stopped container, a partitioned one, and every
//! acknowledged write read back after the cluster heals. Where Docker is
//! not available the script says so and the test passes without running
//! it (it prints the script's SKIP line).
//!
//! It takes about 4 minutes, so it runs only when asked, to keep the test
//! command within CI's budget:
//! `SHADOWSTORE_COMPOSE=1 cargo test -p shadowstore-tests --test compose`.

use std::process::Command;

use shadowstore_tests::binary;

#[test]
fn the_compose_cluster_survives_a_stop_and_a_partition() {
    if std::env::var("SHADOWSTORE_COMPOSE").as_deref() != Ok("1") {
        println!(
            "SKIP: the compose test takes about 4 minutes; run it with \
             SHADOWSTORE_COMPOSE=1 cargo test -p shadowstore-tests --test compose"
        );
        return;
    }
    // The image is built from this build's debug binaries.
    let node = binary("shadowstore");
    assert!(binary("shadowctl").exists());
    let profile = node.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("debug").to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/compose/test.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("SHADOWSTORE_IMAGE_PROFILE", &profile)
        .output()
        .expect("run deploy/compose/test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(skip) = stdout.lines().find(|l| l.starts_with("SKIP:")) {
        println!("{skip}");
        return;
    }
    assert!(out.status.success(), "the compose test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("PASS"), "{stdout}");
    println!("{}", stdout.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"));
}
