//! Power loss and failed syncs with real processes and real sled.
//!
//! Each node's data directory is a [`lossyfs`] mount: a cut of its power
//! keeps only what the node synced. Under a mixed load (writers of inline
//! and erasure-coded values, readers checking what they read), every few
//! seconds one node either loses power (SIGKILL, then everything it did not
//! sync is dropped) or has a sync fail with EIO (it must stop by itself,
//! then loses power and restarts from what is on disk). At the end every
//! acknowledged write is read back, and again after the whole cluster loses
//! power at once: zero lost, zero corrupt.
//!
//! A third test interrupts an offline compaction at each of its syncs in
//! turn, cuts the power, and recovers with the command the node prints.
//!
//! `SHADOWSTORE_POWER_SECS` sets the length (30 s by default, the CI run;
//! docs/TESTING.md gives the long command and its result);
//! `SHADOWSTORE_POWER_SEED` replays a schedule. Where FUSE cannot be
//! mounted the tests print SKIP and pass.

use std::io::Read;
use std::io::Seek;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use shadowstore_tests::Cluster;
use shadowstore_tests::binary;
use shadowstore_tests::ledger;
use shadowstore_tests::ledger::Load;
use shadowstore_tests::lossyfs;

const LOAD: Load = Load { resources: 12, variants: 10, writers: 12, blob_every: 5 };
const READERS: usize = 2;
const POWER_SECS_DEFAULT: u64 = 30;
/// How long a node whose sync failed may take to stop by itself.
const STOP_AFTER_FAILED_SYNC_WAIT: Duration = Duration::from_secs(30);

fn skip_without_fuse() -> bool {
    match lossyfs::available() {
        Ok(()) => false,
        Err(why) => {
            eprintln!("SKIP: {why}");
            true
        }
    }
}

fn read(path: &std::path::Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// The filesystem itself: what a cut keeps, and how a failed sync behaves.
#[test]
fn the_lossy_filesystem_keeps_only_what_was_synced() {
    if skip_without_fuse() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = lossyfs::mount(dir.path()).expect("mount");
    let at = |name: &str| dir.path().join(name);

    // Synced bytes survive; bytes written after the sync do not, whether
    // they overwrite, extend or truncate.
    let mut f = std::fs::File::create(at("synced")).expect("create");
    f.write_all(&[1u8; 10_000]).expect("write");
    f.sync_all().expect("sync");
    f.write_all_at(&[2u8; 100], 5_000).expect("overwrite");
    f.write_all(&[3u8; 3_000]).expect("extend");
    std::fs::write(at("never-synced"), b"lost").expect("write");
    std::fs::rename(at("synced"), at("renamed")).expect("rename");
    assert_eq!(read(&at("renamed")).map(|b| b.len()), Some(13_000), "reads see every write");
    drop(f);
    mount.switch.cut();
    assert_eq!(read(&at("synced")), Some(vec![1u8; 10_000]), "the synced content under its committed name");
    assert_eq!(read(&at("renamed")), None, "a rename nothing synced after is undone");
    assert_eq!(read(&at("never-synced")), None, "a name never committed is gone");

    // A name committed by another file's sync comes back empty.
    std::fs::write(at("unsynced-data"), b"bytes").expect("write");
    std::fs::File::open(at("synced")).and_then(|f| f.sync_all()).expect("sync another file");
    let g = std::fs::OpenOptions::new().write(true).open(at("synced")).expect("open");
    g.set_len(10).expect("truncate");
    drop(g);
    mount.switch.cut();
    assert_eq!(read(&at("unsynced-data")), Some(Vec::new()), "committed name, unsynced bytes");
    assert_eq!(read(&at("synced")).map(|b| b.len()), Some(10_000), "a truncation never synced is undone");

    // A failed sync is reported once to every open description; a second
    // sync then succeeds, but the pages whose write-back failed are lost.
    let mut a = std::fs::OpenOptions::new().read(true).write(true).open(at("synced")).expect("open a");
    let b = std::fs::OpenOptions::new().read(true).write(true).open(at("synced")).expect("open b");
    a.write_all(&[9u8; 4096]).expect("write");
    mount.switch.fail_syncs(1);
    assert_eq!(a.sync_all().map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)), "the failing sync");
    assert_eq!(b.sync_all().map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)), "reported to b too");
    b.sync_all().expect("the next sync succeeds (the fsyncgate trap)");
    let mut page = [0u8; 4096];
    a.rewind().and_then(|_| a.read_exact(&mut page)).expect("read");
    assert_eq!(page, [9u8; 4096], "the page cache still shows the failed write");
    drop((a, b));
    mount.switch.cut();
    assert_eq!(read(&at("synced")), Some(vec![1u8; 10_000]), "the failed write is gone after a cut");
    let stats = mount.switch.stats();
    eprintln!("lossyfs: {stats:?}");
    assert_eq!((stats.cuts, stats.failed_syncs), (3, 2), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_and_failed_syncs_under_mixed_load_lose_and_corrupt_nothing() {
    if skip_without_fuse() {
        return;
    }
    let secs = ledger::env_u64("SHADOWSTORE_POWER_SECS").unwrap_or(POWER_SECS_DEFAULT);
    let seed = ledger::seed_from_env("SHADOWSTORE_POWER_SEED");
    eprintln!("power loss: {secs} s, SHADOWSTORE_POWER_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cluster = Cluster::configure(3, "").expect("configure");
    let mut mounts = Vec::new();
    for node in &cluster.nodes {
        std::fs::create_dir_all(node.data_dir()).expect("mount point");
        mounts.push(lossyfs::mount(&node.data_dir()).expect("mount"));
    }
    cluster.launch().await.expect("cluster");
    let admin = cluster.client();
    ledger::create_resources(&admin, LOAD).await.expect("resources");
    let load = ledger::Workload::start(LOAD, READERS, seed, || cluster.client());

    // One node down at a time, so a quorum of every group survives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let (mut cuts, mut failed_syncs) = (0, 0);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..5_000))).await;
        let victim = rng.random_range(0..cluster.nodes.len());
        if rng.random_bool(0.5) {
            cluster.kill(victim);
            cuts += 1;
        } else {
            mounts[victim].switch.fail_syncs(1);
            let status = cluster.nodes[victim]
                .wait_exited(STOP_AFTER_FAILED_SYNC_WAIT)
                .await
                .unwrap_or_else(|e| panic!("a failed sync did not stop node {victim}: {e:#}"));
            let log = std::fs::read_to_string(cluster.nodes[victim].log_path()).unwrap_or_default();
            let why: Vec<&str> = log.lines().filter(|l| l.contains("panicked") || l.contains("sync failed")).collect();
            assert!(!status.success(), "node {victim} stopped with {status} after a failed sync");
            assert!(
                why.iter().any(|l| l.contains("storage sync failed")) && !why.iter().any(|l| l.contains("panicked")),
                "node {victim} did not stop the way a failed sync should stop it:\n{}",
                why.join("\n")
            );
            failed_syncs += 1;
        }
        mounts[victim].switch.cut();
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_000))).await;
        cluster.restart(victim).await.unwrap_or_else(|e| panic!("node {victim} did not come back: {e:#}"));
    }
    let ledger = load.ledger.clone();
    let (acks, reads) = load.stop().await;
    eprintln!(
        "power loss: {cuts} cuts, {failed_syncs} failed syncs, {acks} acknowledged writes, {reads} reads checked"
    );
    assert!(cuts + failed_syncs > 0 && acks > 0 && reads > 0, "the run did nothing");

    let checked = ledger::verify(LOAD, &admin, &ledger).await;
    eprintln!("power loss: {checked} acknowledged pairs read back intact");
    assert!(checked >= LOAD.resources * LOAD.variants / 2, "only {checked} pairs were ever acknowledged");

    // The whole cluster loses power at once: only synced state is left
    // anywhere, and everything acknowledged must be in it.
    for (i, mount) in mounts.iter().enumerate() {
        cluster.kill(i);
        mount.switch.cut();
    }
    for i in 0..cluster.nodes.len() {
        cluster.restart(i).await.expect("restart after the cluster lost power");
    }
    cluster.wait_formed(cluster.nodes.len()).await.expect("formed");
    let checked = ledger::verify(LOAD, &cluster.client(), &ledger).await;
    let stats: Vec<lossyfs::Stats> = mounts.iter().map(|m| m.switch.stats()).collect();
    eprintln!("power loss: {checked} pairs intact after the whole cluster lost power; filesystems: {stats:?}");
    let dropped: u64 = stats.iter().map(|s| s.bytes_dropped).sum();
    assert!(dropped > 0, "no cut dropped anything: the test did not test power loss");
    drop(cluster);
    drop(mounts);
}

/// Syncs a compaction of the test's small directory makes, at most: the
/// loop below fails each in turn until one compaction runs through.
const COMPACTION_SYNCS_MAX: u32 = 60;
/// The node whose directory is compacted.
const COMPACTED: usize = 2;
/// Sweeps of the compaction's syncs before both refusals must have shown.
const SWEEPS_MAX: usize = 3;

/// The last command a node's log quotes (between backticks).
fn last_quoted_command(log: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains("compaction"))?;
    let end = line.rfind('`')?;
    let start = line[..end].rfind('`')?;
    Some(line[start + 1..end].to_string())
}

/// Every key and value a stopped node's directory holds, tree by tree.
fn contents(dir: &std::path::Path) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    use shadowstore_node::storage::StorageEngine;
    use shadowstore_node::storage::Tree;
    let engine = shadowstore_node::storage::sled_engine::SledEngine::open(dir, 8 << 20).expect("open sled");
    let mut all = Vec::new();
    for tree in Tree::ALL {
        for (k, v) in engine.range(tree, &[], &[0xff; 64], usize::MAX).expect("read") {
            all.push((tree.name(), k, v));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_cut_off_at_any_sync_recovers_with_the_printed_command() {
    if skip_without_fuse() {
        return;
    }
    // The compacted node's data directory's parent is the mount, so that
    // the compaction's siblings (DIR.compacting, DIR.before-compaction)
    // are on it too.
    let mut cluster = Cluster::configure(3, "").expect("configure");
    let node = &cluster.nodes[COMPACTED];
    let fs = node.dir.join("fs");
    std::fs::create_dir_all(&fs).expect("mount point");
    let mount = lossyfs::mount(&fs).expect("mount");
    let data = fs.join("data");
    let config = std::fs::read_to_string(&node.config).expect("config");
    let quoted = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    std::fs::write(&node.config, config.replace(&quoted(&node.data_dir()), &quoted(&data))).expect("config");
    cluster.launch().await.expect("cluster");
    let load = Load { resources: 2, variants: 5, writers: 1, blob_every: 5 };
    ledger::create_resources(&cluster.client(), load).await.expect("resources");
    let client = cluster.client();
    for r in 0..load.resources {
        for v in 0..load.variants {
            client.put(&Load::resource(r), &format!("var-{v}"), load.value(r, v, 1)).await.expect("put");
        }
    }
    cluster.stop(COMPACTED);

    // sled's background flush syncs on its own clock, so the position of
    // a given sync in the sequence can shift by one between runs: sweep
    // again (at most SWEEPS_MAX times) until both refusals were seen.
    let mut refusals = std::collections::BTreeSet::new();
    let both_seen = |r: &std::collections::BTreeSet<String>| {
        r.iter().any(|x| x.contains("stopped while copying"))
            && r.iter().any(|x| x.contains("stopped between its two renames"))
    };
    let started = std::time::Instant::now();
    for sweep in 0..SWEEPS_MAX {
        let mut completed_after = None;
        for k in 0..COMPACTION_SYNCS_MAX {
            let before = contents(&data);
            let failed_before = mount.switch.stats().failed_syncs;
            mount.switch.fail_syncs_after(k, 1);
            let out = std::process::Command::new(binary("shadowstore"))
                .arg("compact")
                .arg("--data-dir")
                .arg(&data)
                .output()
                .expect("run compaction");
            mount.switch.fail_syncs(0);
            // The injected failure may land on a sync whose failure changes
            // nothing the compaction depends on (sled's background flush of the
            // original): it then completes, and the next k goes on from the
            // compacted directory. Done when one runs through with no failure.
            let failure_hit = mount.switch.stats().failed_syncs > failed_before;
            eprintln!("compaction {k}: {} ({:?} in)", out.status, started.elapsed());
            if !out.status.success() {
                mount.switch.cut();
            }
            // What an interruption left, if anything, is refused at start-up
            // with the command that recovers; run that command.
            if let Some(what) = shadowstore_node::storage::compact::interrupted(&data) {
                cluster.nodes[COMPACTED].spawn().expect("spawn");
                let status = cluster.nodes[COMPACTED].wait_exited(Duration::from_secs(30)).await.expect("a refusal");
                assert!(!status.success());
                let log = std::fs::read_to_string(cluster.nodes[COMPACTED].log_path()).unwrap_or_default();
                let command = last_quoted_command(&log).unwrap_or_else(|| panic!("no recovery command in:\n{log}"));
                refusals.insert(what.split(':').next().unwrap_or_default().replace(&data.display().to_string(), "DIR"));
                let ran = std::process::Command::new("sh").arg("-c").arg(&command).status().expect("sh");
                assert!(ran.success(), "the printed command `{command}` failed");
                assert_eq!(shadowstore_node::storage::compact::interrupted(&data), None, "after `{command}`");
                assert!(contents(&data) == before, "the node's data changed after an interruption at sync {k}");
                cluster.restart(COMPACTED).await.unwrap_or_else(|e| panic!("after recovering at sync {k}: {e:#}"));
                cluster.stop(COMPACTED);
            } else {
                assert!(contents(&data) == before, "the node's data changed after an interruption at sync {k}");
            }
            if out.status.success() && !failure_hit {
                completed_after = Some(k);
                break;
            }
        }
        let completed_after = completed_after.expect("no compaction ran through");
        eprintln!("compaction sweep {sweep}: a failure injected at each of its first {completed_after} syncs");
        if both_seen(&refusals) {
            break;
        }
    }
    eprintln!("compaction: refusals seen: {refusals:#?}");
    assert!(both_seen(&refusals), "the interruptions did not reach both renames: {refusals:?}");
    cluster.restart(COMPACTED).await.expect("start after the compaction");
    let via = cluster.client_via(COMPACTED);
    for r in 0..load.resources {
        for v in 0..load.variants {
            let got = via.get(&Load::resource(r), &format!("var-{v}")).await.expect("read");
            assert_eq!(load.attempt_of(r, v, &got.value), Some(1), "res-{r}/var-{v}");
        }
    }
    drop(cluster);
    drop(mount);
}
