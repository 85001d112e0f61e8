//! Chaos with real processes and real sled: under a mixed load (writers of
//! inline and erasure-coded values, readers checking what they read), a
//! random node of a 3-node cluster is SIGKILLed every few seconds and
//! started again, for `SHADOWSTORE_CHAOS_SECS` seconds (30 by default, the
//! CI run; docs/TESTING.md gives the 5-minute command and its result).
//! Then every acknowledged write is read back: zero lost, zero corrupt;
//! and again after every node is killed at once and restarted.
//! `SHADOWSTORE_CHAOS_SEED` replays a schedule of kills.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use shadowstore_client::Client;
use shadowstore_tests::Cluster;
use shadowstore_tests::ledger;
use shadowstore_tests::ledger::Ledger;
use shadowstore_tests::ledger::Load;

const LOAD: Load = Load { resources: 12, variants: 10, writers: 12, blob_every: 5 };
const READERS: usize = 2;
const CHAOS_SECS_DEFAULT: u64 = 30;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Reads random acknowledged pairs until `stop`, checking each answer
/// against what was acknowledged before the read was sent; returns the
/// reads checked.
async fn reader(seed: u64, client: Client, ledger: Ledger, stop: Arc<AtomicBool>, checked: Arc<AtomicU64>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let (r, v) = (rng.random_range(0..LOAD.resources), rng.random_range(0..LOAD.variants));
        let before = ledger.lock().unwrap_or_else(|p| p.into_inner()).get(&(r, v)).cloned().unwrap_or_default();
        if before.acked.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if let Ok(got) = client.get(&Load::resource(r), &format!("var-{v}")).await {
            ledger::check_read(LOAD, r, v, &before, got.version, &got.value);
            checked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkills_under_mixed_load_lose_and_corrupt_nothing() {
    let secs = env_u64("SHADOWSTORE_CHAOS_SECS").unwrap_or(CHAOS_SECS_DEFAULT);
    let seed = env_u64("SHADOWSTORE_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("chaos: {secs} s, SHADOWSTORE_CHAOS_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3).await.expect("cluster");
    let admin = cluster.client();
    ledger::create_resources(&admin, LOAD).await.expect("resources");
    let ledger = ledger::new_ledger();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..LOAD.writers {
        writers.push(tokio::spawn(ledger::writer(LOAD, w, cluster.client(), ledger.clone(), stop.clone())));
    }
    let mut readers = Vec::new();
    for i in 0..READERS {
        let (client, ledger, stop, reads) = (cluster.client(), ledger.clone(), stop.clone(), reads.clone());
        readers.push(tokio::spawn(reader(seed ^ i as u64, client, ledger, stop, reads)));
    }

    // One node down at a time, so a quorum of every group survives: kill
    // a random node every 2–5 s, start it again after 0.5–3 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut kills = 0;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..5_000))).await;
        let victim = rng.random_range(0..cluster.nodes.len());
        cluster.kill(victim);
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_000))).await;
        cluster.restart(victim).await.unwrap_or_else(|e| panic!("node {victim} did not come back: {e:#}"));
    }
    stop.store(true, Ordering::Relaxed);
    let mut acks = 0;
    for w in writers {
        acks += w.await.expect("writer");
    }
    for r in readers {
        r.await.expect("reader");
    }
    let reads = reads.load(Ordering::Relaxed);
    eprintln!("chaos: {kills} SIGKILLs, {acks} acknowledged writes, {reads} reads checked during the run");
    assert!(kills > 0 && acks > 0 && reads > 0, "the run did nothing: {kills} kills, {acks} acks, {reads} reads");

    let checked = ledger::verify(LOAD, &admin, &ledger).await;
    eprintln!("chaos: {checked} acknowledged pairs read back intact");
    assert!(checked >= LOAD.resources * LOAD.variants / 2, "only {checked} pairs were ever acknowledged");

    // Every node crashes at once; everything acknowledged is still there.
    for i in 0..cluster.nodes.len() {
        cluster.kill(i);
    }
    for i in 0..cluster.nodes.len() {
        cluster.restart(i).await.expect("restart");
    }
    cluster.wait_formed(cluster.nodes.len()).await.expect("formed");
    ledger::verify(LOAD, &cluster.client(), &ledger).await;
}
