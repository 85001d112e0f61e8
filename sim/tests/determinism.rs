//! The same seed replays the same run in separate processes (same trace
//! hash), and different seeds explore different runs.

use std::process::Command;

fn trace_hash(seed: u64) -> (String, bool) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_sim")).args(["run", "--seed", &seed.to_string()]).output().expect("sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default().to_string();
    let hash = line
        .split_whitespace()
        .skip_while(|w| *w != "trace")
        .nth(1)
        .unwrap_or_else(|| panic!("no trace hash in {line:?}; stderr: {}", String::from_utf8_lossy(&out.stderr)))
        .to_string();
    (hash, out.status.success())
}

#[test]
fn same_seed_same_trace_in_separate_processes() {
    let mut hashes = Vec::new();
    for seed in [1u64, 2, 4, 5, 6] {
        let (a, ok_a) = trace_hash(seed);
        let (b, ok_b) = trace_hash(seed);
        assert_eq!(a, b, "seed {seed} gave two different traces");
        assert_eq!(ok_a, ok_b, "seed {seed} passed once and failed once");
        hashes.push(a);
    }
    let mut distinct = hashes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), hashes.len(), "different seeds gave the same trace: {hashes:?}");
}
