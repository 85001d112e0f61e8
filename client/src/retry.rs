//! The retry engine: deadlines, backoff, and which answers are worth another
//! attempt.
//!
//! Every call of the client is a closure that makes one attempt against one
//! node. [`Client::call`] runs it against the node the router picks until it
//! succeeds, fails for a reason retrying cannot fix ([`is_retryable`]), or
//! the total deadline passes. A redirect to the leader is followed at once;
//! any other retryable failure backs off with jitter ([`backoff_ceiling`]),
//! at least as long as the node's retry hint. [`Client::write`] adds a
//! request id kept across the retries, so a write whose answer was lost is
//! applied once; [`Client::call_read`] tells each attempt how many earlier
//! ones were shed, for the demand telemetry (see `data.rs`).

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use shadowstore_proto::RETRY_AFTER_MS_METADATA;
use shadowstore_proto::ROUTING_VERSION_METADATA;
use shadowstore_proto::v1;
use tokio::time::Instant;
use tonic::Code;
use tonic::Status;

use crate::client::Client;
use crate::error::Error;
use crate::routing::Route;
use crate::routing::Stub;
use crate::routing::redirect_target;

/// Whether an attempt that failed with `code` may be retried. A shed call
/// (RESOURCE_EXHAUSTED) retries only when the node said when (`retry_after`).
pub(crate) fn is_retryable(code: Code, retry_after: Option<Duration>) -> bool {
    match code {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => true,
        Code::ResourceExhausted => retry_after.is_some(),
        _ => false,
    }
}

/// The node's hint for how long to wait before retrying, if it gave one.
pub(crate) fn retry_after(status: &Status) -> Option<Duration> {
    status
        .metadata()
        .get(RETRY_AFTER_MS_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// The longest backoff after `attempt` failures: `initial` doubled per
/// failure, at most `max`. The actual sleep is drawn below it.
pub(crate) fn backoff_ceiling(initial: Duration, max: Duration, attempt: u32) -> Duration {
    initial.saturating_mul(1u32 << attempt.min(16)).min(max)
}

impl Client {
    /// How long to sleep after `attempt` failures: uniformly jittered below
    /// the ceiling, but never shorter than the node's `hint`.
    pub(crate) fn backoff(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let o = &self.inner.options;
        let ceiling = backoff_ceiling(o.backoff_initial, o.backoff_max, attempt);
        let jittered = Duration::from_micros(rand::rng().random_range(0..=ceiling.as_micros() as u64));
        hint.map_or(jittered, |h| h.max(jittered))
    }

    /// Runs `attempt` (given a stub and the time it may take) against the
    /// node that serves `route`, retrying as the module describes.
    pub(crate) async fn call<T, F, Fut>(&self, route: &Route, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(Stub, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.run(route, Duration::ZERO, |stub, budget, _shed_before| attempt(stub, budget)).await
    }

    /// Like [`call`](Self::call), for reads: each attempt is also told how
    /// many earlier attempts of this call were shed (RESOURCE_EXHAUSTED).
    ///
    /// While a shadow of the resource takes a share of reads, the first
    /// attempt goes to a replica drawn by the routing table's weights.
    pub(crate) async fn call_read<T, F, Fut>(&self, route: &Route, attempt: F) -> Result<T, Error>
    where
        F: FnMut(Stub, Duration, u32) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let first = match route {
            Route::Resource(name) => self.weighted_target(name).await,
            _ => None,
        };
        self.run_from(route, first, Duration::ZERO, attempt).await
    }

    /// The replica a read of `resource` goes to by weight, fetching the
    /// routing table when none is cached or it went stale; `None` when no
    /// shadow takes reads (or the table cannot be had: routing by leader
    /// is always correct).
    async fn weighted_target(&self, resource: &str) -> Option<String> {
        let router = &self.inner.router;
        let table = match router.routing_table(resource) {
            Some(t) => t,
            None => {
                let req = v1::GetRoutingRequest { resource: resource.to_string() };
                let t = self
                    .run_from(&Route::Status, None, Duration::ZERO, |mut stub, budget, _| {
                        let mut req = tonic::Request::new(req.clone());
                        req.set_timeout(budget);
                        async move { stub.get_routing(req).await }
                    })
                    .await
                    .ok()?;
                let table = crate::routing::RoutingTable {
                    version: t.version,
                    has_shadow_weight: t.entries.iter().any(|e| e.role == "shadow" && e.weight_permille > 0),
                    entries: t.entries.into_iter().map(|e| (e.address, e.weight_permille)).collect(),
                    stale: false,
                };
                router.set_routing_table(resource, table.clone());
                table
            }
        };
        if !table.shifting() {
            return None;
        }
        crate::routing::weighted_pick(&table, rand::rng().random_range(0..1000)).map(String::from)
    }

    /// Runs a write with a fresh request id kept across its retries.
    pub(crate) async fn write<T, F, Fut>(&self, route: &Route, attempt: F) -> Result<T, Error>
    where
        F: FnMut(Stub, Duration, v1::RequestId) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.write_with_extra(route, Duration::ZERO, attempt).await
    }

    /// Like [`write`](Self::write), with `extra` added to both the attempt
    /// timeout and the total deadline (for writes that move many bytes).
    pub(crate) async fn write_with_extra<T, F, Fut>(
        &self,
        route: &Route,
        extra: Duration,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Stub, Duration, v1::RequestId) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let ids = &self.inner.ids;
        let seq = ids.begin();
        let r = self.run(route, extra, |stub, budget, _shed_before| attempt(stub, budget, ids.id(seq))).await;
        ids.finish(seq);
        r
    }

    /// The retry loop. `attempt` gets the stub, the attempt's time budget
    /// and the number of earlier attempts that were shed.
    async fn run<T, F, Fut>(&self, route: &Route, extra: Duration, attempt: F) -> Result<T, Error>
    where
        F: FnMut(Stub, Duration, u32) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.run_from(route, None, extra, attempt).await
    }

    /// The retry loop, starting at `first` when given.
    async fn run_from<T, F, Fut>(
        &self,
        route: &Route,
        first: Option<String>,
        extra: Duration,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Stub, Duration, u32) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let o = &self.inner.options;
        let router = &self.inner.router;
        let total_deadline = o.total_deadline + extra;
        let attempt_timeout = o.attempt_timeout + extra;
        let deadline = Instant::now() + total_deadline;
        let weighted = first.is_some();
        let mut target = first.unwrap_or_else(|| router.first_target(route));
        let mut failures = 0u32;
        let mut redirects = 0u32;
        let mut shed_before = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Deadline {
                    deadline: total_deadline,
                    last: format!("no attempt finished against {target}"),
                });
            }
            let budget = (deadline - now).min(attempt_timeout);
            let result = match router.stub(&target) {
                Ok(stub) => match tokio::time::timeout(budget, attempt(stub, budget, shed_before)).await {
                    Ok(r) => r,
                    Err(_) => Err(Status::deadline_exceeded(format!("attempt against {target} timed out"))),
                },
                Err(s) => Err(s),
            };
            let status = match result {
                Ok(resp) => {
                    if let Route::Resource(name) = route
                        && let Some(v) = resp
                            .metadata()
                            .get(ROUTING_VERSION_METADATA)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                    {
                        router.note_routing_version(name, v);
                    }
                    // A replica drawn by weight is not the leader.
                    if !weighted {
                        router.remember_leader(route, &target);
                    }
                    return Ok(resp.into_inner());
                }
                Err(s) => s,
            };
            let retry_after = retry_after(&status);
            if status.code() == Code::ResourceExhausted {
                shed_before += 1;
                self.inner.sheds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if !is_retryable(status.code(), retry_after) {
                return Err(Error::Status(status));
            }
            let sleep = match redirect_target(&status, &target, redirects) {
                Some(leader) => {
                    redirects += 1;
                    router.remember_leader(route, &leader);
                    target = leader;
                    None
                }
                None => {
                    redirects = 0;
                    failures += 1;
                    router.forget_leader(route);
                    target = router.next_endpoint();
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
}

/// Every entry of a paginated list: `fetch(token)` returns one page and
/// the next token (empty after the last page). Tokens are names and
/// increase; a token that does not stops the walk rather than loop.
pub(crate) async fn all_pages<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, Error>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), Error>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = fetch(token.clone()).await?;
        all.extend(page);
        if next.is_empty() || next <= token {
            return Ok(all);
        }
        token = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_retry_and_answers_do_not() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled, Code::Unknown] {
            assert!(is_retryable(code, None), "{code:?}");
        }
        for code in [Code::NotFound, Code::FailedPrecondition, Code::InvalidArgument, Code::DataLoss] {
            assert!(!is_retryable(code, None), "{code:?}");
        }
    }

    #[test]
    fn a_shed_call_retries_only_with_a_hint() {
        assert!(!is_retryable(Code::ResourceExhausted, None));
        assert!(is_retryable(Code::ResourceExhausted, Some(Duration::from_millis(50))));
    }

    #[test]
    fn retry_hint_is_read_in_milliseconds() {
        let mut s = Status::resource_exhausted("shed");
        assert_eq!(retry_after(&s), None);
        s.metadata_mut().insert(RETRY_AFTER_MS_METADATA, tonic::metadata::MetadataValue::from_static("250"));
        assert_eq!(retry_after(&s), Some(Duration::from_millis(250)));
        s.metadata_mut().insert(RETRY_AFTER_MS_METADATA, tonic::metadata::MetadataValue::from_static("soon"));
        assert_eq!(retry_after(&s), None);
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_the_max() {
        let (initial, max) = (Duration::from_millis(20), Duration::from_millis(1_000));
        assert_eq!(backoff_ceiling(initial, max, 0), Duration::from_millis(20));
        assert_eq!(backoff_ceiling(initial, max, 1), Duration::from_millis(40));
        assert_eq!(backoff_ceiling(initial, max, 5), Duration::from_millis(640));
        assert_eq!(backoff_ceiling(initial, max, 6), max);
        assert_eq!(backoff_ceiling(initial, max, u32::MAX), max, "large attempt counts must not overflow");
    }

    #[test]
    fn backoff_stays_under_the_ceiling_and_honours_the_hint() {
        let options = crate::ClientOptions {
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
            ..Default::default()
        };
        let client = Client::new_lazy(["127.0.0.1:1"], options).expect("valid endpoint");
        for attempt in 0..20 {
            assert!(client.backoff(attempt, None) <= Duration::from_millis(100));
            let hint = Duration::from_secs(3);
            assert_eq!(client.backoff(attempt, Some(hint)), hint, "a hint longer than the ceiling wins");
        }
    }
}
