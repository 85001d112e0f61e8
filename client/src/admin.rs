//! Resources and the cluster: create, describe, delete and list resources;
//! scrubber status; placement, demand and configuration; cluster status.
//!
//! Resource lifecycle and placement go to the meta group ([`Route::Meta`]);
//! describing a resource goes to the resource's own group. Creating a
//! resource waits until its new group has elected a leader, so the first put
//! after it does not meet an empty group. The placement, demand and
//! configuration answers are typed messages.

use std::time::Duration;

use shadowstore_proto::v1;
use tokio::time::Instant;
use tonic::Code;
use tonic::Status;

use crate::client::Client;
use crate::error::Error;
use crate::routing::Route;

/// How a resource stores its values; zeros mean the cluster's defaults.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Primaries: 3 (default) or 5.
    pub replication_factor: u32,
    /// Erasure code k+m (k + m must equal the replication factor).
    pub data_shards: u32,
    pub parity_shards: u32,
    /// Values up to this size stay inline in the Raft log (default 65536).
    pub inline_threshold_bytes: Option<u32>,
    pub stripe_size_bytes: u32,
    pub keep_versions: u32,
}

impl Client {
    /// Creates a resource with `replication_factor` primaries (3 or 5) and
    /// waits until its group has a leader.
    pub async fn create_resource(&self, name: &str, replication_factor: u32) -> Result<v1::ResourceInfo, Error> {
        self.create_resource_with(name, CreateOptions { replication_factor, ..Default::default() }).await
    }

    /// Creates a resource with explicit storage options.
    pub async fn create_resource_with(&self, name: &str, o: CreateOptions) -> Result<v1::ResourceInfo, Error> {
        let name_s = name.to_string();
        let resp = self
            .write(&Route::Meta, |mut stub, budget, id| {
                let mut req = tonic::Request::new(v1::CreateResourceRequest {
                    name: name_s.clone(),
                    replication_factor: o.replication_factor,
                    request_id: Some(id),
                    data_shards: o.data_shards,
                    parity_shards: o.parity_shards,
                    inline_threshold_bytes: o.inline_threshold_bytes,
                    stripe_size_bytes: o.stripe_size_bytes,
                    keep_versions: o.keep_versions,
                });
                req.set_timeout(budget);
                async move { stub.create_resource(req).await }
            })
            .await?;
        self.wait_for_leader(name, self.inner.options.create_wait).await?;
        resp.resource.ok_or_else(|| Error::Status(Status::internal("create answered without a resource")))
    }

    /// Waits until the resource's group reports a leader.
    pub async fn wait_for_leader(&self, name: &str, wait: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + wait;
        let mut attempt = 0;
        loop {
            match self.describe_resource(name).await {
                Ok(d) if d.leader_replica_id != 0 => return Ok(()),
                Ok(_) => {}
                Err(e) if e.code() == Code::NotFound => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(Error::Deadline { deadline: wait, last: format!("resource {name} has no leader yet") });
            }
            attempt += 1;
            tokio::time::sleep(self.backoff(attempt, None).max(Duration::from_millis(20))).await;
        }
    }

    pub async fn delete_resource(&self, name: &str) -> Result<(), Error> {
        let name = name.to_string();
        self.write(&Route::Meta, |mut stub, budget, id| {
            let mut req = tonic::Request::new(v1::DeleteResourceRequest { name: name.clone(), request_id: Some(id) });
            req.set_timeout(budget);
            async move { stub.delete_resource(req).await }
        })
        .await?;
        self.inner.router.forget_leader(&Route::resource(&name));
        Ok(())
    }

    /// Every resource, in name order (fetched page by page).
    pub async fn list_resources(&self) -> Result<Vec<v1::ResourceInfo>, Error> {
        crate::retry::all_pages(|token| async move {
            let r = self
                .call(&Route::Meta, |mut stub, budget| {
                    let mut req =
                        tonic::Request::new(v1::ListResourcesRequest { page_size: 0, page_token: token.clone() });
                    req.set_timeout(budget);
                    async move { stub.list_resources(req).await }
                })
                .await?;
            Ok((r.resources, r.next_page_token))
        })
        .await
    }

    pub async fn describe_resource(&self, name: &str) -> Result<v1::DescribeResourceResponse, Error> {
        self.call(&Route::resource(name), |mut stub, budget| {
            let mut req = tonic::Request::new(v1::DescribeResourceRequest { name: name.to_string() });
            req.set_timeout(budget);
            async move { stub.describe_resource(req).await }
        })
        .await
    }

    /// The scrubber status of every node (by asking each node).
    pub async fn scrub_status_all(&self) -> Result<Vec<Result<v1::ScrubStatusResponse, Error>>, Error> {
        let status = self.cluster_status().await?;
        let mut out = Vec::new();
        for n in status.nodes {
            let stub = self.inner.router.stub(&n.address);
            let r = match stub {
                Ok(mut s) => {
                    let mut req = tonic::Request::new(v1::ScrubStatusRequest {});
                    req.set_timeout(self.inner.options.attempt_timeout);
                    s.scrub_status(req).await.map(|r| r.into_inner()).map_err(Error::Status)
                }
                Err(e) => Err(Error::Status(e)),
            };
            out.push(r);
        }
        Ok(out)
    }

    /// The planner's dry run (every plan with its explanation), for one
    /// resource or all.
    pub async fn placement_plan(&self, resource: Option<&str>) -> Result<v1::PlacementPlanResponse, Error> {
        let resource = resource.unwrap_or_default().to_string();
        let r = self
            .call(&Route::Meta, |mut stub, budget| {
                let mut req = tonic::Request::new(v1::PlacementPlanRequest { resource: resource.clone() });
                req.set_timeout(budget);
                async move { stub.placement_plan(req).await }
            })
            .await?;
        Ok(r)
    }

    /// A resource's demand history and forecast per region.
    pub async fn demand_show(&self, resource: &str, history_slots: u32) -> Result<v1::DemandShowResponse, Error> {
        let r = self
            .call(&Route::Meta, |mut stub, budget| {
                let mut req =
                    tonic::Request::new(v1::DemandShowRequest { resource: resource.to_string(), history_slots });
                req.set_timeout(budget);
                async move { stub.demand_show(req).await }
            })
            .await?;
        Ok(r)
    }

    /// Placement settings, node prices, priorities and region distances.
    pub async fn placement_config(&self) -> Result<v1::PlacementConfigResponse, Error> {
        let r = self
            .call(&Route::Meta, |mut stub, budget| {
                let mut req = tonic::Request::new(v1::GetPlacementConfigRequest {});
                req.set_timeout(budget);
                async move { stub.get_placement_config(req).await }
            })
            .await?;
        Ok(r)
    }

    /// Sets one placement setting (or a node's price); returns the new
    /// configuration.
    /// `node_id` names the node for a price, `resource` the resource for
    /// `priority`.
    pub async fn set_placement_config(
        &self,
        key: &str,
        value: &str,
        node_id: Option<u64>,
        resource: Option<&str>,
    ) -> Result<v1::PlacementConfigResponse, Error> {
        let r = self
            .call(&Route::Meta, |mut stub, budget| {
                let mut req = tonic::Request::new(v1::SetPlacementConfigRequest {
                    key: key.to_string(),
                    value: value.to_string(),
                    node_id: node_id.unwrap_or(0),
                    resource: resource.unwrap_or_default().to_string(),
                });
                req.set_timeout(budget);
                async move { stub.set_placement_config(req).await }
            })
            .await?;
        Ok(r)
    }

    pub async fn cluster_status(&self) -> Result<v1::ClusterStatusResponse, Error> {
        self.call(&Route::Status, |mut stub, budget| {
            let mut req = tonic::Request::new(v1::ClusterStatusRequest {});
            req.set_timeout(budget);
            async move { stub.cluster_status(req).await }
        })
        .await
    }
}
