//! One gRPC channel per peer address, shared by every Raft group and every
//! node-to-node call, plus the address book that says where each node and
//! each replica lives.
//!
//! Nodes are named by their (client) address everywhere; a node with a
//! peer listener of its own (`peer_listen_addr`) is reached at its peer
//! address instead, through the routes the meta directory lists
//! (`MetaState::peer_routes`). An address without a route (a seed in
//! `join`, a node serving both on one port) is dialed as it is.
//!
//! Channels are lazy: created on first use, they connect on demand and
//! reconnect by themselves. HTTP/2 keepalives close a connection to a peer
//! that stopped answering, so calls fail fast instead of hanging.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Duration;

use shadowstore_proto::peer::PingRequest;
use shadowstore_proto::peer::PingResponse;
use shadowstore_proto::peer::peer_client::PeerClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;

use super::cluster_id::ClusterIdCell;
use super::cluster_id::StampCluster;
use super::seam::SharedNetwork;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::ids::ReplicaNode;
use shadowstore_base::limits::GRPC_MESSAGE_BYTES_MAX;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
const STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// A peer service client whose every call carries this node's cluster id.
pub type PeerStub = PeerClient<InterceptedService<Channel, StampCluster>>;

pub struct Peers {
    net: SharedNetwork,
    cluster_id: ClusterIdCell,
    /// `None` with `insecure = true`.
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
    /// address → peer address, for nodes with a peer listener.
    routes: RwLock<HashMap<String, String>>,
    nodes: RwLock<HashMap<NodeId, String>>,
    replicas: RwLock<HashMap<ReplicaId, ReplicaNode>>,
}

impl Peers {
    pub fn new(net: SharedNetwork, tls: Option<ClientTlsConfig>, cluster_id: ClusterIdCell) -> Self {
        Peers {
            net,
            cluster_id,
            tls,
            channels: Mutex::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            nodes: RwLock::new(HashMap::new()),
            replicas: RwLock::new(HashMap::new()),
        }
    }

    pub fn network(&self) -> &SharedNetwork {
        &self.net
    }

    /// Where the node at `addr` serves the peer service.
    pub fn route(&self, addr: &str) -> String {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes.get(addr).cloned().unwrap_or_else(|| addr.to_string())
    }

    /// Replaces the peer routes (address, peer address) with `routes`.
    pub fn set_routes(&self, routes: Vec<(String, String)>) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = routes.into_iter().collect();
    }

    /// The shared channel to the peer service of the node at `addr`,
    /// created on first use.
    pub fn channel(&self, addr: &str) -> io::Result<Channel> {
        let addr = &self.route(addr);
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = connect_lazy(self.net.clone(), addr, self.tls.as_ref())?;
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// This node's cluster id, once known.
    pub fn cluster_id(&self) -> &ClusterIdCell {
        &self.cluster_id
    }

    pub fn client(&self, addr: &str) -> io::Result<PeerStub> {
        Ok(PeerClient::with_interceptor(self.channel(addr)?, StampCluster(self.cluster_id.clone()))
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    }

    /// Pings the node at `addr` on behalf of `from` (0: a node without an
    /// identity yet); `None` if it did not answer within `timeout`.
    pub async fn ping(&self, addr: &str, from: NodeId, timeout: Duration) -> Option<PingResponse> {
        let mut c = self.client(addr).ok()?;
        let mut req = tonic::Request::new(PingRequest { from_node_id: from.get() });
        req.set_timeout(timeout);
        match tokio::time::timeout(timeout, c.ping(req)).await {
            Ok(Ok(answer)) => Some(answer.into_inner()),
            _ => None,
        }
    }

    pub fn set_node_addr(&self, node: NodeId, addr: &str) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        if nodes.get(&node).map(String::as_str) != Some(addr) {
            nodes.insert(node, addr.to_string());
        }
    }

    pub fn node_addr(&self, node: NodeId) -> Option<String> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).get(&node).cloned()
    }

    /// Remembers where a replica lives (from a group's membership).
    pub fn note_replica(&self, replica: ReplicaId, node: &ReplicaNode) {
        let known = self.replicas.read().unwrap_or_else(|p| p.into_inner()).get(&replica) == Some(node);
        if !known {
            self.replicas.write().unwrap_or_else(|p| p.into_inner()).insert(replica, node.clone());
        }
    }

    /// The node hosting `replica` and its address. The meta directory's
    /// address for the node wins over the one recorded in the membership.
    /// What the network does to the next Raft message to `addr`.
    pub fn message_fate(&self, addr: &str) -> super::seam::MessageFate {
        self.net.message_fate(&self.route(addr))
    }

    pub fn replica_addr(&self, replica: ReplicaId) -> Option<(NodeId, String)> {
        let rn = self.replicas.read().unwrap_or_else(|p| p.into_inner()).get(&replica).cloned()?;
        let addr = self.node_addr(rn.node_id).unwrap_or(rn.addr);
        Some((rn.node_id, addr))
    }
}

/// A lazily connecting channel to `addr` over `net`, with TLS when `tls`
/// is given.
pub fn connect_lazy(net: SharedNetwork, addr: &str, tls: Option<&ClientTlsConfig>) -> io::Result<Channel> {
    let bad = |e: tonic::transport::Error| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr:?}: {e}"));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(bad)?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.clone()).map_err(bad)?;
    }
    let endpoint = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
    let target = addr.to_string();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let net = net.clone();
        let target = target.clone();
        async move {
            let conn = net.connect(target).await?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(conn))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}
