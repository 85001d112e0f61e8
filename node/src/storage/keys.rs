//! Key layout of every tree. All multi-byte integers are big-endian so that
//! key order is numeric order.
//!
//! | tree        | key                                   | value                     |
//! |-------------|---------------------------------------|---------------------------|
//! | raft_log    | group(8) index(8) part(2)             | part of postcard `Entry`  |
//! | raft_state  | group(8) b'v'                         | postcard `Vote`           |
//! | raft_state  | group(8) b'c'                         | postcard `Option<LogId>`  |
//! | raft_state  | group(8) b'p'                         | postcard `LogId` (purged) |
//! | snapshot    | group(8) b'M'                         | postcard `SnapshotManifest` |
//! | snapshot    | group(8) b'C' snapshot_id(8) chunk(4) | raw snapshot bytes        |
//! | local       | b"format"                             | text: format of each record family (`format`) |
//! | local       | b"identity"                           | postcard `NodeIdentity`   |
//! | local       | b"replica/" group(8)                  | postcard `LocalReplica`   |
//! | local       | b"retired/" group(8) replica(8)       | empty: shards kept for handoff |
//! | local       | b"demand/" ...                        | see `demand::store`       |

use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::ReplicaId;

/// Key of part `part` of the log entry at `index`. An entry larger than
/// one stored value is split into consecutive parts.
pub fn log_entry_part(group: GroupId, index: u64, part: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&group.get().to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k.extend_from_slice(&part.to_be_bytes());
    k
}

/// The first key of the entry at `index` (its part 0); every key of entries
/// before `index` sorts below it.
pub fn log_entry(group: GroupId, index: u64) -> Vec<u8> {
    log_entry_part(group, index, 0)
}

/// `[start, end)` covering log indexes `[from, to)` of `group`; `to = None`
/// means to the end of the group's log.
pub fn log_range(group: GroupId, from: u64, to: Option<u64>) -> (Vec<u8>, Vec<u8>) {
    let start = log_entry(group, from);
    let end = match to {
        Some(to) => log_entry(group, to),
        None => group_end(group),
    };
    (start, end)
}

pub fn log_index_of(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

pub fn log_part_of(key: &[u8]) -> Option<u16> {
    let b: [u8; 2] = key.get(16..18)?.try_into().ok()?;
    Some(u16::from_be_bytes(b))
}

/// The first key after every key of `group` (in any group-prefixed tree).
pub fn group_end(group: GroupId) -> Vec<u8> {
    match group.get().checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 9],
    }
}

/// The group a key of a group-prefixed tree (raft_log, raft_state,
/// snapshot) belongs to.
pub fn group_of(key: &[u8]) -> Option<GroupId> {
    let b: [u8; 8] = key.get(..8)?.try_into().ok()?;
    Some(GroupId::new(u64::from_be_bytes(b)))
}

pub fn group_start(group: GroupId) -> Vec<u8> {
    group.get().to_be_bytes().to_vec()
}

pub fn raft_state(group: GroupId, tag: u8) -> Vec<u8> {
    let mut k = group.get().to_be_bytes().to_vec();
    k.push(tag);
    k
}

pub const VOTE_TAG: u8 = b'v';
pub const COMMITTED_TAG: u8 = b'c';
pub const PURGED_TAG: u8 = b'p';

pub fn snapshot_manifest(group: GroupId) -> Vec<u8> {
    raft_state(group, b'M')
}

pub fn snapshot_chunk(group: GroupId, snapshot_id: u64, chunk: u32) -> Vec<u8> {
    let mut k = raft_state(group, b'C');
    k.extend_from_slice(&snapshot_id.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// `[start, end)` covering every chunk of every snapshot of `group`.
pub fn snapshot_chunks_all(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    (raft_state(group, b'C'), raft_state(group, b'D'))
}

/// `[start, end)` covering every chunk of one snapshot.
pub fn snapshot_chunks_of(group: GroupId, snapshot_id: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = raft_state(group, b'C');
    start.extend_from_slice(&snapshot_id.to_be_bytes());
    let mut end = raft_state(group, b'C');
    match snapshot_id.checked_add(1) {
        Some(next) => end.extend_from_slice(&next.to_be_bytes()),
        None => end = raft_state(group, b'D'),
    }
    (start, end)
}

pub const IDENTITY_KEY: &[u8] = b"identity";
/// The cluster's id as text (32 hex digits); absent in directories of
/// clusters bootstrapped before cluster ids (old binaries ignore it).
pub const CLUSTER_ID_KEY: &[u8] = b"cluster_id";
pub const REPLICA_PREFIX: &[u8] = b"replica/";

pub fn local_replica(group: GroupId) -> Vec<u8> {
    let mut k = REPLICA_PREFIX.to_vec();
    k.extend_from_slice(&group.get().to_be_bytes());
    k
}

pub fn local_replicas_range() -> (Vec<u8>, Vec<u8>) {
    (REPLICA_PREFIX.to_vec(), b"replica0".to_vec())
}

pub const RETIRED_PREFIX: &[u8] = b"retired/";

/// A removed replica whose shards this node keeps until they are handed
/// off (`blob::handoff`).
pub fn retired_replica(group: GroupId, replica: ReplicaId) -> Vec<u8> {
    let mut k = RETIRED_PREFIX.to_vec();
    k.extend_from_slice(&group.get().to_be_bytes());
    k.extend_from_slice(&replica.get().to_be_bytes());
    k
}

pub fn retired_replicas_range() -> (Vec<u8>, Vec<u8>) {
    (RETIRED_PREFIX.to_vec(), b"retired0".to_vec())
}

/// (group, replica) of a `retired_replica` key.
pub fn retired_replica_of(key: &[u8]) -> Option<(GroupId, ReplicaId)> {
    let rest = key.strip_prefix(RETIRED_PREFIX)?;
    let group = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let replica = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
    Some((GroupId::new(group), ReplicaId::new(replica)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_group_then_index() {
        let mut keys = vec![
            log_entry(GroupId::new(2), 1),
            log_entry(GroupId::new(1), 300),
            log_entry_part(GroupId::new(1), 2, 1),
            log_entry(GroupId::new(1), 2),
            log_entry(GroupId::new(0), u64::MAX),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                log_entry(GroupId::new(0), u64::MAX),
                log_entry(GroupId::new(1), 2),
                log_entry_part(GroupId::new(1), 2, 1),
                log_entry(GroupId::new(1), 300),
                log_entry(GroupId::new(2), 1)
            ]
        );
        assert!(
            log_entry_part(GroupId::new(1), 2, u16::MAX) < log_entry(GroupId::new(1), 3),
            "all parts of an entry precede the next entry"
        );
        assert_eq!(log_part_of(&log_entry_part(GroupId::new(1), 2, 7)), Some(7));
        let (s, e) = log_range(GroupId::new(1), 0, None);
        assert!(
            s <= log_entry(GroupId::new(1), 0)
                && log_entry(GroupId::new(1), u64::MAX) < e
                && log_entry(GroupId::new(2), 0) >= e
        );
        assert_eq!(log_index_of(&log_entry(GroupId::new(7), 42)), Some(42));
        assert_eq!(group_of(&log_entry(GroupId::new(7), 42)), Some(GroupId::new(7)));
        assert_eq!(group_of(&raft_state(GroupId::new(9), VOTE_TAG)), Some(GroupId::new(9)));
        assert_eq!(group_of(&snapshot_chunk(GroupId::new(5), 1, 2)), Some(GroupId::new(5)));
        assert_eq!(group_of(&[1, 2, 3]), None);
    }

    #[test]
    fn snapshot_chunk_ranges_do_not_overlap_other_keys() {
        let (s, e) = snapshot_chunks_of(GroupId::new(3), 9);
        let inside = snapshot_chunk(GroupId::new(3), 9, 0);
        let next = snapshot_chunk(GroupId::new(3), 10, 0);
        assert!(s <= inside && inside < e && next >= e);
        let (as_, ae) = snapshot_chunks_all(GroupId::new(3));
        assert!(snapshot_manifest(GroupId::new(3)) < as_ || snapshot_manifest(GroupId::new(3)) >= ae);
        assert!(as_ <= inside && inside < ae);
    }
}
