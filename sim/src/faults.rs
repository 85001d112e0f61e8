//! The fault schedule of a run, drawn entirely from its seed.

use rand::Rng;
use rand::rngs::SmallRng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Power loss: the process stops and unsynced writes are lost, except
    /// `torn_batches` pending batches that reached the disk; restarts with
    /// its disk after `down_ms`.
    Crash { node: usize, down_ms: u64, torn_batches: usize },
    /// The node's disk is lost; it rejoins as a new node after `down_ms`.
    WipeDisk { node: usize, down_ms: u64 },
    /// The node cannot reach anyone, nor anyone it.
    Isolate { node: usize, duration_ms: u64 },
    /// Messages from `from` to `to` are lost; the other direction works.
    OneWay { from: usize, to: usize, duration_ms: u64 },
    /// Isolates whichever node leads resource group `nth` at that moment.
    IsolateLeader { nth: usize, duration_ms: u64 },
    /// Bit rot: one bit flips in one erasure-coded shard chunk on `node`'s
    /// disk (the `pick`-th chunk it holds, modulo their number). Checksums
    /// must catch it: never served, repaired by the scrubber.
    RotShard { node: usize, pick: usize, bit: usize },
    /// Bit rot beneath the Raft layer: one bit flips in one record of a
    /// resource group's Raft log, Raft state or snapshot on `node`'s disk
    /// (the `pick`-th such record, modulo their number). Checksums must
    /// catch it when the record is read: the replica is quarantined and
    /// replaced under a new replica id, never served from.
    RotRaft { node: usize, pick: usize, bit: usize },
    /// Crashes whichever node leads resource group `nth` at that moment
    /// (as `Crash`).
    CrashLeader { nth: usize, down_ms: u64, torn_batches: usize },
}

#[derive(Clone, Debug)]
pub struct Scheduled {
    pub at_ms: u64,
    pub fault: Fault,
}

/// Faults between `start_ms` and `end_ms`; every fault has healed by
/// `end_ms`.
pub fn schedule(rng: &mut SmallRng, nodes: usize, start_ms: u64, end_ms: u64) -> Vec<Scheduled> {
    let mut out = Vec::new();
    let mut t = start_ms;
    loop {
        t += rng.random_range(500..3_000);
        let duration_ms = rng.random_range(300..4_000);
        if t + duration_ms >= end_ms {
            break;
        }
        let node = rng.random_range(0..nodes);
        let fault = match rng.random_range(0..100) {
            0..22 => Fault::Crash { node, down_ms: duration_ms, torn_batches: rng.random_range(0..3) },
            22..27 => Fault::RotShard { node, pick: rng.random_range(0..1 << 20), bit: rng.random_range(0..1 << 20) },
            27..32 => Fault::RotRaft { node, pick: rng.random_range(0..1 << 20), bit: rng.random_range(0..1 << 20) },
            32..38 if nodes >= 4 => Fault::WipeDisk { node, down_ms: duration_ms },
            32..55 => Fault::Isolate { node, duration_ms },
            55..75 => {
                let to = (node + rng.random_range(1..nodes)) % nodes;
                Fault::OneWay { from: node, to, duration_ms }
            }
            75..88 => Fault::IsolateLeader { nth: rng.random_range(0..4), duration_ms },
            _ => Fault::CrashLeader {
                nth: rng.random_range(0..4),
                down_ms: duration_ms,
                torn_batches: rng.random_range(0..3),
            },
        };
        out.push(Scheduled { at_ms: t, fault });
    }
    out
}
