//! The Python client (`client/python`) against a real 3-node TLS cluster:
//! its stubs generated from `proto/proto` with grpcio-tools, then
//! `smoke.py` runs the basic flow (create a resource, put two variants, get
//! them back, list resources, placement status) over mutual TLS, following
//! the nodes' leader redirects. A certificate without the admin role makes
//! the script fail with a non-zero exit that names the refusal.
//!
//! Needs `python3` with grpcio-tools: `pip install -r client/python/requirements.txt`.
//! Without it the test fails (it is not skipped).

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Output;

use shadowstore_tests::Cluster;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn report(what: &str, out: &Output) -> String {
    format!("{what}: {}\n--- stdout\n{}\n--- stderr\n{}", out.status, text(&out.stdout), text(&out.stderr))
}

/// Runs a command off the runtime's threads (the cluster is other
/// processes; this only keeps the test's workers free).
async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("spawn")
}

/// Fails with the install command when grpcio-tools is missing.
fn require_grpc_tools() {
    let out = Command::new(python()).args(["-c", "import grpc, grpc_tools"]).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "{} cannot import grpc_tools: run `pip install -r client/python/requirements.txt`\n{}",
            python(),
            text(&o.stderr)
        ),
        Err(e) => panic!(
            "cannot run {} ({e}): install Python 3 and run `pip install -r client/python/requirements.txt`",
            python()
        ),
    }
}

fn smoke(root: &Path, gen_dir: &Path, endpoints: &str, certs: &Path, identity: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(root.join("client/python/smoke.py"))
        .args(["--endpoints", endpoints, "--identity", identity])
        .arg("--certs")
        .arg(certs)
        .arg("--gen")
        .arg(gen_dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("SHADOWSTORE_PY_GEN");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_runs_the_basic_flow_over_mutual_tls() {
    require_grpc_tools();
    let root = workspace();
    let cluster = Cluster::start(3).await.expect("cluster");
    let endpoints = cluster.endpoints().join(",");
    let gen_dir = tempfile::tempdir().expect("tempdir");

    let mut generate = Command::new("bash");
    generate.arg(root.join("client/python/generate.sh")).arg(gen_dir.path()).env("PYTHON", python());
    let out = run(generate).await;
    assert!(out.status.success(), "{}", report("generate.sh failed", &out));
    for module in ["shadowstore_pb2.py", "shadowstore_pb2_grpc.py", "peer_pb2.py"] {
        let path = gen_dir.path().join("shadowstore/v1").join(module);
        assert!(path.exists(), "generate.sh did not write {}", path.display());
    }

    let out = run(smoke(&root, gen_dir.path(), &endpoints, &cluster.certs, "admin")).await;
    assert!(out.status.success(), "{}", report("smoke.py failed", &out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("smoke: OK"), "{}", report("smoke.py did not report OK", &out));
    assert!(stdout.contains("placement of pysmoke-"), "{}", report("no placement status printed", &out));

    // A writer may not create resources: the script stops at that step,
    // exits 1 and says why.
    let out = run(smoke(&root, gen_dir.path(), &endpoints, &cluster.certs, "writer")).await;
    assert_eq!(out.status.code(), Some(1), "{}", report("smoke.py as writer", &out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("FAIL at CreateResource") && stderr.contains("PERMISSION_DENIED"),
        "{}",
        report("smoke.py as writer did not name the refusal", &out)
    );
}
