//! Reading and writing variants in one message: put, get, delete, list.
//!
//! Values up to 64 KiB travel in one unary call. [`Client::put`] hands
//! larger values to the streaming path, and [`Client::get_with`] switches to
//! it when the node answers that the version is too large for one message
//! ([`USE_STREAM_METADATA`]); streaming lives in `stream.rs`. Writes run
//! through the retry engine with a request id (`retry.rs`); every read
//! carries the client's region and how many earlier attempts of it were
//! shed, both for the cluster's demand telemetry ([`read_request`]).

use bytes::Bytes;
use shadowstore_proto::REGION_METADATA;
use shadowstore_proto::SHED_BEFORE_METADATA;
use shadowstore_proto::USE_STREAM_METADATA;
use shadowstore_proto::v1;
use tonic::metadata::MetadataValue;

use crate::client::Client;
use crate::error::Error;
use crate::routing::Route;

/// Values up to this size go in one unary Put.
const UNARY_PUT_BYTES_MAX: usize = 64 * 1024;

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResult {
    pub value: Bytes,
    pub version: u64,
    /// The node that served the read.
    pub served_by_node: u64,
}

/// The request for reading `resource/variant` as `options` allow (unary or
/// streamed).
pub(crate) fn get_request(resource: &str, variant: &str, options: &ReadOptions) -> v1::GetRequest {
    let (consistency, max_staleness_ms) = match options.max_staleness_ms {
        None => (v1::Consistency::Linearizable, 0),
        Some(ms) => (v1::Consistency::StaleOk, ms),
    };
    v1::GetRequest {
        resource: resource.to_string(),
        variant: variant.to_string(),
        version: options.version,
        consistency: consistency as i32,
        max_staleness_ms,
    }
}

/// A read request carrying the client's `region`, if it has a valid one,
/// and `shed_before`, how many earlier attempts of this read were shed
/// (those were counted as demand already), if any.
pub(crate) fn read_request(
    get: v1::GetRequest,
    region: Option<&str>,
    shed_before: u32,
) -> tonic::Request<v1::GetRequest> {
    let mut req = tonic::Request::new(get);
    if let Some(region) = region
        && let Ok(value) = MetadataValue::try_from(region)
    {
        req.metadata_mut().insert(REGION_METADATA, value);
    }
    if shed_before > 0 {
        req.metadata_mut().insert(SHED_BEFORE_METADATA, MetadataValue::from(shed_before));
    }
    req
}

impl Client {
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
        let route = Route::resource(resource);
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

    async fn get_unary(&self, resource: &str, variant: &str, options: &ReadOptions) -> Result<GetResult, Error> {
        let route = Route::resource(resource);
        let region = self.inner.options.region.as_deref();
        let r = self
            .call_read(&route, |mut stub, budget, shed_before| {
                let mut req = read_request(get_request(resource, variant, options), region, shed_before);
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
        let route = Route::resource(resource);
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

    /// Every live variant of `resource`, in name order (fetched page by
    /// page; each page is linearizable, the whole list is not a snapshot).
    pub async fn list_variants(&self, resource: &str) -> Result<Vec<v1::VariantInfo>, Error> {
        let route = &Route::resource(resource);
        crate::retry::all_pages(|token| async move {
            let r = self
                .call(route, |mut stub, budget| {
                    let mut req = tonic::Request::new(v1::ListVariantsRequest {
                        resource: resource.to_string(),
                        consistency: v1::Consistency::Linearizable as i32,
                        page_size: 0,
                        page_token: token.clone(),
                    });
                    req.set_timeout(budget);
                    async move { stub.list_variants(req).await }
                })
                .await?;
            Ok((r.variants, r.next_page_token))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_reads_ask_for_stale_ok_with_their_bound() {
        let linear = get_request("r", "v", &ReadOptions::linearizable());
        assert_eq!(linear.consistency, v1::Consistency::Linearizable as i32);
        assert_eq!(linear.max_staleness_ms, 0);
        let stale = get_request("r", "v", &ReadOptions::stale_ok(500).at_version(7));
        assert_eq!(stale.consistency, v1::Consistency::StaleOk as i32);
        assert_eq!(stale.max_staleness_ms, 500);
        assert_eq!(stale.version, Some(7));
    }

    #[test]
    fn a_read_carries_the_shed_count_only_after_a_shed_attempt() {
        let get = || get_request("r", "v", &ReadOptions::linearizable());
        assert!(read_request(get(), None, 0).metadata().get(SHED_BEFORE_METADATA).is_none());
        let req = read_request(get(), None, 2);
        assert_eq!(req.metadata().get(SHED_BEFORE_METADATA).and_then(|v| v.to_str().ok()), Some("2"));
    }

    #[test]
    fn a_read_carries_the_region_when_it_is_a_valid_header() {
        let get = || get_request("r", "v", &ReadOptions::linearizable());
        let req = read_request(get(), Some("eu-west"), 0);
        assert_eq!(req.metadata().get(REGION_METADATA).and_then(|v| v.to_str().ok()), Some("eu-west"));
        assert!(read_request(get(), None, 0).metadata().get(REGION_METADATA).is_none());
        assert!(read_request(get(), Some("bad\nregion"), 0).metadata().get(REGION_METADATA).is_none());
    }
}
