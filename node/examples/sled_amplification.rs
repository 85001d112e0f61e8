//! Write and space amplification of the shard store on sled, without
//! network or Raft: writes `GIB` GiB of 64 KiB chunks as shards of 8 MiB
//! blobs (the key layout of `blob::shard_store`), syncing after each blob,
//! then overwrites and deletes (churn), and reports the bytes the process
//! wrote to disk and the data directory's size against the live bytes.
//!   cargo run --release -p shadowstore-node --example sled_amplification -- DIR [MIB] [ROUNDS]

use shadowstore_base::ids::GroupId;
use std::time::Instant;

use shadowstore_node::blob::shard_store::ShardStore;
use shadowstore_node::storage::StorageEngine;
use shadowstore_node::storage::sled_engine::SledEngine;

fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("write_bytes:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "/tmp/sled-amp".into()));
    let mib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let rounds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let _ = std::fs::remove_dir_all(&dir);
    let cache_mib: u64 = std::env::var("CACHE_MIB").ok().and_then(|s| s.parse().ok()).unwrap_or(256);
    let engine = SledEngine::open(&dir, cache_mib << 20).expect("open");
    let store = ShardStore::new(engine.clone());
    // Knobs for experiments: chunk size and blobs per sync.
    let chunk_kib: usize = std::env::var("CHUNK_KIB").ok().and_then(|s| s.parse().ok()).unwrap_or(48);
    let blobs_per_sync: u64 = std::env::var("BLOBS_PER_SYNC").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let chunk = vec![0xabu8; chunk_kib * 1024];
    let blob_chunks = (8 * 1024 / chunk_kib) as u32; // 8 MiB per blob shard
    let blobs = mib / 8;
    let w0 = written_bytes();
    let t0 = Instant::now();
    let mut live = 0u64;
    for round in 0..rounds {
        // `INTERLEAVE` blobs are written at once, their chunks interleaved
        // (as concurrent puts do).
        let interleave: u64 = std::env::var("INTERLEAVE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        for first in (0..blobs).step_by(interleave as usize) {
            let group: Vec<u64> = (first..(first + interleave).min(blobs)).collect();
            for b in &group {
                store.note_shard(GroupId::new(1), round * 1_000_000 + b, 0, 0).unwrap();
            }
            for c in (0..blob_chunks).step_by(8) {
                for b in &group {
                    let writes = (c..c + 8).map(|i| (i / 8, (i % 8) as u16, chunk.clone())).collect();
                    store.put_chunks(GroupId::new(1), round * 1_000_000 + b, 0, writes).unwrap();
                }
            }
            for b in &group {
                if b % blobs_per_sync == 0 {
                    engine.clone().sync().await.unwrap();
                }
                if round > 0 {
                    // The previous round's version of this blob is superseded.
                    store.delete_shard(GroupId::new(1), (round - 1) * 1_000_000 + b, 0).unwrap();
                }
            }
        }
        live = blobs * blob_chunks as u64 * chunk.len() as u64;
        println!(
            "round {round}: wrote {} MiB of chunks; process wrote {} MiB to disk so far; data dir {} MiB; {:.1} s",
            (round + 1) * mib,
            (written_bytes() - w0) >> 20,
            shadowstore_node::storage::compact::dir_bytes(&dir) >> 20,
            t0.elapsed().as_secs_f64()
        );
    }
    engine.clone().sync().await.unwrap();
    let settle_s: u64 = std::env::var("SETTLE_S").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    for t in (0..settle_s).step_by(5) {
        println!("  after {t} s idle: data dir {} MiB", shadowstore_node::storage::compact::dir_bytes(&dir) >> 20);
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    let logical = rounds * mib << 20;
    let disk_written = written_bytes() - w0;
    println!(
        "write amplification {:.2} (disk bytes written / chunk bytes written); space {:.2} (data dir / live chunk bytes, {} MiB live)",
        disk_written as f64 / logical as f64,
        shadowstore_node::storage::compact::dir_bytes(&dir) as f64 / live as f64,
        live >> 20
    );
}
