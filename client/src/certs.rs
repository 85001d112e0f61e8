//! A cluster's certificates: the CA, node certificates and client
//! certificates with their roles (`shadowctl certs`, the demo and the tests
//! make them here).
//!
//! Every node and client of a cluster presents a certificate signed by the
//! cluster CA; nodes refuse anything else (see docs/SECURITY.md). What a
//! certificate may do is its role, carried as the DNS subject alternative
//! name `<role>.role.shadowstore` ([`shadowstore_proto::roles`]). A node
//! certificate also names the host names and IP addresses its node is
//! reached at, since peers and clients check those.
//!
//! Files in the certificate directory: `ca.pem` and `ca.key` (keep the key
//! off the nodes once certificates are issued), and `<name>.pem` with
//! `<name>.key` per node or client. Keys are written with mode 0600.

use std::path::Path;
use std::path::PathBuf;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;
pub use shadowstore_proto::roles::Role;

/// A leaf certificate is valid for this many years from January 1st of the
/// year it is issued in.
pub const LEAF_VALIDITY_YEARS_MAX: i32 = 2;
/// The CA is valid for this many years.
pub const CA_VALIDITY_YEARS_MAX: i32 = 10;
/// Host names and addresses one node certificate may carry.
pub const CERT_HOSTS_MAX: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the certificate {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The cluster CA: its key signs every node and client certificate.
pub struct CertAuthority {
    key: KeyPair,
    cert_pem: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io { path: path.to_path_buf(), source }
}

fn generate(what: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Generate { what: what.to_string(), source }
}

/// This year, from the system clock (certificates start on January 1st).
fn this_year() -> i32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Mean Gregorian year: off by at most a day around New Year, which
    // only moves a start date by a year and never makes a certificate
    // not yet valid (it starts a year early at worst).
    1970 + (secs / 31_556_952) as i32
}

/// The CA's parameters. Deterministic, so a saved CA key is enough to
/// issue more certificates later: the issuer name and key identifier are
/// recomputed from these and the key.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, "shadowstore");
    p.distinguished_name.push(DnType::CommonName, "shadowstore cluster CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let year = this_year();
    p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(year + CA_VALIDITY_YEARS_MAX, 1, 1);
    p
}

/// Writes `contents` to `path`, readable by the owner only when `secret`.
fn write(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    if secret {
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(io(path))
}

impl CertAuthority {
    /// A new CA with a fresh key.
    pub fn create() -> Result<CertAuthority, CertError> {
        let key = KeyPair::generate().map_err(generate("CA key"))?;
        let cert = ca_params().self_signed(&key).map_err(generate("CA"))?;
        Ok(CertAuthority { key, cert_pem: cert.pem() })
    }

    /// The CA saved in `dir`, or a new one saved there. Returns whether it
    /// was created.
    pub fn open_or_create(dir: &Path) -> Result<(CertAuthority, bool), CertError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert_path.exists() || key_path.exists() {
            let key = KeyPair::from_pem(&read(&key_path)?)
                .map_err(|e| CertError::Invalid(format!("{}: not a private key: {e}", key_path.display())))?;
            return Ok((CertAuthority { key, cert_pem: read(&cert_path)? }, false));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let ca = CertAuthority::create()?;
        write(&cert_path, &ca.cert_pem, false)?;
        write(&key_path, &ca.key.serialize_pem(), true)?;
        Ok((ca, true))
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `name` granting `role`, valid for `hosts` too (a
    /// node's host names and IP addresses; empty for clients). Returns the
    /// certificate and key in PEM.
    pub fn issue(&self, name: &str, role: Role, hosts: &[String]) -> Result<(String, String), CertError> {
        check_name(name)?;
        if hosts.len() > CERT_HOSTS_MAX {
            return Err(CertError::Invalid(format!("{} hosts for {name}; at most {CERT_HOSTS_MAX}", hosts.len())));
        }
        if role != Role::Node && !hosts.is_empty() {
            return Err(CertError::Invalid(format!("only node certificates name hosts ({name} is a {role})")));
        }
        let mut names = vec![role.subject_name().to_string()];
        names.extend(hosts.iter().cloned());
        let mut p = CertificateParams::new(names).map_err(generate(name))?;
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, "shadowstore");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = if role == Role::Node {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        p.use_authority_key_identifier_extension = true;
        let serial: [u8; 16] = rand::random();
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial[..15]));
        let year = this_year();
        p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        p.not_after = rcgen::date_time_ymd(year + LEAF_VALIDITY_YEARS_MAX, 1, 1);
        let key = KeyPair::generate().map_err(generate(name))?;
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = p.signed_by(&key, &issuer).map_err(generate(name))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issues a certificate (see [`issue`](Self::issue)) and writes it to
    /// `dir/<name>.pem` and `dir/<name>.key`.
    pub fn issue_to(&self, dir: &Path, name: &str, role: Role, hosts: &[String]) -> Result<PathBuf, CertError> {
        let (cert, key) = self.issue(name, role, hosts)?;
        let cert_path = dir.join(format!("{name}.pem"));
        write(&cert_path, &cert, false)?;
        write(&dir.join(format!("{name}.key")), &key, true)?;
        Ok(cert_path)
    }
}

/// A certificate's file name stem: 1..=64 bytes of `[a-z0-9-]`.
fn check_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name != "ca";
    if ok {
        Ok(())
    } else {
        Err(CertError::Invalid(format!("certificate name {name:?}: use 1..=64 bytes of [a-z0-9-], not \"ca\"")))
    }
}

/// The hosts of the one-machine set: loopback by address and by name.
pub const LOCAL_HOSTS: [&str; 2] = ["127.0.0.1", "localhost"];

impl CertAuthority {
    /// The set one machine needs, as the demo and the tests use it: one
    /// certificate `node` for [`LOCAL_HOSTS`], shared by the local nodes,
    /// and one client certificate per client role, named after it
    /// (`admin`, `writer`, `reader`). Returns the certificates' paths.
    pub fn issue_local_set(&self, dir: &Path) -> Result<Vec<PathBuf>, CertError> {
        let hosts: Vec<String> = LOCAL_HOSTS.iter().map(|h| h.to_string()).collect();
        let mut written = vec![self.issue_to(dir, "node", Role::Node, &hosts)?];
        for role in [Role::Admin, Role::Writer, Role::Reader] {
            written.push(self.issue_to(dir, role.name(), role, &[])?);
        }
        Ok(written)
    }
}

/// The CA in `dir` (made if missing) and a fresh one-machine set
/// ([`CertAuthority::issue_local_set`]).
pub fn local_set(dir: &Path) -> Result<CertAuthority, CertError> {
    let (ca, _) = CertAuthority::open_or_create(dir)?;
    ca.issue_local_set(dir)?;
    Ok(ca)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_ca_issues_again_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, created) = CertAuthority::open_or_create(dir.path()).unwrap();
        assert!(created);
        let (again, created) = CertAuthority::open_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(ca.cert_pem(), again.cert_pem());
        let (cert, key) = again.issue("host-a", Role::Node, &["127.0.0.1".into(), "host-a".into()]).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----") && key.contains("PRIVATE KEY"));
        assert!(again.issue("Bad Name", Role::Reader, &[]).is_err());
        assert!(again.issue("ca", Role::Reader, &[]).is_err());
        assert!(again.issue("alice", Role::Reader, &["127.0.0.1".into()]).is_err(), "clients name no hosts");
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }
}
