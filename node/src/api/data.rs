//! The data path of the public API: writing a variant (inline or
//! erasure-coded), resolving the version a read asks for, streaming a
//! blob's bytes, and describing versions with the health of their shards.

use shadowstore_base::ids::GroupId;
use shadowstore_base::ids::NodeId;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use bytes::BytesMut;
use futures::Stream;
use futures::StreamExt;
use shadowstore_proto::peer::ShardInventoryRequest;
use shadowstore_proto::peer::ShardRef;
use shadowstore_proto::v1;
use tonic::Status;

use super::status;
use crate::blob::DataPlane;
use crate::blob::read::stream_blob;
use crate::blob::shard_store::ShardStore;
use crate::blob::write::Source;
use crate::blob::write::write_blob;
use crate::cluster::PEER_CALL_TIMEOUT;
use crate::group::Group;
use crate::meta::state::ResourceRecord;
use crate::raft::Command;
use crate::raft::CommandResponse;
use crate::resource::ResourceCommand;
use crate::resource::ResourceResponse;
use crate::resource::ResourceState;
use crate::resource::layout::Layout;
use crate::resource::manifest;
use crate::resource::manifest::BlobManifest;
use crate::resource::state::Content;
use crate::resource::state::Version;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::ids::RequestId;
use shadowstore_base::limits::RESOURCE_MANIFEST_BYTES_MAX;
use shadowstore_base::limits::STREAM_CHUNK_BYTES_MAX;

/// What a write asks for, besides its bytes.
pub struct WriteRequest<'a> {
    pub resource: &'a str,
    pub variant: &'a str,
    pub if_version: Option<u64>,
    pub request: RequestId,
    /// Size announced by the client, if any.
    pub declared: Option<u64>,
}

pub async fn propose(ctx: &DataPlane, g: &Group, cmd: ResourceCommand, what: &str) -> Result<ResourceResponse, Status> {
    let resp = g.propose(Command::Resource(cmd)).await.map_err(|e| ctx.cluster.write_error(what, e))?;
    match resp.response() {
        CommandResponse::Resource(r) => Ok(r.clone()),
        other => Err(Status::internal(format!("{what}: resource group answered {other:?}"))),
    }
}

pub fn write_outcome(
    resource: &str,
    variant: &str,
    r: ResourceResponse,
    if_version: Option<u64>,
) -> Result<u64, Status> {
    match r {
        ResourceResponse::Written { version } => Ok(version),
        ResourceResponse::VersionMismatch { current } => Err(Status::failed_precondition(format!(
            "{resource}/{variant} is at version {} but the request required {}",
            current.map_or("none (absent)".to_string(), |v| v.to_string()),
            if_version.map_or("none".to_string(), |v| if v == 0 { "absent".to_string() } else { v.to_string() })
        ))),
        ResourceResponse::NotFound => {
            Err(Status::not_found(format!("variant {variant:?} of {resource:?} does not exist")))
        }
        ResourceResponse::LimitExceeded { what } => Err(Status::resource_exhausted(format!("{resource}: {what}"))),
        ResourceResponse::Rejected { reason } => Err(Status::invalid_argument(format!("{resource}: {reason}"))),
        ResourceResponse::StaleRequest => Err(Status::failed_precondition(
            "request id is older than the client's first incomplete request: it was answered already",
        )),
        ResourceResponse::Maintained { .. } => Err(Status::internal("a write was answered as maintenance")),
    }
}

/// Encoded bytes of the manifests `g`'s applied state holds (an upper
/// bound: what they take in its snapshot).
fn manifest_bytes_held(g: &Group) -> u64 {
    match &g.state.read().data {
        crate::raft::state_machine::GroupData::Resource(rs) => {
            rs.blobs().map(|m| manifest::encoded_bytes_upper(&m.layout) as u64).sum()
        }
        crate::raft::state_machine::GroupData::Meta(_) => 0,
    }
}

/// A blob write's share of `RESOURCE_MANIFEST_BYTES_MAX`, held from before
/// its proposal until it is answered, so that concurrent writes cannot
/// pass the check together: the snapshot that seeds a new replica stays
/// under `SNAPSHOT_BYTES_MAX`. The leader checks (not apply, which every
/// release must apply alike); after the commit the applied state counts
/// the manifest too for a moment, which only errs on the safe side.
pub(crate) struct ManifestReservation<'a> {
    group: &'a Group,
    bytes: u64,
}

impl<'a> ManifestReservation<'a> {
    pub(crate) fn take(group: &'a Group, layout: &Layout) -> Result<Self, Status> {
        let bytes = manifest::encoded_bytes_upper(layout) as u64;
        let reserved = group.manifest_bytes_reserved.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let reservation = ManifestReservation { group, bytes };
        let total = manifest_bytes_held(group).saturating_add(reserved);
        if total > RESOURCE_MANIFEST_BYTES_MAX {
            return Err(Status::resource_exhausted(format!(
                "the resource's blob manifests would take {total} bytes, limit {RESOURCE_MANIFEST_BYTES_MAX} (they are \
                 part of the snapshot that seeds a new replica): expire or delete versions, or use larger stripes"
            )));
        }
        Ok(reservation)
    }
}

impl Drop for ManifestReservation<'_> {
    fn drop(&mut self) {
        self.group.manifest_bytes_reserved.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Writes `prefix` followed by `rest` as the new version of a variant: inline
/// through Raft if it fits the resource's inline threshold, erasure-coded
/// otherwise. Returns the version.
pub async fn write_variant<S>(
    ctx: &Arc<DataPlane>,
    g: &Group,
    rec: &ResourceRecord,
    w: WriteRequest<'_>,
    prefix: Bytes,
    mut rest: S,
    blob_bytes_max: u64,
) -> Result<u64, Status>
where
    S: Stream<Item = Result<Bytes, Status>> + Unpin,
{
    // The node's limit, or what one manifest of this resource's layout can
    // describe if that is less: refused before any byte is stored.
    let s = rec.storage;
    let manifest_max = manifest::blob_bytes_capacity(s.stripe_size, s.k, s.m);
    let (max, limit) = if manifest_max < blob_bytes_max {
        (manifest_max, "the manifest limit of this resource's layout (larger stripes hold more)")
    } else {
        (blob_bytes_max, "the node's blob_bytes_max")
    };
    if let Some(d) = w.declared.filter(|d| *d > max) {
        return Err(Status::resource_exhausted(format!("value of {d} bytes exceeds the {max}-byte limit: {limit}")));
    }
    let threshold = rec.storage.inline_threshold as usize;
    // Read just enough to know whether the value fits inline.
    let mut head = BytesMut::from(&prefix[..]);
    let mut ended = false;
    while head.len() <= threshold {
        match rest.next().await {
            Some(b) => head.extend_from_slice(&b?),
            None => {
                ended = true;
                break;
            }
        }
    }
    let now_ms = ctx.clock.now_ms();
    // Held until the proposal is answered (a blob's manifest budget).
    let mut reservation: Option<ManifestReservation<'_>> = None;
    let cmd = if ended && head.len() <= threshold {
        if let Some(d) = w.declared.filter(|d| *d != head.len() as u64) {
            return Err(Status::invalid_argument(format!("stream carried {} of the declared {d} bytes", head.len())));
        }
        ResourceCommand::Put {
            request: w.request,
            now_ms,
            variant: w.variant.to_string(),
            value: head.freeze(),
            if_version: w.if_version,
        }
    } else {
        // Manifests count against the resource's snapshot budget: a
        // declared size reserves its manifest before the upload, any other
        // once the manifest is known; the reservation lasts until the
        // proposal is answered.
        if let Some(d) = w.declared {
            reservation = Some(ManifestReservation::take(g, &Layout::new(d, s.stripe_size, s.k, s.m))?);
        }
        let rest = rest.map(|r| r.map_err(status::source_error));
        let source = Source { prefix: head.freeze(), rest, declared: w.declared, max_bytes: max };
        let manifest = write_blob(ctx, g, rec.storage, g.voters(), source).await?;
        if reservation.is_none() {
            reservation = Some(ManifestReservation::take(g, &manifest.layout)?);
        }
        ResourceCommand::PutBlob {
            request: w.request,
            now_ms: ctx.clock.now_ms(),
            variant: w.variant.to_string(),
            manifest,
            if_version: w.if_version,
        }
    };
    let answer = propose(ctx, g, cmd, "put").await;
    drop(reservation);
    write_outcome(w.resource, w.variant, answer?, w.if_version)
}

/// The version of `variant` a read asks for (`None`: the latest).
pub fn resolve(rs: &ResourceState, resource: &str, variant: &str, version: Option<u64>) -> Result<Version, Status> {
    let v = rs
        .variants
        .get(variant)
        .ok_or_else(|| Status::not_found(format!("variant {variant:?} of {resource:?} does not exist")))?;
    match version {
        None => v
            .latest()
            .cloned()
            .ok_or_else(|| Status::not_found(format!("variant {variant:?} of {resource:?} was deleted"))),
        Some(want) => v.versions.get(&want).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "version {want} of {resource}/{variant} is not retained; the latest is {}",
                v.current.map_or("none (deleted)".to_string(), |c| c.to_string())
            ))
        }),
    }
}

pub fn storage_name(c: &Content) -> &'static str {
    match c {
        Content::Inline(_) => "inline",
        Content::Blob(_) => "erasure-coded",
    }
}

/// A version's bytes in pieces of at most `STREAM_CHUNK_BYTES_MAX`.
pub fn version_bytes(
    ctx: Arc<DataPlane>,
    group: GroupId,
    v: &Version,
) -> impl Stream<Item = Result<Bytes, Status>> + Send + 'static {
    let pieces = |b: Bytes| {
        let n = b.len();
        futures::stream::iter(
            (0..n).step_by(STREAM_CHUNK_BYTES_MAX).map(move |o| Ok(b.slice(o..(o + STREAM_CHUNK_BYTES_MAX).min(n)))),
        )
    };
    match &v.content {
        Content::Inline(b) => pieces(b.clone()).boxed(),
        Content::Blob(m) => stream_blob(ctx, group, m.clone())
            .flat_map(move |r| match r {
                Ok(b) => pieces(b).boxed(),
                Err(e) => futures::stream::iter([Err(Status::from(e))]).boxed(),
            })
            .boxed(),
    }
}

/// Versions `DescribeResource` details at most (with their shards' health,
/// which asks every holder): bounds the answer under the message limit.
pub const DESCRIBE_VERSIONS_MAX: usize = 2_000;

/// Asks every holder what it knows about its shards of `manifests`.
async fn shard_health(
    ctx: &DataPlane,
    g: &Group,
    manifests: &[Arc<BlobManifest>],
) -> HashMap<(u64, usize), v1::ShardHealth> {
    let mut by_holder: BTreeMap<ReplicaId, Vec<ShardRef>> = BTreeMap::new();
    for m in manifests {
        for (j, h) in m.holders.iter().enumerate() {
            by_holder.entry(*h).or_default().push(ShardRef { blob_id: m.blob_id, shard: j as u32 });
        }
    }
    let node_of = |r: ReplicaId| {
        ctx.cluster.with_meta(|meta| meta.replica_index.get(&r).copied()).flatten().unwrap_or(NodeId::new(0))
    };
    let by_blob: HashMap<u64, &BlobManifest> = manifests.iter().map(|m| (m.blob_id, m.as_ref())).collect();
    let mut out = HashMap::new();
    for (holder, refs) in by_holder {
        // (blob, shard) → (held, chunks stored, chunks corrupt or missing);
        // Err: the holder did not answer.
        let answers: Result<HashMap<(u64, u32), (bool, u64, u64)>, String> = if holder == g.replica_id {
            let store = ShardStore::new(ctx.engine.clone());
            refs.iter()
                .map(|r| {
                    let held = store.held_shard(g.id, r.blob_id, r.shard as u8).map_err(|e| e.to_string())?;
                    let f = ctx.scrubber.finding(g.id, r.blob_id, r.shard as u8).unwrap_or_default();
                    let corrupt = f.chunks_corrupt + f.chunks_missing;
                    Ok(((r.blob_id, r.shard), (held.is_some(), held.map_or(0, |h| h.chunks_stored), corrupt)))
                })
                .collect()
        } else {
            remote_inventory(ctx, g, holder, &refs).await
        };
        for r in &refs {
            let expected = by_blob
                .get(&r.blob_id)
                .map(|m| (0..m.layout.stripes()).map(|s| m.layout.chunks_in_shard(s) as u64).sum())
                .unwrap_or(0);
            let entry = match &answers {
                Err(_) => ("unreachable", 0, 0),
                Ok(found) => match found.get(&(r.blob_id, r.shard)) {
                    None | Some((false, _, _)) => ("missing", 0, 0),
                    Some((true, stored, corrupt)) if *corrupt > 0 => ("corrupt", *stored, *corrupt),
                    Some((true, stored, _)) if *stored < expected => ("incomplete", *stored, 0),
                    Some((true, stored, _)) => ("healthy", *stored, 0),
                },
            };
            out.insert(
                (r.blob_id, r.shard as usize),
                v1::ShardHealth {
                    shard: r.shard,
                    replica_id: holder.get(),
                    node_id: node_of(holder).get(),
                    state: entry.0.to_string(),
                    chunks_expected: expected,
                    chunks_stored: entry.1,
                    chunks_corrupt: entry.2,
                },
            );
        }
    }
    out
}

/// What `holder` (on another node) reports of `refs`, asked in requests of
/// at most `SHARD_HOLDERS_BLOBS_MAX` shards.
async fn remote_inventory(
    ctx: &DataPlane,
    g: &Group,
    holder: ReplicaId,
    refs: &[ShardRef],
) -> Result<HashMap<(u64, u32), (bool, u64, u64)>, String> {
    let addr = ctx.cluster.replica_addr(holder).ok_or_else(|| "no address".to_string())?;
    let mut c = ctx.cluster.peers.client(&addr).map_err(|e| e.to_string())?;
    let mut found = HashMap::with_capacity(refs.len());
    for chunk in refs.chunks(crate::api::peer::SHARD_HOLDERS_BLOBS_MAX) {
        let mut req = tonic::Request::new(ShardInventoryRequest {
            group_id: g.id.get(),
            target_replica_id: holder.get(),
            shards: chunk.to_vec(),
        });
        req.set_timeout(PEER_CALL_TIMEOUT);
        let answer = c.shard_inventory(req).await.map_err(|s| s.message().to_string())?;
        found.extend(
            answer
                .into_inner()
                .shards
                .into_iter()
                .map(|e| ((e.blob_id, e.shard), (e.held, e.chunks_stored, e.chunks_corrupt))),
        );
    }
    Ok(found)
}

/// Every variant with its retained versions and, for erasure-coded ones,
/// stripes, holders and shard health.
/// The variants `DescribeResource` details: the first in name order, up to
/// `DESCRIBE_VERSIONS_MAX` versions in all (at least one variant), and
/// whether any were left out (ListVariants pages through them all).
fn described(rs: &ResourceState) -> (Vec<(&String, &crate::resource::state::Variant)>, bool) {
    let mut listed = Vec::new();
    let mut versions = 0usize;
    for (name, v) in &rs.variants {
        if versions + v.versions.len() > DESCRIBE_VERSIONS_MAX && !listed.is_empty() {
            return (listed, true);
        }
        versions += v.versions.len();
        listed.push((name, v));
    }
    (listed, false)
}

/// Details of the variants [`described`] picks, with their shards' health.
pub async fn variant_details(ctx: &DataPlane, g: &Group, rs: &ResourceState) -> (Vec<v1::VariantDetail>, bool) {
    let (listed, truncated) = described(rs);
    let manifests: Vec<Arc<BlobManifest>> = listed
        .iter()
        .flat_map(|(_, v)| v.versions.values())
        .filter_map(|ver| match &ver.content {
            Content::Blob(m) => Some(m.clone()),
            Content::Inline(_) => None,
        })
        .collect();
    let health = shard_health(ctx, g, &manifests).await;
    let details = listed
        .into_iter()
        .map(|(name, v)| v1::VariantDetail {
            name: name.clone(),
            current_version: v.current.unwrap_or(0),
            versions: v
                .versions
                .values()
                .map(|ver| {
                    let mut d = v1::VersionDetail {
                        version: ver.version,
                        size_bytes: ver.size,
                        storage: storage_name(&ver.content).to_string(),
                        superseded: ver.superseded_at_ms.is_some(),
                        ..Default::default()
                    };
                    if let Content::Blob(m) = &ver.content {
                        d.stripes = m.layout.stripes();
                        d.data_shards = m.layout.k as u32;
                        d.parity_shards = m.layout.m as u32;
                        d.shards =
                            (0..m.layout.shards()).filter_map(|j| health.get(&(m.blob_id, j)).cloned()).collect();
                    }
                    d
                })
                .collect(),
        })
        .collect();
    (details, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 17): DescribeResource detailed every version of
    /// every variant, past the message limit for large resources.
    #[test]
    fn describe_details_a_bounded_prefix_of_the_variants() {
        let mut rs = ResourceState::default();
        let put = |rs: &mut ResourceState, i: usize| {
            rs.apply(
                i as u64 + 1,
                &ResourceCommand::Put {
                    request: RequestId::default(),
                    now_ms: 1,
                    variant: format!("v{i:05}"),
                    value: Bytes::from_static(b"x"),
                    if_version: None,
                },
            )
        };
        for i in 0..10 {
            put(&mut rs, i);
        }
        let (listed, truncated) = described(&rs);
        assert_eq!((listed.len(), truncated), (10, false));
        for i in 10..DESCRIBE_VERSIONS_MAX + 50 {
            put(&mut rs, i);
        }
        let (listed, truncated) = described(&rs);
        assert!(truncated);
        assert_eq!(listed.len(), DESCRIBE_VERSIONS_MAX);
        assert_eq!(listed[0].0, "v00000", "in name order from the first");
    }
}
