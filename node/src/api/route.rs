//! Request routing of the public API: a request about a resource is
//! served by a node hosting one of its replicas. Writes need the group's
//! leader; a linearizable read is served by any replica after a read index
//! (the leader confirms its leadership; a follower asks the leader and
//! catches up); a STALE_OK read is served by any replica that heard from
//! its leader within the allowed staleness and has applied all but
//! `STALE_READ_LAG_ENTRIES_MAX` of the entries the leader reported
//! committed. Any other node answers
//! UNAVAILABLE with the address to try in `x-shadowstore-leader`. A read is
//! counted as demand and admitted (or shed) only where it is served.

use shadowstore_base::ids::NodeId;
use std::sync::Arc;

use shadowstore_proto::v1;
use tonic::Status;

use super::client::ClientService;
use super::client::resource_state;
use super::data;
use super::status;
use super::validate;
use crate::cluster::Cluster;
use crate::group::Group;
use crate::meta::state::ResourceRecord;
use crate::resource::state::Version;

/// Staleness allowed by a STALE_OK read that does not say.
pub const STALE_READ_DEFAULT_MS: u64 = 1_000;
/// A STALE_OK read is served locally only while the replica has applied
/// all but at most this many of the entries its leader reported committed
/// (a shadow or follower still catching up takes the linearizable path).
pub const STALE_READ_LAG_ENTRIES_MAX: u64 = 32;

impl ClientService {
    pub(super) fn cluster(&self) -> &Cluster {
        &self.data.cluster
    }

    /// The directory record of `name`. A name missing from this node's
    /// copy of the directory is looked up again after a read index on the
    /// meta group, so a resource created a moment ago is found.
    pub(super) async fn resource(&self, name: &str) -> Result<ResourceRecord, Status> {
        validate::resource_name(name)?;
        let lookup = || self.cluster().with_meta(|m| m.resources.get(name).cloned());
        if let Some(Some(r)) = lookup() {
            return Ok(r);
        }
        let meta = self.cluster().meta_group().ok_or_else(status::not_ready)?;
        self.cluster().linearize(&meta, "resource directory").await?;
        lookup().flatten().ok_or_else(|| Status::not_found(format!("resource {name:?} does not exist")))
    }

    /// The local replica of `rec`'s group, if this node hosts it.
    pub(super) fn local(&self, rec: &ResourceRecord) -> Option<Arc<Group>> {
        let me = self.cluster().identity()?.node_id;
        let mine = rec.replica_on(me)?;
        self.cluster().registry.get(rec.group_id).filter(|g| g.replica_id == mine.replica_id)
    }

    /// A node hosting a primary of `rec`, preferring one the failure
    /// detector sees up. Redirects never name a shadow: it may not be
    /// ready, and clients that route by weight reach shadows themselves.
    pub(super) fn hosting_addr(&self, rec: &ResourceRecord) -> Option<String> {
        let addrs: Vec<(NodeId, String)> = self
            .cluster()
            .with_meta(|m| {
                rec.primaries().filter_map(|r| m.addr_of(r.node_id).map(|a| (r.node_id, a.to_string()))).collect()
            })
            .unwrap_or_default();
        addrs.iter().find(|(n, _)| self.cluster().detector.is_up(*n)).or(addrs.first()).map(|(_, a)| a.clone())
    }

    /// The local leader replica of `rec`'s group, or the redirect to give.
    pub(super) fn leader(&self, rec: &ResourceRecord, what: &str) -> Result<Arc<Group>, Status> {
        match self.local(rec) {
            Some(g) => {
                g.touch();
                if g.is_leader() {
                    Ok(g)
                } else {
                    Err(status::redirect(what, self.cluster().leader_addr(&g).as_deref()))
                }
            }
            None => Err(status::redirect(what, self.hosting_addr(rec).as_deref())),
        }
    }

    /// A local replica ready to serve a read with `consistency`.
    pub(super) async fn reader(
        &self,
        rec: &ResourceRecord,
        consistency: i32,
        max_staleness_ms: u64,
        what: &str,
    ) -> Result<Arc<Group>, Status> {
        let g = self.local(rec).ok_or_else(|| status::redirect(what, self.hosting_addr(rec).as_deref()))?;
        g.touch();
        // A shadow serves only once ready: until then its copy may be
        // incomplete, so the read goes to a primary.
        if let Some(phase) = self.local_shadow_phase(rec, &g)
            && !phase.is_ready()
        {
            return Err(status::redirect(
                &format!("{what} (shadow {} is {phase})", g.replica_id),
                self.hosting_addr(rec).as_deref(),
            ));
        }
        let consistency = v1::Consistency::try_from(consistency)
            .map_err(|_| Status::invalid_argument(format!("unknown consistency {consistency}")))?;
        if consistency == v1::Consistency::StaleOk {
            let bound = if max_staleness_ms == 0 { STALE_READ_DEFAULT_MS } else { max_staleness_ms };
            if g.is_leader() || (g.since_leader_contact_ms() <= bound && g.applied_lag() <= STALE_READ_LAG_ENTRIES_MAX)
            {
                return Ok(g);
            }
        }
        self.cluster().linearize(&g, what).await?;
        Ok(g)
    }

    /// The phase of the local replica `g` of `rec` if it is a shadow.
    fn local_shadow_phase(&self, rec: &ResourceRecord, g: &Group) -> Option<shadowstore_placement::ShadowPhase> {
        let mine = rec.replicas.iter().find(|r| r.replica_id == g.replica_id)?;
        if mine.role != crate::meta::state::ReplicaRole::Shadow {
            return None;
        }
        let phase = self.cluster().with_meta(|m| m.shadows.shadow(&rec.name, g.replica_id).map(|s| s.phase)).flatten();
        // A shadow this node's directory knows but whose record it lacks
        // is treated as not ready.
        Some(phase.unwrap_or(shadowstore_placement::ShadowPhase::Planned))
    }

    /// Sets the routing version this node knows for `resource` on an
    /// answer, so clients with an older table refetch it.
    pub(super) fn tag_routing_version(&self, resource: &str, metadata: &mut tonic::metadata::MetadataMap) {
        if let Some(v) = self.cluster().with_meta(|m| m.shadows.routing_version(resource)) {
            metadata.insert(shadowstore_proto::ROUTING_VERSION_METADATA, tonic::metadata::MetadataValue::from(v));
        }
    }

    /// The replica that serves `req` and the version it asked for.
    /// Counts a read of `resource` from the caller's region and admits it,
    /// or sheds it with RESOURCE_EXHAUSTED and a retry hint when the node
    /// is at its read capacity.
    pub(super) fn admit_read(&self, metadata: &tonic::metadata::MetadataMap, resource: &str) -> Result<(), Status> {
        let region = match metadata.get(crate::demand::REGION_HEADER) {
            None => None,
            Some(value) => Some(value.to_str().ok().filter(|r| validate::region(r).is_ok()).ok_or_else(|| {
                Status::invalid_argument(format!("{} must be 1..=64 bytes of [a-z0-9-]", crate::demand::REGION_HEADER))
            })?),
        };
        // A retry of a read that was shed (and counted then) is admitted
        // but not counted again.
        let retry = metadata
            .get(shadowstore_proto::SHED_BEFORE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|shed| shed > 0);
        let now_ms = self.data.clock.now_ms();
        match self.admission.try_admit(now_ms) {
            Ok(()) => {
                if !retry {
                    self.placement.recorder.record(resource, region, now_ms, false);
                }
                Ok(())
            }
            Err(retry_after_ms) => {
                if !retry {
                    self.placement.recorder.record(resource, region, now_ms, true);
                }
                let mut status = Status::resource_exhausted(format!(
                    "node at its read capacity of {} reads/s; retry after {retry_after_ms} ms or read another replica",
                    self.admission.capacity_rps()
                ));
                status.metadata_mut().insert(
                    shadowstore_proto::RETRY_AFTER_MS_METADATA,
                    tonic::metadata::MetadataValue::from(retry_after_ms),
                );
                Err(status)
            }
        }
    }

    pub(super) async fn read_version(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        req: &v1::GetRequest,
    ) -> Result<(Arc<Group>, Version), Status> {
        validate::resource_name(&req.resource)?;
        validate::variant_name(&req.variant)?;
        let rec = self.resource(&req.resource).await?;
        let g = self.reader(&rec, req.consistency, req.max_staleness_ms, "get").await?;
        // Counted and admitted only where it is served: a node that
        // redirects the read neither spends capacity nor counts demand.
        self.admit_read(metadata, &req.resource)?;
        let version = {
            let st = g.state.read();
            data::resolve(resource_state(&st)?, &req.resource, &req.variant, req.version)?
        };
        Ok((g, version))
    }
}
