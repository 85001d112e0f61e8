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

/// Encodes workload value `value` as `len` stored bytes (at least 12): the
/// id, a filler derived from it, and a crc32 of all that, so any corrupted
/// or torn value is recognised.
pub fn encode_value(value: u64, len: usize) -> Vec<u8> {
    assert!(len >= 12, "a value holds at least its id and crc");
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&value.to_be_bytes());
    b.extend((0..len - 12).map(|i| (value as u8).wrapping_add(i as u8)));
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

/// The id in `bytes`, or `None` if they are not a value the workload wrote.
pub fn decode_value(bytes: &[u8]) -> Option<u64> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if body.len() < 8 || crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().ok()?) {
        return None;
    }
    Some(u64::from_be_bytes(body[..8].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_corruption_is_recognised() {
        for len in [12, 100, 80 * 1024] {
            let mut b = encode_value(42, len);
            assert_eq!(b.len(), len);
            assert_eq!(decode_value(&b), Some(42));
            let last = b.len() / 2;
            b[last] ^= 0x10;
            assert_eq!(decode_value(&b), None, "a flipped bit in a {len}-byte value");
        }
        assert_eq!(decode_value(&encode_value(7, 100)[..99]), None, "a torn value");
        assert_eq!(decode_value(b"short"), None);
    }
}
