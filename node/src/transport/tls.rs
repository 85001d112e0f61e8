//! A node's TLS identity: the cluster CA and the node's certificate, read
//! from the files the configuration names, as a server configuration
//! (every listener; client certificates are verified against the CA and
//! their roles checked in `api::auth`) and a client configuration (the
//! node's channels to its peers, presenting the same node certificate).

use std::path::Path;

use tonic::transport::Certificate;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Identity;
use tonic::transport::ServerTlsConfig;

use crate::config::TlsConfig;

/// A TLS handshake that has not finished after this long is dropped.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// PEM files larger than this are refused (a CA or a certificate chain is a
/// few KiB).
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is {bytes} bytes; a PEM file may be at most {PEM_FILE_BYTES_MAX}")]
    TooLarge { path: String, bytes: u64 },
    #[error("{path} holds no PEM {what}")]
    NotPem { path: String, what: &'static str },
}

/// The server and client sides of one node's TLS.
#[derive(Clone, Debug)]
pub struct NodeTls {
    pub server: ServerTlsConfig,
    pub client: ClientTlsConfig,
}

fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let shown = || path.display().to_string();
    let bytes = std::fs::metadata(path).map_err(|source| TlsError::Read { path: shown(), source })?.len();
    if bytes > PEM_FILE_BYTES_MAX {
        return Err(TlsError::TooLarge { path: shown(), bytes });
    }
    let pem = std::fs::read(path).map_err(|source| TlsError::Read { path: shown(), source })?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem { path: shown(), what });
    }
    Ok(pem)
}

impl NodeTls {
    pub fn load(c: &TlsConfig) -> Result<NodeTls, TlsError> {
        let ca = Certificate::from_pem(read_pem(&c.ca_file, "CA certificate")?);
        let identity =
            Identity::from_pem(read_pem(&c.cert_file, "certificate")?, read_pem(&c.key_file, "private key")?);
        let server = ServerTlsConfig::new()
            .identity(identity.clone())
            .client_ca_root(ca.clone())
            // A call without a certificate reaches `api::auth`, which
            // answers UNAUTHENTICATED (health checks need none).
            .client_auth_optional(true)
            .timeout(std::time::Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS));
        let client = ClientTlsConfig::new().ca_certificate(ca).identity(identity);
        Ok(NodeTls { server, client })
    }
}
