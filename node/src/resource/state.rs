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
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

use crate::dedup::Admission;
use crate::dedup::Sessions;
use crate::resource::command::ResourceCommand;
use crate::resource::command::ResourceResponse;
use crate::resource::manifest::BlobManifest;
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
#[path = "state_tests.rs"]
mod tests;
