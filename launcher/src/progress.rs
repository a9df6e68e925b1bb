//! What the launcher tells whoever asks while it runs: its state, the rendezvous round, the
//! world size and the worker-group restarts so far.
//!
//! With `--status-port` (`PET_STATUS_PORT`) it is served over HTTP on every address of the pod:
//! `GET /status` (JSON, the shape the ElasticJob operator polls) and `GET /metrics`
//! (Prometheus). It needs no credentials: this is the least-privilege channel between the pods
//! and the operator (the pods get no Kubernetes API access). Its one write, `POST /stop`, only
//! records why the pod is about to be stopped (for the workers' stop notice): it cannot stop,
//! start or change anything. The agent publishes through a [`ProgressSender`]; the server
//! reads the latest value.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use elasticjob_contract::listen;
use elasticjob_contract::stop::{self, StopRequest};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use elasticjob_contract::progress::{Progress, Stall, State};

/// The agent's side: publishes changes; readers always see the latest snapshot.
pub type ProgressSender = watch::Sender<Progress>;

/// What the operator said last about why this pod is about to be stopped.
pub type StopTold = Arc<Mutex<Option<StopRequest>>>;

/// Why the status endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot serve the launcher status on port {port} (--status-port / PET_STATUS_PORT): {source}; choose a free port (ElasticJob: spec.launcher.statusPort)"
)]
pub struct ServeError {
    pub port: u16,
    #[source]
    pub source: std::io::Error,
}

/// Binds `port` on every address, IPv6 and IPv4, now (so a taken port is an error at start,
/// not a silent gap) and serves `progress` until the process ends; `POST /stop` bodies land in
/// `told`.
pub async fn serve(
    port: u16,
    progress: watch::Receiver<Progress>,
    told: StopTold,
) -> Result<SocketAddr, ServeError> {
    let err = |source| ServeError { port, source };
    let listener = listen::bind(listen::every_address(port))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let app = router(progress, told);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the launcher status endpoint stopped");
        }
    });
    tracing::info!(%addr, "serving the launcher status (GET /status, /metrics; POST /stop)");
    Ok(addr)
}

fn router(progress: watch::Receiver<Progress>, told: StopTold) -> Router {
    let for_metrics = progress.clone();
    Router::new()
        .route(
            stop::PATH,
            post(move |body: String| {
                let answer = match serde_json::from_str::<StopRequest>(&body) {
                    Ok(request) => {
                        tracing::info!(reason = ?request.reason, message = %request.message, "told why this pod will be stopped");
                        *told.lock().expect("stop reason lock") = Some(request);
                        (StatusCode::NO_CONTENT, String::new())
                    }
                    Err(e) => (
                        StatusCode::BAD_REQUEST,
                        format!("expected {{\"reason\": <a stop reason>, \"message\": <text>}}: {e}\n"),
                    ),
                };
                async move { answer }
            }),
        )
        .route(
            "/status",
            get(move || {
                let body = serde_json::to_string(&*progress.borrow()).expect("progress serializes");
                async move { ([(CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics_text(&for_metrics.borrow());
                async move {
                    (
                        [(
                            CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// The snapshot as Prometheus gauges (a fresh registry per scrape: the values are few and
/// live in the snapshot, not in long-lived metric objects).
pub fn metrics_text(p: &Progress) -> String {
    let mut registry = Registry::with_prefix("elastic_launch");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let g = Gauge::<i64>::default();
        g.set(value);
        registry.register(name, help, g);
    };
    let states = Family::<StateLabel, Gauge>::default();
    for state in State::REPORTED {
        states
            .get_or_create(&StateLabel {
                state: state.as_str(),
            })
            .set(i64::from(state == p.state));
    }
    registry.register("state", "The agent's state (1 for the current one)", states);
    gauge(
        &mut registry,
        "restarts",
        "Worker-group restarts after this node's workers failed",
        p.restart_count.into(),
    );
    gauge(
        &mut registry,
        "max_restarts",
        "Worker-group restarts allowed (--max-restarts)",
        p.max_restarts.into(),
    );
    gauge(
        &mut registry,
        "re_forms",
        "Rounds re-formed without a failure on this node (membership changes, lost store)",
        p.re_forms.into(),
    );
    let optional = [
        (
            "rendezvous_round",
            "The current rendezvous round",
            p.round.map(|r| r as i64),
        ),
        (
            "world_size",
            "Workers in the current round, all nodes",
            p.world_size.map(i64::from),
        ),
        (
            "nnodes",
            "Nodes in the current round",
            p.nnodes.map(i64::from),
        ),
    ];
    for (name, help, value) in optional {
        if let Some(v) = value {
            gauge(&mut registry, name, help, v);
        }
    }
    gauge(
        &mut registry,
        "local_world_size",
        "Workers on this node",
        p.local_world_size.into(),
    );
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_the_state_and_counts() {
        let mut p = Progress::new(2, 3);
        p.restart_count = 2;
        let text = metrics_text(&p);
        assert!(text.contains("elastic_launch_restarts 2"), "{text}");
        assert!(
            text.contains("elastic_launch_state{state=\"Rendezvous\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("elastic_launch_state{state=\"Running\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("elastic_launch_world_size "),
            "no round yet: {text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    #[tokio::test]
    async fn serves_the_latest_snapshot_and_refuses_a_taken_port() {
        let (tx, rx) = watch::channel(Progress::new(1, 0));
        let taken = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let told = StopTold::default();
        let e = serve(port, rx.clone(), told.clone()).await.unwrap_err();
        assert!(e.to_string().contains(&format!("port {port}")), "{e}");
        drop(taken);
        let addr = serve(0, rx, told.clone()).await.unwrap();
        tx.send_modify(|p| p.restart_count = 5);
        // On IPv6 and IPv4 alike.
        for host in [V4, V6] {
            let body = http_get(host, addr.port(), "/status").await;
            assert!(body.contains("\"restartCount\":5"), "{body}");
        }
        let body = http_get(V6, addr.port(), "/metrics").await;
        assert!(body.contains("elastic_launch_restarts 5"), "{body}");
        let reply = http(
            V4,
            addr.port(),
            "POST",
            "/stop",
            r#"{"reason": "ScaleDown", "message": "3 to 2"}"#,
        )
        .await;
        assert!(reply.contains(" 204 "), "{reply}");
        assert_eq!(
            told.lock().unwrap().clone(),
            Some(StopRequest {
                reason: stop::StopReason::ScaleDown,
                message: "3 to 2".into()
            })
        );
        let reply = http(V4, addr.port(), "POST", "/stop", "stop now").await;
        assert!(
            reply.contains(" 400 ") && reply.contains("expected {\"reason\""),
            "{reply}"
        );
    }

    async fn http_get(host: IpAddr, port: u16, path: &str) -> String {
        let out = http(host, port, "GET", path, "").await;
        assert!(
            out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
            "{out}"
        );
        out
    }

    async fn http(host: IpAddr, port: u16, method: &str, path: &str, body: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect((host, port)).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}
