//! `shadowctl` as a user runs it: the demo cluster (detached), the
//! commands in text and JSON, and bad input refused with a message that
//! names the problem and a non-zero exit.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::process::Output;
use std::process::Stdio;

use shadowstore_tests::binary;
use shadowstore_tests::http_get;

/// A base port with base+1..=base+3 free, and base+91..=base+93 (the
/// demo's operator HTTP).
fn free_base_port() -> u16 {
    loop {
        let base = 20_000 + (rand::random::<u16>() % 30_000);
        if (1..=3).chain(91..=93).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// Runs shadowctl against `endpoints`, presenting certificates from
/// `certs` (the demo's).
fn ctl(args: &[&str], endpoints: &str, certs: &Path) -> Output {
    Command::new(binary("shadowctl"))
        .args(args)
        .env("SHADOWSTORE_ENDPOINTS", endpoints)
        .env("SHADOWSTORE_CERTS", certs)
        .output()
        .expect("run shadowctl")
}

fn ctl_stdin(args: &[&str], endpoints: &str, certs: &Path, input: &[u8]) -> Output {
    let mut child = Command::new(binary("shadowctl"))
        .args(args)
        .env("SHADOWSTORE_ENDPOINTS", endpoints)
        .env("SHADOWSTORE_CERTS", certs)
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
    let certs = dir.join("certs");
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

    let status = ctl(&["status", "--output", "json"], &endpoints, &certs);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3);
    for n in v["nodes"].as_array().unwrap() {
        let (addr, peer) = (n["address"].as_str().unwrap(), n["peer_address"].as_str().unwrap());
        assert!(!peer.is_empty() && peer != addr, "a demo node serves peers on a listener of its own: {n}");
    }

    assert!(ctl(&["resource", "create", "cli-res"], &endpoints, &certs).status.success());
    let file = tmp.path().join("in.bin");
    std::fs::write(&file, b"from a file").unwrap();
    let put = ctl(&["put", "cli-res", "en/a", file.to_str().unwrap(), "--output", "json"], &endpoints, &certs);
    assert!(put.status.success(), "{}", text(&put.stderr));
    let put_json: serde_json::Value = serde_json::from_slice(&put.stdout).unwrap();
    let version = put_json["version"].as_u64().unwrap();
    let got = ctl(&["get", "cli-res", "en/a"], &endpoints, &certs);
    assert_eq!(got.stdout, b"from a file");
    let piped = ctl_stdin(&["put", "cli-res", "en/b", "-"], &endpoints, &certs, b"from stdin");
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    let outfile = tmp.path().join("out.bin");
    let got = ctl(&["get", "cli-res", "en/b", "-o", outfile.to_str().unwrap()], &endpoints, &certs);
    assert!(got.status.success());
    assert_eq!(std::fs::read(&outfile).unwrap(), b"from stdin");
    let stale = ctl(
        &["put", "cli-res", "en/a", file.to_str().unwrap(), "--if-version", &(version + 100).to_string()],
        &endpoints,
        &certs,
    );
    assert!(!stale.status.success());
    assert!(text(&stale.stderr).contains("FAILED_PRECONDITION"), "{}", text(&stale.stderr));
    let variants = ctl(&["variants", "cli-res", "--output", "json"], &endpoints, &certs);
    let vj: serde_json::Value = serde_json::from_slice(&variants.stdout).unwrap();
    assert_eq!(vj.as_array().unwrap().len(), 2);
    let describe = ctl(&["resource", "describe", "cli-res"], &endpoints, &certs);
    assert!(text(&describe.stdout).contains("(leader)"), "{}", text(&describe.stdout));

    // Bad input: the message names the problem, the exit code is non-zero.
    let bad = ctl(&["resource", "create", "Bad Name"], &endpoints, &certs);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(text(&bad.stderr).contains("INVALID_ARGUMENT") && text(&bad.stderr).contains("Bad Name"));
    let missing_file = ctl(&["put", "cli-res", "x", "/nonexistent/file"], &endpoints, &certs);
    assert_eq!(missing_file.status.code(), Some(1));
    assert!(text(&missing_file.stderr).contains("/nonexistent/file"), "{}", text(&missing_file.stderr));
    let missing = ctl(&["get", "cli-res", "nope"], &endpoints, &certs);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("NOT_FOUND"));
    let nowhere = ctl(&["status", "--timeout-secs", "2"], "127.0.0.1:1", &certs);
    assert!(!nowhere.status.success());
    assert!(text(&nowhere.stderr).contains("cannot reach the cluster"), "{}", text(&nowhere.stderr));
    // Roles: a reader may read but not write or administer; the answer
    // names the role needed. Plaintext is refused by a TLS node.
    let as_reader = ctl(&["--identity", "reader", "get", "cli-res", "en/a"], &endpoints, &certs);
    assert_eq!(as_reader.stdout, b"from a file", "{}", text(&as_reader.stderr));
    let denied = ctl(&["--identity", "reader", "resource", "create", "by-reader"], &endpoints, &certs);
    assert!(!denied.status.success());
    assert!(text(&denied.stderr).contains("PERMISSION_DENIED"), "{}", text(&denied.stderr));
    assert!(text(&denied.stderr).contains("needs role admin"), "{}", text(&denied.stderr));
    let denied = ctl_stdin(&["--identity", "reader", "put", "cli-res", "en/c", "-"], &endpoints, &certs, b"x");
    assert!(text(&denied.stderr).contains("PERMISSION_DENIED"), "{}", text(&denied.stderr));
    let plaintext = ctl(&["--insecure", "status", "--timeout-secs", "2"], &endpoints, &certs);
    assert!(!plaintext.status.success(), "a TLS node answered plaintext");
    let no_cert = ctl(&["status"], &endpoints, &tmp.path().join("no-certs"));
    assert!(!no_cert.status.success());
    assert!(text(&no_cert.stderr).contains("shadowctl certs"), "{}", text(&no_cert.stderr));
    let bad_flag = ctl(&["bench", "put", "--clients", "0"], &endpoints, &certs);
    assert!(!bad_flag.status.success());
    assert!(text(&bad_flag.stderr).contains("--clients"), "{}", text(&bad_flag.stderr));

    // The demo's read capacity (50 reads/s per node) sheds a read
    // benchmark, and the benchmark says so and why.
    let bench = ctl(
        &[
            "bench",
            "get",
            "--clients",
            "16",
            "--duration",
            "3",
            "--warmup",
            "0",
            "--resources",
            "1",
            "--output",
            "json",
        ],
        &endpoints,
        &certs,
    );
    assert!(bench.status.success(), "{}", text(&bench.stderr));
    let b: serde_json::Value = serde_json::from_slice(&bench.stdout).expect("bench json");
    assert!(b["sheds"].as_u64().unwrap_or(0) > 0, "no sheds reported: {b}");
    assert!(b["shed_cause"].as_str().unwrap_or("").contains("read_capacity_rps"), "{b}");

    // A Prometheus scrape of the demo's first node: the sheds are counted.
    let metrics_url = format!("http://127.0.0.1:{}/metrics", base + 91);
    assert!(stdout.contains(&metrics_url), "the demo prints its metrics URLs: {stdout}");
    let (status, _, scrape) = http_get(&format!("127.0.0.1:{}", base + 91), "/metrics");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(scrape.contains("# TYPE shadowstore_reads_shed counter"), "{scrape}");
    let shed_total: f64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("shadowstore_reads_shed_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("shed counter");
    let sheds_anywhere = shed_total > 0.0
        || (92..=93).any(|p| {
            http_get(&format!("127.0.0.1:{}", base + p), "/metrics")
                .2
                .lines()
                .any(|l| l.starts_with("shadowstore_reads_shed_total ") && !l.ends_with(" 0"))
        });
    assert!(sheds_anywhere, "no node counted a shed read");

    // The demand chart, completions and manual pages.
    let svg = tmp.path().join("demand.svg");
    let chart = ctl(&["demand", "show", "cli-res", "--svg", svg.to_str().unwrap()], &endpoints, &certs);
    assert!(chart.status.success(), "{}", text(&chart.stderr));
    let svg = std::fs::read_to_string(&svg).expect("the chart was written");
    for part in ["<svg", "time (UTC)", "reads per 5 min", "capacity (", "observed"] {
        assert!(svg.contains(part), "{part:?} missing from the chart");
    }
    let completions = ctl(&["completions", "bash"], &endpoints, &certs);
    assert!(text(&completions.stdout).contains("_shadowctl()"), "{}", text(&completions.stderr));
    let man = tmp.path().join("man");
    let pages = ctl(&["man", man.to_str().unwrap()], &endpoints, &certs);
    assert!(pages.status.success(), "{}", text(&pages.stderr));
    let page = std::fs::read_to_string(man.join("shadowctl-put.1")).expect("a page per subcommand");
    assert!(page.contains(".TH shadowctl-put"), "{page}");

    let down = Command::new(binary("shadowctl")).args(["demo", "down", "--dir"]).arg(&dir).output().unwrap();
    assert!(text(&down.stdout).contains("stopped 3 node processes"), "{}", text(&down.stdout));
    let after = ctl(&["status", "--timeout-secs", "2"], &endpoints, &certs);
    assert!(!after.status.success(), "cluster still answering after demo down");
}

/// A foreground demo (with its demand generator) stopped by SIGTERM, as a
/// service manager or `timeout` would, stops every node it started.
#[test]
fn foreground_demo_stops_its_nodes_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let base = free_base_port();
    let _guard = DemoGuard { dir: dir.clone() };
    let mut demo = Command::new(binary("shadowctl"))
        .args(["demo", "--base-port", &base.to_string(), "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start demo");
    // Wait for the prompt: the cluster is up and the signals are watched.
    let mut stdout = std::io::BufReader::new(demo.stdout.take().expect("stdout"));
    let mut printed = String::new();
    while !printed.contains("press Ctrl-C") {
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut stdout, &mut line).expect("read demo output");
        assert!(read > 0, "demo exited before its prompt:\n{printed}");
        printed.push_str(&line);
    }
    let pids: Vec<i32> = std::fs::read_to_string(dir.join("pids"))
        .expect("pids file")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    // Running: the process exists and is not a zombie waiting to be reaped
    // (the nodes are the demo's children; once it exits, init reaps them).
    let running = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).map(str::to_string)
            })
            .is_some_and(|state| state != "Z" && state != "X")
    };
    assert!(pids.iter().all(|p| running(*p)), "nodes {pids:?} not running");
    assert_eq!(unsafe { libc::kill(demo.id() as i32, libc::SIGTERM) }, 0, "signal the demo");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read demo output");
    let status = demo.wait().expect("demo exits");
    assert!(status.success(), "{status}");
    assert!(rest.contains("terminated: stopping the cluster"), "{rest}");
    // The demo stops and reaps its nodes before it exits; the short wait
    // only covers a node that a slow machine has not finished tearing down.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pids.iter().any(|p| running(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let left: Vec<i32> = pids.iter().copied().filter(|p| running(*p)).collect();
    assert!(left.is_empty(), "nodes {left:?} outlived the demo");
}
