//! Who may call what: every gRPC call passes through [`Authorize`] before
//! any service sees it.
//!
//! With TLS (the default), rustls has already checked that a presented
//! certificate chains to the cluster CA; here the call's method decides
//! the role it needs ([`shadowstore_proto::roles`]) and the certificate's
//! subject names decide the roles the caller holds. No certificate:
//! UNAUTHENTICATED. The wrong role: PERMISSION_DENIED, naming the role
//! needed. Health checks need nothing (load balancers probe them); the
//! peer service needs a node certificate, so a client certificate, even
//! an admin's, cannot speak Raft or join. With `insecure = true` nothing
//! is checked (the node logs that loudly at start-up).

use std::task::Context;
use std::task::Poll;

use futures::future::BoxFuture;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::DnsName;
use rustls_pki_types::ServerName;
use shadowstore_proto::roles::Role;
use shadowstore_proto::roles::client_method_role;
use tonic::transport::server::TlsConnectInfo;

/// What one call needs from its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    Nothing,
    Role(Role),
}

/// The need of the call at `path` (`/package.Service/Method`).
fn needs(path: &str) -> Needs {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match service {
        "grpc.health.v1.Health" => Needs::Nothing,
        "shadowstore.peer.v1.Peer" => Needs::Role(Role::Node),
        "shadowstore.v1.ShadowStore" => Needs::Role(client_method_role(method)),
        // Reflection, and anything unknown (answered UNIMPLEMENTED).
        _ => Needs::Role(Role::Reader),
    }
}

/// The roles `cert` (the caller's end-entity certificate, already
/// verified against the cluster CA) grants.
pub fn roles_of(cert: &CertificateDer<'_>) -> Vec<Role> {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    Role::ALL
        .into_iter()
        .filter(|role| {
            DnsName::try_from(role.subject_name())
                .is_ok_and(|name| ee.verify_is_valid_for_subject_name(&ServerName::DnsName(name)).is_ok())
        })
        .collect()
}

/// Whether a caller with `certs` may make the call at `path`.
fn check(path: &str, certs: Option<&[CertificateDer<'static>]>) -> Result<(), tonic::Status> {
    let Needs::Role(needed) = needs(path) else {
        return Ok(());
    };
    let Some(cert) = certs.and_then(|c| c.first()) else {
        return Err(tonic::Status::unauthenticated(format!(
            "{path} needs a client certificate signed by the cluster CA (role {needed})"
        )));
    };
    let held = roles_of(cert);
    if held.iter().any(|r| r.satisfies(needed)) {
        return Ok(());
    }
    let held: Vec<&str> = held.iter().map(|r| r.name()).collect();
    Err(tonic::Status::permission_denied(format!(
        "{path} needs role {needed}; the certificate grants {}",
        if held.is_empty() { "none".to_string() } else { held.join(", ") }
    )))
}

/// The layer that puts [`Authorize`] in front of every service.
#[derive(Clone, Copy, Debug)]
pub struct AuthorizeLayer {
    /// `false` with `insecure = true`: every call passes.
    pub enforce: bool,
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authorize { inner, enforce: self.enforce }
    }
}

#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    enforce: bool,
}

impl<S, B> tower::Service<http::Request<B>> for Authorize<S>
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

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.enforce {
            let certs = req.extensions().get::<TlsConnectInfo<()>>().and_then(TlsConnectInfo::peer_certs);
            if let Err(status) = check(req.uri().path(), certs.as_deref().map(Vec::as_slice)) {
                tracing::warn!(path = %req.uri().path(), code = ?status.code(), "call refused: {}", status.message());
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_need_their_roles() {
        assert_eq!(needs("/grpc.health.v1.Health/Check"), Needs::Nothing);
        assert_eq!(needs("/shadowstore.peer.v1.Peer/RaftVote"), Needs::Role(Role::Node));
        assert_eq!(needs("/shadowstore.peer.v1.Peer/Join"), Needs::Role(Role::Node));
        assert_eq!(needs("/shadowstore.v1.ShadowStore/Put"), Needs::Role(Role::Writer));
        assert_eq!(needs("/shadowstore.v1.ShadowStore/CreateResource"), Needs::Role(Role::Admin));
        assert_eq!(needs("/shadowstore.v1.ShadowStore/Get"), Needs::Role(Role::Reader));
        assert_eq!(needs("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), Needs::Role(Role::Reader));
        let e = check("/shadowstore.peer.v1.Peer/RaftVote", None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(check("/grpc.health.v1.Health/Check", None).is_ok());
        let junk = [CertificateDer::from(vec![1u8, 2, 3])];
        let e = check("/shadowstore.v1.ShadowStore/Get", Some(&junk)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("needs role reader"), "{}", e.message());
    }

    #[test]
    fn roles_come_from_the_subject_names() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["writer.role.shadowstore".to_string(), "host-a".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(roles_of(cert.der()), vec![Role::Writer]);
        let certs = [cert.der().clone()];
        assert!(check("/shadowstore.v1.ShadowStore/Put", Some(&certs)).is_ok());
        assert!(check("/shadowstore.v1.ShadowStore/Get", Some(&certs)).is_ok());
        let e = check("/shadowstore.v1.ShadowStore/DeleteResource", Some(&certs)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("grants writer"), "{}", e.message());
        assert_eq!(
            check("/shadowstore.peer.v1.Peer/RaftAppend", Some(&certs)).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }
}
