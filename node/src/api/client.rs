//! The public `ShadowStore` API: one method per RPC. Every input is
//! validated before anything else happens; where a request is served (and
//! where it is redirected) is decided in [`super::route`].

use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use bytes::BytesMut;
use futures::Stream;
use futures::StreamExt;
use shadowstore_proto::v1;
use shadowstore_proto::v1::shadow_store_server::ShadowStore;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use super::data;
use super::data::WriteRequest;
use super::status;
use super::validate;
use crate::blob::DataPlane;
use crate::demand::admission::ReadAdmission;
use crate::meta::command::MetaCommand;
use crate::meta::command::MetaResponse;
use crate::meta::state::ResourceRecord;
use crate::meta::state::StorageParams;
use crate::placement::Placement;
use crate::raft::state_machine::AppliedState;
use crate::raft::state_machine::GroupData;
use crate::resource::ResourceCommand;
use crate::resource::ResourceState;
use crate::shadow::Shadows;
use shadowstore_base::limits::STREAM_CHUNK_BYTES_MAX;
use shadowstore_base::limits::UNARY_GET_BYTES_MAX;

/// Response metadata set when a variant is too large for a unary Get.
pub use shadowstore_proto::USE_STREAM_METADATA;

/// The public service and what it uses.
pub struct ClientService {
    /// The data plane (and through it the cluster handle).
    pub(super) data: Arc<DataPlane>,
    pub(super) placement: Arc<Placement>,
    /// Sheds reads above this node's read capacity.
    pub(super) admission: Arc<ReadAdmission>,
    pub(super) blob_bytes_max: u64,
    pub(super) shadows: Arc<Shadows>,
}

impl ClientService {
    /// `admission` is shared with the node's metrics, which report its
    /// counts.
    pub fn new(shadows: Arc<Shadows>, admission: Arc<ReadAdmission>, blob_bytes_max: u64) -> Self {
        let (data, placement) = (shadows.data.clone(), shadows.placement.clone());
        ClientService { data, placement, admission, blob_bytes_max, shadows }
    }

    fn resource_info(&self, rec: &ResourceRecord, roles: Option<&AppliedState>) -> v1::ResourceInfo {
        let membership = roles.map(|st| st.membership.membership().clone());
        let replicas = rec
            .replicas
            .iter()
            .map(|r| v1::ReplicaInfo {
                replica_id: r.replica_id.get(),
                node_id: r.node_id.get(),
                address: self
                    .cluster()
                    .with_meta(|m| m.addr_of(r.node_id).map(String::from))
                    .flatten()
                    .unwrap_or_default(),
                role: match &membership {
                    _ if r.role == crate::meta::state::ReplicaRole::Shadow => "shadow".into(),
                    Some(m) if m.voter_ids().any(|v| v == r.replica_id) => "voter".into(),
                    Some(m) if m.learner_ids().any(|l| l == r.replica_id) => "learner".into(),
                    _ => String::new(),
                },
            })
            .collect();
        v1::ResourceInfo {
            name: rec.name.clone(),
            group_id: rec.group_id.get(),
            replication_factor: rec.replication_factor,
            replicas,
            data_shards: rec.storage.k as u32,
            parity_shards: rec.storage.m as u32,
            inline_threshold_bytes: rec.storage.inline_threshold,
            stripe_size_bytes: rec.storage.stripe_size,
            keep_versions: rec.storage.keep_versions,
        }
    }
}

/// The storage parameters a create request asks for, defaults filled in.
fn storage_params(req: &v1::CreateResourceRequest, rf: u32) -> Result<StorageParams, Status> {
    let mut p = StorageParams::default_for(rf);
    match (req.data_shards, req.parity_shards) {
        (0, 0) => {}
        (k, m) => {
            p.k = u8::try_from(k).map_err(|_| Status::invalid_argument(format!("data_shards {k} is too large")))?;
            p.m = u8::try_from(m).map_err(|_| Status::invalid_argument(format!("parity_shards {m} is too large")))?;
        }
    }
    if let Some(t) = req.inline_threshold_bytes {
        p.inline_threshold = t;
    }
    if req.stripe_size_bytes != 0 {
        p.stripe_size = req.stripe_size_bytes;
    }
    if req.keep_versions != 0 {
        p.keep_versions = req.keep_versions;
    }
    p.validate(rf).map_err(Status::invalid_argument)?;
    Ok(p)
}

pub(super) fn resource_state(st: &AppliedState) -> Result<&ResourceState, Status> {
    match &st.data {
        GroupData::Resource(r) => Ok(r),
        GroupData::Meta(_) => Err(Status::internal("group holds meta state, not a resource")),
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
        let storage = storage_params(&req, rf)?;
        let me = self.cluster().node_id()?;
        let meta = self.cluster().meta_group().ok_or_else(status::not_ready)?;
        if !meta.is_leader() {
            return Err(status::redirect("create resource", self.cluster().leader_addr(&meta).as_deref()));
        }
        let detector = &self.cluster().detector;
        let nodes = self
            .cluster()
            .with_meta(|m| {
                let load = m.replicas_per_node();
                let mut live: Vec<(usize, NodeId)> = m
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
            request: super::validate::request_id(req.request_id),
            now_ms: self.data.clock.now_ms(),
            name: req.name.clone(),
            replication_factor: rf,
            storage,
            nodes: nodes[..rf as usize].to_vec(),
        };
        match self.cluster().propose_meta(cmd).await? {
            MetaResponse::Created(rec) => {
                tracing::info!(resource = %rec.name, group = %rec.group_id, "resource created");
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
        let meta = self.cluster().meta_group().ok_or_else(status::not_ready)?;
        if !meta.is_leader() {
            return Err(status::redirect("delete resource", self.cluster().leader_addr(&meta).as_deref()));
        }
        let cmd = MetaCommand::DeleteResource {
            request: super::validate::request_id(req.request_id),
            now_ms: self.data.clock.now_ms(),
            name: req.name.clone(),
        };
        match self.cluster().propose_meta(cmd).await? {
            MetaResponse::Deleted => Ok(Response::new(v1::DeleteResourceResponse {})),
            MetaResponse::NotFound => Err(Status::not_found(format!("resource {:?} does not exist", req.name))),
            MetaResponse::StaleRequest => Err(Status::failed_precondition("request was answered already")),
            other => Err(Status::internal(format!("unexpected meta answer {other:?}"))),
        }
    }

    async fn list_resources(
        &self,
        request: Request<v1::ListResourcesRequest>,
    ) -> Result<Response<v1::ListResourcesResponse>, Status> {
        let req = request.into_inner();
        let meta = self.cluster().meta_group().ok_or_else(status::not_ready)?;
        self.cluster().linearize(&meta, "list resources").await?;
        let (records, next_page_token): (Vec<ResourceRecord>, String) = self
            .cluster()
            .with_meta(|m| {
                super::page::page(&m.resources, req.page_size, &req.page_token)
                    .map(|(items, next)| (items.into_iter().map(|(_, r)| r.clone()).collect(), next))
            })
            .unwrap_or_else(|| Ok((Vec::new(), String::new())))?;
        Ok(Response::new(v1::ListResourcesResponse {
            resources: records.iter().map(|r| self.resource_info(r, None)).collect(),
            next_page_token,
        }))
    }

    async fn put(&self, request: Request<v1::PutRequest>) -> Result<Response<v1::PutResponse>, Status> {
        let req = request.into_inner();
        validate::resource_name(&req.resource)?;
        validate::variant_name(&req.variant)?;
        validate::inline_value(req.value.len())?;
        let rec = self.resource(&req.resource).await?;
        let g = self.leader(&rec, "put")?;
        let w = WriteRequest {
            resource: &req.resource,
            variant: &req.variant,
            if_version: req.if_version,
            request: super::validate::request_id(req.request_id),
            declared: Some(req.value.len() as u64),
        };
        let version =
            data::write_variant(&self.data, &g, &rec, w, req.value, futures::stream::empty(), self.blob_bytes_max)
                .await?;
        Ok(Response::new(v1::PutResponse { version }))
    }

    async fn put_stream(&self, request: Request<Streaming<v1::PutChunk>>) -> Result<Response<v1::PutResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty put stream"))?;
        let h = first.header.ok_or_else(|| Status::invalid_argument("the first put message must carry the header"))?;
        validate::resource_name(&h.resource)?;
        validate::variant_name(&h.variant)?;
        if let Some(size) = h.size.filter(|s| *s > self.blob_bytes_max) {
            return Err(Status::resource_exhausted(format!(
                "value of {size} bytes exceeds the {}-byte limit",
                self.blob_bytes_max
            )));
        }
        let rec = self.resource(&h.resource).await?;
        let g = self.leader(&rec, "put")?;
        let rest = stream.map(|m| {
            let m = m?;
            if m.data.len() > STREAM_CHUNK_BYTES_MAX {
                return Err(Status::invalid_argument(format!(
                    "put message of {} bytes exceeds {STREAM_CHUNK_BYTES_MAX}",
                    m.data.len()
                )));
            }
            Ok(m.data)
        });
        let w = WriteRequest {
            resource: &h.resource,
            variant: &h.variant,
            if_version: h.if_version,
            request: super::validate::request_id(h.request_id),
            declared: h.size,
        };
        let version =
            data::write_variant(&self.data, &g, &rec, w, first.data, Box::pin(rest), self.blob_bytes_max).await?;
        Ok(Response::new(v1::PutResponse { version }))
    }

    async fn get(&self, request: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        let started = std::time::Instant::now();
        let (metadata, _, req) = request.into_parts();
        let (g, version) = self.read_version(&metadata, &req).await?;
        let ticket = self.shadows.served.begin_at(g.id, started);
        self.shadows.inject_read_fault(g.id).await?;
        if version.size > UNARY_GET_BYTES_MAX {
            let mut s = Status::failed_precondition(format!(
                "{}/{} version {} is {} bytes, more than one message carries; use GetStream",
                req.resource, req.variant, version.version, version.size
            ));
            s.metadata_mut().insert(USE_STREAM_METADATA, tonic::metadata::MetadataValue::from_static("1"));
            return Err(s);
        }
        let applied_index = g.state.applied_index();
        let mut value = BytesMut::with_capacity(version.size as usize);
        let mut bytes = data::version_bytes(self.data.clone(), g.id, &version);
        while let Some(b) = bytes.next().await {
            value.extend_from_slice(&b?);
        }
        ticket.finish(true);
        let mut response = Response::new(v1::GetResponse {
            value: value.freeze(),
            version: version.version,
            served_by_node: self.cluster().identity().map_or(0, |i| i.node_id.get()),
            applied_index,
        });
        self.tag_routing_version(&req.resource, response.metadata_mut());
        Ok(response)
    }

    type GetStreamStream = Pin<Box<dyn Stream<Item = Result<v1::GetChunk, Status>> + Send>>;

    async fn get_stream(&self, request: Request<v1::GetRequest>) -> Result<Response<Self::GetStreamStream>, Status> {
        let started = std::time::Instant::now();
        let (metadata, _, req) = request.into_parts();
        let (g, version) = self.read_version(&metadata, &req).await?;
        self.shadows.inject_read_fault(g.id).await?;
        self.shadows.served.begin_at(g.id, started).finish(true);
        let header = v1::GetChunk {
            header: Some(v1::GetHeader {
                version: version.version,
                size: version.size,
                served_by_node: self.cluster().identity().map_or(0, |i| i.node_id.get()),
                storage: data::storage_name(&version.content).to_string(),
            }),
            data: Bytes::new(),
        };
        let body = data::version_bytes(self.data.clone(), g.id, &version)
            .map(|r| r.map(|data| v1::GetChunk { header: None, data }));
        Ok(Response::new(Box::pin(futures::stream::once(async { Ok(header) }).chain(body))))
    }

    async fn delete(&self, request: Request<v1::DeleteRequest>) -> Result<Response<v1::DeleteResponse>, Status> {
        let req = request.into_inner();
        validate::resource_name(&req.resource)?;
        validate::variant_name(&req.variant)?;
        let rec = self.resource(&req.resource).await?;
        let g = self.leader(&rec, "delete")?;
        let cmd = ResourceCommand::Delete {
            request: super::validate::request_id(req.request_id),
            now_ms: self.data.clock.now_ms(),
            variant: req.variant.clone(),
            if_version: req.if_version,
        };
        let answer = data::propose(&self.data, &g, cmd, "delete").await?;
        let version = data::write_outcome(&req.resource, &req.variant, answer, req.if_version)?;
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
        // A page of variant names; deleted variants (no latest version)
        // are skipped, so a page may hold fewer than page_size.
        let (items, next_page_token) = super::page::page(&rs.variants, req.page_size, &req.page_token)?;
        let variants = items
            .into_iter()
            .filter_map(|(name, v)| {
                v.latest().map(|l| v1::VariantInfo { name: name.clone(), version: l.version, size_bytes: l.size })
            })
            .collect();
        Ok(Response::new(v1::ListVariantsResponse { variants, next_page_token }))
    }

    async fn describe_resource(
        &self,
        request: Request<v1::DescribeResourceRequest>,
    ) -> Result<Response<v1::DescribeResourceResponse>, Status> {
        let req = request.into_inner();
        let rec = self.resource(&req.name).await?;
        let g = self.local(&rec).ok_or_else(|| status::redirect("describe", self.hosting_addr(&rec).as_deref()))?;
        let m = g.metrics();
        let (info, applied_index, rs) = {
            let st = g.state.read();
            (
                self.resource_info(&rec, Some(&st)),
                st.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
                resource_state(&st)?.clone(),
            )
        };
        let leader_replica_id = m.current_leader.unwrap_or(ReplicaId::new(0));
        let progress = m
            .replication
            .as_ref()
            .map(|repl| {
                repl.iter()
                    .map(|(r, matched)| v1::ReplicaProgress {
                        replica_id: r.get(),
                        matched_index: matched.as_ref().map(|l| l.index),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (variant_count, inline_bytes, blob_bytes) =
            (rs.variants.values().filter(|v| v.current.is_some()).count() as u64, rs.inline_bytes, rs.blob_bytes);
        let (variants, variants_truncated) = data::variant_details(&self.data, &g, &rs).await;
        Ok(Response::new(v1::DescribeResourceResponse {
            resource: Some(info),
            leader_replica_id: leader_replica_id.get(),
            leader_node_id: rec.node_of(leader_replica_id).map_or(0, NodeId::get),
            term: m.current_term,
            applied_index,
            committed_index: m.local_committed.as_ref().map(|l| l.index).unwrap_or(0),
            variant_count,
            inline_bytes,
            progress,
            variants,
            blob_bytes,
            variants_truncated,
        }))
    }

    async fn placement_plan(
        &self,
        request: Request<v1::PlacementPlanRequest>,
    ) -> Result<Response<v1::PlacementPlanResponse>, Status> {
        super::placement::plan(&self.placement, request.into_inner()).await.map(Response::new)
    }

    async fn demand_show(
        &self,
        request: Request<v1::DemandShowRequest>,
    ) -> Result<Response<v1::DemandShowResponse>, Status> {
        super::placement::demand_show(&self.placement, request.into_inner()).await.map(Response::new)
    }

    async fn get_placement_config(
        &self,
        _request: Request<v1::GetPlacementConfigRequest>,
    ) -> Result<Response<v1::PlacementConfigResponse>, Status> {
        super::placement::get_config(&self.placement).await.map(Response::new)
    }

    async fn set_placement_config(
        &self,
        request: Request<v1::SetPlacementConfigRequest>,
    ) -> Result<Response<v1::PlacementConfigResponse>, Status> {
        super::placement::set_config(&self.placement, request.into_inner()).await.map(Response::new)
    }

    async fn get_routing(&self, request: Request<v1::GetRoutingRequest>) -> Result<Response<v1::RoutingTable>, Status> {
        let req = request.into_inner();
        let rec = self.resource(&req.resource).await?;
        super::shadow::routing(&self.shadows, &rec).map(Response::new)
    }

    async fn add_shadow(
        &self,
        request: Request<v1::AddShadowRequest>,
    ) -> Result<Response<v1::ShadowActionResponse>, Status> {
        let req = request.into_inner();
        let rec = self.resource(&req.resource).await?;
        super::shadow::add(&self.shadows, &rec, req.node_id).await.map(Response::new)
    }

    async fn shadow_action(
        &self,
        request: Request<v1::ShadowActionRequest>,
    ) -> Result<Response<v1::ShadowActionResponse>, Status> {
        let req = request.into_inner();
        let rec = self.resource(&req.resource).await?;
        super::shadow::act(&self.shadows, &rec, req.replica_id, req.action).await.map(Response::new)
    }

    async fn shadow_status(
        &self,
        request: Request<v1::ShadowStatusRequest>,
    ) -> Result<Response<v1::ShadowStatusResponse>, Status> {
        let req = request.into_inner();
        if !req.resource.is_empty() {
            self.resource(&req.resource).await?;
        }
        super::shadow::status(&self.shadows, &req.resource).await.map(Response::new)
    }

    async fn scrub_status(
        &self,
        _request: Request<v1::ScrubStatusRequest>,
    ) -> Result<Response<v1::ScrubStatusResponse>, Status> {
        let s = &self.data.scrubber.stats;
        let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Ok(Response::new(v1::ScrubStatusResponse {
            node_id: self.cluster().node_id()?.get(),
            passes_completed: l(&s.passes_completed),
            pass_shards_done: l(&s.pass_shards_done),
            pass_shards_total: l(&s.pass_shards_total),
            bytes_verified: l(&s.bytes_verified),
            chunks_verified: l(&s.chunks_verified),
            chunks_corrupt: l(&s.chunks_corrupt),
            chunks_missing: l(&s.chunks_missing),
            chunks_repaired: l(&s.chunks_repaired),
            repair_failures: l(&s.repair_failures),
            rate_limit_bytes_per_s: l(&self.data.scrubber.rate_bytes_per_s),
            last_pass_finished_ms: l(&s.last_pass_finished_ms),
            orphan_shards_collected: l(&s.orphan_shards_collected),
        }))
    }

    async fn cluster_status(
        &self,
        _request: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        let me = self.cluster().node_id()?;
        let meta = self.cluster().meta_group().ok_or_else(status::not_ready)?;
        let meta_metrics = meta.metrics();
        let voters: Vec<ReplicaId> = meta_metrics.membership_config.membership().voter_ids().collect();
        let meta_leader = meta_metrics.current_leader;
        let local = self.cluster().registry.all();
        let (nodes, meta_leader_node_id, resource_count) = self
            .cluster()
            .with_meta(|m| {
                let leader_node = meta_leader
                    .and_then(|l| m.nodes.values().find(|n| n.meta_replica_id == l))
                    .map(|n| n.node_id)
                    .unwrap_or(NodeId::new(0));
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
                            match self.cluster().detector.view(n.node_id) {
                                Some(v) => (
                                    v.health.as_str().to_string(),
                                    v.last_answer.as_ref().map_or(0, |a| a.groups_hosted),
                                    v.last_answer.as_ref().map_or(0, |a| a.groups_led),
                                ),
                                None => ("unknown".to_string(), 0, 0),
                            }
                        };
                        v1::NodeStatus {
                            node_id: n.node_id.get(),
                            address: n.labels.addr.clone(),
                            region: n.labels.region.clone(),
                            read_capacity_rps: n.labels.read_capacity_rps,
                            health,
                            groups_hosted: hosted,
                            groups_led: led,
                            meta_voter: voters.contains(&n.meta_replica_id),
                            peer_address: m.peer_addr_of(n.node_id).unwrap_or_default().to_string(),
                        }
                    })
                    .collect();
                (nodes, leader_node, m.resources.len() as u64)
            })
            .ok_or_else(status::not_ready)?;
        Ok(Response::new(v1::ClusterStatusResponse {
            meta_leader_node_id: meta_leader_node_id.get(),
            nodes,
            resource_count,
        }))
    }
}
