//! Chaos with real processes and real sled: under a mixed load (writers of
//! inline and erasure-coded values, readers checking what they read), a
//! random node of a 3-node cluster is SIGKILLed every few seconds and
//! started again, for `SHADOWSTORE_CHAOS_SECS` seconds (30 by default, the
//! CI run; docs/TESTING.md gives the 5-minute command and its result).
//! Then every acknowledged write is read back: zero lost, zero corrupt;
//! and again after every node is killed at once and restarted.
//! `SHADOWSTORE_CHAOS_SEED` replays a schedule of kills.

use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use shadowstore_tests::Cluster;
use shadowstore_tests::ledger;
use shadowstore_tests::ledger::Load;

const LOAD: Load = Load { resources: 12, variants: 10, writers: 12, blob_every: 5 };
const READERS: usize = 2;
const CHAOS_SECS_DEFAULT: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkills_under_mixed_load_lose_and_corrupt_nothing() {
    let secs = ledger::env_u64("SHADOWSTORE_CHAOS_SECS").unwrap_or(CHAOS_SECS_DEFAULT);
    let seed = ledger::seed_from_env("SHADOWSTORE_CHAOS_SEED");
    eprintln!("chaos: {secs} s, SHADOWSTORE_CHAOS_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3).await.expect("cluster");
    let admin = cluster.client();
    ledger::create_resources(&admin, LOAD).await.expect("resources");
    let load = ledger::Workload::start(LOAD, READERS, seed, || cluster.client());

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
    let ledger = load.ledger.clone();
    let (acks, reads) = load.stop().await;
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
