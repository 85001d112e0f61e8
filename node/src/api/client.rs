//! The public `ShadowStore` API.
//!
//! Routing: a request about a resource is served by a node hosting one of
//! its replicas. Writes need the group's leader; a linearizable read is
//! served by any replica after a read index (the leader confirms its
//! leadership; a follower asks the leader and catches up); a STALE_OK read
//! is served by any replica that heard from its leader within the allowed
//! staleness. Any other node answers UNAVAILABLE with the address to try in
//! `x-shadowstore-leader`. Every input is validated before anything else
//! happens.

use std::sync::Arc;

use shadowstore_proto::v1;
use shadowstore_proto::v1::shadow_store_server::ShadowStore;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::status;
use super::validate;
use crate::group::Group;
use crate::ids::RequestId;
use crate::meta::membership::propose_meta;
use crate::meta::state::MetaCommand;
use crate::meta::state::MetaResponse;
use crate::meta::state::ResourceRecord;
use crate::node::NodeCtx;
use crate::raft::Command;
use crate::raft::CommandResponse;
use crate::raft::state_machine::AppliedState;
use crate::raft::state_machine::GroupData;
use crate::resource::ResourceCommand;
use crate::resource::ResourceResponse;
use crate::resource::ResourceState;

/// Staleness allowed by a STALE_OK read that does not say.
pub const STALE_READ_DEFAULT_MS: u64 = 1_000;

pub struct ClientService {
    ctx: Arc<NodeCtx>,
}

impl ClientService {
    pub fn new(ctx: Arc<NodeCtx>) -> Self {
        ClientService { ctx }
    }

    /// The directory record of `name`. A name missing from this node's
    /// copy of the directory is looked up again after a read index on the
    /// meta group, so a resource created a moment ago is found.
    async fn resource(&self, name: &str) -> Result<ResourceRecord, Status> {
        validate::resource_name(name)?;
        let lookup = || self.ctx.with_meta(|m| m.resources.get(name).cloned());
        if let Some(Some(r)) = lookup() {
            return Ok(r);
        }
        let meta = self.ctx.meta_group().ok_or_else(status::not_ready)?;
        self.ctx.linearize(&meta, "resource directory").await?;
        lookup().flatten().ok_or_else(|| Status::not_found(format!("resource {name:?} does not exist")))
    }

    /// The local replica of `rec`'s group, if this node hosts it.
    fn local(&self, rec: &ResourceRecord) -> Option<Arc<Group>> {
        let me = self.ctx.identity()?.node_id;
        let mine = rec.replica_on(me)?;
        self.ctx.registry.get(rec.group_id).filter(|g| g.replica_id == mine.replica_id)
    }

    /// A node hosting `rec`, preferring one the failure detector sees up.
    fn hosting_addr(&self, rec: &ResourceRecord) -> Option<String> {
        let addrs: Vec<(u64, String)> = self
            .ctx
            .with_meta(|m| {
                rec.replicas.iter().filter_map(|r| m.addr_of(r.node_id).map(|a| (r.node_id, a.to_string()))).collect()
            })
            .unwrap_or_default();
        addrs.iter().find(|(n, _)| self.ctx.detector.is_up(*n)).or(addrs.first()).map(|(_, a)| a.clone())
    }

    /// The local leader replica of `rec`'s group, or the redirect to give.
    fn leader(&self, rec: &ResourceRecord, what: &str) -> Result<Arc<Group>, Status> {
        match self.local(rec) {
            Some(g) => {
                g.touch();
                if g.is_leader() { Ok(g) } else { Err(status::redirect(what, self.ctx.leader_addr(&g).as_deref())) }
            }
            None => Err(status::redirect(what, self.hosting_addr(rec).as_deref())),
        }
    }

    /// A local replica ready to serve a read with `consistency`.
    async fn reader(
        &self,
        rec: &ResourceRecord,
        consistency: i32,
        max_staleness_ms: u64,
        what: &str,
    ) -> Result<Arc<Group>, Status> {
        let g = self.local(rec).ok_or_else(|| status::redirect(what, self.hosting_addr(rec).as_deref()))?;
        g.touch();
        let consistency = v1::Consistency::try_from(consistency)
            .map_err(|_| Status::invalid_argument(format!("unknown consistency {consistency}")))?;
        if consistency == v1::Consistency::StaleOk {
            let bound = if max_staleness_ms == 0 { STALE_READ_DEFAULT_MS } else { max_staleness_ms };
            if g.is_leader() || g.since_leader_contact_ms() <= bound {
                return Ok(g);
            }
        }
        self.ctx.linearize(&g, what).await?;
        Ok(g)
    }

    async fn propose(&self, g: &Group, cmd: ResourceCommand, what: &str) -> Result<ResourceResponse, Status> {
        let resp = g
            .raft
            .client_write(Command::Resource(cmd))
            .await
            .map_err(|e| status::write_error(what, e, |r| self.ctx.replica_addr(r)))?;
        match resp.response() {
            CommandResponse::Resource(r) => Ok(r.clone()),
            other => Err(Status::internal(format!("{what}: resource group answered {other:?}"))),
        }
    }

    fn resource_info(&self, rec: &ResourceRecord, roles: Option<&AppliedState>) -> v1::ResourceInfo {
        let membership = roles.map(|st| st.membership.membership().clone());
        let replicas = rec
            .replicas
            .iter()
            .map(|r| v1::ReplicaInfo {
                replica_id: r.replica_id,
                node_id: r.node_id,
                address: self.ctx.with_meta(|m| m.addr_of(r.node_id).map(String::from)).flatten().unwrap_or_default(),
                role: match &membership {
                    Some(m) if m.voter_ids().any(|v| v == r.replica_id) => "voter".into(),
                    Some(m) if m.learner_ids().any(|l| l == r.replica_id) => "learner".into(),
                    _ => String::new(),
                },
            })
            .collect();
        v1::ResourceInfo {
            name: rec.name.clone(),
            group_id: rec.group_id,
            replication_factor: rec.replication_factor,
            replicas,
        }
    }
}

fn resource_state(st: &AppliedState) -> Result<&ResourceState, Status> {
    match &st.data {
        GroupData::Resource(r) => Ok(r),
        GroupData::Meta(_) => Err(Status::internal("group holds meta state, not a resource")),
    }
}

fn write_outcome(resource: &str, variant: &str, r: ResourceResponse, if_version: Option<u64>) -> Result<u64, Status> {
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
        ResourceResponse::StaleRequest => Err(Status::failed_precondition(
            "request id is older than the client's first incomplete request: it was answered already",
        )),
    }
}

#[tonic::async_trait]
impl ShadowStore for ClientService {
    async fn create_resource(
        &self,
        request: Request<v1::CreateResourceRequest>,
    ) -> Result<Response<v1::CreateResourceResponse>, Status> {
        let req = request.into_inner();
        validate::resource_name(&req.name)?;
        let rf = validate::replication_factor(req.replication_factor)?;
        let me = self.ctx.node_id()?;
        let meta = self.ctx.meta_group().ok_or_else(status::not_ready)?;
        if !meta.is_leader() {
            return Err(status::redirect("create resource", self.ctx.leader_addr(&meta).as_deref()));
        }
        let detector = &self.ctx.detector;
        let nodes = self
            .ctx
            .with_meta(|m| {
                let load = m.replicas_per_node();
                let mut live: Vec<(usize, u64)> = m
                    .nodes
                    .keys()
                    .filter(|n| **n == me || detector.is_up(**n))
                    .map(|n| (load.get(n).copied().unwrap_or(0), *n))
                    .collect();
                live.sort();
                live.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if nodes.len() < rf as usize {
            return Err(Status::failed_precondition(format!(
                "replication factor {rf} needs {rf} live nodes; {} are live",
                nodes.len()
            )));
        }
        let cmd = MetaCommand::CreateResource {
            request: RequestId::from(req.request_id),
            now_ms: self.ctx.clock.now_ms(),
            name: req.name.clone(),
            replication_factor: rf,
            nodes: nodes[..rf as usize].to_vec(),
        };
        match propose_meta(&self.ctx, cmd).await? {
            MetaResponse::Created(rec) => {
                tracing::info!(resource = %rec.name, group = rec.group_id, "resource created");
                Ok(Response::new(v1::CreateResourceResponse { resource: Some(self.resource_info(&rec, None)) }))
            }
            MetaResponse::AlreadyExists(_) => {
                Err(Status::already_exists(format!("resource {:?} already exists", req.name)))
            }
            MetaResponse::Rejected { reason } => Err(Status::failed_precondition(reason)),
            MetaResponse::StaleRequest => Err(Status::failed_precondition("request was answered already")),
            other => Err(Status::internal(format!("unexpected meta answer {other:?}"))),
        }
    }

    async fn delete_resource(
        &self,
        request: Request<v1::DeleteResourceRequest>,
    ) -> Result<Response<v1::DeleteResourceResponse>, Status> {
        let req = request.into_inner();
        validate::resource_name(&req.name)?;
        let meta = self.ctx.meta_group().ok_or_else(status::not_ready)?;
        if !meta.is_leader() {
            return Err(status::redirect("delete resource", self.ctx.leader_addr(&meta).as_deref()));
        }
        let cmd = MetaCommand::DeleteResource {
            request: RequestId::from(req.request_id),
            now_ms: self.ctx.clock.now_ms(),
            name: req.name.clone(),
        };
        match propose_meta(&self.ctx, cmd).await? {
            MetaResponse::Deleted => Ok(Response::new(v1::DeleteResourceResponse {})),
            MetaResponse::NotFound => Err(Status::not_found(format!("resource {:?} does not exist", req.name))),
            MetaResponse::StaleRequest => Err(Status::failed_precondition("request was answered already")),
            other => Err(Status::internal(format!("unexpected meta answer {other:?}"))),
        }
    }

    async fn list_resources(
        &self,
        _request: Request<v1::ListResourcesRequest>,
    ) -> Result<Response<v1::ListResourcesResponse>, Status> {
        let meta = self.ctx.meta_group().ok_or_else(status::not_ready)?;
        self.ctx.linearize(&meta, "list resources").await?;
        let records: Vec<ResourceRecord> =
            self.ctx.with_meta(|m| m.resources.values().cloned().collect()).unwrap_or_default();
        Ok(Response::new(v1::ListResourcesResponse {
            resources: records.iter().map(|r| self.resource_info(r, None)).collect(),
        }))
    }

    async fn put(&self, request: Request<v1::PutRequest>) -> Result<Response<v1::PutResponse>, Status> {
        let req = request.into_inner();
        validate::resource_name(&req.resource)?;
        validate::variant_name(&req.variant)?;
        validate::inline_value(req.value.len())?;
        let rec = self.resource(&req.resource).await?;
        let g = self.leader(&rec, "put")?;
        let cmd = ResourceCommand::Put {
            request: RequestId::from(req.request_id),
            now_ms: self.ctx.clock.now_ms(),
            variant: req.variant.clone(),
            value: req.value,
            if_version: req.if_version,
        };
        let answer = self.propose(&g, cmd, "put").await?;
        let version = write_outcome(&req.resource, &req.variant, answer, req.if_version)?;
        Ok(Response::new(v1::PutResponse { version }))
    }

    async fn get(&self, request: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        let req = request.into_inner();
        validate::resource_name(&req.resource)?;
        validate::variant_name(&req.variant)?;
        let rec = self.resource(&req.resource).await?;
        let g = self.reader(&rec, req.consistency, req.max_staleness_ms, "get").await?;
        let st = g.state.read();
        let rs = resource_state(&st)?;
        let v = rs.variants.get(&req.variant).ok_or_else(|| {
            Status::not_found(format!("variant {:?} of {:?} does not exist", req.variant, req.resource))
        })?;
        if let Some(want) = req.version {
            if want != v.version {
                return Err(Status::not_found(format!(
                    "version {want} of {}/{} is not retained; the latest is {}",
                    req.resource, req.variant, v.version
                )));
            }
        }
        Ok(Response::new(v1::GetResponse {
            value: v.value.clone(),
            version: v.version,
            served_by_node: self.ctx.identity().map(|i| i.node_id).unwrap_or(0),
            applied_index: st.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
        }))
    }

    async fn delete(&self, request: Request<v1::DeleteRequest>) -> Result<Response<v1::DeleteResponse>, Status> {
        let req = request.into_inner();
        validate::resource_name(&req.resource)?;
        validate::variant_name(&req.variant)?;
        let rec = self.resource(&req.resource).await?;
        let g = self.leader(&rec, "delete")?;
        let cmd = ResourceCommand::Delete {
            request: RequestId::from(req.request_id),
            now_ms: self.ctx.clock.now_ms(),
            variant: req.variant.clone(),
            if_version: req.if_version,
        };
        let answer = self.propose(&g, cmd, "delete").await?;
        let version = write_outcome(&req.resource, &req.variant, answer, req.if_version)?;
        Ok(Response::new(v1::DeleteResponse { version }))
    }

    async fn list_variants(
        &self,
        request: Request<v1::ListVariantsRequest>,
    ) -> Result<Response<v1::ListVariantsResponse>, Status> {
        let req = request.into_inner();
        let rec = self.resource(&req.resource).await?;
        let g = self.reader(&rec, req.consistency, 0, "list variants").await?;
        let st = g.state.read();
        let rs = resource_state(&st)?;
        let variants = rs
            .variants
            .iter()
            .map(|(name, v)| v1::VariantInfo {
                name: name.clone(),
                version: v.version,
                size_bytes: v.value.len() as u64,
            })
            .collect();
        Ok(Response::new(v1::ListVariantsResponse { variants }))
    }

    async fn describe_resource(
        &self,
        request: Request<v1::DescribeResourceRequest>,
    ) -> Result<Response<v1::DescribeResourceResponse>, Status> {
        let req = request.into_inner();
        let rec = self.resource(&req.name).await?;
        let g = self.local(&rec).ok_or_else(|| status::redirect("describe", self.hosting_addr(&rec).as_deref()))?;
        let m = g.metrics();
        let st = g.state.read();
        let rs = resource_state(&st)?;
        let leader_replica_id = m.current_leader.unwrap_or(0);
        let progress = m
            .replication
            .as_ref()
            .map(|repl| {
                repl.iter()
                    .map(|(r, matched)| v1::ReplicaProgress {
                        replica_id: *r,
                        matched_index: matched.as_ref().map(|l| l.index),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(v1::DescribeResourceResponse {
            resource: Some(self.resource_info(&rec, Some(&st))),
            leader_replica_id,
            leader_node_id: rec.node_of(leader_replica_id).unwrap_or(0),
            term: m.current_term,
            applied_index: st.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
            committed_index: m.local_committed.as_ref().map(|l| l.index).unwrap_or(0),
            variant_count: rs.variants.len() as u64,
            inline_bytes: rs.inline_bytes,
            progress,
        }))
    }

    async fn cluster_status(
        &self,
        _request: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        let me = self.ctx.node_id()?;
        let meta = self.ctx.meta_group().ok_or_else(status::not_ready)?;
        let meta_metrics = meta.metrics();
        let voters: Vec<u64> = meta_metrics.membership_config.membership().voter_ids().collect();
        let meta_leader = meta_metrics.current_leader;
        let local = self.ctx.registry.all();
        let (nodes, meta_leader_node_id, resource_count) = self
            .ctx
            .with_meta(|m| {
                let leader_node = meta_leader
                    .and_then(|l| m.nodes.values().find(|n| n.meta_replica_id == l))
                    .map(|n| n.node_id)
                    .unwrap_or(0);
                let nodes: Vec<v1::NodeStatus> = m
                    .nodes
                    .values()
                    .map(|n| {
                        let (health, hosted, led) = if n.node_id == me {
                            (
                                "self".to_string(),
                                local.len() as u64,
                                local.iter().filter(|g| g.is_leader()).count() as u64,
                            )
                        } else {
                            match self.ctx.detector.view(n.node_id) {
                                Some(v) => (
                                    v.health.as_str().to_string(),
                                    v.last_answer.as_ref().map_or(0, |a| a.groups_hosted),
                                    v.last_answer.as_ref().map_or(0, |a| a.groups_led),
                                ),
                                None => ("unknown".to_string(), 0, 0),
                            }
                        };
                        v1::NodeStatus {
                            node_id: n.node_id,
                            address: n.labels.addr.clone(),
                            region: n.labels.region.clone(),
                            read_capacity_rps: n.labels.read_capacity_rps,
                            health,
                            groups_hosted: hosted,
                            groups_led: led,
                            meta_voter: voters.contains(&n.meta_replica_id),
                        }
                    })
                    .collect();
                (nodes, leader_node, m.resources.len() as u64)
            })
            .ok_or_else(status::not_ready)?;
        Ok(Response::new(v1::ClusterStatusResponse { meta_leader_node_id, nodes, resource_count }))
    }
}
