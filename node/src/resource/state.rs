//! The state machine of one resource group.
//!
//! A variant has versions; each is either inline bytes (small values,
//! replicated through Raft) or an erasure-coded blob described by a
//! manifest (the bytes live on the holders). A version's number is the Raft
//! log index of the write that produced it: unique, increasing, never
//! reused, so a conditional write is never fooled by a delete and re-create.
//!
//! Retention: the current version of each variant, plus superseded versions
//! until an `Expire` command drops them after a grace period (so reads in
//! progress can finish; the leader proposes `Expire` from its maintenance
//! loop). Applying is a pure function of the state and the command.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

use crate::dedup::Admission;
use crate::dedup::Sessions;
use crate::resource::manifest::BlobManifest;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::ids::RequestId;
use shadowstore_base::limits::INLINE_VALUE_BYTES_MAX;
use shadowstore_base::limits::RESOURCE_INLINE_BYTES_MAX;
use shadowstore_base::limits::RESOURCE_VARIANTS_MAX;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Content {
    Inline(Bytes),
    Blob(Arc<BlobManifest>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    pub size: u64,
    pub content: Content,
    /// Log time when a newer version or a delete replaced it.
    pub superseded_at_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// The latest version; `None` after a delete.
    pub current: Option<u64>,
    /// Retained versions, the current one included.
    pub versions: BTreeMap<u64, Version>,
}

impl Variant {
    pub fn latest(&self) -> Option<&Version> {
        self.current.and_then(|v| self.versions.get(&v))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ResourceCommand {
    /// Writes an inline value.
    Put {
        request: RequestId,
        /// The proposing leader's wall clock (session and version expiry).
        now_ms: u64,
        variant: String,
        value: Bytes,
        if_version: Option<u64>,
    },
    /// Commits an erasure-coded blob whose shards the holders already have.
    PutBlob {
        request: RequestId,
        now_ms: u64,
        variant: String,
        manifest: BlobManifest,
        if_version: Option<u64>,
    },
    Delete {
        request: RequestId,
        now_ms: u64,
        variant: String,
        if_version: Option<u64>,
    },
    /// Drops superseded versions older than `grace_ms`, except the newest
    /// `keep_versions - 1` superseded versions of each variant (with the
    /// current one, `keep_versions` in all; a deleted variant keeps no
    /// extra).
    Expire {
        now_ms: u64,
        grace_ms: u64,
        keep_versions: u32,
    },
    /// Moves every shard held by `from` to `to` (a replica replaced `from`);
    /// `to` rebuilds the shards from the others.
    ReassignHolders {
        now_ms: u64,
        from: ReplicaId,
        to: ReplicaId,
    },
    /// Replaces the manifest of `version` of `variant`, written in a
    /// narrower code while a holder was down (`blob::quorum`), by
    /// `manifest`: the same bytes in the group's code. Applies only while
    /// the version still refers to blob `old_blob_id`, so a re-encoding
    /// that raced with another never undoes it. (Appended last: the
    /// encoding of the earlier commands is unchanged.)
    Reencode {
        now_ms: u64,
        variant: String,
        version: u64,
        old_blob_id: u64,
        manifest: BlobManifest,
    },
}

impl fmt::Display for ResourceCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceCommand::Put { variant, value, .. } => write!(f, "put {variant} ({} bytes inline)", value.len()),
            ResourceCommand::PutBlob { variant, manifest, .. } => {
                write!(f, "put {variant} (blob {:x}, {} bytes)", manifest.blob_id, manifest.layout.size)
            }
            ResourceCommand::Delete { variant, .. } => write!(f, "delete {variant}"),
            ResourceCommand::Expire { grace_ms, .. } => write!(f, "expire versions superseded > {grace_ms} ms ago"),
            ResourceCommand::ReassignHolders { from, to, .. } => write!(f, "reassign shards of replica {from} to {to}"),
            ResourceCommand::Reencode { variant, version, manifest, .. } => write!(
                f,
                "re-encode {variant}@{version} as {}+{} (blob {:x})",
                manifest.layout.k, manifest.layout.m, manifest.blob_id
            ),
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
    /// A malformed command (e.g. an inconsistent manifest).
    Rejected { reason: String },
    /// A late duplicate of a request whose answer was already delivered.
    StaleRequest,
    /// Maintenance applied: how many versions or shards it touched.
    Maintained { count: u64 },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    pub variants: BTreeMap<String, Variant>,
    /// Bytes of retained inline versions.
    pub inline_bytes: u64,
    /// Logical bytes of retained blob versions.
    pub blob_bytes: u64,
    /// (superseded_at_ms, variant, version) of every superseded version.
    pub superseded: BTreeSet<(u64, String, u64)>,
    pub sessions: Sessions<ResourceResponse>,
}

fn size_of(content: &Content) -> u64 {
    match content {
        Content::Inline(b) => b.len() as u64,
        Content::Blob(m) => m.layout.size,
    }
}

impl ResourceState {
    /// The bounds every applied state keeps (constant time: checked after
    /// every entry). Apply refuses what would break them, so a failure
    /// means this replica's state is wrong: it stops and is quarantined.
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.inline_bytes > RESOURCE_INLINE_BYTES_MAX {
            return Err(format!("{} inline bytes, limit {RESOURCE_INLINE_BYTES_MAX}", self.inline_bytes));
        }
        if self.variants.len() > RESOURCE_VARIANTS_MAX {
            return Err(format!("{} variants, limit {RESOURCE_VARIANTS_MAX}", self.variants.len()));
        }
        Ok(())
    }

    /// Applies `cmd`, committed at log index `index`.
    pub fn apply(&mut self, index: u64, cmd: &ResourceCommand) -> ResourceResponse {
        let (request, now_ms) = match cmd {
            ResourceCommand::Put { request, now_ms, .. }
            | ResourceCommand::PutBlob { request, now_ms, .. }
            | ResourceCommand::Delete { request, now_ms, .. } => (Some(request), *now_ms),
            ResourceCommand::Expire { now_ms, .. }
            | ResourceCommand::ReassignHolders { now_ms, .. }
            | ResourceCommand::Reencode { now_ms, .. } => (None, *now_ms),
        };
        self.sessions.advance(now_ms);
        if let Some(request) = request {
            match self.sessions.admit(request) {
                Admission::Duplicate(answer) => return answer,
                Admission::Stale => return ResourceResponse::StaleRequest,
                Admission::Execute => {}
            }
        }
        let answer = self.execute(index, cmd);
        if let Some(request) = request {
            self.sessions.record(request, &answer);
        }
        answer
    }

    fn check_condition(&self, variant: &str, if_version: Option<u64>) -> Result<(), ResourceResponse> {
        let Some(expected) = if_version else { return Ok(()) };
        let actual = self.variants.get(variant).and_then(|v| v.current);
        if actual.unwrap_or(0) != expected {
            return Err(ResourceResponse::VersionMismatch { current: actual });
        }
        Ok(())
    }

    fn execute(&mut self, index: u64, cmd: &ResourceCommand) -> ResourceResponse {
        let now_ms = self.sessions.now_ms();
        match cmd {
            ResourceCommand::Put { variant, value, if_version, .. } => {
                if let Err(r) = self.check_condition(variant, *if_version) {
                    return r;
                }
                if value.len() > INLINE_VALUE_BYTES_MAX {
                    return ResourceResponse::LimitExceeded {
                        what: format!("value of {} bytes exceeds {INLINE_VALUE_BYTES_MAX}", value.len()),
                    };
                }
                let new_total = self.inline_bytes + value.len() as u64;
                if new_total > RESOURCE_INLINE_BYTES_MAX {
                    return ResourceResponse::LimitExceeded {
                        what: format!(
                            "resource would hold {new_total} inline bytes, limit {RESOURCE_INLINE_BYTES_MAX}"
                        ),
                    };
                }
                self.install(index, now_ms, variant, Content::Inline(value.clone()))
            }
            ResourceCommand::PutBlob { variant, manifest, if_version, .. } => {
                if let Err(r) = self.check_condition(variant, *if_version) {
                    return r;
                }
                if let Err(reason) = manifest.validate() {
                    return ResourceResponse::Rejected { reason };
                }
                self.install(index, now_ms, variant, Content::Blob(Arc::new(manifest.clone())))
            }
            ResourceCommand::Delete { variant, if_version, .. } => {
                let current = self.variants.get(variant).and_then(|v| v.current);
                match (current, if_version) {
                    (None, Some(0) | None) => return ResourceResponse::NotFound,
                    (None, Some(_)) => return ResourceResponse::VersionMismatch { current: None },
                    (Some(c), Some(expected)) if c != *expected => {
                        return ResourceResponse::VersionMismatch { current: Some(c) };
                    }
                    _ => {}
                }
                self.supersede_current(variant, now_ms);
                ResourceResponse::Written { version: index }
            }
            ResourceCommand::Expire { grace_ms, keep_versions, .. } => {
                ResourceResponse::Maintained { count: self.expire(now_ms, *grace_ms, *keep_versions) }
            }
            ResourceCommand::ReassignHolders { from, to, .. } => {
                let mut count = 0;
                for v in self.variants.values_mut() {
                    for ver in v.versions.values_mut() {
                        if let Content::Blob(m) = &mut ver.content {
                            if m.holders.contains(from) && !m.holders.contains(to) {
                                let m = Arc::make_mut(m);
                                for h in m.holders.iter_mut().filter(|h| **h == *from) {
                                    *h = *to;
                                }
                                count += 1;
                            }
                        }
                    }
                }
                ResourceResponse::Maintained { count }
            }
            ResourceCommand::Reencode { variant, version, old_blob_id, manifest, .. } => {
                if let Err(reason) = manifest.validate() {
                    return ResourceResponse::Rejected { reason };
                }
                let Some(ver) = self.variants.get_mut(variant).and_then(|v| v.versions.get_mut(version)) else {
                    return ResourceResponse::Maintained { count: 0 };
                };
                match &ver.content {
                    Content::Blob(m) if m.blob_id == *old_blob_id && m.layout.size == manifest.layout.size => {
                        ver.content = Content::Blob(Arc::new(manifest.clone()));
                        ResourceResponse::Maintained { count: 1 }
                    }
                    _ => ResourceResponse::Maintained { count: 0 },
                }
            }
        }
    }

    /// Makes `content` the current version `index` of `variant`.
    fn install(&mut self, index: u64, now_ms: u64, variant: &str, content: Content) -> ResourceResponse {
        let exists = self.variants.get(variant).is_some_and(|v| !v.versions.is_empty());
        if !exists && self.variants.len() >= RESOURCE_VARIANTS_MAX {
            return ResourceResponse::LimitExceeded {
                what: format!("resource holds the maximum of {RESOURCE_VARIANTS_MAX} variants"),
            };
        }
        self.supersede_current(variant, now_ms);
        let size = size_of(&content);
        match &content {
            Content::Inline(_) => self.inline_bytes += size,
            Content::Blob(_) => self.blob_bytes += size,
        }
        let v = self.variants.entry(variant.to_string()).or_default();
        assert!(
            v.versions.keys().next_back().is_none_or(|last| *last < index),
            "versions must increase: {variant} at {index}"
        );
        v.versions.insert(index, Version { version: index, size, content, superseded_at_ms: None });
        v.current = Some(index);
        ResourceResponse::Written { version: index }
    }

    fn supersede_current(&mut self, variant: &str, now_ms: u64) {
        let Some(v) = self.variants.get_mut(variant) else { return };
        let Some(cur) = v.current.take() else { return };
        if let Some(ver) = v.versions.get_mut(&cur) {
            ver.superseded_at_ms = Some(now_ms);
            self.superseded.insert((now_ms, variant.to_string(), cur));
        }
    }

    /// Superseded versions whose read grace has passed and that are not
    /// among the `keep_versions` newest of their variant (the current
    /// version, if any, is one of those kept).
    fn expired_versions(
        &self,
        now_ms: u64,
        grace_ms: u64,
        keep_versions: u32,
    ) -> impl Iterator<Item = &(u64, String, u64)> + '_ {
        self.superseded.iter().take_while(move |(at, _, _)| at.saturating_add(grace_ms) <= now_ms).filter(
            move |(_, variant, version)| match self.variants.get(variant) {
                // Superseded versions at least as new as this one.
                Some(v) => {
                    v.versions.range(version..).filter(|(_, ver)| ver.superseded_at_ms.is_some()).count() as u32
                        >= keep_versions
                }
                None => true,
            },
        )
    }

    fn expire(&mut self, now_ms: u64, grace_ms: u64, keep_versions: u32) -> u64 {
        let mut dropped = 0;
        let due: Vec<_> = self.expired_versions(now_ms, grace_ms, keep_versions).cloned().collect();
        for key in due {
            self.superseded.remove(&key);
            let (_, variant, version) = &key;
            let Some(v) = self.variants.get_mut(variant) else { continue };
            if let Some(old) = v.versions.remove(version) {
                match old.content {
                    Content::Inline(_) => self.inline_bytes -= old.size,
                    Content::Blob(_) => self.blob_bytes -= old.size,
                }
                dropped += 1;
            }
            if v.versions.is_empty() {
                self.variants.remove(variant);
            }
        }
        dropped
    }

    /// Blob ids of every retained version (what garbage collection keeps).
    pub fn referenced_blobs(&self) -> BTreeSet<u64> {
        self.blobs().map(|m| m.blob_id).collect()
    }

    /// A number that changes whenever a variant gets a new current
    /// version or is deleted (versions only grow, so the sum of current
    /// versions and the variant count move together with any change).
    pub fn content_version(&self) -> u64 {
        self.variants.values().map(|v| v.current.unwrap_or(0)).fold(self.variants.len() as u64, u64::wrapping_add)
    }

    /// Manifests of every retained blob version.
    pub fn blobs(&self) -> impl Iterator<Item = &Arc<BlobManifest>> {
        self.variants.values().flat_map(|v| v.versions.values()).filter_map(|ver| match &ver.content {
            Content::Blob(m) => Some(m),
            Content::Inline(_) => None,
        })
    }

    /// Whether a superseded version is due for expiry under `grace_ms`.
    /// Whether an `Expire` with these parameters would drop anything.
    pub fn has_expired_versions(&self, now_ms: u64, grace_ms: u64, keep_versions: u32) -> bool {
        self.expired_versions(now_ms, grace_ms, keep_versions).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::layout::Layout;

    fn put(variant: &str, value: &'static [u8], if_version: Option<u64>) -> ResourceCommand {
        ResourceCommand::Put {
            request: RequestId::default(),
            now_ms: 1,
            variant: variant.to_string(),
            value: Bytes::from_static(value),
            if_version,
        }
    }

    fn put_at(variant: &str, now_ms: u64) -> ResourceCommand {
        ResourceCommand::Put {
            request: RequestId::default(),
            now_ms,
            variant: variant.to_string(),
            value: Bytes::from_static(b"x"),
            if_version: None,
        }
    }

    fn manifest(blob_id: u64) -> BlobManifest {
        let layout = Layout::new(3 << 20, 1 << 20, 2, 1);
        BlobManifest {
            blob_id,
            layout,
            holders: vec![ReplicaId::new(10), ReplicaId::new(11), ReplicaId::new(12)],
            crcs: vec![0; layout.crc_slots()],
        }
    }

    #[test]
    fn versions_are_log_indexes_and_conditions_hold() {
        let mut s = ResourceState::default();
        assert_eq!(s.apply(5, &put("en", b"a", None)), ResourceResponse::Written { version: 5 });
        assert_eq!(s.apply(6, &put("en", b"b", Some(4))), ResourceResponse::VersionMismatch { current: Some(5) });
        assert_eq!(s.variants["en"].latest().unwrap().content, Content::Inline(Bytes::from_static(b"a")));
        assert_eq!(s.apply(7, &put("en", b"bb", Some(5))), ResourceResponse::Written { version: 7 });
        assert_eq!(s.apply(8, &put("de", b"x", Some(3))), ResourceResponse::VersionMismatch { current: None });
        assert_eq!(s.apply(9, &put("de", b"x", Some(0))), ResourceResponse::Written { version: 9 });
        // The superseded version 5 is retained until it expires.
        assert!(s.variants["en"].versions.contains_key(&5));
        assert_eq!(s.inline_bytes, 1 + 2 + 1);
    }

    #[test]
    fn delete_supersedes_and_reports_missing() {
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
        assert!(s.variants["en"].latest().is_none());
        assert!(s.variants["en"].versions.contains_key(&1), "deleted version still readable during its grace");
        assert_eq!(s.apply(4, &del(None)), ResourceResponse::NotFound);
    }

    #[test]
    fn expiry_keeps_current_and_recent_versions() {
        let mut s = ResourceState::default();
        s.apply(1, &put_at("v", 1_000));
        s.apply(2, &put_at("v", 2_000)); // 1 superseded at 2000
        s.apply(3, &put_at("v", 2_400)); // 2 superseded at 2400
        let expire = |now_ms, keep_versions| ResourceCommand::Expire { now_ms, grace_ms: 1_000, keep_versions };
        assert!(!s.has_expired_versions(2_400, 1_000, 1), "within grace");
        assert_eq!(s.apply(4, &expire(2_400, 1)), ResourceResponse::Maintained { count: 0 }, "within grace");
        // Version 1 is past its grace but one of the three kept: nothing is
        // due, so the leader does not propose (and wake the group) for it.
        assert!(!s.has_expired_versions(3_200, 1_000, 3));
        assert!(s.has_expired_versions(3_200, 1_000, 2));
        // Log time never goes back: an older timestamp expires nothing more.
        assert_eq!(s.apply(5, &expire(100, 1)), ResourceResponse::Maintained { count: 0 });
        assert_eq!(s.apply(6, &expire(3_200, 2)), ResourceResponse::Maintained { count: 1 }, "version 1 only");
        assert_eq!(s.variants["v"].versions.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(s.apply(7, &expire(10_000, 1)), ResourceResponse::Maintained { count: 1 });
        assert_eq!(s.variants["v"].versions.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(s.inline_bytes, 1);
        // A deleted variant disappears once its last version expires.
        s.apply(
            8,
            &ResourceCommand::Delete {
                request: RequestId::default(),
                now_ms: 11_000,
                variant: "v".into(),
                if_version: None,
            },
        );
        s.apply(9, &expire(20_000, 1));
        assert!(s.variants.is_empty());
        assert!(s.superseded.is_empty());
    }

    #[test]
    fn blobs_are_validated_referenced_and_reassigned() {
        let mut s = ResourceState::default();
        let cmd = |m: BlobManifest| ResourceCommand::PutBlob {
            request: RequestId::default(),
            now_ms: 1,
            variant: "big".into(),
            manifest: m,
            if_version: None,
        };
        let mut bad = manifest(1);
        bad.crcs.pop();
        assert!(matches!(s.apply(1, &cmd(bad)), ResourceResponse::Rejected { .. }));
        assert_eq!(s.apply(2, &cmd(manifest(7))), ResourceResponse::Written { version: 2 });
        assert_eq!(s.blob_bytes, 3 << 20);
        assert_eq!(s.referenced_blobs(), BTreeSet::from([7]));
        let r = s.apply(
            3,
            &ResourceCommand::ReassignHolders { now_ms: 2, from: ReplicaId::new(11), to: ReplicaId::new(99) },
        );
        assert_eq!(r, ResourceResponse::Maintained { count: 1 });
        assert_eq!(s.blobs().next().unwrap().holders, vec![ReplicaId::new(10), ReplicaId::new(99), ReplicaId::new(12)]);
    }

    #[test]
    fn a_mirrored_blob_is_reencoded_only_while_it_is_current() {
        let mut s = ResourceState::default();
        let mirror = {
            let layout = Layout::new(3 << 20, 1 << 20, 1, 1);
            BlobManifest {
                blob_id: 5,
                layout,
                holders: vec![ReplicaId::new(10), ReplicaId::new(12)],
                crcs: vec![0; layout.crc_slots()],
            }
        };
        let put = ResourceCommand::PutBlob {
            request: RequestId::default(),
            now_ms: 1,
            variant: "big".into(),
            manifest: mirror,
            if_version: None,
        };
        assert_eq!(s.apply(1, &put), ResourceResponse::Written { version: 1 });
        let reencode = |old_blob_id, manifest| ResourceCommand::Reencode {
            now_ms: 2,
            variant: "big".into(),
            version: 1,
            old_blob_id,
            manifest,
        };
        // A re-encoding of another blob id (a race lost) changes nothing.
        assert_eq!(s.apply(2, &reencode(4, manifest(8))), ResourceResponse::Maintained { count: 0 });
        assert_eq!(s.blobs().next().unwrap().blob_id, 5);
        let mut bad = manifest(8);
        bad.holders.pop();
        assert!(matches!(s.apply(3, &reencode(5, bad)), ResourceResponse::Rejected { .. }));
        assert_eq!(s.apply(4, &reencode(5, manifest(8))), ResourceResponse::Maintained { count: 1 });
        let m = s.blobs().next().unwrap();
        assert_eq!(
            (m.blob_id, m.layout.k, m.layout.m, m.holders.clone()),
            (8, 2, 1, vec![ReplicaId::new(10), ReplicaId::new(11), ReplicaId::new(12)])
        );
        assert_eq!(s.variants["big"].current, Some(1), "the version is unchanged");
        assert_eq!(s.blob_bytes, 3 << 20);
        // Applied again (a retry), it finds blob 8, not 5: nothing changes.
        assert_eq!(s.apply(5, &reencode(5, manifest(9))), ResourceResponse::Maintained { count: 0 });
        assert_eq!(s.blobs().next().unwrap().blob_id, 8);
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
        assert_eq!(s.apply(2, &cmd), ResourceResponse::Written { version: 1 });
        assert_eq!(s.variants["v"].current, Some(1));
        assert_eq!(s.variants["v"].versions.len(), 1);
    }

    #[test]
    fn oversized_value_is_refused_in_the_state_machine_too() {
        let mut s = ResourceState::default();
        let big: &'static [u8] = Box::leak(vec![0u8; INLINE_VALUE_BYTES_MAX + 1].into_boxed_slice());
        assert!(matches!(s.apply(1, &put("v", big, None)), ResourceResponse::LimitExceeded { .. }));
        assert!(s.variants.is_empty());
    }
}
