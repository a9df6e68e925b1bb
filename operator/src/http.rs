//! The operator's HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the process
//! serves), `/readyz` (it reconciles, or stands by for the leader Lease).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// Called before `/metrics` is encoded (refreshes gauges computed from caches).
    pub refresh: Arc<dyn Fn() + Send + Sync>,
}

pub fn router(h: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(h)
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    (h.refresh)();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not reconciling yet")
    }
}

/// Serves until the process ends.
pub async fn serve(addr: SocketAddr, h: Health) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(h)).await
}
