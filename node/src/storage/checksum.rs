//! Checksums on the records a replica's Raft state is made of: every part
//! of a log entry, the vote, committed and purge records, and the snapshot
//! manifest (whose crc32 in turn covers the snapshot's chunks).
//!
//! A sealed value is the payload followed by a little-endian crc32 of the
//! key and the payload, so a value that rotted on the medium, or landed
//! under the wrong key, fails [`open`] with a typed [`Corrupt`] error
//! instead of decoding into something else. sled checks its own pages in
//! production; these checks sit above the storage seam, so they hold for
//! any engine and the simulator can rot bytes beneath them. A replica whose
//! records fail their checksums is quarantined and replaced (see
//! `group::registry`), never served from.

use std::io;

use super::Tree;

/// Bytes a seal adds to a value.
pub const TRAILER_BYTES: usize = 4;

/// A stored record failed its checksum.
#[derive(Debug, thiserror::Error)]
#[error("{tree} record {key} fails its checksum")]
pub struct Corrupt {
    pub tree: &'static str,
    pub key: String,
}

/// The `io::Error` reporting that the record under `key` in `tree` is
/// corrupt; [`is_corrupt`] recognises it.
pub fn corrupt(tree: Tree, key: &[u8]) -> io::Error {
    let key = key.iter().map(|b| format!("{b:02x}")).collect();
    io::Error::new(io::ErrorKind::InvalidData, Corrupt { tree: tree.name(), key })
}

/// Whether `e` (or the error it wraps) reports a corrupt record.
pub fn is_corrupt(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Corrupt>())
}

fn crc_of(key: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(payload);
    h.finalize()
}

/// `payload` with its checksum appended, to be stored under `key`.
pub fn seal(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + TRAILER_BYTES);
    v.extend_from_slice(payload);
    v.extend_from_slice(&crc_of(key, payload).to_le_bytes());
    v
}

/// The payload of a value read from `tree` under `key`, once its checksum
/// matches.
pub fn open(tree: Tree, key: &[u8], mut stored: Vec<u8>) -> io::Result<Vec<u8>> {
    let Some(payload_len) = stored.len().checked_sub(TRAILER_BYTES) else {
        return Err(corrupt(tree, key));
    };
    let mut trailer = [0u8; TRAILER_BYTES];
    trailer.copy_from_slice(&stored[payload_len..]);
    #[cfg(feature = "planted-bugs")]
    if crate::planted::unchecked_raft_records() {
        stored.truncate(payload_len);
        return Ok(stored);
    }
    if crc_of(key, &stored[..payload_len]) != u32::from_le_bytes(trailer) {
        return Err(corrupt(tree, key));
    }
    stored.truncate(payload_len);
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_single_bit_flip_is_detected_and_typed() {
        let key = b"group-7/index-3";
        let sealed = seal(key, b"an entry of the raft log");
        assert_eq!(open(Tree::Log, key, sealed.clone()).unwrap(), b"an entry of the raft log");
        for bit in 0..sealed.len() * 8 {
            let mut rotted = sealed.clone();
            rotted[bit / 8] ^= 1 << (bit % 8);
            let e = open(Tree::Log, key, rotted).expect_err("a flipped bit must fail the checksum");
            assert!(is_corrupt(&e), "bit {bit}: {e}");
        }
    }

    #[test]
    fn a_value_under_another_key_or_truncated_is_corrupt() {
        let sealed = seal(b"k1", b"v");
        assert!(is_corrupt(&open(Tree::RaftState, b"k2", sealed.clone()).unwrap_err()));
        assert!(is_corrupt(&open(Tree::RaftState, b"k1", sealed[..2].to_vec()).unwrap_err()));
        assert!(!is_corrupt(&io::Error::new(io::ErrorKind::InvalidData, "other")));
    }
}
