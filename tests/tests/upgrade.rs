//! Data directories written by the last release open with this build.
//!
//! `tests/data/data-dirs-99d71f8.tar.gz` holds the three data directories
//! of a local cluster run by the binary of commit 99d71f8 (format 0: before
//! data directories carried a format record), stopped cleanly. It was made
//! by starting `deploy/local`-style nodes on 127.0.0.1:7911-7913 and, with
//! that commit's `shadowctl`: `resource create catalog --replicas 3`,
//! `put catalog en/mobile` ("hello\n"), a put of `big` (80,000 bytes of
//! "shadowstore format v0 blob " repeated; erasure-coded 2+1), five puts of
//! `de/desktop` ("v1\n" .. "v5\n") and `config set threshold 0.7`.
//!
//! The nodes keep their addresses (they are in the directories' meta
//! state), so this test uses those fixed ports. They start again all at
//! once with peer listeners of their own, which that release did not
//! have: the cluster must still elect a leader and record every node's
//! peer address (`Cluster::wait_formed`), through the client listeners'
//! gate (`node/src/transport/peer_gate.rs`).

use std::path::Path;
use std::process::Command;

use shadowstore_client::Client;
use shadowstore_client::ClientOptions;
use shadowstore_node::storage::StorageEngine;
use shadowstore_node::storage::Tree;
use shadowstore_node::storage::WriteBatch;
use shadowstore_node::storage::format;
use shadowstore_node::storage::sled_engine::SledEngine;
use shadowstore_tests::Cluster;
use shadowstore_tests::SETTLE_TIMEOUT;
use shadowstore_tests::binary;

const FIXTURE_ADDRS: [&str; 3] = ["127.0.0.1:7911", "127.0.0.1:7912", "127.0.0.1:7913"];

/// Unpacks the fixture's data directories as `node{i}/data` under `root`.
fn unpack_fixture(root: &Path) -> anyhow::Result<()> {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/data-dirs-99d71f8.tar.gz");
    let unpacked = root.join("fixture");
    std::fs::create_dir_all(&unpacked)?;
    let status = Command::new("tar").arg("xzf").arg(&archive).arg("-C").arg(&unpacked).status()?;
    anyhow::ensure!(status.success(), "tar could not unpack {}", archive.display());
    for i in 0..3 {
        let dir = root.join(format!("node{i}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::rename(unpacked.join(format!("node{}", i + 1)), dir.join("data"))?;
    }
    Ok(())
}

fn big_value() -> Vec<u8> {
    b"shadowstore format v0 blob ".iter().copied().cycle().take(80_000).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dirs_of_the_last_release_open_and_keep_their_data() {
    let tmp = tempfile::tempdir().unwrap();
    unpack_fixture(tmp.path()).unwrap();
    let cluster = Cluster::adopt(tmp, &FIXTURE_ADDRS, "").await.unwrap();
    let c =
        Client::new_lazy(cluster.endpoints(), ClientOptions { total_deadline: SETTLE_TIMEOUT, ..cluster.options() })
            .unwrap();
    c.wait_for_leader("catalog", SETTLE_TIMEOUT).await.unwrap();

    let hello = c.get("catalog", "en/mobile").await.unwrap();
    assert_eq!(&hello.value[..], b"hello\n");
    let big = c.get("catalog", "big").await.unwrap();
    assert_eq!(big.value.len(), 80_000);
    assert!(big.value[..] == big_value()[..], "the erasure-coded blob decodes to other bytes");
    let desktop = c.get("catalog", "de/desktop").await.unwrap();
    assert_eq!(&desktop.value[..], b"v5\n");
    let mut versions = [hello.version, big.version, desktop.version];
    versions.sort();
    assert!(versions[0] < versions[1] && versions[1] < versions[2], "versions {versions:?}");

    let info = c.describe_resource("catalog").await.unwrap().resource.unwrap();
    assert_eq!((info.replication_factor, info.data_shards, info.parity_shards), (3, 2, 1));
    let settings = c.placement_config().await.unwrap().settings.unwrap();
    assert_eq!(settings.threshold_permille, 700);

    // The directories are now at the current format, and the cluster takes
    // writes as before.
    let v = c.put("catalog", "de/desktop", &b"v6\n"[..]).await.unwrap();
    assert!(v > desktop.version);
    assert_eq!(&c.get("catalog", "de/desktop").await.unwrap().value[..], b"v6\n");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_a_newer_format_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    unpack_fixture(tmp.path()).unwrap();
    let data_dir = tmp.path().join("node0/data");
    let mut families = format::FAMILIES;
    families[0].1 += 1;
    let (family, newer) = families[0];
    let record = format::encode(&families);
    {
        let engine = SledEngine::open(&data_dir, 8 << 20).unwrap();
        let mut b = WriteBatch::new(Tree::Local);
        b.put(format::FORMAT_KEY.to_vec(), record.clone());
        engine.write(b).unwrap();
        engine.clone().sync().await.unwrap();
    }
    let config = tmp.path().join("node0/node.toml");
    std::fs::write(
        &config,
        // Refused before it listens: plaintext is never served.
        format!("data_dir = {:?}\nlisten_addr = \"127.0.0.1:0\"\ninsecure = true\n", data_dir.display().to_string()),
    )
    .unwrap();
    let out = Command::new(binary("shadowstore")).arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a newer data directory was opened:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("`{family}` records in format {newer}")),
        "message does not name the format: {stderr}"
    );
    assert!(stderr.contains(env!("CARGO_PKG_VERSION")), "message does not name this version: {stderr}");
    assert!(stderr.contains(&data_dir.display().to_string()), "message does not name the directory: {stderr}");
    let engine = SledEngine::open(&data_dir, 8 << 20).unwrap();
    assert_eq!(engine.get(Tree::Local, format::FORMAT_KEY).unwrap(), Some(record), "the record was rewritten");
}

/// A compaction interrupted between its renames leaves the original in
/// `DIR.before-compaction` and no `DIR`: a node configured to bootstrap
/// must not start a fresh cluster there, but refuse and name the command
/// that restores the data.
#[test]
fn a_node_refuses_to_start_beside_an_interrupted_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let original = tmp.path().join("data.before-compaction");
    std::fs::create_dir_all(original.join("db")).unwrap();
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten_addr = \"127.0.0.1:0\"\nbootstrap = true\ninsecure = true\n",
            data_dir.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(binary("shadowstore")).arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the node started beside an interrupted compaction:\n{stderr}");
    assert!(
        stderr.contains(&format!("mv {} {}", original.display(), data_dir.display())),
        "the message does not give the recovery command: {stderr}"
    );
    assert!(!data_dir.exists(), "a fresh data directory was created");
}
