//! [`Client`]: routing, redirects, retries and request ids.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use shadowstore_proto::LEADER_ADDRESS_METADATA;
use shadowstore_proto::RETRY_AFTER_MS_METADATA;
use shadowstore_proto::v1;
use shadowstore_proto::v1::shadow_store_client::ShadowStoreClient;
use tokio::time::Instant;
use tonic::Code;
use tonic::Status;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::error::Error;
use crate::request_ids::RequestIds;

/// Messages up to this size are accepted (a 64 KiB value plus framing).
const MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes per PutStream message.
const PUT_CHUNK_BYTES: usize = 1024 * 1024;
/// Values up to this size go in one unary Put.
const UNARY_PUT_BYTES_MAX: usize = 64 * 1024;
/// Metadata a node sets when a value is too large for a unary Get.
const USE_STREAM_METADATA: &str = "x-shadowstore-use-stream";
/// Redirects followed in a row before backing off (guards against a loop
/// while the cluster's view of a leader settles).
const REDIRECTS_BEFORE_BACKOFF: u32 = 3;

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

tokio::task_local! {
    /// How many earlier attempts of the call being made were shed, seen
    /// while an attempt's request is built.
    static SHED_BEFORE: u32;
}

/// How a read may be served.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// A retained version instead of the latest.
    pub version: Option<u64>,
    /// `None`: linearizable. `Some(ms)`: any replica that heard from its
    /// leader within `ms` milliseconds may answer.
    pub max_staleness_ms: Option<u64>,
}

impl ReadOptions {
    pub fn linearizable() -> Self {
        ReadOptions::default()
    }

    pub fn stale_ok(max_staleness_ms: u64) -> Self {
        ReadOptions { version: None, max_staleness_ms: Some(max_staleness_ms) }
    }

    pub fn at_version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }
}

/// How a resource stores its values; zeros mean the cluster's defaults.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Primaries: 3 (default) or 5.
    pub replication_factor: u32,
    /// Erasure code k+m (k + m must equal the replication factor).
    pub data_shards: u32,
    pub parity_shards: u32,
    /// Values up to this size stay inline in the Raft log (default 65536).
    pub inline_threshold_bytes: Option<u32>,
    pub stripe_size_bytes: u32,
    pub keep_versions: u32,
}

/// Called with the bytes transferred so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResult {
    pub value: Bytes,
    pub version: u64,
    /// The node that served the read.
    pub served_by_node: u64,
}

/// The messages of a PutStream after its header, read from `reader`.
///
/// A read error must cancel the call, not end the stream: an ended stream
/// could commit a truncated value. So on an error the stream stalls and the
/// error goes to the returned receiver; the caller then drops the call,
/// which resets the HTTP/2 stream.
fn put_body<R>(
    reader: R,
    progress: Option<Progress>,
) -> (impl futures::Stream<Item = v1::PutChunk> + Send + 'static, tokio::sync::oneshot::Receiver<std::io::Error>)
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    let body = tokio_util::io::ReaderStream::with_capacity(reader, PUT_CHUNK_BYTES);
    let (err_tx, err_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    let chunks = futures::stream::unfold(
        (body, Some(err_tx), 0u64, progress),
        |(mut body, err_tx, sent, progress)| async move {
            match body.next().await {
                Some(Ok(data)) => {
                    let sent = sent + data.len() as u64;
                    if let Some(p) = &progress {
                        p(sent);
                    }
                    Some((v1::PutChunk { header: None, data }, (body, err_tx, sent, progress)))
                }
                Some(Err(e)) => {
                    if let Some(tx) = err_tx {
                        let _ = tx.send(e);
                    }
                    futures::future::pending::<()>().await;
                    None
                }
                None => None,
            }
        },
    );
    (chunks, err_rx)
}

/// What a call is about, for leader caching.
fn resource_route(name: &str) -> String {
    format!("r/{name}")
}
const META_ROUTE: &str = "meta";

/// A shadowstore client. Cheap to share (`Arc` inside); one HTTP/2
/// connection per node, multiplexing every concurrent call.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    cursor: AtomicUsize,
    channels: Mutex<HashMap<String, ShadowStoreClient<Channel>>>,
    leaders: Mutex<HashMap<String, String>>,
    ids: RequestIds,
    options: ClientOptions,
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
        let start = rand::rng().random_range(0..endpoints.len());
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                cursor: AtomicUsize::new(start),
                channels: Mutex::new(HashMap::new()),
                leaders: Mutex::new(HashMap::new()),
                ids: RequestIds::new(client_id),
                options,
            }),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    fn stub(&self, addr: &str) -> Result<ShadowStoreClient<Channel>, Status> {
        let mut channels = self.inner.channels.lock().unwrap_or_else(|p| p.into_inner());
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

    fn next_endpoint(&self) -> String {
        let i = self.inner.cursor.fetch_add(1, Ordering::Relaxed);
        self.inner.endpoints[i % self.inner.endpoints.len()].clone()
    }

    fn cached_leader(&self, route: &str) -> Option<String> {
        self.inner.leaders.lock().unwrap_or_else(|p| p.into_inner()).get(route).cloned()
    }

    fn set_leader(&self, route: &str, addr: Option<&str>) {
        let mut leaders = self.inner.leaders.lock().unwrap_or_else(|p| p.into_inner());
        match addr {
            Some(a) => {
                if leaders.get(route).map(String::as_str) != Some(a) {
                    leaders.insert(route.to_string(), a.to_string());
                }
            }
            None => {
                leaders.remove(route);
            }
        }
    }

    fn backoff(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let o = &self.inner.options;
        let cap = o.backoff_initial.saturating_mul(1u32 << attempt.min(16)).min(o.backoff_max);
        let jittered = Duration::from_micros(rand::rng().random_range(0..=cap.as_micros() as u64));
        hint.map_or(jittered, |h| h.max(jittered))
    }

    /// Runs `attempt` against the right node until it succeeds, fails for a
    /// reason retrying cannot fix, or the total deadline passes.
    async fn call<T, F, Fut>(&self, route: &str, attempt: F) -> Result<T, Error>
    where
        F: FnMut(ShadowStoreClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_with_extra(route, Duration::ZERO, attempt).await
    }

    /// Like `call`, with `extra` added to both the attempt timeout and the
    /// total deadline (for calls that move many bytes).
    async fn call_with_extra<T, F, Fut>(&self, route: &str, extra: Duration, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(ShadowStoreClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let o = &self.inner.options;
        let total_deadline = o.total_deadline + extra;
        let attempt_timeout = o.attempt_timeout + extra;
        let deadline = Instant::now() + total_deadline;
        let mut target = self.cached_leader(route).unwrap_or_else(|| self.next_endpoint());
        let mut failures = 0u32;
        let mut redirects = 0u32;
        let mut shed = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Deadline {
                    deadline: total_deadline,
                    last: format!("no attempt finished against {target}"),
                });
            }
            let budget = (deadline - now).min(attempt_timeout);
            let result = match self.stub(&target) {
                Ok(stub) => {
                    match tokio::time::timeout(budget, SHED_BEFORE.sync_scope(shed, || attempt(stub, budget))).await {
                        Ok(r) => r,
                        Err(_) => Err(Status::deadline_exceeded(format!("attempt against {target} timed out"))),
                    }
                }
                Err(s) => Err(s),
            };
            let status = match result {
                Ok(resp) => {
                    self.set_leader(route, Some(&target));
                    return Ok(resp.into_inner());
                }
                Err(s) => s,
            };
            let leader_hint =
                status.metadata().get(LEADER_ADDRESS_METADATA).and_then(|v| v.to_str().ok()).map(String::from);
            let retry_after = status
                .metadata()
                .get(RETRY_AFTER_MS_METADATA)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis);
            if status.code() == Code::ResourceExhausted {
                shed += 1;
            }
            let retryable = match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => true,
                Code::ResourceExhausted => retry_after.is_some(),
                _ => false,
            };
            if !retryable {
                return Err(Error::Status(status));
            }
            let sleep = match leader_hint {
                Some(addr) if addr != target && redirects < REDIRECTS_BEFORE_BACKOFF => {
                    redirects += 1;
                    self.set_leader(route, Some(&addr));
                    target = addr;
                    None
                }
                _ => {
                    redirects = 0;
                    failures += 1;
                    self.set_leader(route, None);
                    target = self.next_endpoint();
                    Some(self.backoff(failures, retry_after))
                }
            };
            if let Some(d) = sleep {
                let now = Instant::now();
                if now + d >= deadline {
                    return Err(Error::Deadline {
                        deadline: total_deadline,
                        last: format!("{}: {}", status.code(), status.message()),
                    });
                }
                tokio::time::sleep(d).await;
            }
        }
    }

    /// Runs a write with a fresh request id kept across its retries.
    async fn write<T, F, Fut>(&self, route: &str, attempt: F) -> Result<T, Error>
    where
        F: FnMut(ShadowStoreClient<Channel>, Duration, v1::RequestId) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.write_with_extra(route, Duration::ZERO, attempt).await
    }

    async fn write_with_extra<T, F, Fut>(&self, route: &str, extra: Duration, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(ShadowStoreClient<Channel>, Duration, v1::RequestId) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let seq = self.inner.ids.begin();
        let r = self
            .call_with_extra(route, extra, |stub, budget| {
                let id = self.inner.ids.id(seq);
                attempt(stub, budget, id)
            })
            .await;
        self.inner.ids.finish(seq);
        r
    }

    /// Creates a resource with `replication_factor` primaries (3 or 5) and
    /// waits until its group has a leader.
    pub async fn create_resource(&self, name: &str, replication_factor: u32) -> Result<v1::ResourceInfo, Error> {
        self.create_resource_with(name, CreateOptions { replication_factor, ..Default::default() }).await
    }

    /// Creates a resource with explicit storage options.
    pub async fn create_resource_with(&self, name: &str, o: CreateOptions) -> Result<v1::ResourceInfo, Error> {
        let name_s = name.to_string();
        let resp = self
            .write(META_ROUTE, |mut stub, budget, id| {
                let mut req = tonic::Request::new(v1::CreateResourceRequest {
                    name: name_s.clone(),
                    replication_factor: o.replication_factor,
                    request_id: Some(id),
                    data_shards: o.data_shards,
                    parity_shards: o.parity_shards,
                    inline_threshold_bytes: o.inline_threshold_bytes,
                    stripe_size_bytes: o.stripe_size_bytes,
                    keep_versions: o.keep_versions,
                });
                req.set_timeout(budget);
                async move { stub.create_resource(req).await }
            })
            .await?;
        self.wait_for_leader(name, self.inner.options.create_wait).await?;
        resp.resource.ok_or_else(|| Error::Status(Status::internal("create answered without a resource")))
    }

    /// Waits until the resource's group reports a leader.
    pub async fn wait_for_leader(&self, name: &str, wait: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + wait;
        let mut attempt = 0;
        loop {
            match self.describe_resource(name).await {
                Ok(d) if d.leader_replica_id != 0 => return Ok(()),
                Ok(_) => {}
                Err(e) if e.code() == Code::NotFound => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(Error::Deadline { deadline: wait, last: format!("resource {name} has no leader yet") });
            }
            attempt += 1;
            tokio::time::sleep(self.backoff(attempt, None).max(Duration::from_millis(20))).await;
        }
    }

    pub async fn delete_resource(&self, name: &str) -> Result<(), Error> {
        let name = name.to_string();
        self.write(META_ROUTE, |mut stub, budget, id| {
            let mut req = tonic::Request::new(v1::DeleteResourceRequest { name: name.clone(), request_id: Some(id) });
            req.set_timeout(budget);
            async move { stub.delete_resource(req).await }
        })
        .await?;
        self.set_leader(&resource_route(&name), None);
        Ok(())
    }

    pub async fn list_resources(&self) -> Result<Vec<v1::ResourceInfo>, Error> {
        let r = self
            .call(META_ROUTE, |mut stub, budget| {
                let mut req = tonic::Request::new(v1::ListResourcesRequest {});
                req.set_timeout(budget);
                async move { stub.list_resources(req).await }
            })
            .await?;
        Ok(r.resources)
    }

    /// Writes a variant; returns its new version.
    pub async fn put(&self, resource: &str, variant: &str, value: impl Into<Bytes>) -> Result<u64, Error> {
        self.put_inner(resource, variant, value.into(), None).await
    }

    /// Writes a variant only if its current version is `if_version` (0: only
    /// if it does not exist). FAILED_PRECONDITION otherwise.
    pub async fn put_if(
        &self,
        resource: &str,
        variant: &str,
        value: impl Into<Bytes>,
        if_version: u64,
    ) -> Result<u64, Error> {
        self.put_inner(resource, variant, value.into(), Some(if_version)).await
    }

    async fn put_inner(
        &self,
        resource: &str,
        variant: &str,
        value: Bytes,
        if_version: Option<u64>,
    ) -> Result<u64, Error> {
        if value.len() > UNARY_PUT_BYTES_MAX {
            let size = value.len() as u64;
            return self
                .put_stream(resource, variant, Some(size), if_version, None, || Ok(std::io::Cursor::new(value.clone())))
                .await;
        }
        let route = resource_route(resource);
        let r = self
            .write(&route, |mut stub, budget, id| {
                let mut req = tonic::Request::new(v1::PutRequest {
                    resource: resource.to_string(),
                    variant: variant.to_string(),
                    value: value.clone(),
                    if_version,
                    request_id: Some(id),
                });
                req.set_timeout(budget);
                async move { stub.put(req).await }
            })
            .await?;
        Ok(r.version)
    }

    /// Writes a variant of any size from a reader, streaming it in 1 MiB
    /// messages. `open` is called for every attempt (a retry after a
    /// redirect or a lost answer re-reads the source from the start), so it
    /// must produce the same bytes each time. `size`, if known, lets the
    /// cluster refuse an oversized value before storing anything.
    pub async fn put_stream<R, F>(
        &self,
        resource: &str,
        variant: &str,
        size: Option<u64>,
        if_version: Option<u64>,
        progress: Option<Progress>,
        open: F,
    ) -> Result<u64, Error>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
        F: Fn() -> std::io::Result<R>,
    {
        let route = resource_route(resource);
        // Unknown sizes get the time of a maximal 1 GiB value.
        let bytes = size.unwrap_or(1 << 30);
        let extra =
            Duration::from_secs_f64(bytes as f64 / self.inner.options.stream_rate_floor_bytes_per_s.max(1) as f64);
        let r = self
            .write_with_extra(&route, extra, |mut stub, _budget, id| {
                let header = v1::PutChunk {
                    header: Some(v1::PutHeader {
                        resource: resource.to_string(),
                        variant: variant.to_string(),
                        size,
                        if_version,
                        request_id: Some(id),
                    }),
                    data: Bytes::new(),
                };
                let reader = open();
                let progress = progress.clone();
                async move {
                    let reader = reader.map_err(|e| Status::invalid_argument(format!("cannot read the value: {e}")))?;
                    let (chunks, err_rx) = put_body(reader, progress);
                    let req = tonic::Request::new(futures::stream::once(async { header }).chain(chunks));
                    tokio::select! {
                        r = stub.put_stream(req) => r,
                        Ok(e) = err_rx => Err(Status::invalid_argument(format!("reading the value failed: {e}"))),
                    }
                }
            })
            .await?;
        Ok(r.version)
    }

    /// Writes a file as a variant, streaming it (retries re-open the file).
    pub async fn put_file(
        &self,
        resource: &str,
        variant: &str,
        path: &std::path::Path,
        if_version: Option<u64>,
        progress: Option<Progress>,
    ) -> Result<u64, Error> {
        let size = std::fs::metadata(path)
            .map_err(|e| Error::Status(Status::invalid_argument(format!("cannot read {}: {e}", path.display()))))?
            .len();
        let path = path.to_path_buf();
        self.put_stream(resource, variant, Some(size), if_version, progress, move || {
            std::fs::File::open(&path).map(tokio::fs::File::from_std)
        })
        .await
    }

    /// Reads the latest version of a variant, linearizably.
    pub async fn get(&self, resource: &str, variant: &str) -> Result<GetResult, Error> {
        self.get_with(resource, variant, ReadOptions::linearizable()).await
    }

    pub async fn get_with(&self, resource: &str, variant: &str, options: ReadOptions) -> Result<GetResult, Error> {
        match self.get_unary(resource, variant, &options).await {
            Err(Error::Status(s)) if s.metadata().get(USE_STREAM_METADATA).is_some() => {
                let mut out = Vec::new();
                let h = self.get_to_writer(resource, variant, options, &mut out, None).await?;
                Ok(GetResult { value: Bytes::from(out), version: h.version, served_by_node: h.served_by_node })
            }
            other => other,
        }
    }

    /// Streams a variant of any size into `w`; returns its header.
    pub async fn get_to_writer<W>(
        &self,
        resource: &str,
        variant: &str,
        options: ReadOptions,
        w: &mut W,
        progress: Option<Progress>,
    ) -> Result<v1::GetHeader, Error>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        let deadline = Instant::now() + self.inner.options.total_deadline;
        let mut attempt = 0;
        // Until the first byte is delivered, a retryable failure (a holder
        // that is restarting, a leader change) is retried like any call.
        let (header, mut stream, first) = loop {
            let mut stream = self.get_stream(resource, variant, options.clone()).await?;
            let header = match stream.message().await.map_err(Error::Status)? {
                Some(v1::GetChunk { header: Some(h), data }) if data.is_empty() => h,
                _ => return Err(Error::Status(Status::internal("a GetStream answer must start with its header"))),
            };
            match stream.message().await {
                Ok(first) => break (header, stream, first),
                Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                    attempt += 1;
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                }
                Err(s) => return Err(Error::Status(s)),
            }
        };
        let mut received = 0u64;
        let mut next = first;
        while let Some(chunk) = next.take() {
            received += chunk.data.len() as u64;
            w.write_all(&chunk.data)
                .await
                .map_err(|e| Error::Status(Status::internal(format!("cannot write the value: {e}"))))?;
            if let Some(p) = &progress {
                p(received);
            }
            next = stream.message().await.map_err(Error::Status)?;
        }
        w.flush().await.map_err(|e| Error::Status(Status::internal(format!("cannot write the value: {e}"))))?;
        if received != header.size {
            return Err(Error::Status(Status::data_loss(format!(
                "stream ended after {received} of {} bytes",
                header.size
            ))));
        }
        Ok(header)
    }

    /// Opens a GetStream on the node that serves the variant (redirects and
    /// retries happen before the first byte).
    pub async fn get_stream(
        &self,
        resource: &str,
        variant: &str,
        options: ReadOptions,
    ) -> Result<tonic::Streaming<v1::GetChunk>, Error> {
        let route = resource_route(resource);
        let (consistency, max_staleness_ms) = match options.max_staleness_ms {
            None => (v1::Consistency::Linearizable, 0),
            Some(ms) => (v1::Consistency::StaleOk, ms),
        };
        self.call(&route, |mut stub, _budget| {
            let req = self.read_request(v1::GetRequest {
                resource: resource.to_string(),
                variant: variant.to_string(),
                version: options.version,
                consistency: consistency as i32,
                max_staleness_ms,
            });
            async move { stub.get_stream(req).await }
        })
        .await
    }

    /// A read request carrying the client's region, if it has one, and how
    /// many earlier attempts were shed (those were counted as demand).
    fn read_request(&self, get: v1::GetRequest) -> tonic::Request<v1::GetRequest> {
        let mut req = tonic::Request::new(get);
        if let Some(region) = &self.inner.options.region
            && let Ok(value) = tonic::metadata::MetadataValue::try_from(region.as_str())
        {
            req.metadata_mut().insert(shadowstore_proto::REGION_METADATA, value);
        }
        if let Ok(shed) = SHED_BEFORE.try_with(|s| *s)
            && shed > 0
        {
            req.metadata_mut()
                .insert(shadowstore_proto::SHED_BEFORE_METADATA, tonic::metadata::MetadataValue::from(shed));
        }
        req
    }

    async fn get_unary(&self, resource: &str, variant: &str, options: &ReadOptions) -> Result<GetResult, Error> {
        let route = resource_route(resource);
        let (consistency, max_staleness_ms) = match options.max_staleness_ms {
            None => (v1::Consistency::Linearizable, 0),
            Some(ms) => (v1::Consistency::StaleOk, ms),
        };
        let r = self
            .call(&route, |mut stub, budget| {
                let mut req = self.read_request(v1::GetRequest {
                    resource: resource.to_string(),
                    variant: variant.to_string(),
                    version: options.version,
                    consistency: consistency as i32,
                    max_staleness_ms,
                });
                req.set_timeout(budget);
                async move { stub.get(req).await }
            })
            .await?;
        Ok(GetResult { value: r.value, version: r.version, served_by_node: r.served_by_node })
    }

    /// Deletes a variant; returns the version of the deletion.
    pub async fn delete(&self, resource: &str, variant: &str) -> Result<u64, Error> {
        self.delete_inner(resource, variant, None).await
    }

    pub async fn delete_if(&self, resource: &str, variant: &str, if_version: u64) -> Result<u64, Error> {
        self.delete_inner(resource, variant, Some(if_version)).await
    }

    async fn delete_inner(&self, resource: &str, variant: &str, if_version: Option<u64>) -> Result<u64, Error> {
        let route = resource_route(resource);
        let r = self
            .write(&route, |mut stub, budget, id| {
                let mut req = tonic::Request::new(v1::DeleteRequest {
                    resource: resource.to_string(),
                    variant: variant.to_string(),
                    if_version,
                    request_id: Some(id),
                });
                req.set_timeout(budget);
                async move { stub.delete(req).await }
            })
            .await?;
        Ok(r.version)
    }

    pub async fn list_variants(&self, resource: &str) -> Result<Vec<v1::VariantInfo>, Error> {
        let route = resource_route(resource);
        let r = self
            .call(&route, |mut stub, budget| {
                let mut req = tonic::Request::new(v1::ListVariantsRequest {
                    resource: resource.to_string(),
                    consistency: v1::Consistency::Linearizable as i32,
                });
                req.set_timeout(budget);
                async move { stub.list_variants(req).await }
            })
            .await?;
        Ok(r.variants)
    }

    pub async fn describe_resource(&self, name: &str) -> Result<v1::DescribeResourceResponse, Error> {
        let route = resource_route(name);
        self.call(&route, |mut stub, budget| {
            let mut req = tonic::Request::new(v1::DescribeResourceRequest { name: name.to_string() });
            req.set_timeout(budget);
            async move { stub.describe_resource(req).await }
        })
        .await
    }

    /// The scrubber status of every node (by asking each node).
    pub async fn scrub_status_all(&self) -> Result<Vec<Result<v1::ScrubStatusResponse, Error>>, Error> {
        let status = self.cluster_status().await?;
        let mut out = Vec::new();
        for n in status.nodes {
            let stub = self.stub(&n.address);
            let r = match stub {
                Ok(mut s) => {
                    let mut req = tonic::Request::new(v1::ScrubStatusRequest {});
                    req.set_timeout(self.inner.options.attempt_timeout);
                    s.scrub_status(req).await.map(|r| r.into_inner()).map_err(Error::Status)
                }
                Err(e) => Err(Error::Status(e)),
            };
            out.push(r);
        }
        Ok(out)
    }

    /// The planner's dry run (JSON plans with explanations), for one
    /// resource or all.
    pub async fn placement_plan(&self, resource: Option<&str>) -> Result<String, Error> {
        let resource = resource.unwrap_or_default().to_string();
        let r = self
            .call(META_ROUTE, |mut stub, budget| {
                let mut req = tonic::Request::new(v1::PlacementPlanRequest { resource: resource.clone() });
                req.set_timeout(budget);
                async move { stub.placement_plan(req).await }
            })
            .await?;
        Ok(r.plans_json)
    }

    /// A resource's demand history and forecast (JSON).
    pub async fn demand_show(&self, resource: &str, history_slots: u32) -> Result<String, Error> {
        let r = self
            .call(META_ROUTE, |mut stub, budget| {
                let mut req =
                    tonic::Request::new(v1::DemandShowRequest { resource: resource.to_string(), history_slots });
                req.set_timeout(budget);
                async move { stub.demand_show(req).await }
            })
            .await?;
        Ok(r.demand_json)
    }

    /// Placement settings and node prices (JSON).
    pub async fn placement_config(&self) -> Result<String, Error> {
        let r = self
            .call(META_ROUTE, |mut stub, budget| {
                let mut req = tonic::Request::new(v1::GetPlacementConfigRequest {});
                req.set_timeout(budget);
                async move { stub.get_placement_config(req).await }
            })
            .await?;
        Ok(r.config_json)
    }

    /// Sets one placement setting (or a node's price); returns the new
    /// configuration (JSON).
    /// `node_id` names the node for a price, `resource` the resource for
    /// `priority`.
    pub async fn set_placement_config(
        &self,
        key: &str,
        value: &str,
        node_id: Option<u64>,
        resource: Option<&str>,
    ) -> Result<String, Error> {
        let r = self
            .call(META_ROUTE, |mut stub, budget| {
                let mut req = tonic::Request::new(v1::SetPlacementConfigRequest {
                    key: key.to_string(),
                    value: value.to_string(),
                    node_id: node_id.unwrap_or(0),
                    resource: resource.unwrap_or_default().to_string(),
                });
                req.set_timeout(budget);
                async move { stub.set_placement_config(req).await }
            })
            .await?;
        Ok(r.config_json)
    }

    pub async fn cluster_status(&self) -> Result<v1::ClusterStatusResponse, Error> {
        self.call("status", |mut stub, budget| {
            let mut req = tonic::Request::new(v1::ClusterStatusRequest {});
            req.set_timeout(budget);
            async move { stub.cluster_status(req).await }
        })
        .await
    }
}
