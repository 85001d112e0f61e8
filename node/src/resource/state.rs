//! The state machine of one resource group.
//!
//! Variants are stored inline (values up to `INLINE_VALUE_BYTES_MAX`). A
//! variant's version is the Raft log index of the write that produced it:
//! unique, increasing, never reused, so a conditional write can never be
//! fooled by a delete-and-recreate (no ABA). Applying a command is a pure
//! function of the state and the command; every node computes the same
//! result.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

use crate::dedup::Admission;
use crate::dedup::Sessions;
use crate::ids::RequestId;
use crate::limits::INLINE_VALUE_BYTES_MAX;
use crate::limits::RESOURCE_INLINE_BYTES_MAX;
use crate::limits::RESOURCE_VARIANTS_MAX;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub version: u64,
    pub value: Bytes,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ResourceCommand {
    Put {
        request: RequestId,
        /// The proposing leader's wall clock, for session expiry.
        now_ms: u64,
        variant: String,
        value: Bytes,
        if_version: Option<u64>,
    },
    Delete {
        request: RequestId,
        now_ms: u64,
        variant: String,
        if_version: Option<u64>,
    },
}

impl fmt::Display for ResourceCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceCommand::Put { variant, value, .. } => {
                write!(f, "put {variant} ({} bytes)", value.len())
            }
            ResourceCommand::Delete { variant, .. } => write!(f, "delete {variant}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceResponse {
    /// The write applied; `version` is the new version (for a delete, the
    /// version of the deletion).
    Written { version: u64 },
    /// A conditional write found another current version (`None`: absent).
    VersionMismatch { current: Option<u64> },
    /// Delete of a variant that does not exist.
    NotFound,
    /// The write would exceed a limit of the resource.
    LimitExceeded { what: String },
    /// A late duplicate of a request whose answer was already delivered.
    StaleRequest,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    pub variants: BTreeMap<String, Variant>,
    pub inline_bytes: u64,
    pub sessions: Sessions<ResourceResponse>,
}

impl ResourceState {
    /// Applies `cmd`, committed at log index `index`.
    pub fn apply(&mut self, index: u64, cmd: &ResourceCommand) -> ResourceResponse {
        let (request, now_ms) = match cmd {
            ResourceCommand::Put { request, now_ms, .. } | ResourceCommand::Delete { request, now_ms, .. } => {
                (request, *now_ms)
            }
        };
        self.sessions.advance(now_ms);
        match self.sessions.admit(request) {
            Admission::Duplicate(answer) => return answer,
            Admission::Stale => return ResourceResponse::StaleRequest,
            Admission::Execute => {}
        }
        let answer = self.execute(index, cmd);
        self.sessions.record(request, &answer);
        answer
    }

    fn execute(&mut self, index: u64, cmd: &ResourceCommand) -> ResourceResponse {
        match cmd {
            ResourceCommand::Put { variant, value, if_version, .. } => {
                let current = self.variants.get(variant);
                if let Some(expected) = if_version {
                    let actual = current.map(|v| v.version);
                    if actual.unwrap_or(0) != *expected {
                        return ResourceResponse::VersionMismatch { current: actual };
                    }
                }
                if value.len() > INLINE_VALUE_BYTES_MAX {
                    return ResourceResponse::LimitExceeded {
                        what: format!("value of {} bytes exceeds {INLINE_VALUE_BYTES_MAX}", value.len()),
                    };
                }
                let old_len = current.map(|v| v.value.len() as u64).unwrap_or(0);
                let new_total = self.inline_bytes - old_len + value.len() as u64;
                if new_total > RESOURCE_INLINE_BYTES_MAX {
                    return ResourceResponse::LimitExceeded {
                        what: format!("resource would hold {new_total} bytes, limit {RESOURCE_INLINE_BYTES_MAX}"),
                    };
                }
                if current.is_none() && self.variants.len() >= RESOURCE_VARIANTS_MAX {
                    return ResourceResponse::LimitExceeded {
                        what: format!("resource holds the maximum of {RESOURCE_VARIANTS_MAX} variants"),
                    };
                }
                assert!(current.is_none_or(|v| v.version < index), "versions must increase: {variant} at {index}");
                self.inline_bytes = new_total;
                self.variants.insert(variant.clone(), Variant { version: index, value: value.clone() });
                ResourceResponse::Written { version: index }
            }
            ResourceCommand::Delete { variant, if_version, .. } => {
                let Some(current) = self.variants.get(variant) else {
                    return match if_version {
                        Some(0) | None => ResourceResponse::NotFound,
                        Some(_) => ResourceResponse::VersionMismatch { current: None },
                    };
                };
                if let Some(expected) = if_version {
                    if current.version != *expected {
                        return ResourceResponse::VersionMismatch { current: Some(current.version) };
                    }
                }
                self.inline_bytes -= current.value.len() as u64;
                self.variants.remove(variant);
                ResourceResponse::Written { version: index }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(variant: &str, value: &'static [u8], if_version: Option<u64>) -> ResourceCommand {
        ResourceCommand::Put {
            request: RequestId::default(),
            now_ms: 1,
            variant: variant.to_string(),
            value: Bytes::from_static(value),
            if_version,
        }
    }

    #[test]
    fn versions_are_log_indexes_and_conditions_hold() {
        let mut s = ResourceState::default();
        assert_eq!(s.apply(5, &put("en", b"a", None)), ResourceResponse::Written { version: 5 });
        assert_eq!(s.apply(6, &put("en", b"b", Some(4))), ResourceResponse::VersionMismatch { current: Some(5) });
        assert_eq!(s.variants["en"].value, Bytes::from_static(b"a"), "failed condition changed nothing");
        assert_eq!(s.apply(7, &put("en", b"bb", Some(5))), ResourceResponse::Written { version: 7 });
        assert_eq!(s.inline_bytes, 2);
        assert_eq!(s.apply(8, &put("de", b"x", Some(3))), ResourceResponse::VersionMismatch { current: None });
        assert_eq!(s.apply(9, &put("de", b"x", Some(0))), ResourceResponse::Written { version: 9 });
    }

    #[test]
    fn delete_removes_and_reports_missing() {
        let mut s = ResourceState::default();
        s.apply(1, &put("en", b"abc", None));
        let del = |v: Option<u64>| ResourceCommand::Delete {
            request: RequestId::default(),
            now_ms: 1,
            variant: "en".into(),
            if_version: v,
        };
        assert_eq!(s.apply(2, &del(Some(9))), ResourceResponse::VersionMismatch { current: Some(1) });
        assert_eq!(s.apply(3, &del(Some(1))), ResourceResponse::Written { version: 3 });
        assert_eq!(s.inline_bytes, 0);
        assert_eq!(s.apply(4, &del(None)), ResourceResponse::NotFound);
    }

    #[test]
    fn retried_put_applies_once() {
        let mut s = ResourceState::default();
        let request = RequestId { client_id: 3, seq: 1, first_incomplete_seq: 1 };
        let cmd = ResourceCommand::Put {
            request,
            now_ms: 10,
            variant: "v".into(),
            value: Bytes::from_static(b"1"),
            if_version: None,
        };
        assert_eq!(s.apply(1, &cmd), ResourceResponse::Written { version: 1 });
        // The same request committed again (a retry after a lost answer).
        assert_eq!(s.apply(2, &cmd), ResourceResponse::Written { version: 1 });
        assert_eq!(s.variants["v"].version, 1);
    }

    #[test]
    fn oversized_value_is_refused_in_the_state_machine_too() {
        let mut s = ResourceState::default();
        let big: &'static [u8] = Box::leak(vec![0u8; INLINE_VALUE_BYTES_MAX + 1].into_boxed_slice());
        assert!(matches!(s.apply(1, &put("v", big, None)), ResourceResponse::LimitExceeded { .. }));
        assert!(s.variants.is_empty());
    }
}
