//! What clients did and saw: one record per operation, with its invocation
//! and completion times in simulated milliseconds. An operation whose
//! outcome the client could not learn (deadline passed after it may have
//! reached a node) is indeterminate: it may or may not have taken effect.

/// A key: (resource index, variant index).
pub type Key = (u8, u8);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Write `value` (unique per run); `if_version`: `Some(0)` only if
    /// absent, `Some(v)` only if the current version is `v`.
    Put {
        value: u64,
        if_version: Option<u64>,
    },
    Get,
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A write applied, making `version`.
    Written { version: u64 },
    /// A get saw `value` at `version`.
    Read { value: u64, version: u64 },
    /// The variant did not exist (get, delete).
    NotFound,
    /// A conditional put found another version.
    Mismatch,
    /// Unknown whether it applied.
    Indeterminate,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Op {
    pub client: u32,
    pub key: Key,
    pub kind: OpKind,
    pub invoke_ms: u64,
    /// `None` for indeterminate operations.
    pub complete_ms: Option<u64>,
    pub outcome: Outcome,
    /// For a get: the node that answered and its applied index then
    /// (diagnostics only; the checkers ignore it).
    pub served_by: Option<(u64, u64)>,
}

/// Encodes a workload value as stored bytes: the id and its crc32, so a
/// corrupted value is recognised.
pub fn encode_value(value: u64) -> Vec<u8> {
    let mut b = value.to_be_bytes().to_vec();
    b.extend_from_slice(&crc32fast::hash(&value.to_be_bytes()).to_be_bytes());
    b
}

/// The id in `bytes`, or `None` if they are not a value the workload wrote.
pub fn decode_value(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != 12 {
        return None;
    }
    let id = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    let crc = u32::from_be_bytes(bytes[8..].try_into().ok()?);
    (crc32fast::hash(&bytes[..8]) == crc).then_some(id)
}
