//! One gRPC channel per peer address, shared by every Raft group and every
//! node-to-node call, plus the address book that says where each node and
//! each replica lives.
//!
//! Nodes are named by their (client) address everywhere; a node with a
//! peer listener of its own (`peer_listen_addr`) is reached at its peer
//! address instead, through the routes the meta directory lists
//! (`MetaState::peer_routes`). An address without a route (a seed in
//! `join`, a node serving both on one port) is dialed as it is. Until this
//! node's directory has a route, a client listener's refusal that names the
//! peer address (`transport::peer_gate`) is followed: it is kept as a hint,
//! used after the directory's routes, and dropped whenever the directory's
//! routes are refreshed (a stale hint costs one refused call).
//!
//! Channels are lazy: created on first use, they connect on demand and
//! reconnect by themselves. HTTP/2 keepalives close a connection to a peer
//! that stopped answering, so calls fail fast instead of hanging.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use shadowstore_proto::PEER_ADDRESS_METADATA;

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
pub type PeerStub = PeerClient<InterceptedService<FollowRefusals, StampCluster>>;

/// address → peer address.
type RouteMap = Arc<RwLock<HashMap<String, String>>>;

pub struct Peers {
    net: SharedNetwork,
    cluster_id: ClusterIdCell,
    /// `None` with `insecure = true`.
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
    /// address → peer address, for nodes with a peer listener.
    routes: RwLock<HashMap<String, String>>,
    /// address → peer address named by a client listener's refusal, until
    /// the directory's routes are next refreshed.
    hints: RouteMap,
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
            hints: RouteMap::default(),
            nodes: RwLock::new(HashMap::new()),
            replicas: RwLock::new(HashMap::new()),
        }
    }

    pub fn network(&self) -> &SharedNetwork {
        &self.net
    }

    /// Where the node at `addr` serves the peer service: the directory's
    /// route, else a hint, else `addr` itself.
    pub fn route(&self, addr: &str) -> String {
        let routed = self.routes.read().unwrap_or_else(|p| p.into_inner()).get(addr).cloned();
        routed
            .or_else(|| self.hints.read().unwrap_or_else(|p| p.into_inner()).get(addr).cloned())
            .unwrap_or_else(|| addr.to_string())
    }

    /// Replaces the peer routes (address, peer address) with `routes` and
    /// drops the hints.
    pub fn set_routes(&self, routes: Vec<(String, String)>) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = routes.into_iter().collect();
        self.hints.write().unwrap_or_else(|p| p.into_inner()).clear();
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
        let follow = FollowRefusals { inner: self.channel(addr)?, addr: addr.into(), hints: self.hints.clone() };
        Ok(PeerClient::with_interceptor(follow, StampCluster(self.cluster_id.clone()))
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

/// A channel that notes the peer address a client listener's refusal
/// names (`transport::peer_gate`) as a hint for `addr`, so the next call
/// goes there.
#[derive(Clone, Debug)]
pub struct FollowRefusals {
    inner: Channel,
    addr: Arc<str>,
    hints: RouteMap,
}

impl tower::Service<http::Request<tonic::body::Body>> for FollowRefusals {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let answer = self.inner.call(req);
        let (addr, hints) = (self.addr.clone(), self.hints.clone());
        Box::pin(async move {
            let response = answer.await?;
            note_refusal(&hints, &addr, response.headers());
            Ok(response)
        })
    }
}

/// Keeps the peer address a refusal's `headers` name as the hint for
/// `addr` (bounded by the addresses this node dials).
fn note_refusal(hints: &RouteMap, addr: &str, headers: &http::HeaderMap) {
    let Some(peer) = headers.get(PEER_ADDRESS_METADATA).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if peer.is_empty() || peer == addr || peer.len() > shadowstore_base::limits::NODE_LABEL_BYTES_MAX {
        return;
    }
    tracing::info!(%addr, %peer, "following a client listener's refusal to its peer listener");
    hints.write().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string(), peer.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> Peers {
        Peers::new(std::sync::Arc::new(crate::transport::TcpNetwork), None, ClusterIdCell::default())
    }

    #[test]
    fn a_refusal_is_followed_until_the_directory_routes() {
        let p = peers();
        assert_eq!(p.route("a:1"), "a:1", "no route: the address itself");
        let mut refusal = http::HeaderMap::new();
        refusal.insert(PEER_ADDRESS_METADATA, "a:2".parse().unwrap());
        note_refusal(&p.hints, "a:1", &refusal);
        assert_eq!(p.route("a:1"), "a:2", "the refusal's peer address is followed");
        note_refusal(&p.hints, "b:1", &http::HeaderMap::new());
        assert_eq!(p.route("b:1"), "b:1", "an answer without the header changes nothing");
        p.set_routes(vec![("a:1".into(), "a:3".into())]);
        assert_eq!(p.route("a:1"), "a:3", "the directory wins");
        p.set_routes(Vec::new());
        assert_eq!(p.route("a:1"), "a:1", "hints are dropped when the directory's routes are refreshed");
    }
}
