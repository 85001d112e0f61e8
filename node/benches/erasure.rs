//! Reed-Solomon encode and reconstruct of one stripe, beside a memcpy of the
//! same bytes (the floor any data path pays). Run with
//!   cargo bench -p shadowstore-node --bench erasure
//! Figures and the machine are recorded in docs/BENCHMARKS.md.

use std::hint::black_box;

use criterion::BenchmarkId;
use criterion::Criterion;
use criterion::Throughput;
use criterion::criterion_group;
use criterion::criterion_main;
use shadowstore_node::blob::erasure;

const STRIPE: usize = 1024 * 1024;

fn stripe() -> Vec<u8> {
    (0..STRIPE).map(|i| (i * 131 % 251) as u8).collect()
}

fn bench(c: &mut Criterion) {
    let data = stripe();
    let mut g = c.benchmark_group("stripe_1MiB");
    g.throughput(Throughput::Bytes(STRIPE as u64));
    g.bench_function("memcpy", |b| {
        let mut dst = vec![0u8; STRIPE];
        b.iter(|| {
            dst.copy_from_slice(black_box(&data));
            black_box(&dst);
        })
    });
    g.bench_function("crc32", |b| b.iter(|| black_box(crc32fast::hash(black_box(&data)))));
    for (k, m) in [(2u8, 1u8), (3, 2), (4, 2)] {
        let shard_len = STRIPE.div_ceil(k as usize);
        g.bench_with_input(BenchmarkId::new("encode", format!("{k}+{m}")), &(k, m), |b, &(k, m)| {
            b.iter(|| black_box(erasure::encode(black_box(&data), k, m, shard_len).unwrap()))
        });
        let shards = erasure::encode(&data, k, m, shard_len).unwrap();
        g.bench_with_input(
            BenchmarkId::new("reconstruct_lost_data_shard", format!("{k}+{m}")),
            &(k, m),
            |b, &(k, m)| {
                b.iter(|| {
                    let mut opt: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
                    opt[0] = None;
                    erasure::reconstruct(&mut opt, k, m).unwrap();
                    black_box(opt)
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("clone_shards_only", format!("{k}+{m}")), &(k, m), |b, _| {
            b.iter(|| {
                let opt: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
                black_box(opt)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
