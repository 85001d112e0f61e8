//! Cluster membership from one node's side: forming or joining a cluster,
//! the meta group's own voters, registering nodes, replacing lost replicas,
//! and hosting exactly the replicas the directory assigns this node.
//!
//! - [`formation`]: at start-up, the node's identity: restart with the one
//!   on disk, bootstrap a new cluster, or join through a member.
//! - [`registration`]: the meta leader's side of a `Join`.
//! - [`voters`]: the meta leader manages the meta group's learners and
//!   voters; other nodes re-announce changed labels.
//! - [`replacement`]: the meta leader replaces lost or quarantined
//!   resource replicas.
//! - [`reconciler`]: every node opens and removes replicas to match the
//!   directory; group leaders align their Raft membership with it.
//!
//! Every loop takes a [`Member`]: the cluster handle plus what this node
//! announces and stores about itself.

use std::sync::Arc;

use shadowstore_base::clock::SharedClock;

use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::rng::NodeRng;
use crate::storage::SharedEngine;
use crate::storage::Syncer;
use crate::transport::peer_gate::PeerGate;

pub mod formation;
pub mod reconciler;
pub mod registration;
pub mod replacement;
pub mod voters;

/// What membership needs of its node.
pub struct Member {
    pub cluster: Arc<Cluster>,
    /// `bootstrap`, `join`, labels, `replace_down_after_ms`.
    pub config: NodeConfig,
    /// The address other nodes and clients use.
    pub addr: String,
    /// Where this node serves the peer service, if not at `addr`.
    pub peer_addr: Option<String>,
    /// With a peer listener: whether the client listener still answers
    /// peer calls (until the directory records `peer_addr`).
    pub peer_gate: Option<PeerGate>,
    pub engine: SharedEngine,
    pub syncer: Syncer,
    pub clock: SharedClock,
    pub rng: Arc<NodeRng>,
}
