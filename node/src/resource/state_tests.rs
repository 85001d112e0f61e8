//! Unit tests of the resource state machine: versions, retention,
//! blobs, limits and request deduplication.

use shadowstore_base::ids::ReplicaId;
use shadowstore_base::ids::RequestId;

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
    let r =
        s.apply(3, &ResourceCommand::ReassignHolders { now_ms: 2, from: ReplicaId::new(11), to: ReplicaId::new(99) });
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
