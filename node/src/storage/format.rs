//! The on-disk format of a data directory, checked before anything else
//! reads it.
//!
//! Stored records are postcard-encoded, which is not self-describing: a
//! field added to `MetaState` or to a local record would make an older
//! directory decode into garbage or fail with a confusing error deep inside
//! a Raft group. So every data directory carries one `format` record in the
//! local tree naming the format of each *record family* it holds, and a
//! node opens a directory only if it knows every one of them:
//!
//! | family's format | written by | opened by this release |
//! |---|---|---|
//! | 0 (no `format` record) | shadowstore 0.1.0 up to commit `99d71f8` | yes, upgraded in place: the record is written, no byte changes |
//! | 1 | shadowstore 0.1.0 from `99d71f8` | yes, upgraded in place (see [`FAMILIES`]) |
//! | current ([`FAMILIES`]) | this release | yes |
//! | newer, or a family this release does not know | a newer release | refused, naming the family and both versions |
//!
//! The record is text (`family version` per line), readable whatever the
//! encodings do. Changing how a family is stored (a field added to a stored
//! struct, an enum variant inserted, a new key layout) means: bump that
//! family in [`FAMILIES`], teach [`open`] to upgrade the previous version
//! (in place at start-up when that is cheap and crash-safe, else refuse
//! with the command that upgrades), and update the pinned encodings in this
//! module's tests, which fail first when an encoding moves.

use std::collections::BTreeMap;

use crate::storage::SharedEngine;
use crate::storage::Tree;
use crate::storage::WriteBatch;

/// Key of the format record in the local tree.
pub const FORMAT_KEY: &[u8] = b"format";

/// Every record family a data directory holds, with the format version
/// this release writes.
pub const FAMILIES: [(&str, u32); 8] = [
    // Raft log entry parts: crc-sealed pieces of a postcard `Entry`.
    ("raft_log", 1),
    // Vote, committed and purged log ids, crc-sealed postcard.
    ("raft_state", 1),
    // Snapshot manifests and chunks of every group.
    ("snapshot", 1),
    // The meta group's state machine (`MetaState`) in snapshots and commands.
    // 2: the shadow sub-state appended to `MetaState`; 3: peer addresses
    // appended. Formats 0 to 2 are upgraded by rewriting the stored meta
    // snapshot (`raft::state_machine::upgrade_meta_snapshot`).
    ("meta_state", 3),
    // A resource group's state machine (`ResourceState`, manifests, dedup).
    ("resource_state", 1),
    // The node's identity, local replica and retired records.
    ("local", 1),
    // Shard chunks and their per-shard records.
    ("shards", 1),
    // A meta voter's demand journal and snapshot.
    ("demand", 1),
];

/// The format of every family in a directory written before the record
/// existed.
pub const FORMAT_UNVERSIONED: u32 = 0;

/// First line of the record.
const FORMAT_HEADER: &str = "shadowstore data directory";

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "it holds `{family}` records in format {found}, written by a newer shadowstore; this binary \
         (shadowstore {binary}) reads `{family}` formats {FORMAT_UNVERSIONED} to {supported}. Run the release \
         that wrote it (or a newer one): downgrading a data directory is not supported"
    )]
    TooNew { family: String, found: u32, supported: u32, binary: &'static str },
    #[error(
        "it holds `{family}` records, a record family this binary (shadowstore {binary}) does not know: it was \
         written by a newer shadowstore. Run the release that wrote it (or a newer one)"
    )]
    UnknownFamily { family: String, binary: &'static str },
    #[error("its format record is unreadable ({text:?}); refusing to guess its format")]
    Corrupt { text: String },
    #[error("reading or writing its format record: {0}")]
    Io(#[from] std::io::Error),
}

/// What [`open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// An empty directory: the current formats were recorded.
    Fresh,
    /// Already at the current formats.
    Current,
    /// Older formats, upgraded in place: (family, from) for each family
    /// that moved.
    Upgraded { from: Vec<(String, u32)> },
}

/// Rewrites a family's records from format `from` to the current one, in
/// place; must be idempotent (a crash before the format record is written
/// runs it again).
pub type Upgrade = fn(&SharedEngine, u32) -> std::io::Result<()>;

/// Checks the formats of the data directory and brings them to
/// [`FAMILIES`], running the family's entry of `upgrades` for each family
/// below its current format (a family without one only needs the record),
/// or refuses it. Must run before any other component reads the engine.
pub async fn open(engine: &SharedEngine, upgrades: &[(&str, Upgrade)]) -> Result<Opened, FormatError> {
    let found: Option<BTreeMap<String, u32>> = match engine.get(Tree::Local, FORMAT_KEY)? {
        Some(bytes) => Some(decode(&bytes)?),
        None if is_empty(engine)? => None,
        None => Some(BTreeMap::new()),
    };
    let opened = match found {
        None => Opened::Fresh,
        Some(found) => {
            let binary = env!("CARGO_PKG_VERSION");
            if let Some(family) = found.keys().find(|f| !FAMILIES.iter().any(|(known, _)| known == f)) {
                return Err(FormatError::UnknownFamily { family: family.clone(), binary });
            }
            let mut from = Vec::new();
            for (family, supported) in FAMILIES {
                let version = found.get(family).copied().unwrap_or(FORMAT_UNVERSIONED);
                if version > supported {
                    return Err(FormatError::TooNew { family: family.into(), found: version, supported, binary });
                }
                if version < supported {
                    if let Some((_, upgrade)) = upgrades.iter().find(|(f, _)| *f == family) {
                        upgrade(engine, version)?;
                    }
                    from.push((family.to_string(), version));
                }
            }
            if from.is_empty() {
                return Ok(Opened::Current);
            }
            Opened::Upgraded { from }
        }
    };
    let mut batch = WriteBatch::new(Tree::Local);
    batch.put(FORMAT_KEY.to_vec(), encode(&FAMILIES));
    engine.write(batch)?;
    engine.clone().sync().await?;
    Ok(opened)
}

/// True when no tree holds a key: a directory no node has used yet.
fn is_empty(engine: &SharedEngine) -> std::io::Result<bool> {
    for tree in Tree::ALL {
        if !engine.range(tree, &[], &[0xff; 32], 1)?.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The record for `families`.
pub fn encode(families: &[(&str, u32)]) -> Vec<u8> {
    let mut text = format!("{FORMAT_HEADER}\n");
    for (family, version) in families {
        text.push_str(&format!("{family} {version}\n"));
    }
    text.into_bytes()
}

fn decode(bytes: &[u8]) -> Result<BTreeMap<String, u32>, FormatError> {
    let text = String::from_utf8_lossy(bytes);
    let corrupt = || FormatError::Corrupt { text: text.to_string() };
    let mut lines = text.lines();
    if lines.next() != Some(FORMAT_HEADER) {
        return Err(corrupt());
    }
    let mut out = BTreeMap::new();
    for line in lines {
        let (family, version) = line.split_once(' ').ok_or_else(corrupt)?;
        let version = version.parse::<u32>().map_err(|_| corrupt())?;
        if family.is_empty() || out.insert(family.to_string(), version).is_some() {
            return Err(corrupt());
        }
    }
    Ok(out)
}

/// Encodes `value` for the pinned-encoding tests.
#[cfg(test)]
fn hex_of<T: serde::Serialize>(value: &T) -> String {
    shadowstore_base::codec::encode("pinned", value).expect("encode").iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory_engine::MemoryEngine;
    use shadowstore_base::ids::GroupId;
    use shadowstore_base::ids::NodeId;
    use shadowstore_base::ids::ReplicaId;

    fn engine() -> SharedEngine {
        MemoryEngine::new()
    }

    fn put_record(e: &SharedEngine, record: Vec<u8>) {
        let mut b = WriteBatch::new(Tree::Local);
        b.put(FORMAT_KEY.to_vec(), record);
        e.write(b).unwrap();
    }

    fn recorded(e: &SharedEngine) -> BTreeMap<String, u32> {
        decode(&e.get(Tree::Local, FORMAT_KEY).unwrap().unwrap()).unwrap()
    }

    fn current() -> BTreeMap<String, u32> {
        FAMILIES.iter().map(|(f, v)| (f.to_string(), *v)).collect()
    }

    #[tokio::test]
    async fn an_empty_directory_gets_the_current_formats() {
        let e = engine();
        assert_eq!(open(&e, &[]).await.unwrap(), Opened::Fresh);
        assert_eq!(recorded(&e), current());
        assert_eq!(open(&e, &[]).await.unwrap(), Opened::Current);
    }

    #[tokio::test]
    async fn a_used_directory_without_a_record_is_format_zero_and_upgraded() {
        let e = engine();
        let mut b = WriteBatch::new(Tree::RaftState);
        b.put(vec![0; 9], vec![1, 2, 3]);
        e.write(b).unwrap();
        let Opened::Upgraded { from } = open(&e, &[]).await.unwrap() else { panic!("not upgraded") };
        assert_eq!(from.len(), FAMILIES.len());
        assert!(from.iter().all(|(_, v)| *v == FORMAT_UNVERSIONED));
        assert_eq!(e.get(Tree::RaftState, &[0; 9]).unwrap(), Some(vec![1, 2, 3]), "upgrade rewrote a record");
        assert_eq!(recorded(&e), current());
        assert_eq!(open(&e, &[]).await.unwrap(), Opened::Current);
    }

    #[tokio::test]
    async fn a_newer_family_format_is_refused_and_left_untouched() {
        let e = engine();
        let mut newer = FAMILIES;
        newer[3].1 += 1;
        put_record(&e, encode(&newer));
        let err = open(&e, &[]).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(&err, FormatError::TooNew { family, .. } if family == "meta_state"), "{text}");
        assert!(text.contains(&format!("format {}", newer[3].1)), "{text}");
        assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
        assert_eq!(e.get(Tree::Local, FORMAT_KEY).unwrap(), Some(encode(&newer)));
    }

    #[tokio::test]
    async fn an_unknown_family_is_refused() {
        let e = engine();
        let mut record = encode(&FAMILIES);
        record.extend_from_slice(b"holograms 1\n");
        put_record(&e, record);
        let err = open(&e, &[]).await.unwrap_err();
        assert!(matches!(&err, FormatError::UnknownFamily { family, .. } if family == "holograms"), "{err}");
    }

    #[tokio::test]
    async fn a_garbled_record_is_refused() {
        for garbled in [
            &b"SSDF\x00"[..],
            b"shadowstore data directory\nraft_log one\n",
            b"shadowstore data directory\nraft_log 1\nraft_log 1\n",
        ] {
            let e = engine();
            put_record(&e, garbled.to_vec());
            assert!(matches!(open(&e, &[]).await, Err(FormatError::Corrupt { .. })), "{garbled:?}");
        }
    }

    /// Encodings of the `local` and `meta_state` families at their current
    /// formats. If one of these moves, a directory written before the
    /// change no longer decodes: bump the family in FAMILIES and add its
    /// upgrade before updating them.
    #[test]
    fn stored_encodings_are_pinned() {
        use crate::cluster::NodeIdentity;
        use crate::group::local_records::LocalReplica;
        use crate::meta::state::MetaState;

        assert_eq!(hex_of(&NodeIdentity { node_id: NodeId::new(3), meta_replica_id: ReplicaId::new(7) }), "0307");
        assert_eq!(
            hex_of(&LocalReplica { group_id: GroupId::new(300), replica_id: ReplicaId::new(2), quarantined: true }),
            "ac020201"
        );
        assert_eq!(hex_of(&MetaState::default()), PINNED_EMPTY_META_STATE);
    }

    /// An empty `MetaState` as `meta_state` formats 1 and 2 stored it
    /// decodes through the upgrade and re-encodes in the current format.
    #[tokio::test]
    async fn format_1_and_2_meta_snapshots_are_upgraded_in_place() {
        use crate::meta::state::MetaState;
        use crate::raft::state_machine::GroupData;
        for (format, pinned) in [(1, PINNED_EMPTY_META_STATE_FORMAT_1), (2, PINNED_EMPTY_META_STATE_FORMAT_2)] {
            let e = engine();
            // GroupData::Meta (tag 0) then the empty state.
            let old = hex_to_bytes(&format!("00{pinned}"));
            crate::raft::state_machine::write_test_snapshot(&e, &old);
            put_record(&e, encode(&[("meta_state", format)]));
            let Opened::Upgraded { from } =
                open(&e, &[("meta_state", crate::raft::state_machine::upgrade_meta_snapshot)]).await.unwrap()
            else {
                panic!("format {format} not upgraded")
            };
            assert!(from.contains(&("meta_state".to_string(), format)));
            let data = crate::raft::state_machine::read_test_snapshot(&e);
            let state: GroupData = shadowstore_base::codec::decode("snapshot", &data).unwrap();
            assert_eq!(state, GroupData::Meta(MetaState::default()), "format {format}");
            assert_eq!(hex_of(&state), format!("00{PINNED_EMPTY_META_STATE}"));
            // Running it again (a crash before the record) changes nothing.
            crate::raft::state_machine::upgrade_meta_snapshot(&e, format).unwrap();
            assert_eq!(crate::raft::state_machine::read_test_snapshot(&e), data);
        }
    }

    fn hex_to_bytes(h: &str) -> Vec<u8> {
        (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
    }

    const PINNED_EMPTY_META_STATE_FORMAT_1: &str = "0000000000020201000000a006880ee0d40380aea60ac0ee6d00000000";

    const PINNED_EMPTY_META_STATE_FORMAT_2: &str =
        "0000000000020201000000a006880ee0d40380aea60ac0ee6d0000000000040a193264b0ea01f403320203882700";

    const PINNED_EMPTY_META_STATE: &str =
        "0000000000020201000000a006880ee0d40380aea60ac0ee6d0000000000040a193264b0ea01f40332020388270000";
}
