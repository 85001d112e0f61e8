//! The parts of a running node as `node.rs` assembles them, in one
//! struct: what the node's owner (the binary, the simulator, tests) and
//! the operator's views (`crate::operator`) read. Services and loops are
//! handed the parts they use, not this.

use std::sync::Arc;

use shadowstore_base::clock::SharedClock;

use crate::blob::DataPlane;
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::membership::Member;
use crate::placement::Placement;
use crate::storage::SharedEngine;
use crate::storage::Syncer;

/// The parts of a running node.
pub struct NodeCtx {
    pub config: NodeConfig,
    /// The address other nodes and clients use.
    pub addr: String,
    pub cluster: Arc<Cluster>,
    pub data: Arc<DataPlane>,
    pub placement: Arc<Placement>,
    pub member: Arc<Member>,
    pub engine: SharedEngine,
    pub syncer: Syncer,
    pub clock: SharedClock,
    /// The operator's HTTP listener as bound (`http_addr`), if any.
    pub http_addr: Option<String>,
}
