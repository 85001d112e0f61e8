//! Validation of names and sizes at the edge. Everything refused here is
//! INVALID_ARGUMENT or RESOURCE_EXHAUSTED and changes nothing.
//!
//! Rules (also in docs/API.md):
//! - resource: 1..=128 bytes of `[a-z0-9._-]`, first byte `[a-z0-9]`;
//! - variant: 1..=256 bytes of `[A-Za-z0-9._/-]`, no leading or trailing
//!   `/`, no empty segment (`//`), no `.` or `..` segment.

use tonic::Status;

use shadowstore_base::limits::INLINE_VALUE_BYTES_MAX;
use shadowstore_base::limits::REPLICATION_FACTOR_DEFAULT;
use shadowstore_base::limits::REPLICATION_FACTORS_ALLOWED;
use shadowstore_base::limits::RESOURCE_NAME_BYTES_MAX;
use shadowstore_base::limits::VARIANT_NAME_BYTES_MAX;

pub fn resource_name(name: &str) -> Result<(), Status> {
    let bad = |why: &str| Err(Status::invalid_argument(format!("resource name {name:?} {why}")));
    if name.is_empty() {
        return Err(Status::invalid_argument("resource name is empty"));
    }
    if name.len() > RESOURCE_NAME_BYTES_MAX {
        return bad(&format!("is {} bytes; the limit is {RESOURCE_NAME_BYTES_MAX}", name.len()));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return bad("must start with a lowercase letter or digit");
    }
    if let Some(c) =
        name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!("contains {c:?}; allowed are a-z 0-9 . _ -"));
    }
    Ok(())
}

/// A client region (`x-shadowstore-region`): 1..=64 bytes of `[a-z0-9-]`.
pub fn region(region: &str) -> Result<(), Status> {
    let ok = !region.is_empty()
        && region.len() <= 64
        && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!("region {region:?} must be 1..=64 bytes of [a-z0-9-]")))
    }
}

pub fn variant_name(name: &str) -> Result<(), Status> {
    let bad = |why: &str| Err(Status::invalid_argument(format!("variant name {name:?} {why}")));
    if name.is_empty() {
        return Err(Status::invalid_argument("variant name is empty"));
    }
    if name.len() > VARIANT_NAME_BYTES_MAX {
        return bad(&format!("is {} bytes; the limit is {VARIANT_NAME_BYTES_MAX}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))) {
        return bad(&format!("contains {c:?}; allowed are A-Z a-z 0-9 . _ - /"));
    }
    if name.starts_with('/') || name.ends_with('/') {
        return bad("must not start or end with '/'");
    }
    if name.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return bad("has an empty, '.' or '..' segment");
    }
    Ok(())
}

pub fn inline_value(len: usize) -> Result<(), Status> {
    if len > INLINE_VALUE_BYTES_MAX {
        return Err(Status::resource_exhausted(format!(
            "value of {len} bytes exceeds the {INLINE_VALUE_BYTES_MAX}-byte limit for values stored through Raft"
        )));
    }
    Ok(())
}

pub fn replication_factor(rf: u32) -> Result<u32, Status> {
    let rf = if rf == 0 { REPLICATION_FACTOR_DEFAULT } else { rf };
    if !REPLICATION_FACTORS_ALLOWED.contains(&rf) {
        return Err(Status::invalid_argument(format!(
            "replication factor {rf} is not allowed; use one of {REPLICATION_FACTORS_ALLOWED:?}"
        )));
    }
    Ok(rf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        for ok in ["a", "shop-1", "0.cfg_v2", &"x".repeat(128)] {
            resource_name(ok).unwrap();
        }
        for bad in ["", "-a", ".a", "A", "a b", "a/b", "é", &"x".repeat(129)] {
            let e = resource_name(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn variant_names() {
        for ok in ["en", "en/mobile", "De_de/Desktop-2.json", &"v".repeat(256)] {
            variant_name(ok).unwrap();
        }
        for bad in ["", "/en", "en/", "en//m", "en/./m", "../x", "en m", "en\0", &"v".repeat(257)] {
            assert_eq!(variant_name(bad).unwrap_err().code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn sizes_and_factors() {
        inline_value(INLINE_VALUE_BYTES_MAX).unwrap();
        assert_eq!(inline_value(INLINE_VALUE_BYTES_MAX + 1).unwrap_err().code(), tonic::Code::ResourceExhausted);
        assert_eq!(replication_factor(0).unwrap(), 3);
        assert_eq!(replication_factor(5).unwrap(), 5);
        for bad in [1, 2, 4, 6] {
            assert_eq!(replication_factor(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        }
    }
}

/// The request id of a write (none: not deduplicated).
pub fn request_id(r: Option<shadowstore_proto::v1::RequestId>) -> shadowstore_base::ids::RequestId {
    match r {
        None => shadowstore_base::ids::RequestId::default(),
        Some(r) => shadowstore_base::ids::RequestId {
            client_id: r.client_id,
            seq: r.seq,
            first_incomplete_seq: r.first_incomplete_seq,
        },
    }
}
