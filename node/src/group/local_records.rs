//! This node's own records of the replicas it hosts, in the `local` tree:
//! one record per hosted replica (written before its Raft group starts, and
//! carrying its quarantine mark), and one *retired* record per removed
//! replica whose shards are kept until handed off. The registry keeps the
//! in-memory view; this module only reads and writes the records.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;

use serde::Deserialize;
use serde::Serialize;
use shadowstore_base::codec;
use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::ReplicaId;

use crate::storage::SharedEngine;
use crate::storage::Tree;
use crate::storage::WriteBatch;
use crate::storage::keys;

/// The local record of a hosted replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalReplica {
    pub group_id: GroupId,
    pub replica_id: ReplicaId,
    /// Its durable Raft state failed its checksums: it is never started
    /// again, also after a restart of the node.
    pub quarantined: bool,
}

/// The record of the replica of `group`, if any.
pub fn get(engine: &SharedEngine, group: GroupId) -> io::Result<Option<LocalReplica>> {
    match engine.get(Tree::Local, &keys::local_replica(group))? {
        Some(v) => Ok(Some(codec::decode("local replica", &v)?)),
        None => Ok(None),
    }
}

/// Writes `record` (durable at the caller's next sync).
pub fn put(engine: &SharedEngine, record: &LocalReplica) -> io::Result<()> {
    let mut b = WriteBatch::new(Tree::Local);
    b.put(keys::local_replica(record.group_id), codec::encode("local replica", record)?);
    engine.write(b)
}

/// Every replica record.
pub fn all(engine: &SharedEngine) -> io::Result<Vec<LocalReplica>> {
    let (s, e) = keys::local_replicas_range();
    let mut out = Vec::new();
    for (_, v) in engine.range(Tree::Local, &s, &e, usize::MAX)? {
        out.push(codec::decode("local replica", &v)?);
    }
    Ok(out)
}

/// Deletes the record of the replica of `group` and, when its shards are
/// kept for a handoff, records `replica` as retired, in one atomic write.
pub fn remove(engine: &SharedEngine, group: GroupId, replica: ReplicaId, retire: bool) -> io::Result<()> {
    let mut b = WriteBatch::new(Tree::Local);
    b.delete(keys::local_replica(group));
    if retire {
        b.put(keys::retired_replica(group, replica), Vec::new());
    }
    engine.write(b)
}

/// Every retired replica, by group.
pub fn retired(engine: &SharedEngine) -> io::Result<BTreeMap<GroupId, BTreeSet<ReplicaId>>> {
    let (s, e) = keys::retired_replicas_range();
    let mut retired: BTreeMap<GroupId, BTreeSet<ReplicaId>> = BTreeMap::new();
    for (k, _) in engine.range(Tree::Local, &s, &e, usize::MAX)? {
        let (group, replica) = keys::retired_replica_of(&k)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed retired-replica key"))?;
        retired.entry(group).or_default().insert(replica);
    }
    Ok(retired)
}

/// Deletes the retired records of `replicas` of `group`.
pub fn forget_retired(engine: &SharedEngine, group: GroupId, replicas: &BTreeSet<ReplicaId>) -> io::Result<()> {
    let mut b = WriteBatch::new(Tree::Local);
    for r in replicas {
        b.delete(keys::retired_replica(group, *r));
    }
    engine.write(b)
}
