//! Re-encoding blobs written in a narrower code.
//!
//! A blob written while some holders were down uses a narrower code over
//! the live ones (`blob::quorum`): a mirror on two holders of a 2 + 1
//! group, say. It keeps the durability promise, but costs more space and
//! tolerates fewer losses than the group's code. Once every voter is live
//! again, the group's leader reads such a blob (verified, as any read),
//! writes it again in the group's code and commits `Reencode`, which swaps
//! the manifest of that version only if it still refers to the old blob.
//! The old shards become orphans for garbage collection. One blob per
//! group per call, so the work spreads over maintenance passes.

use std::sync::Arc;

use super::DataPlane;
use super::Error;
use super::quorum::holder_live;
use super::read::stream_blob;
use super::write::Source;
use super::write::write_blob;
use crate::group::Group;
use crate::raft::Command;
use crate::raft::state_machine::GroupData;
use crate::resource::ResourceCommand;

/// Re-encodes one blob of `g` (whose leader this node is) written in a
/// narrower code than the resource's; returns whether it did.
pub async fn reencode_one(ctx: &Arc<DataPlane>, g: &Group) -> Result<bool, Error> {
    let Some(params) = ctx.cluster.with_meta(|m| m.resource_by_group(g.id).map(|r| r.storage)).flatten() else {
        return Ok(false);
    };
    let voters = g.voters();
    if voters.len() != params.k as usize + params.m as usize {
        return Ok(false); // membership change under way
    }
    let narrow = {
        let st = g.state.read();
        let GroupData::Resource(rs) = &st.data else { return Ok(false) };
        rs.variants.iter().find_map(|(name, v)| {
            v.versions.values().find_map(|ver| match &ver.content {
                crate::resource::state::Content::Blob(m) if (m.layout.k, m.layout.m) != (params.k, params.m) => {
                    Some((name.clone(), ver.version, m.clone()))
                }
                _ => None,
            })
        })
    };
    let Some((variant, version, old)) = narrow else { return Ok(false) };
    if !voters.iter().all(|r| holder_live(ctx, g, *r)) {
        return Ok(false); // not every holder is back yet
    }
    let size = old.layout.size;
    let source = Source {
        prefix: bytes::Bytes::new(),
        rest: Box::pin(stream_blob(ctx.clone(), g.id, old.clone())),
        declared: Some(size),
        max_bytes: size,
    };
    let manifest = write_blob(ctx, g, params, voters, source).await?;
    if (manifest.layout.k, manifest.layout.m) != (params.k, params.m) {
        // A holder failed meanwhile: the new copy is no better. Its shards
        // are orphans now; try again on a later pass.
        return Ok(false);
    }
    let new_blob = manifest.blob_id;
    let cmd = ResourceCommand::Reencode {
        now_ms: ctx.clock.now_ms(),
        variant: variant.clone(),
        version,
        old_blob_id: old.blob_id,
        manifest,
    };
    g.propose(Command::Resource(cmd)).await.map_err(|e| ctx.cluster.write_error("re-encode", e))?;
    tracing::info!(group = %g.id, %variant, version, old = %old.blob_id, new = %new_blob, code = %format!("{}+{}", params.k, params.m), "re-encoded a blob written while a holder was down");
    Ok(true)
}
