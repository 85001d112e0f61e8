//! Shadow replicas from the client: a resource's routing table, adding a
//! shadow, operator actions (remove, pin, halt, rollback, promote, apply)
//! and the status of every shadow. All go to the meta leader, where the
//! commands they cause are committed.

use shadowstore_proto::v1;
use shadowstore_proto::v1::ShadowActionKind;

use crate::client::Client;
use crate::error::Error;
use crate::routing::Route;

impl Client {
    /// The read weights of `resource` over its primaries and shadows.
    pub async fn routing(&self, resource: &str) -> Result<v1::RoutingTable, Error> {
        self.call(&Route::Meta, |mut stub, budget| {
            let mut req = tonic::Request::new(v1::GetRoutingRequest { resource: resource.to_string() });
            req.set_timeout(budget);
            async move { stub.get_routing(req).await }
        })
        .await
    }

    /// Adds a shadow of `resource` on `node` (the planner's cheapest capable
    /// host when `None`).
    pub async fn add_shadow(&self, resource: &str, node: Option<u64>) -> Result<v1::ShadowActionResponse, Error> {
        self.call(&Route::Meta, |mut stub, budget| {
            let mut req = tonic::Request::new(v1::AddShadowRequest {
                resource: resource.to_string(),
                node_id: node.unwrap_or(0),
            });
            req.set_timeout(budget);
            async move { stub.add_shadow(req).await }
        })
        .await
    }

    /// Applies `action` to shadow `shadow` of `resource` (`None`: the only
    /// shadow, or every shadow for rollback and apply).
    pub async fn shadow_action(
        &self,
        resource: &str,
        shadow: Option<u64>,
        action: ShadowActionKind,
    ) -> Result<v1::ShadowActionResponse, Error> {
        self.call(&Route::Meta, |mut stub, budget| {
            let mut req = tonic::Request::new(v1::ShadowActionRequest {
                resource: resource.to_string(),
                replica_id: shadow.unwrap_or(0),
                action: action as i32,
            });
            req.set_timeout(budget);
            async move { stub.shadow_action(req).await }
        })
        .await
    }

    /// Shadows, weights, served reads, gates, cost and history of
    /// `resource` (every resource that had shadows when `None`).
    pub async fn shadow_status(&self, resource: Option<&str>) -> Result<v1::ShadowStatusResponse, Error> {
        self.call(&Route::Meta, |mut stub, budget| {
            let mut req =
                tonic::Request::new(v1::ShadowStatusRequest { resource: resource.unwrap_or_default().to_string() });
            req.set_timeout(budget);
            async move { stub.shadow_status(req).await }
        })
        .await
    }
}
