//! The checkers bite: with a planted bug switched on (followers answer
//! linearizable reads without a read index), a short sweep must fail with a
//! linearizability violation, and print the command that replays it.

use std::process::Command;

/// The bug must be caught within this many seeds (measured: see
/// docs/TESTING.md).
const SEEDS_TO_CATCH: u64 = 3;

#[test]
fn stale_follower_reads_are_caught_by_the_linearizability_checker() {
    let out = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["sweep", "--seeds", &format!("0..{SEEDS_TO_CATCH}"), "--planted-bug", "stale-follower-reads"])
        .output()
        .expect("sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a sweep with stale follower reads passed:\n{stdout}");
    let caught: Vec<&str> = stderr.lines().filter(|l| l.contains("failed: not linearizable")).collect();
    assert!(!caught.is_empty(), "no seed failed linearizability:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("--planted-bug stale-follower-reads"),
        "the replay command must name the planted bug:\n{stderr}"
    );
}

#[test]
fn an_unknown_planted_bug_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["run", "--seed", "1", "--planted-bug", "no-such-bug"])
        .output()
        .expect("sim runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no planted bug called \"no-such-bug\""));
}
