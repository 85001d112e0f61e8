//! Measures the storage engine's group-commit primitive in isolation: write
//! a batch of log-sized values, then `sync` (sled flush + fdatasync), and
//! report the latency distribution. Usage:
//!   cargo run --release -p shadowstore-node --example sync_latency -- [DIR] [BATCH] [ROUNDS]

use std::time::Instant;

use shadowstore_node::storage::StorageEngine;
use shadowstore_node::storage::Tree;
use shadowstore_node::storage::WriteBatch;
use shadowstore_node::storage::sled_engine::SledEngine;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).cloned().unwrap_or_else(|| "/tmp/sync-latency".into());
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(500);
    let _ = std::fs::remove_dir_all(&dir);
    let engine = SledEngine::open(std::path::Path::new(&dir), 64 << 20).expect("open");
    let mut lat = Vec::with_capacity(rounds);
    let mut key = 0u64;
    for _ in 0..rounds {
        let mut b = WriteBatch::new(Tree::Log);
        for _ in 0..batch {
            key += 1;
            b.put(key.to_be_bytes().to_vec(), vec![7u8; 300]);
        }
        engine.write(b).expect("write");
        let t0 = Instant::now();
        engine.clone().sync().await.expect("sync");
        lat.push(t0.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    println!(
        "sync after {batch} x 300 B: p50 {} us, p90 {} us, p99 {} us, max {} us ({} rounds)",
        p(0.5),
        p(0.9),
        p(0.99),
        lat[lat.len() - 1],
        rounds
    );
}
