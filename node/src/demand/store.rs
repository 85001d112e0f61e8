//! A meta voter's demand history on its own disk, so that a restart keeps
//! it (the leader's per-voter queue, `placement::share`, covers only the
//! time the voter was away).
//!
//! Two kinds of record in the node's `local` tree:
//! - *journal* records for each ingested batch of one node's minutes
//!   (several when large, written in one atomic batch): the values the
//!   minutes left in their slots, and the node's new watermark;
//! - a *pair* record per (resource, region): its rings, written by a
//!   snapshot every `SNAPSHOT_INTERVAL_MS`, after which the journal before
//!   the snapshot's start is deleted.
//!
//! Journal records set slots rather than add to them, so a snapshot can be
//! written pair by pair while minutes keep arriving: at load, replaying the
//! remaining journal over pairs written later changes nothing, and a
//! snapshot cut short by a crash leaves the journal whole. The history is
//! a cache of what the nodes reported: a record that does not decode is
//! skipped (and counted), never fatal. Writes are not synced on their own;
//! a crash loses what the engine had not flushed.
//!
//! | key                                  | value            |
//! |--------------------------------------|------------------|
//! | b"demand/j/" seq(8)                  | `JournalRecord`  |
//! | b"demand/m"                          | `StoredMarks`    |
//! | b"demand/p/" resource 0x00 region    | `StoredPair`     |

use std::io;

use serde::{Deserialize, Serialize};

use crate::storage::{StorageEngine, Tree, WriteBatch};
use shadowstore_base::codec::{decode, encode};
use shadowstore_base::ids::NodeId;
use shadowstore_placement::demand::history::{PairRecord, SlotValues};
use shadowstore_placement::demand::recorder::DemandKey;

/// How often a voter writes its pairs and trims the journal.
pub const SNAPSHOT_INTERVAL_MS: u64 = 10 * 60_000;
/// Pairs written in one batch of a snapshot (the state's lock is taken
/// once per batch).
pub const SNAPSHOT_PAIRS_PER_BATCH: usize = 500;
/// Bytes of slots in one journal record (bounded by an upper estimate of
/// their encoding), below the engine's `STORED_VALUE_BYTES_MAX`: a batch
/// with more is written as several records.
pub const JOURNAL_RECORD_SLOT_BYTES_MAX: usize = 48 * 1024;
/// An upper bound of one slot's encoding besides its key's strings
/// (string lengths, minute and slot indexes, values).
const SLOT_BYTES_OVERHEAD: usize = 40;

const JOURNAL_PREFIX: &[u8] = b"demand/j/";
const JOURNAL_END: &[u8] = b"demand/j0";
const MARKS_KEY: &[u8] = b"demand/m";
const PAIR_PREFIX: &[u8] = b"demand/p/";
const PAIR_END: &[u8] = b"demand/p0";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub node_id: NodeId,
    /// The node's minutes starting before this are in the history.
    pub ingested_before_ms: u64,
    pub slots: Vec<(DemandKey, SlotValues)>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredMarks {
    pub ingested_before_ms: Vec<(NodeId, u64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredPair {
    /// The first five-minute slot the pair was seen in.
    pub first_slot: u64,
    pub rings: PairRecord,
}

/// What a voter finds on its disk at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub pairs: Vec<(DemandKey, StoredPair)>,
    pub marks: StoredMarks,
    /// In sequence order.
    pub journal: Vec<(u64, JournalRecord)>,
    /// Records that did not decode.
    pub skipped: usize,
}

fn journal_key(seq: u64) -> Vec<u8> {
    let mut key = JOURNAL_PREFIX.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn pair_key(key: &DemandKey) -> Vec<u8> {
    let mut bytes = PAIR_PREFIX.to_vec();
    bytes.extend_from_slice(key.resource.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.region.as_bytes());
    bytes
}

fn key_of_pair(bytes: &[u8]) -> Option<DemandKey> {
    let rest = bytes.strip_prefix(PAIR_PREFIX)?;
    let split = rest.iter().position(|b| *b == 0)?;
    Some(DemandKey {
        resource: String::from_utf8(rest[..split].to_vec()).ok()?,
        region: String::from_utf8(rest[split + 1..].to_vec()).ok()?,
    })
}

pub fn load(engine: &dyn StorageEngine) -> io::Result<Loaded> {
    let mut loaded = Loaded::default();
    for (key, value) in engine.range(Tree::Local, PAIR_PREFIX, PAIR_END, usize::MAX)? {
        match (key_of_pair(&key), decode::<StoredPair>("demand pair", &value)) {
            (Some(pair), Ok(stored)) => loaded.pairs.push((pair, stored)),
            _ => loaded.skipped += 1,
        }
    }
    if let Some(value) = engine.get(Tree::Local, MARKS_KEY)? {
        match decode::<StoredMarks>("demand marks", &value) {
            Ok(marks) => loaded.marks = marks,
            Err(_) => loaded.skipped += 1,
        }
    }
    for (key, value) in engine.range(Tree::Local, JOURNAL_PREFIX, JOURNAL_END, usize::MAX)? {
        let seq = key.strip_prefix(JOURNAL_PREFIX).and_then(|s| <[u8; 8]>::try_from(s).ok()).map(u64::from_be_bytes);
        match (seq, decode::<JournalRecord>("demand journal", &value)) {
            (Some(seq), Ok(record)) => loaded.journal.push((seq, record)),
            _ => loaded.skipped += 1,
        }
    }
    Ok(loaded)
}

/// The journal records of one ingested batch of `node`'s minutes, each
/// within `JOURNAL_RECORD_SLOT_BYTES_MAX` (they are written together,
/// atomically, by [`append_journal`]). Only the last one carries the
/// node's new mark (`before_ms` → `after_ms`). A batch with no slot (every
/// minute outside the rings) is one empty record that moves the mark.
pub fn journal_records(
    node_id: NodeId,
    before_ms: u64,
    after_ms: u64,
    slots: Vec<(DemandKey, SlotValues)>,
) -> Vec<JournalRecord> {
    let mut records = vec![JournalRecord { node_id, ingested_before_ms: before_ms, slots: Vec::new() }];
    let mut bytes = 0;
    for slot in slots {
        let size = slot.0.resource.len() + slot.0.region.len() + SLOT_BYTES_OVERHEAD;
        let current = records.last_mut().expect("at least one record");
        if bytes + size > JOURNAL_RECORD_SLOT_BYTES_MAX && !current.slots.is_empty() {
            records.push(JournalRecord { node_id, ingested_before_ms: before_ms, slots: Vec::new() });
            bytes = 0;
        }
        bytes += size;
        records.last_mut().expect("at least one record").slots.push(slot);
    }
    records.last_mut().expect("at least one record").ingested_before_ms = after_ms;
    records
}

/// Writes `records` under sequence numbers from `first_seq`, in one
/// atomic batch: a crash keeps all of one ingest or none of it.
pub fn append_journal(engine: &dyn StorageEngine, first_seq: u64, records: &[JournalRecord]) -> io::Result<()> {
    let mut batch = WriteBatch::new(Tree::Local);
    for (seq, record) in (first_seq..).zip(records) {
        batch.put(journal_key(seq), encode("demand journal", record)?);
    }
    engine.write(batch)
}

pub fn write_pairs(engine: &dyn StorageEngine, pairs: &[(DemandKey, StoredPair)]) -> io::Result<()> {
    let mut batch = WriteBatch::new(Tree::Local);
    for (key, pair) in pairs {
        batch.put(pair_key(key), encode("demand pair", pair)?);
    }
    engine.write(batch)
}

/// Ends a snapshot: the marks, and the journal before `first_kept_seq`
/// deleted (every pair written since holds what those records set).
pub fn finish_snapshot(engine: &dyn StorageEngine, marks: &StoredMarks, first_kept_seq: u64) -> io::Result<()> {
    let mut batch = WriteBatch::new(Tree::Local);
    batch.put(MARKS_KEY.to_vec(), encode("demand marks", marks)?);
    batch.delete_range(journal_key(0), journal_key(first_kept_seq));
    engine.write(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_keys_round_trip_and_stay_inside_their_range() {
        let key = DemandKey { resource: "cat/a b".into(), region: "eu-west".into() };
        let bytes = pair_key(&key);
        assert_eq!(key_of_pair(&bytes), Some(key));
        assert!(PAIR_PREFIX <= bytes.as_slice() && bytes.as_slice() < PAIR_END);
        assert!(journal_key(0) >= JOURNAL_PREFIX.to_vec() && journal_key(u64::MAX).as_slice() < JOURNAL_END);
        assert!(MARKS_KEY < PAIR_PREFIX && (MARKS_KEY > JOURNAL_END));
    }

    #[test]
    fn journal_records_fit_the_engine_and_only_the_last_moves_the_mark() {
        let values = SlotValues {
            minute: u64::MAX,
            minute_reads: Some(u32::MAX),
            five_min: u64::MAX,
            five_min_code: Some(u16::MAX),
        };
        // Longest names the API accepts, so the estimate is tested where it is tight.
        let key = DemandKey {
            resource: "r".repeat(shadowstore_base::limits::RESOURCE_NAME_BYTES_MAX),
            region: "e".repeat(64),
        };
        let slots = vec![(key, values); 2_000];
        let records = journal_records(NodeId::new(3), 10, 20, slots);
        assert!(records.len() > 1);
        assert_eq!(records.iter().map(|r| r.slots.len()).sum::<usize>(), 2_000);
        for (index, record) in records.iter().enumerate() {
            let bytes = encode("demand journal", record).expect("encode").len();
            assert!(bytes <= shadowstore_base::limits::STORED_VALUE_BYTES_MAX, "record of {bytes} bytes");
            assert_eq!(record.ingested_before_ms, if index + 1 == records.len() { 20 } else { 10 });
        }
        let empty = journal_records(NodeId::new(3), 10, 20, Vec::new());
        assert_eq!(empty, vec![JournalRecord { node_id: NodeId::new(3), ingested_before_ms: 20, slots: Vec::new() }]);
    }
}
