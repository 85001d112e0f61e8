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
//! is checked (the node logs that loudly at start-up). Peer calls must
//! also name this node's cluster ([`crate::transport::cluster_id`]),
//! with or without TLS. A client listener of a node with a peer listener
//! of its own refuses peer calls once its gate closes
//! ([`crate::transport::peer_gate`]).

use std::task::Context;
use std::task::Poll;

use futures::future::BoxFuture;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::DnsName;
use rustls_pki_types::ServerName;
use shadowstore_proto::CLUSTER_ID_METADATA;
use shadowstore_proto::roles::Role;
use shadowstore_proto::roles::client_method_role;
use tonic::transport::server::TlsConnectInfo;

use crate::transport::cluster_id;
use crate::transport::cluster_id::ClusterIdCell;
use crate::transport::peer_gate::PeerGate;

/// The peer service's name, and the prefix of its methods' paths.
const PEER_SERVICE: &str = "shadowstore.peer.v1.Peer";
const PEER_SERVICE_PREFIX: &str = "/shadowstore.peer.v1.Peer/";

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
        PEER_SERVICE => Needs::Role(Role::Node),
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

/// Whether a peer call at `path` carrying `theirs` may reach a node of
/// the cluster in `mine` (checked with or without TLS: two clusters may
/// share a CA, or run with `insecure = true`).
fn check_cluster(path: &str, theirs: Option<&str>, mine: &ClusterIdCell) -> Result<(), tonic::Status> {
    let Some(method) = path.strip_prefix(PEER_SERVICE_PREFIX) else {
        return Ok(());
    };
    cluster_id::check(mine.get(), theirs, method).map_err(|m| tonic::Status::permission_denied(m.to_string()))
}

/// A peer call on a listener whose gate is closed: the node serves peers
/// on a listener of its own.
fn check_gate(path: &str, gate: &PeerGate) -> Result<(), tonic::Status> {
    if gate.is_open() || !path.starts_with(PEER_SERVICE_PREFIX) {
        return Ok(());
    }
    let mut refusal = tonic::Status::unimplemented(format!(
        "{path}: this is a client listener; this node serves peers on its peer listener (peer_listen_addr)"
    ));
    if let Some(v) = gate.peer_addr().and_then(|a| tonic::metadata::MetadataValue::try_from(a).ok()) {
        refusal.metadata_mut().insert(shadowstore_proto::PEER_ADDRESS_METADATA, v);
    }
    Err(refusal)
}

/// The layer that puts [`Authorize`] in front of every service.
#[derive(Clone, Debug)]
pub struct AuthorizeLayer {
    /// `false` with `insecure = true`: every call passes the role check.
    pub enforce: bool,
    /// This node's cluster id, checked on every peer call.
    pub cluster_id: ClusterIdCell,
    /// Whether this listener answers peer calls.
    pub peer_gate: PeerGate,
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authorize { inner, layer: self.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    layer: AuthorizeLayer,
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
        let path = req.uri().path();
        let roles = if self.layer.enforce {
            let certs = req.extensions().get::<TlsConnectInfo<()>>().and_then(TlsConnectInfo::peer_certs);
            check(path, certs.as_deref().map(Vec::as_slice))
        } else {
            Ok(())
        };
        let theirs = req.headers().get(CLUSTER_ID_METADATA).map(|v| v.to_str().unwrap_or("(not ASCII)"));
        let allowed = roles
            .and_then(|()| check_cluster(path, theirs, &self.layer.cluster_id))
            .and_then(|()| check_gate(path, &self.layer.peer_gate));
        if let Err(status) = allowed {
            tracing::warn!(path = %path, code = ?status.code(), "call refused: {}", status.message());
            return Box::pin(std::future::ready(Ok(status.into_http())));
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
    fn peer_calls_name_this_cluster() {
        let mine = ClusterIdCell::default();
        assert!(check_cluster("/shadowstore.peer.v1.Peer/RaftAppend", None, &mine).is_ok(), "no id known yet");
        let id = crate::transport::cluster_id::ClusterId::random(&crate::rng::NodeRng::from_seed(3));
        mine.set(id).unwrap();
        let e = check_cluster("/shadowstore.peer.v1.Peer/RaftAppend", None, &mine).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let other = "0".repeat(32);
        let e = check_cluster("/shadowstore.peer.v1.Peer/RaftVote", Some(&other), &mine).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains(&id.to_string()), "{}", e.message());
        assert!(check_cluster("/shadowstore.peer.v1.Peer/RaftVote", Some(&id.to_string()), &mine).is_ok());
        assert!(check_cluster("/shadowstore.v1.ShadowStore/Get", Some(&other), &mine).is_ok(), "clients are not peers");
    }

    #[test]
    fn a_closed_gate_refuses_peer_calls_only() {
        let gate = PeerGate::for_client_listener("10.0.0.1:7200");
        assert!(check_gate("/shadowstore.peer.v1.Peer/RaftAppend", &gate).is_ok());
        gate.follow(true);
        let e = check_gate("/shadowstore.peer.v1.Peer/RaftAppend", &gate).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(e.message().contains("peer_listen_addr"), "{}", e.message());
        let named = e.metadata().get(shadowstore_proto::PEER_ADDRESS_METADATA).and_then(|v| v.to_str().ok());
        assert_eq!(named, Some("10.0.0.1:7200"), "the refusal names the peer address");
        assert!(check_gate("/shadowstore.v1.ShadowStore/Get", &gate).is_ok());
        assert!(check_gate("/grpc.health.v1.Health/Check", &gate).is_ok());
        gate.follow(false);
        assert!(check_gate("/shadowstore.peer.v1.Peer/RaftAppend", &gate).is_ok());
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
