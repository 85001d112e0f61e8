//! The CI seed sweep: 200 seeds of the full fault model (crashes with torn
//! writes, disk loss, partitions, leader isolation, message drop, delay,
//! duplication and reordering, clock skew) must all pass every checker.
//! A failure prints the seeds and the command that replays each.

use std::process::Command;

const SEEDS: u64 = 200;

#[test]
fn two_hundred_seeds_pass_every_checker() {
    let out = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["sweep", "--seeds", &format!("0..{SEEDS}")])
        .output()
        .expect("sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout.lines().last().unwrap_or_default();
    println!("{summary}");
    assert!(summary.starts_with(&format!("{SEEDS} seeds in")), "the sweep did not run {SEEDS} seeds: {summary}");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.contains("FAILED")).collect();
    let replays: Vec<&str> = stderr.lines().filter(|l| l.starts_with("reproduce:")).collect();
    assert!(out.status.success(), "failing seeds:\n{}\n{}", failures.join("\n"), replays.join("\n"));
}
