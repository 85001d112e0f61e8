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
use tonic::transport::ClientTlsConfig;
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

/// A resource's read weights as last fetched (`GetRouting`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RoutingTable {
    pub(crate) version: u64,
    /// (address, weight per mille).
    pub(crate) entries: Vec<(String, u32)>,
    /// A node answered with a newer version: refetch before the next read.
    pub(crate) stale: bool,
    /// Some shadow has a non-zero weight.
    pub(crate) has_shadow_weight: bool,
}

impl RoutingTable {
    /// Whether reads should follow the weights: only while a shadow takes
    /// a share. Otherwise reads go where the group's leader is cached (a
    /// leader serves a linearizable read without asking anyone).
    pub(crate) fn shifting(&self) -> bool {
        self.has_shadow_weight
    }
}

/// Resources whose routing tables a client caches at most (least recently
/// fetched go first).
const ROUTING_TABLES_MAX: usize = 1_024;

/// Known endpoints, the leader last seen per route, and a channel per node.
pub(crate) struct Router {
    endpoints: Vec<String>,
    cursor: AtomicUsize,
    channels: Mutex<HashMap<String, Stub>>,
    leaders: Mutex<HashMap<Route, String>>,
    tables: Mutex<HashMap<String, RoutingTable>>,
    /// TLS for every channel; `None` speaks plaintext (nodes refuse it
    /// unless they run with `insecure = true`).
    tls: Option<ClientTlsConfig>,
}

impl Router {
    /// A router over `endpoints` (non-empty `host:port`s), starting its
    /// round-robin at a random one so that clients spread out.
    pub(crate) fn new(endpoints: Vec<String>, tls: Option<ClientTlsConfig>) -> Router {
        assert!(!endpoints.is_empty(), "a router needs at least one endpoint");
        let start = rand::rng().random_range(0..endpoints.len());
        Router {
            endpoints,
            cursor: AtomicUsize::new(start),
            channels: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
            tables: Mutex::new(HashMap::new()),
            tls,
        }
    }

    /// The cached routing table of `resource`, unless missing or stale.
    pub(crate) fn routing_table(&self, resource: &str) -> Option<RoutingTable> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner()).get(resource).filter(|t| !t.stale).cloned()
    }

    pub(crate) fn set_routing_table(&self, resource: &str, table: RoutingTable) {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if tables.len() >= ROUTING_TABLES_MAX && !tables.contains_key(resource) {
            tables.clear(); // a rare reset beats an unbounded cache
        }
        tables.insert(resource.to_string(), table);
    }

    /// A node knows routing version `version` of `resource`: a cached table
    /// older than that is refetched before the next read.
    pub(crate) fn note_routing_version(&self, resource: &str, version: u64) {
        if let Some(t) = self.tables.lock().unwrap_or_else(|p| p.into_inner()).get_mut(resource)
            && t.version < version
        {
            t.stale = true;
        }
    }

    /// The stub for `addr`, connecting lazily on first use.
    pub(crate) fn stub(&self, addr: &str) -> Result<Stub, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("bad address {addr}: {e}")))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| Status::invalid_argument(format!("TLS for {addr}: {e}")))?;
        }
        let endpoint = endpoint
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

/// A replica of `table` drawn by weight (`draw` in 0..1000).
pub(crate) fn weighted_pick(table: &RoutingTable, draw: u32) -> Option<&str> {
    let mut acc = 0u32;
    for (addr, w) in &table.entries {
        acc += w;
        if draw < acc {
            return Some(addr);
        }
    }
    table.entries.iter().rev().find(|(_, w)| *w > 0).map(|(a, _)| a.as_str())
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
    fn reads_follow_weights_and_tables_go_stale_on_a_newer_version() {
        let table = RoutingTable {
            version: 3,
            entries: vec![("p1".into(), 450), ("p2".into(), 450), ("s".into(), 100)],
            stale: false,
            has_shadow_weight: true,
        };
        let mut counts = HashMap::new();
        for draw in 0..1000 {
            *counts.entry(weighted_pick(&table, draw).unwrap()).or_insert(0) += 1;
        }
        assert_eq!((counts["p1"], counts["p2"], counts["s"]), (450, 450, 100));
        let router = Router::new(vec!["a:1".to_string()], None);
        router.set_routing_table("r", table.clone());
        router.note_routing_version("r", 3);
        assert_eq!(router.routing_table("r"), Some(table), "same version: still fresh");
        router.note_routing_version("r", 4);
        assert_eq!(router.routing_table("r"), None, "a newer version makes it stale");
    }

    #[test]
    fn leaders_are_cached_per_route() {
        let router = Router::new(vec!["a:1".to_string()], None);
        let r = Route::resource("catalog");
        router.remember_leader(&r, "b:2");
        assert_eq!(router.first_target(&r), "b:2");
        assert_eq!(router.first_target(&Route::Meta), "a:1", "another route does not share the leader");
        router.forget_leader(&r);
        assert_eq!(router.first_target(&r), "a:1");
    }
}
