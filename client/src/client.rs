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
use tonic::transport::Endpoint;

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
}

impl Client {
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
            .map(|e| e.as_ref().trim().trim_start_matches("http://").to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        for e in &endpoints {
            Endpoint::from_shared(format!("http://{e}"))
                .map_err(|err| Error::BadEndpoint { endpoint: e.clone(), reason: err.to_string() })?;
        }
        let client_id: u64 = rand::rng().random();
        Ok(Client {
            inner: Arc::new(Inner { router: Router::new(endpoints), ids: RequestIds::new(client_id), options }),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }
}
