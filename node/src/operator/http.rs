//! The operator's HTTP listener (`http_addr`): `/metrics` for Prometheus
//! (OpenMetrics text), the dashboard page at `/` and its data at
//! `/api/dashboard`. It serves read-only views and nothing a client of the
//! store could use to change state; it is plain HTTP, meant for a
//! management network or loopback (docs/OPERATING.md).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::dashboard::Dashboard;

/// The content type Prometheus asks for and prometheus-client writes.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the listener (so a bad address fails the node's start-up).
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, String)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?.to_string();
    Ok((listener, bound))
}

/// The dashboard page (no external assets).
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Serves until the task is aborted (node shutdown).
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, dashboard: Arc<Dashboard>) {
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { metrics(&registry) }
            }),
        )
        .route("/", get(|| async { axum::response::Html(DASHBOARD_HTML) }))
        .route(
            "/api/dashboard",
            get(move || {
                let dashboard = dashboard.clone();
                async move {
                    let body = dashboard.snapshot().await.to_string();
                    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the operator HTTP listener stopped");
    }
}

fn metrics(registry: &Registry) -> axum::response::Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics failed: {e}")).into_response(),
    }
}
