//! A ledger of acknowledged writes, for tests that crash nodes under load.
//!
//! Writers own disjoint (resource, variant) pairs and write them in rounds;
//! every value names its pair and attempt and carries a filler derived from
//! them, so a read can tell a lost write (an older version than the last
//! acknowledged one), a corrupt value (a filler that does not match) and a
//! write from nowhere (an attempt never sent). Some variants hold values
//! above the inline threshold, so the erasure-coded path is loaded too.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use shadowstore_client::Client;

use crate::eventually;
use crate::pseudo_random;

/// Size of the values of blob variants: above the 64 KiB inline threshold.
pub const BLOB_VALUE_BYTES: usize = 160 * 1024;
/// Size of the values of inline variants.
const INLINE_VALUE_BYTES: usize = 200;

/// The load: `resources` × `variants` pairs written by `writers` tasks;
/// every `blob_every`-th variant (0: none) holds erasure-coded values.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub resources: usize,
    pub variants: usize,
    pub writers: usize,
    pub blob_every: usize,
}

impl Load {
    pub fn resource(r: usize) -> String {
        format!("res-{r}")
    }

    fn is_blob(&self, v: usize) -> bool {
        self.blob_every != 0 && v % self.blob_every == self.blob_every - 1
    }

    /// The value of attempt `attempt` of pair (r, v).
    pub fn value(&self, r: usize, v: usize, attempt: u64) -> Vec<u8> {
        let mut bytes = format!("r{r}/v{v}/attempt{attempt}/").into_bytes();
        let len = if self.is_blob(v) { BLOB_VALUE_BYTES } else { INLINE_VALUE_BYTES };
        bytes.extend(pseudo_random(len, (r as u64) << 40 | (v as u64) << 20 | attempt));
        bytes
    }

    /// The attempt a value holds, if it is exactly what that attempt wrote.
    pub fn attempt_of(&self, r: usize, v: usize, bytes: &[u8]) -> Option<u64> {
        let prefix = format!("r{r}/v{v}/attempt");
        let rest = bytes.strip_prefix(prefix.as_bytes())?;
        let end = rest.iter().position(|b| *b == b'/')?;
        let attempt: u64 = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        (self.value(r, v, attempt) == bytes).then_some(attempt)
    }
}

/// What the writers know about one pair.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// The last acknowledged write: (version, attempt number).
    pub acked: Option<(u64, u64)>,
    /// The highest attempt number sent (acknowledged or not).
    pub attempted: u64,
}

pub type Ledger = Arc<Mutex<HashMap<(usize, usize), Known>>>;

pub fn new_ledger() -> Ledger {
    Arc::new(Mutex::new(HashMap::new()))
}

/// Creates the load's resources (factor 3).
pub async fn create_resources(admin: &Client, load: Load) -> anyhow::Result<()> {
    for r in 0..load.resources {
        admin.create_resource(&Load::resource(r), 3).await?;
    }
    Ok(())
}

/// Writer `w`: writes its pairs (index % writers == w) in rounds until
/// `stop`; returns the writes acknowledged.
pub async fn writer(load: Load, w: usize, client: Client, ledger: Ledger, stop: Arc<AtomicBool>) -> u64 {
    let mine: Vec<(usize, usize)> = (0..load.resources * load.variants)
        .filter(|i| i % load.writers == w)
        .map(|i| (i / load.variants, i % load.variants))
        .collect();
    let mut acks = 0;
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        for &(r, v) in &mine {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            {
                let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
                l.entry((r, v)).or_default().attempted = round;
            }
            let put = client.put(&Load::resource(r), &format!("var-{v}"), load.value(r, v, round)).await;
            if let Ok(version) = put {
                let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
                let k = l.entry((r, v)).or_default();
                assert!(k.acked.is_none_or(|(old, _)| old < version), "acknowledged versions must increase");
                k.acked = Some((version, round));
                acks += 1;
            }
        }
    }
    acks
}

/// Reads random acknowledged pairs until `stop`, checking each answer
/// against what was acknowledged before the read was sent; counts the
/// reads checked in `checked`.
pub async fn reader(
    load: Load,
    seed: u64,
    client: Client,
    ledger: Ledger,
    stop: Arc<AtomicBool>,
    checked: Arc<AtomicU64>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let (r, v) = (rng.random_range(0..load.resources), rng.random_range(0..load.variants));
        let before = ledger.lock().unwrap_or_else(|p| p.into_inner()).get(&(r, v)).cloned().unwrap_or_default();
        if before.acked.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if let Ok(got) = client.get(&Load::resource(r), &format!("var-{v}")).await {
            check_read(load, r, v, &before, got.version, &got.value);
            checked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A number from environment variable `name`, if it holds one.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The seed in environment variable `name`, else one from the clock (the
/// test prints it so that the run can be replayed).
pub fn seed_from_env(name: &str) -> u64 {
    env_u64(name).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    })
}

/// Writers and checking readers running against a cluster.
pub struct Workload {
    pub ledger: Ledger,
    stop: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<u64>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    reads: Arc<AtomicU64>,
}

impl Workload {
    /// Starts `load.writers` writers and `readers` readers, each with a
    /// client from `client`.
    pub fn start(load: Load, readers: usize, seed: u64, client: impl Fn() -> Client) -> Workload {
        let (ledger, stop, reads) = (new_ledger(), Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let writers =
            (0..load.writers).map(|w| tokio::spawn(writer(load, w, client(), ledger.clone(), stop.clone()))).collect();
        let readers = (0..readers)
            .map(|i| tokio::spawn(reader(load, seed ^ i as u64, client(), ledger.clone(), stop.clone(), reads.clone())))
            .collect();
        Workload { ledger, stop, writers, readers, reads }
    }

    /// Stops the load; returns (writes acknowledged, reads checked).
    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut acks = 0;
        for w in self.writers {
            acks += w.await.expect("writer");
        }
        for r in self.readers {
            r.await.expect("reader");
        }
        (acks, self.reads.load(Ordering::Relaxed))
    }
}

/// Checks one read of pair (r, v) against what was known before it was
/// sent: not older than the acknowledged version, exactly some attempt's
/// value, and that attempt was sent.
pub fn check_read(load: Load, r: usize, v: usize, before: &Known, version: u64, bytes: &[u8]) {
    let attempt = load
        .attempt_of(r, v, bytes)
        .unwrap_or_else(|| panic!("res-{r}/var-{v}: version {version} holds a corrupt value ({} bytes)", bytes.len()));
    let Some((acked_version, acked_attempt)) = before.acked else { return };
    assert!(version >= acked_version, "res-{r}/var-{v}: read version {version} < acknowledged {acked_version}");
    if version == acked_version {
        assert_eq!(attempt, acked_attempt, "res-{r}/var-{v}: the acknowledged version holds another value");
    } else {
        assert!(attempt > acked_attempt, "res-{r}/var-{v}: version {version} holds older attempt {attempt}");
    }
}

/// Reads every acknowledged pair (retrying for up to 30 s each) and checks
/// it: zero lost, zero corrupt. Returns the pairs checked.
pub async fn verify(load: Load, client: &Client, ledger: &Ledger) -> usize {
    let snapshot = ledger.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut checked = 0;
    for ((r, v), k) in snapshot {
        if k.acked.is_none() {
            continue;
        }
        let got = eventually(Duration::from_secs(30), || {
            let client = client.clone();
            async move { Ok(client.get(&Load::resource(r), &format!("var-{v}")).await?) }
        })
        .await
        .unwrap_or_else(|e| panic!("res-{r}/var-{v}: acknowledged write unreadable: {e:#}"));
        check_read(load, r, v, &k, got.version, &got.value);
        let attempt = load.attempt_of(r, v, &got.value).unwrap_or(0);
        assert!(attempt <= k.attempted, "res-{r}/var-{v}: attempt {attempt} was never sent");
        checked += 1;
    }
    checked
}
