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
use tokio::net::TcpListener;

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

/// Binds `addr` now, so a taken port fails the start; `[::]` listens on IPv6 and IPv4 alike
/// (see `elasticjob_contract::listen`).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(elasticjob_contract::listen::bind(addr)?)
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, h: Health) -> std::io::Result<()> {
    axum::serve(listener, router(h)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(host: IpAddr, port: u16, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect((host, port)).await.unwrap();
        let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_default_address_serves_ipv6_and_ipv4() {
        let health = Health {
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(true)),
            refresh: Arc::new(|| {}),
        };
        let listener = bind("[::]:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve(listener, health));
        for host in [
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ] {
            let reply = get(host, port, "/readyz").await;
            assert!(
                reply.contains(" 200 OK") && reply.ends_with("ok"),
                "{reply}"
            );
            let reply = get(host, port, "/metrics").await;
            assert!(reply.contains("# EOF"), "{reply}");
        }
        let taken = bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).unwrap_err();
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
    }
}
