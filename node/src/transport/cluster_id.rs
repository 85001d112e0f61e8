//! Which cluster a node-to-node message belongs to.
//!
//! A cluster id is drawn at random when a cluster is bootstrapped, stored
//! in every member's local tree (`keys::CLUSTER_ID_KEY`) and handed to each
//! joining node in its `JoinResponse`. Every peer call carries it
//! ([`StampCluster`], metadata `x-shadowstore-cluster-id`) and every node
//! checks it before a peer service sees the call (`api::auth`): a node of
//! another cluster, or a node that lost its data directory and bootstrapped
//! a cluster of its own, is refused with PERMISSION_DENIED instead of
//! voting or acknowledging appends. Certificates say *who may* speak Raft;
//! the cluster id says *which* cluster's Raft it is (two clusters may share
//! a CA). Clusters bootstrapped before cluster ids existed have none and
//! are not checked.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::OnceLock;

use shadowstore_proto::CLUSTER_ID_METADATA;

/// A cluster's id: 128 random bits, written as 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterId(u128);

impl ClusterId {
    /// A fresh id from two draws of the node's randomness.
    pub fn random(rng: &crate::rng::NodeRng) -> ClusterId {
        ClusterId(((rng.next_u64() as u128) << 64) | rng.next_u64() as u128)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a cluster id is 32 hex digits, got {0:?}")]
pub struct BadClusterId(String);

impl FromStr for ClusterId {
    type Err = BadClusterId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(BadClusterId(s.chars().take(40).collect()));
        }
        u128::from_str_radix(s, 16).map(ClusterId).map_err(|_| BadClusterId(s.chars().take(40).collect()))
    }
}

/// This node's cluster id once known (set once: at bootstrap, at join, or
/// read back at start-up), shared by the channels that stamp it and the
/// layer that checks it.
#[derive(Clone, Debug, Default)]
pub struct ClusterIdCell(Arc<OnceLock<ClusterId>>);

impl ClusterIdCell {
    pub fn get(&self) -> Option<ClusterId> {
        self.0.get().copied()
    }

    /// Records `id`; refuses a different id than the one already known.
    pub fn set(&self, id: ClusterId) -> Result<(), String> {
        let held = *self.0.get_or_init(|| id);
        if held == id { Ok(()) } else { Err(format!("this node belongs to cluster {held}, not {id}")) }
    }
}

/// Why a peer call was refused by [`check`].
#[derive(Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The caller named another cluster.
    Other { mine: ClusterId, theirs: String },
    /// The caller named none, on a call that needs one.
    Missing { mine: ClusterId },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Other { mine, theirs } => write!(
                f,
                "the caller belongs to cluster {theirs:?}, this node to cluster {mine}: a node of another cluster, or \
                 one that lost its data and bootstrapped anew, may not take part"
            ),
            Mismatch::Missing { mine } => {
                write!(f, "the call carries no cluster id; this node belongs to cluster {mine}")
            }
        }
    }
}

/// Whether a peer call naming `theirs` may reach a node of cluster `mine`.
/// A node that knows no id yet (joining, or of a cluster older than ids)
/// takes every call; `Join` and `Ping` come from nodes that do not know
/// theirs yet (a new node, a node checking before it bootstraps), so they
/// may name none.
pub fn check(mine: Option<ClusterId>, theirs: Option<&str>, method: &str) -> Result<(), Mismatch> {
    let Some(mine) = mine else { return Ok(()) };
    match theirs {
        Some(t) if t.parse::<ClusterId>().ok() == Some(mine) => Ok(()),
        Some(t) => Err(Mismatch::Other { mine, theirs: t.chars().take(40).collect() }),
        None if matches!(method, "Join" | "Ping") => Ok(()),
        None => Err(Mismatch::Missing { mine }),
    }
}

/// Puts this node's cluster id on every outgoing peer call.
#[derive(Clone, Debug)]
pub struct StampCluster(pub ClusterIdCell);

impl tonic::service::Interceptor for StampCluster {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(id) = self.0.get() {
            let value = id.to_string().parse().map_err(|_| tonic::Status::internal("cluster id is not ASCII"))?;
            req.metadata_mut().insert(CLUSTER_ID_METADATA, value);
        }
        // A peer call made while serving a request carries its id, so the
        // next hop logs under the same id.
        crate::telemetry::requests::stamp_request_id(req.metadata_mut());
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_back() {
        let id = ClusterId::random(&crate::rng::NodeRng::from_seed(7));
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<ClusterId>().unwrap(), id);
        assert!("xyz".parse::<ClusterId>().is_err());
        assert!("g".repeat(32).parse::<ClusterId>().is_err());
    }

    #[test]
    fn calls_of_another_cluster_are_refused() {
        let mine = ClusterId(0xabc);
        let other = ClusterId(0xdef).to_string();
        assert_eq!(check(None, Some(&other), "RaftAppend"), Ok(()), "a node without an id takes every call");
        assert_eq!(check(Some(mine), Some(&mine.to_string()), "RaftAppend"), Ok(()));
        assert!(matches!(check(Some(mine), Some(&other), "RaftAppend"), Err(Mismatch::Other { .. })));
        assert!(matches!(check(Some(mine), Some(&other), "Join"), Err(Mismatch::Other { .. })));
        assert!(matches!(check(Some(mine), Some("junk"), "Ping"), Err(Mismatch::Other { .. })));
        assert_eq!(check(Some(mine), None, "RaftVote"), Err(Mismatch::Missing { mine }));
        assert_eq!(check(Some(mine), None, "Join"), Ok(()));
        assert_eq!(check(Some(mine), None, "Ping"), Ok(()));
        let cell = ClusterIdCell::default();
        cell.set(mine).unwrap();
        assert!(cell.set(ClusterId(1)).is_err());
        assert_eq!(cell.get(), Some(mine));
    }
}
