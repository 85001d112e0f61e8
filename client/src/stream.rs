//! Streaming values of any size: PutStream and GetStream, and files.
//!
//! A streamed write sends a header and then the value in 1 MiB messages read
//! from a source the caller can re-open, because a retry (after a redirect
//! or a lost answer) sends the whole value again. It is given extra time in
//! proportion to its size. A streamed read is retried like any call until
//! its first byte arrives; after that a failure ends it, and a stream that
//! ends short is DATA_LOSS. The unary calls in `data.rs` fall back to these
//! for large values.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use shadowstore_proto::v1;
use tokio::time::Instant;
use tonic::Code;
use tonic::Status;

use crate::client::Client;
use crate::data::ReadOptions;
use crate::data::get_request;
use crate::data::read_request;
use crate::error::Error;
use crate::routing::Route;

/// Bytes per PutStream message.
const PUT_CHUNK_BYTES: usize = 1024 * 1024;

/// Called with the bytes transferred so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

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

impl Client {
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
        let route = Route::resource(resource);
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
        let route = Route::resource(resource);
        let region = self.inner.options.region.as_deref();
        self.call_read(&route, |mut stub, _budget, shed_before| {
            let req = read_request(get_request(resource, variant, &options), region, shed_before);
            async move { stub.get_stream(req).await }
        })
        .await
    }
}
