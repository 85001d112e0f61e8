//! The fuzz smoke run of CI: every fuzz entry point (`shadowstore_tests::
//! fuzzing`) on its seeds and on deterministic mutations of them. The long,
//! coverage-guided runs use cargo-fuzz (`tests/fuzz`, docs/TESTING.md);
//! a crash either finds becomes a seed here.

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use shadowstore_tests::fuzzing;

/// Mutations run per entry point (the handler target: fewer, each is a
/// gRPC call).
const MUTATIONS_PER_TARGET: usize = 4_000;
const HANDLER_CALLS: usize = 600;

/// `seed` with a few random byte flips, insertions, deletions or splices.
fn mutate(rng: &mut SmallRng, seed: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        match rng.random_range(0..5) {
            0 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..=v.len());
                v.insert(i, rng.random());
            }
            2 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v.remove(i);
            }
            3 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] = *[0u8, 0x7f, 0x80, 0xff].get(rng.random_range(0..4)).unwrap_or(&0);
            }
            _ => {
                let other = &others[rng.random_range(0..others.len())];
                let at = rng.random_range(0..=v.len());
                let from = rng.random_range(0..=other.len());
                v.splice(at..at, other[from..].iter().copied().take(64));
            }
        }
    }
    v
}

fn run(name: &str, seeds: &[Vec<u8>], runs: usize, mut target: impl FnMut(&[u8])) {
    let mut rng = SmallRng::seed_from_u64(0x5eed ^ name.len() as u64);
    for s in seeds {
        target(s);
    }
    for _ in 0..runs {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let input = if rng.random_range(0..8) == 0 {
            (0..rng.random_range(0..256)).map(|_| rng.random()).collect()
        } else {
            mutate(&mut rng, seed, seeds)
        };
        target(&input);
    }
}

/// The target's seeds, also written to `target/fuzz-seeds/<target>` for
/// cargo-fuzz runs to start from (docs/TESTING.md).
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let seeds = fuzzing::seeds(target);
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-seeds").join(target);
    if std::fs::create_dir_all(&dir).is_ok() {
        for (i, s) in seeds.iter().enumerate() {
            let _ = std::fs::write(dir.join(format!("seed-{i}")), s);
        }
    }
    seeds
}

#[test]
fn stored_records_and_raft_messages() {
    run("stored_record", &corpus("stored_record"), MUTATIONS_PER_TARGET, fuzzing::stored_record);
}

#[test]
fn node_config() {
    run("config", &corpus("config"), MUTATIONS_PER_TARGET, fuzzing::config);
}

#[test]
fn demand_trace() {
    run("trace", &corpus("trace"), MUTATIONS_PER_TARGET, fuzzing::trace);
}

#[test]
fn every_method_lists_every_rpc() {
    let methods = fuzzing::methods();
    let find = |p: &str| methods.iter().find(|m| m.path == p).unwrap_or_else(|| panic!("{p} missing"));
    assert!(find("/shadowstore.v1.ShadowStore/PutStream").client_streaming);
    assert!(find("/shadowstore.v1.ShadowStore/GetStream").server_streaming);
    assert!(find("/shadowstore.peer.v1.Peer/RaftSnapshot").client_streaming);
    let m = find("/shadowstore.peer.v1.Peer/Join");
    assert!(!m.client_streaming && !m.server_streaming);
    assert!(methods.len() > 30, "{}", methods.len());
}

#[test]
fn request_handlers() {
    let handlers = fuzzing::Handlers::start();
    let n = fuzzing::methods().len();
    // Every method once with an empty body (all defaults) and once with
    // each seed, then mutations.
    let mut seeds = corpus("handlers");
    for m in 0..n {
        handlers.call(&[m as u8]);
        for s in seeds.clone() {
            let mut input = vec![m as u8];
            input.extend_from_slice(&s[1.min(s.len())..]);
            handlers.call(&input);
        }
    }
    seeds.push(vec![0]);
    run("handlers", &seeds, HANDLER_CALLS, |d| handlers.call(d));
    assert!(handlers.healthy(), "the node stopped serving during the fuzz run");
}
