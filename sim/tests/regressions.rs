//! Every node bug the simulator found stays fixed. Each one is kept as a
//! planted switch that brings the old behaviour back (node/src/planted.rs):
//! the test finds seeds where the checkers catch it with the switch on,
//! then replays those seeds with the switch off, where they must pass.
//!
//! Finding a seed is the slow part: `blob-acks-without-margin` reproduces
//! in about 1 seed of 400. So the seeds that caught each bug when this
//! file was last tuned are run first, one `sim run` each; only if none of
//! them catches it any more (any change to the node's tasks moves the
//! schedules) does the test search seeds in chunks, and it prints the seeds
//! it found so they can replace the stale ones. Either way a seed counts
//! only if it fails with the switch on in this very run.

use std::process::Command;

/// Seeds searched for a reproduction of an old bug when the remembered
/// seeds no longer catch it, in chunks, stopping at the first chunk that
/// reproduces it (the measured rates are in docs/TESTING.md).
/// `blob-acks-without-margin` reproduced in about 3 % of seeds before the
/// hardening of issue 17 and in 1 of 400 after it.
const SEARCH_CHUNKS: [(u64, u64); 5] = [(0, 40), (40, 80), (80, 160), (160, 240), (240, 400)];
/// Failing seeds replayed without the bug.
const REPLAYS_MAX: usize = 3;

/// Runs `sim` with `args`; returns (success, stdout).
fn sim(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sim")).args(args).output().expect("sim runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The seeds a sweep reports as failed (its last line ends "failed [a, b]").
fn failed_seeds(stdout: &str) -> Vec<u64> {
    let summary = stdout.lines().last().unwrap_or_default();
    let list = summary.rsplit_once('[').and_then(|(_, l)| l.strip_suffix(']')).unwrap_or_default();
    list.split(", ").filter_map(|s| s.parse().ok()).collect()
}

/// Whether seed `seed` fails with `bug` planted.
fn caught_at(bug: &str, seed: u64) -> bool {
    !sim(&["run", "--seed", &seed.to_string(), "--planted-bug", bug]).0
}

/// Seeds that catch `bug`: the remembered ones that still do, else the
/// first chunk of the search that does.
fn seeds_catching(bug: &str, remembered: &[u64]) -> Vec<u64> {
    let still: Vec<u64> = remembered.iter().copied().filter(|s| caught_at(bug, *s)).collect();
    if !still.is_empty() {
        println!("{bug}: caught by remembered seeds {still:?}");
        return still;
    }
    let mut out = String::new();
    for (a, b) in SEARCH_CHUNKS {
        let seeds = format!("{a}..{b}");
        (_, out) = sim(&["sweep", "--seeds", &seeds, "--planted-bug", bug]);
        let failed = failed_seeds(&out);
        if !failed.is_empty() {
            println!("{bug}: remembered seeds {remembered:?} no longer catch it; seeds {failed:?} do (update them)");
            return failed;
        }
    }
    let searched = SEARCH_CHUNKS[SEARCH_CHUNKS.len() - 1].1;
    panic!("{bug}: no seed in 0..{searched} reproduces the old bug any more:\n{out}");
}

fn stays_fixed(bug: &str, remembered: &[u64]) {
    for seed in seeds_catching(bug, remembered).iter().take(REPLAYS_MAX) {
        let (ok, out) = sim(&["run", "--seed", &seed.to_string()]);
        assert!(ok, "{bug}: seed {seed} fails with the fix in place:\n{out}");
    }
}

/// Simulator seed 3 (first sweep): a leader restarted in its old term
/// answered read-index reads from a stale commit pointer. Remembered: the
/// seeds of 0..400 that caught it on 2026-12-04 (none below 80).
#[test]
fn restored_leader_reads_stay_fixed() {
    stays_fixed("restored-leader-reads", &[189, 214, 294]);
}

/// Seeds 10107, 10258, 10751 and 10922 (a wide sweep): an erasure-coded
/// blob acknowledged with only k holders lost a shard to one more failure
/// (a quarantine or a lost disk) and answered DATA_LOSS. Remembered: the
/// first seeds of 0..400 that caught it on 2026-12-04 (of 15, 25, 117, 235
/// and 270).
#[test]
fn blob_acks_without_margin_stay_fixed() {
    stays_fixed("blob-acks-without-margin", &[15, 25, 117]);
}

/// The four seeds that found it, replayed as they are now (their schedules
/// change with the code, so this keeps the scenarios, not the exact runs).
#[test]
fn the_seeds_that_lost_acknowledged_blobs_pass() {
    for seed in [10107u64, 10258, 10751, 10922] {
        let (ok, out) = sim(&["run", "--seed", &seed.to_string()]);
        assert!(ok, "seed {seed} fails:\n{out}");
    }
}

#[test]
fn failed_seeds_are_parsed_from_the_summary() {
    assert_eq!(failed_seeds("x\n200 seeds in 9 s: 1 seeds/min; 2 failed [3, 70]"), vec![3, 70]);
    assert!(failed_seeds("200 seeds in 9 s: 1 seeds/min; 0 failed []").is_empty());
}
