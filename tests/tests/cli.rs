//! `shadowctl` as a user runs it: the demo cluster (detached), the
//! commands in text and JSON, and bad input refused with a message that
//! names the problem and a non-zero exit.

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::process::Output;
use std::process::Stdio;

use shadowstore_tests::binary;

/// A base port with base+1..=base+3 free.
fn free_base_port() -> u16 {
    loop {
        let base = 20_000 + (rand::random::<u16>() % 30_000);
        if (1..=3).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

fn ctl(args: &[&str], endpoints: &str) -> Output {
    Command::new(binary("shadowctl"))
        .args(args)
        .env("SHADOWSTORE_ENDPOINTS", endpoints)
        .output()
        .expect("run shadowctl")
}

fn ctl_stdin(args: &[&str], endpoints: &str, input: &[u8]) -> Output {
    let mut child = Command::new(binary("shadowctl"))
        .args(args)
        .env("SHADOWSTORE_ENDPOINTS", endpoints)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shadowctl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

struct DemoGuard {
    dir: std::path::PathBuf,
}

impl Drop for DemoGuard {
    fn drop(&mut self) {
        let _ = Command::new(binary("shadowctl")).args(["demo", "down", "--dir"]).arg(&self.dir).output();
    }
}

#[test]
fn demo_cluster_and_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let base = free_base_port();
    let endpoints: String = (1..=3).map(|i| format!("127.0.0.1:{}", base + i)).collect::<Vec<_>>().join(",");
    let _guard = DemoGuard { dir: dir.clone() };

    let out = Command::new(binary("shadowctl"))
        .args(["demo", "--detach", "--base-port", &base.to_string(), "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("3 nodes up"), "{stdout}");
    assert!(stdout.contains("conditional put on the old version"), "demo workload ran: {stdout}");

    // A second demo in the same directory is refused while the first runs.
    let again = Command::new(binary("shadowctl")).args(["demo", "--detach", "--dir"]).arg(&dir).output().unwrap();
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already running"), "{}", text(&again.stderr));

    let status = ctl(&["status", "--output", "json"], &endpoints);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3);

    assert!(ctl(&["resource", "create", "cli-res"], &endpoints).status.success());
    let file = tmp.path().join("in.bin");
    std::fs::write(&file, b"from a file").unwrap();
    let put = ctl(&["put", "cli-res", "en/a", file.to_str().unwrap(), "--output", "json"], &endpoints);
    assert!(put.status.success(), "{}", text(&put.stderr));
    let put_json: serde_json::Value = serde_json::from_slice(&put.stdout).unwrap();
    let version = put_json["version"].as_u64().unwrap();
    let got = ctl(&["get", "cli-res", "en/a"], &endpoints);
    assert_eq!(got.stdout, b"from a file");
    let piped = ctl_stdin(&["put", "cli-res", "en/b", "-"], &endpoints, b"from stdin");
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    let outfile = tmp.path().join("out.bin");
    let got = ctl(&["get", "cli-res", "en/b", "-o", outfile.to_str().unwrap()], &endpoints);
    assert!(got.status.success());
    assert_eq!(std::fs::read(&outfile).unwrap(), b"from stdin");
    let stale = ctl(
        &["put", "cli-res", "en/a", file.to_str().unwrap(), "--if-version", &(version + 100).to_string()],
        &endpoints,
    );
    assert!(!stale.status.success());
    assert!(text(&stale.stderr).contains("FAILED_PRECONDITION"), "{}", text(&stale.stderr));
    let variants = ctl(&["variants", "cli-res", "--output", "json"], &endpoints);
    let vj: serde_json::Value = serde_json::from_slice(&variants.stdout).unwrap();
    assert_eq!(vj.as_array().unwrap().len(), 2);
    let describe = ctl(&["resource", "describe", "cli-res"], &endpoints);
    assert!(text(&describe.stdout).contains("(leader)"), "{}", text(&describe.stdout));

    // Bad input: the message names the problem, the exit code is non-zero.
    let bad = ctl(&["resource", "create", "Bad Name"], &endpoints);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(text(&bad.stderr).contains("INVALID_ARGUMENT") && text(&bad.stderr).contains("Bad Name"));
    let missing_file = ctl(&["put", "cli-res", "x", "/nonexistent/file"], &endpoints);
    assert_eq!(missing_file.status.code(), Some(1));
    assert!(text(&missing_file.stderr).contains("/nonexistent/file"), "{}", text(&missing_file.stderr));
    let missing = ctl(&["get", "cli-res", "nope"], &endpoints);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("NOT_FOUND"));
    let nowhere = ctl(&["status", "--timeout-secs", "2"], "127.0.0.1:1");
    assert!(!nowhere.status.success());
    assert!(text(&nowhere.stderr).contains("cannot reach the cluster"), "{}", text(&nowhere.stderr));
    let bad_flag = ctl(&["bench", "put", "--clients", "0"], &endpoints);
    assert!(!bad_flag.status.success());
    assert!(text(&bad_flag.stderr).contains("--clients"), "{}", text(&bad_flag.stderr));

    let down = Command::new(binary("shadowctl")).args(["demo", "down", "--dir"]).arg(&dir).output().unwrap();
    assert!(text(&down.stdout).contains("stopped 3 node processes"), "{}", text(&down.stdout));
    let after = ctl(&["status", "--timeout-secs", "2"], &endpoints);
    assert!(!after.status.success(), "cluster still answering after demo down");
}
