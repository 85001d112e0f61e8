//! The per-call layer in front of every gRPC service of the node: each
//! call, refused ones included, is counted by method and status code and
//! timed from its arrival to its last byte (a stream's end, so a long
//! download is timed as long as it ran).
//!
//! The method label is one of the methods this node serves, read from the
//! services' descriptors at start-up; any other path is `unknown`, so a
//! caller cannot grow the families. The code is the call's gRPC status
//! (`grpc-status`), from the response headers when the call failed before
//! answering, else from the trailers; a stream the caller dropped before
//! its end is `Cancelled`.
//!
//! The layer also gives each call its request id (the caller's
//! `x-request-id` if it sent a well-formed one, else a new one), runs the
//! call in a `request` span carrying it, echoes it on the answer, and
//! keeps it in a task-local so that peer calls made for the request carry
//! it to the next node (`transport::cluster_id::StampCluster`).

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::task::Context;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Body;
use http_body::Frame;
use http_body::SizeHint;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use prost::Message;
use shadowstore_proto::REQUEST_ID_METADATA;
use tracing::Instrument;

/// Longest request id taken from a caller.
pub const REQUEST_ID_BYTES_MAX: usize = 64;

tokio::task_local! {
    /// The id of the request the current task serves.
    static REQUEST_ID: String;
}

/// Puts the current request's id on an outgoing call's metadata.
pub fn stamp_request_id(metadata: &mut tonic::metadata::MetadataMap) {
    if let Ok(Ok(value)) = REQUEST_ID.try_with(|id| id.parse::<tonic::metadata::MetadataValue<_>>()) {
        metadata.insert(REQUEST_ID_METADATA, value);
    }
}

/// A caller's request id, if well formed.
fn valid_request_id(value: &http::HeaderValue) -> Option<String> {
    let id = value.to_str().ok()?;
    let ok = !id.is_empty()
        && id.len() <= REQUEST_ID_BYTES_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| id.to_string())
}

/// The label of a path that names no method this node serves.
const UNKNOWN_METHOD: &str = "unknown";

/// Services the node mounts besides its own (`shadowstore_proto`), whose
/// methods are labelled by name too.
const OTHER_METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// The request families, shared by every connection's layer.
#[derive(Debug)]
pub struct RequestMetrics {
    calls: Family<CallLabels, Counter>,
    seconds: Family<MethodLabels, Histogram>,
    /// `/package.Service/Method` of every method served.
    methods: HashSet<String>,
    /// Ids this node gives: `<prefix>-<sequence>`, the prefix drawn from
    /// the node's address so that two nodes' ids differ.
    id_prefix: String,
    id_next: AtomicU64,
}

impl RequestMetrics {
    /// The families, registered in `registry`.
    pub fn register(registry: &mut Registry, node_addr: &str) -> Arc<RequestMetrics> {
        let calls = Family::<CallLabels, Counter>::default();
        let seconds =
            Family::<MethodLabels, Histogram>::new_with_constructor(super::seconds_histogram as fn() -> Histogram);
        registry.register(
            "shadowstore_grpc_requests",
            "gRPC calls served by this node, by method and status code",
            calls.clone(),
        );
        registry.register(
            "shadowstore_grpc_request_duration_seconds",
            "Time from a call's arrival to its last byte, by method",
            seconds.clone(),
        );
        Arc::new(RequestMetrics {
            calls,
            seconds,
            methods: served_methods(),
            id_prefix: format!("{:08x}", crc32fast::hash(node_addr.as_bytes())),
            id_next: AtomicU64::new(1),
        })
    }

    fn new_request_id(&self) -> String {
        format!("{}-{}", self.id_prefix, self.id_next.fetch_add(1, Ordering::Relaxed))
    }

    fn method_label(&self, path: &str) -> String {
        if self.methods.contains(path) { path.trim_start_matches('/').to_string() } else { UNKNOWN_METHOD.to_string() }
    }

    fn record(&self, method: String, code: tonic::Code, started: Instant) {
        self.seconds.get_or_create(&MethodLabels { method: method.clone() }).observe(started.elapsed().as_secs_f64());
        self.calls.get_or_create(&CallLabels { method, code: code_name(code) }).inc();
    }
}

/// `OK`, `InvalidArgument`, … as gRPC's own tooling spells them.
fn code_name(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".to_string(),
        other => format!("{other:?}"),
    }
}

/// Every method of the services in the node's descriptor sets.
fn served_methods() -> HashSet<String> {
    let mut methods: HashSet<String> = OTHER_METHODS.iter().map(|m| m.to_string()).collect();
    for set in [shadowstore_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
        // The sets are compiled in; one that does not decode leaves its
        // methods labelled `unknown` rather than stopping the node.
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for method in service.method {
                    methods.insert(format!("/{package}.{service_name}/{}", method.name.unwrap_or_default()));
                }
            }
        }
    }
    methods
}

/// The layer that puts [`Measured`] in front of every service.
#[derive(Clone, Debug)]
pub struct RequestMetricsLayer(pub Arc<RequestMetrics>);

impl<S> tower::Layer<S> for RequestMetricsLayer {
    type Service = Measured<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Measured { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct Measured<S> {
    inner: S,
    metrics: Arc<RequestMetrics>,
}

impl<S, B> tower::Service<http::Request<B>> for Measured<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let method = self.metrics.method_label(req.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let request_id = match req.headers().get(REQUEST_ID_METADATA).and_then(valid_request_id) {
            Some(id) => id,
            None => {
                let id = self.metrics.new_request_id();
                if let Ok(value) = http::HeaderValue::from_str(&id) {
                    req.headers_mut().insert(REQUEST_ID_METADATA, value);
                }
                id
            }
        };
        let span = tracing::info_span!("request", id = %request_id, method = %method);
        // Layers below may log while building the call's future (the
        // role check does), so the span and the id cover that too.
        let inner = {
            let _entered = span.enter();
            REQUEST_ID.sync_scope(request_id.clone(), || self.inner.call(req))
        };
        let answer = REQUEST_ID.scope(request_id.clone(), inner.instrument(span));
        Box::pin(async move {
            let answered = answer.await;
            let mut response = match answered {
                Ok(r) => r,
                Err(e) => {
                    metrics.record(method, tonic::Code::Unknown, started);
                    return Err(e);
                }
            };
            if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID_METADATA, value);
            }
            // A call that failed before answering carries its status in
            // the headers (a trailers-only response).
            if let Some(code) = status_of(response.headers()) {
                metrics.record(method, code, started);
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            let observed = Observed { inner: body, pending: Some(Pending { metrics, method, started }) };
            Ok(http::Response::from_parts(parts, tonic::body::Body::new(observed)))
        })
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?;
    let code = value.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(code))
}

/// A call whose outcome is not known yet.
struct Pending {
    metrics: Arc<RequestMetrics>,
    method: String,
    started: Instant,
}

/// A response body that records its call when its trailers pass, or when
/// it ends or is dropped without them.
struct Observed {
    inner: tonic::body::Body,
    pending: Option<Pending>,
}

impl Observed {
    fn finish(&mut self, code: tonic::Code) {
        if let Some(p) = self.pending.take() {
            p.metrics.record(p.method, code, p.started);
        }
    }
}

impl Body for Observed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status_of(trailers).unwrap_or(tonic::Code::Unknown);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => self.finish(status.code()),
            // The body ended without trailers: no status was sent.
            Poll::Ready(None) => self.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_labelled_by_name_and_others_are_unknown() {
        let mut registry = Registry::default();
        let m = RequestMetrics::register(&mut registry, "127.0.0.1:7101");
        assert_eq!(m.method_label("/shadowstore.v1.ShadowStore/Put"), "shadowstore.v1.ShadowStore/Put");
        assert_eq!(m.method_label("/shadowstore.peer.v1.Peer/RaftAppend"), "shadowstore.peer.v1.Peer/RaftAppend");
        assert_eq!(m.method_label("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
        assert_eq!(m.method_label("/shadowstore.v1.ShadowStore/NoSuchMethod"), UNKNOWN_METHOD);
        assert_eq!(m.method_label("/x"), UNKNOWN_METHOD);
        m.record(m.method_label("/shadowstore.v1.ShadowStore/Get"), tonic::Code::NotFound, Instant::now());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "shadowstore_grpc_requests_total{method=\"shadowstore.v1.ShadowStore/Get\",code=\"NotFound\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "shadowstore_grpc_request_duration_seconds_count{method=\"shadowstore.v1.ShadowStore/Get\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn request_ids_are_taken_when_well_formed() {
        let ok = http::HeaderValue::from_static("req-42.a_b");
        assert_eq!(valid_request_id(&ok).as_deref(), Some("req-42.a_b"));
        for bad in ["", "has space", "semi;colon"] {
            assert_eq!(valid_request_id(&http::HeaderValue::from_str(bad).unwrap()), None, "{bad:?}");
        }
        let long = http::HeaderValue::from_str(&"a".repeat(REQUEST_ID_BYTES_MAX + 1)).unwrap();
        assert_eq!(valid_request_id(&long), None);
        let mut registry = Registry::default();
        let m = RequestMetrics::register(&mut registry, "127.0.0.1:7101");
        let (a, b) = (m.new_request_id(), m.new_request_id());
        assert_ne!(a, b);
        let other = RequestMetrics::register(&mut Registry::default(), "127.0.0.1:7102").new_request_id();
        assert_ne!(a, other, "two nodes give different ids");
        let mut md = tonic::metadata::MetadataMap::new();
        stamp_request_id(&mut md);
        assert!(md.get(REQUEST_ID_METADATA).is_none(), "no request, no id");
        futures::executor::block_on(REQUEST_ID.scope("abc-1".to_string(), async {
            stamp_request_id(&mut md);
        }));
        assert_eq!(md.get(REQUEST_ID_METADATA).unwrap(), "abc-1");
    }
}
