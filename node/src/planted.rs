//! Bugs planted on purpose, to prove the simulator's checkers catch them.
//!
//! Compiled only with the `planted-bugs` feature, which only the `sim`
//! crate enables; each switch is off unless a simulator run turns it on
//! (`sim run --planted-bug NAME`, `sim/tests/planted_bug.rs`).

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

/// A follower answers linearizable reads from its own state without asking
/// the leader for a read index: it can return a value older than a write
/// that was already acknowledged.
static STALE_FOLLOWER_READS: AtomicBool = AtomicBool::new(false);

/// A restarted leader takes its leadership back in its old term (openraft's
/// leader restore) and answers read-index reads from a commit pointer that
/// was not synced, so older than what it acknowledged before the crash.
/// This was a real bug, found by the simulator (see raft::config).
static RESTORED_LEADER_READS: AtomicBool = AtomicBool::new(false);

/// Raft records (log parts, vote, committed and purge records, snapshot
/// manifests) are read without checking their checksums, so a rotted log
/// entry is applied and served as if it were what the leader wrote.
static UNCHECKED_RAFT_RECORDS: AtomicBool = AtomicBool::new(false);

/// An erasure-coded write is acknowledged once k holders stored their
/// shards, in the group's code whatever holders are down, without asking
/// the holders again before the manifest commits: one more loss after the
/// acknowledgement can leave fewer than k shards. This was a real bug,
/// found by a wide simulator sweep (seeds 10107, 10258, 10751, 10922).
static BLOB_ACKS_WITHOUT_MARGIN: AtomicBool = AtomicBool::new(false);

/// The planted bugs, by the name the simulator's command line uses.
pub const NAMES: &[&str] =
    &["stale-follower-reads", "restored-leader-reads", "unchecked-raft-records", "blob-acks-without-margin"];

/// Turns the bug called `name` on or off; false if there is no such bug.
pub fn set(name: &str, on: bool) -> bool {
    match name {
        "stale-follower-reads" => STALE_FOLLOWER_READS.store(on, Ordering::Relaxed),
        "restored-leader-reads" => RESTORED_LEADER_READS.store(on, Ordering::Relaxed),
        "unchecked-raft-records" => UNCHECKED_RAFT_RECORDS.store(on, Ordering::Relaxed),
        "blob-acks-without-margin" => BLOB_ACKS_WITHOUT_MARGIN.store(on, Ordering::Relaxed),
        _ => return false,
    }
    true
}

pub(crate) fn stale_follower_reads() -> bool {
    STALE_FOLLOWER_READS.load(Ordering::Relaxed)
}

pub(crate) fn restored_leader_reads() -> bool {
    RESTORED_LEADER_READS.load(Ordering::Relaxed)
}

pub(crate) fn unchecked_raft_records() -> bool {
    UNCHECKED_RAFT_RECORDS.load(Ordering::Relaxed)
}

pub(crate) fn blob_acks_without_margin() -> bool {
    BLOB_ACKS_WITHOUT_MARGIN.load(Ordering::Relaxed)
}
