//! The [`Client`] handle: its options and how it is built.
//!
//! A `Client` is an `Arc` around the state every call shares: the
//! [`Router`] (which node serves each route, one channel per node), the
//! [`RequestIds`] of writes in flight, and the [`ClientOptions`]. The calls
//! themselves live with their concern: `data.rs` and `stream.rs` for
//! variants, `admin.rs` for resources and the cluster, each built on the
//! retry engine in `retry.rs`.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tonic::transport::Certificate;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;

use crate::error::Error;
use crate::request_ids::RequestIds;
use crate::routing::Router;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Longest a call may take, retries included.
    pub total_deadline: Duration,
    /// Longest one attempt may take.
    pub attempt_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How long `create_resource` waits for the new group to elect a leader.
    pub create_wait: Duration,
    /// Streamed writes get extra time in proportion to their size, as if
    /// they moved at least this many bytes per second.
    pub stream_rate_floor_bytes_per_s: u64,
    /// The client's region, sent with every read for the demand telemetry
    /// (1..=64 bytes of `[a-z0-9-]`).
    pub region: Option<String>,
    /// The certificate this client presents and the CA it trusts. `None`
    /// speaks plaintext, which nodes refuse unless they run with
    /// `insecure = true`.
    pub tls: Option<ClientTls>,
}

/// A client's TLS material, in PEM.
#[derive(Clone)]
pub struct ClientTls {
    /// The cluster CA: nodes must present a certificate it signed.
    pub ca_pem: String,
    /// This client's certificate (its role is in it, see `certs`).
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("cert_pem", &self.cert_pem.len()).finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads `ca.pem`, `<name>.pem` and `<name>.key` from `dir` (the
    /// layout `shadowctl certs` writes).
    pub fn from_dir(dir: &std::path::Path, name: &str) -> Result<ClientTls, Error> {
        let read = |file: String| {
            let path = dir.join(file);
            std::fs::read_to_string(&path)
                .map_err(|e| Error::Tls { path: path.display().to_string(), reason: e.to_string() })
        };
        Ok(ClientTls {
            ca_pem: read("ca.pem".into())?,
            cert_pem: read(format!("{name}.pem"))?,
            key_pem: read(format!("{name}.key"))?,
        })
    }

    pub(crate) fn config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            total_deadline: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(1_000),
            create_wait: Duration::from_secs(10),
            stream_rate_floor_bytes_per_s: 4 * 1024 * 1024,
            region: None,
            tls: None,
        }
    }
}

/// A shadowstore client. Cheap to share (`Arc` inside); one HTTP/2
/// connection per node, multiplexing every concurrent call.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// The state every call of one client shares.
pub(crate) struct Inner {
    pub(crate) router: Router,
    pub(crate) ids: RequestIds,
    pub(crate) options: ClientOptions,
    /// Attempts a node shed (RESOURCE_EXHAUSTED: at its read capacity),
    /// retried or not; see [`Client::sheds`].
    pub(crate) sheds: std::sync::atomic::AtomicU64,
}

impl Client {
    /// Attempts of this client's calls that a node shed because it was at
    /// its read capacity (RESOURCE_EXHAUSTED with a retry hint). The client
    /// retries them on another replica after the hint, so they show as
    /// latency, not errors; a benchmark reports them with this count.
    pub fn sheds(&self) -> u64 {
        self.inner.sheds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connects to a cluster through any of `endpoints` (`host:port`) and
    /// checks that one of them answers.
    pub async fn connect<I, S>(endpoints: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::connect_with(endpoints, ClientOptions::default()).await
    }

    pub async fn connect_with<I, S>(endpoints: I, options: ClientOptions) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let client = Self::new_lazy(endpoints, options)?;
        client.cluster_status().await?;
        Ok(client)
    }

    /// A client that connects on first use.
    pub fn new_lazy<I, S>(endpoints: I, options: ClientOptions) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.as_ref().trim().trim_start_matches("http://").trim_start_matches("https://").to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        for e in &endpoints {
            Endpoint::from_shared(format!("http://{e}"))
                .map_err(|err| Error::BadEndpoint { endpoint: e.clone(), reason: err.to_string() })?;
        }
        let tls = options.tls.as_ref().map(ClientTls::config);
        if let Some(tls) = &tls {
            // Checks the PEM now rather than on the first call.
            Endpoint::from_shared(format!("https://{}", endpoints[0]))
                .and_then(|e| e.tls_config(tls.clone()))
                .map_err(|e| Error::Tls { path: "ClientOptions::tls".into(), reason: e.to_string() })?;
        }
        let client_id: u64 = rand::rng().random();
        Ok(Client {
            inner: Arc::new(Inner {
                router: Router::new(endpoints, tls),
                ids: RequestIds::new(client_id),
                options,
                sheds: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }
}

/// A raw gRPC stub for the one node at `addr` (no routing, no retries),
/// with TLS when `tls` is given: for tools that must measure or probe a
/// particular node.
pub fn node_stub(
    addr: &str,
    tls: Option<&ClientTls>,
) -> Result<shadowstore_proto::v1::shadow_store_client::ShadowStoreClient<tonic::transport::Channel>, Error> {
    let bad = |e: tonic::transport::Error| Error::BadEndpoint { endpoint: addr.to_string(), reason: e.to_string() };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(bad)?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.config()).map_err(bad)?;
    }
    Ok(shadowstore_proto::v1::shadow_store_client::ShadowStoreClient::new(endpoint.connect_lazy()))
}
