//! Rust client for shadowstore.
//!
//! A [`Client`] talks to any node of a cluster. It finds the node that
//! serves each request (resource groups and the meta group each have their
//! own leader), remembers it per resource, follows redirects, and retries
//! with jittered backoff inside a total deadline. Every write carries a
//! request id, so a write retried after a lost answer is applied once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), shadowstore_client::Error> {
//! use shadowstore_client::{Client, ClientOptions, ClientTls, ReadOptions};
//!
//! // Mutual TLS: the cluster CA and this client's certificate, which names
//! // its role (`shadowctl certs`; the demo's are in .demo/certs).
//! let tls = ClientTls::from_dir(std::path::Path::new(".demo/certs"), "admin")?;
//! let options = ClientOptions { tls: Some(tls), ..ClientOptions::default() };
//! let endpoints = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"];
//! let client = Client::connect_with(endpoints, options).await?;
//! client.create_resource("catalog", 3).await?;
//! let v1 = client.put("catalog", "en/mobile", b"hello".to_vec()).await?;
//! let read = client.get("catalog", "en/mobile").await?;
//! assert_eq!(read.version, v1);
//! assert_eq!(&read.value[..], b"hello");
//!
//! // Optimistic concurrency: only overwrite the version we read.
//! client.put_if("catalog", "en/mobile", b"hello again".to_vec(), read.version).await?;
//!
//! // A read any replica may serve, at most 500 ms stale.
//! let stale = client.get_with("catalog", "en/mobile", ReadOptions::stale_ok(500)).await?;
//! # let _ = stale;
//! # Ok(())
//! # }
//! ```

//!
//! The crate, one concern per module:
//!
//! - `client`: the [`Client`] handle, [`ClientOptions`], construction.
//! - `routing`: which node serves a request; leader cache, redirects.
//! - `retry`: the retry engine; deadlines, backoff, retryable answers.
//! - `request_ids`: request ids that make retried writes apply once.
//! - `data`: put, get, delete and list in one message.
//! - `stream`: streamed puts and gets of any size, files.
//! - `admin`: resources, scrubber, placement, demand, cluster status.
//! - `error`: the [`Error`] every call returns.
//! - [`certs`]: a cluster's CA, node and client certificates.

mod admin;
pub mod certs;
mod client;
mod data;
mod error;
mod request_ids;
mod retry;
mod routing;
mod shadow;
mod stream;

pub use admin::CreateOptions;
pub use client::Client;
pub use client::ClientOptions;
pub use client::ClientTls;
pub use client::node_stub;
pub use data::GetResult;
pub use data::ReadOptions;
pub use error::Error;
pub use shadowstore_proto::v1;
pub use shadowstore_proto::v1::ShadowActionKind;
pub use stream::Progress;
