//! Which node serves a request.
//!
//! Every call is about a [`Route`]: one resource's Raft group, the meta
//! group, or the cluster status any node can give. Each group has its own
//! leader, so the [`Router`] remembers the node that last answered for each
//! route and, when it knows none, tries the configured endpoints in turn. A
//! node that does not lead the group answers UNAVAILABLE naming the leader
//! ([`LEADER_ADDRESS_METADATA`]); [`redirect_target`] decides whether to
//! follow that name. The router also keeps one lazily connected HTTP/2
//! channel per node address. The retry engine (`retry.rs`) consults it on
//! every attempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use shadowstore_proto::LEADER_ADDRESS_METADATA;
use shadowstore_proto::v1::shadow_store_client::ShadowStoreClient;
use tonic::Status;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

/// Messages up to this size are accepted (a 64 KiB value plus framing).
const MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Redirects followed in a row before backing off (guards against a loop
/// while the cluster's view of a leader settles).
const REDIRECTS_BEFORE_BACKOFF: u32 = 3;

/// A gRPC stub for one node.
pub(crate) type Stub = ShadowStoreClient<Channel>;

/// What a call is about, for leader caching: each route has its own leader.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Route {
    /// A resource's group, by resource name.
    Resource(String),
    /// The meta group (resources, placement, demand).
    Meta,
    /// Cluster status, which any node answers.
    Status,
}

impl Route {
    pub(crate) fn resource(name: &str) -> Route {
        Route::Resource(name.to_string())
    }
}

/// Known endpoints, the leader last seen per route, and a channel per node.
pub(crate) struct Router {
    endpoints: Vec<String>,
    cursor: AtomicUsize,
    channels: Mutex<HashMap<String, Stub>>,
    leaders: Mutex<HashMap<Route, String>>,
}

impl Router {
    /// A router over `endpoints` (non-empty `host:port`s), starting its
    /// round-robin at a random one so that clients spread out.
    pub(crate) fn new(endpoints: Vec<String>) -> Router {
        assert!(!endpoints.is_empty(), "a router needs at least one endpoint");
        let start = rand::rng().random_range(0..endpoints.len());
        Router {
            endpoints,
            cursor: AtomicUsize::new(start),
            channels: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
        }
    }

    /// The stub for `addr`, connecting lazily on first use.
    pub(crate) fn stub(&self, addr: &str) -> Result<Stub, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("bad address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .initial_stream_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024);
        let stub = ShadowStoreClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        channels.insert(addr.to_string(), stub.clone());
        Ok(stub)
    }

    /// The next configured endpoint, round-robin.
    pub(crate) fn next_endpoint(&self) -> String {
        let i = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.endpoints[i % self.endpoints.len()].clone()
    }

    /// Where to send a call about `route` first: its known leader, or the
    /// next endpoint.
    pub(crate) fn first_target(&self, route: &Route) -> String {
        self.cached_leader(route).unwrap_or_else(|| self.next_endpoint())
    }

    fn cached_leader(&self, route: &Route) -> Option<String> {
        self.leaders.lock().unwrap_or_else(|p| p.into_inner()).get(route).cloned()
    }

    /// Remembers `addr` as the node that serves `route`.
    pub(crate) fn remember_leader(&self, route: &Route, addr: &str) {
        let mut leaders = self.leaders.lock().unwrap_or_else(|p| p.into_inner());
        if leaders.get(route).map(String::as_str) != Some(addr) {
            leaders.insert(route.clone(), addr.to_string());
        }
    }

    /// Forgets the node that served `route` (it failed, or the route is gone).
    pub(crate) fn forget_leader(&self, route: &Route) {
        self.leaders.lock().unwrap_or_else(|p| p.into_inner()).remove(route);
    }
}

/// The node a failed attempt against `target` redirects to: the leader its
/// `status` names, unless that is `target` itself or `redirects` redirects
/// in a row were followed already. `None` means: back off and try another
/// endpoint.
pub(crate) fn redirect_target(status: &Status, target: &str, redirects: u32) -> Option<String> {
    let leader = status.metadata().get(LEADER_ADDRESS_METADATA).and_then(|v| v.to_str().ok())?;
    (leader != target && redirects < REDIRECTS_BEFORE_BACKOFF).then(|| leader.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable_naming(leader: &'static str) -> Status {
        let mut s = Status::unavailable("not the leader");
        s.metadata_mut().insert(LEADER_ADDRESS_METADATA, tonic::metadata::MetadataValue::from_static(leader));
        s
    }

    #[test]
    fn redirect_follows_a_named_leader_other_than_the_target() {
        let s = unavailable_naming("10.0.0.2:7101");
        assert_eq!(redirect_target(&s, "10.0.0.1:7101", 0).as_deref(), Some("10.0.0.2:7101"));
        assert_eq!(redirect_target(&s, "10.0.0.2:7101", 0), None, "a node naming itself is no redirect");
        assert_eq!(redirect_target(&Status::unavailable("no leader known"), "10.0.0.1:7101", 0), None);
    }

    #[test]
    fn redirects_in_a_row_are_bounded() {
        let s = unavailable_naming("10.0.0.2:7101");
        assert!(redirect_target(&s, "10.0.0.1:7101", REDIRECTS_BEFORE_BACKOFF - 1).is_some());
        assert_eq!(redirect_target(&s, "10.0.0.1:7101", REDIRECTS_BEFORE_BACKOFF), None);
    }

    #[test]
    fn leaders_are_cached_per_route() {
        let router = Router::new(vec!["a:1".to_string()]);
        let r = Route::resource("catalog");
        router.remember_leader(&r, "b:2");
        assert_eq!(router.first_target(&r), "b:2");
        assert_eq!(router.first_target(&Route::Meta), "a:1", "another route does not share the leader");
        router.forget_leader(&r);
        assert_eq!(router.first_target(&r), "a:1");
    }
}
