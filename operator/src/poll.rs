//! Reads the launchers' status endpoints (`GET http://<pod IP>:<statusPort>/status`): the IO
//! behind [`crate::progress`]; and tells a launcher why its pod is about to be deleted
//! (`POST /stop`). No credentials either way; a launcher that does not answer in time is
//! skipped (its last report in the status stays; its pod is deleted all the same).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::debug;

use crate::observed::ObservedPod;
use elasticjob_contract::progress::Progress;
use elasticjob_contract::stop::{self, StopRequest};

/// How long one launcher gets to answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Requests in flight at once, per reconcile.
const CONCURRENCY: usize = 32;
/// A status is a few hundred bytes; anything much larger is not a launcher.
const MAX_BODY: usize = 64 * 1024;

/// An HTTP/1 client for the launchers, shared by all reconciles.
#[derive(Clone)]
pub struct LauncherClient {
    http: Client<HttpConnector, Empty<Bytes>>,
    post: Client<HttpConnector, Full<Bytes>>,
}

impl Default for LauncherClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(TIMEOUT));
        connector.set_nodelay(true);
        LauncherClient {
            http: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector.clone()),
            post: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
        }
    }
}

impl LauncherClient {
    /// Fills in `launcher` of every running pod with an IP, from `port`.
    pub async fn poll(&self, pods: &mut [ObservedPod], port: i32) {
        let targets: Vec<(usize, String)> = pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_running())
            .filter_map(|(i, p)| Some((i, status_url(p.ip.as_deref()?, port))))
            .collect();
        let results: Vec<(usize, Option<Progress>)> =
            futures::stream::iter(targets.into_iter().map(|(i, url)| async move {
                let progress = self.get(&url).await;
                (i, progress)
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (i, progress) in results {
            pods[i].launcher = progress;
        }
    }

    /// Tells the launcher at `ip` why its pod is about to be deleted; best effort, bounded.
    pub async fn tell_stop(&self, ip: &str, port: i32, request: &StopRequest) {
        let url = endpoint_url(ip, port, stop::PATH);
        let body = serde_json::to_vec(request).expect("stop request serializes");
        let answer = tokio::time::timeout(TIMEOUT, async {
            let req = hyper::Request::post(url.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| format!("{e}"))?;
            let response = self.post.request(req).await.map_err(|e| format!("{e}"))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", response.status()))
            }
        })
        .await;
        match answer {
            Ok(Ok(())) => {
                debug!(url, reason = ?request.reason, "told the launcher why its pod stops")
            }
            Ok(Err(error)) => debug!(url, error, "could not tell the launcher why its pod stops"),
            Err(_) => debug!(
                url,
                "the launcher did not answer in time; its pod stops all the same"
            ),
        }
    }

    async fn get(&self, url: &str) -> Option<Progress> {
        let answer = tokio::time::timeout(TIMEOUT, async {
            let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
            let response = self.http.get(uri).await.map_err(|e| format!("{e}"))?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("{e}"))?
                .to_bytes();
            Ok(String::from_utf8_lossy(&body).into_owned())
        })
        .await;
        match answer {
            Ok(Ok(body)) => {
                let progress = Progress::parse(&body);
                if progress.is_none() {
                    debug!(url, "not a launcher's status");
                }
                progress
            }
            Ok(Err(error)) => {
                debug!(url, error, "launcher status not read");
                None
            }
            Err(_) => {
                debug!(url, "launcher status: no answer in time");
                None
            }
        }
    }
}

fn status_url(ip: &str, port: i32) -> String {
    endpoint_url(ip, port, "/status")
}

fn endpoint_url(ip: &str, port: i32, path: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{port}{path}")
    } else {
        format!("http://{ip}:{port}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::Phase;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(
            status_url("10.1.2.3", 29401),
            "http://10.1.2.3:29401/status"
        );
        assert_eq!(status_url("fd00::5", 1), "http://[fd00::5]:1/status");
    }

    /// A real server on loopback: the running pod that answers gets its progress; a pending
    /// pod is not asked; a pod whose port is closed gets none.
    #[tokio::test]
    async fn polls_running_pods_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port() as i32;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = r#"{"kind":"elastic-launch/v1","state":"Running","round":2,"worldSize":4,"restartCount":1}"#;
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let mut up = crate::fixtures::pod(0, Phase::Running);
        up.ip = Some("127.0.0.1".into());
        let mut pending = crate::fixtures::pod(1, Phase::Pending);
        pending.ip = Some("127.0.0.1".into());
        let mut closed = crate::fixtures::pod(2, Phase::Running);
        closed.ip = Some("127.0.0.2".into());
        let mut pods = [up, pending, closed];
        LauncherClient::default().poll(&mut pods, port).await;
        let got = pods[0].launcher.as_ref().expect("the running pod answered");
        assert_eq!(
            (got.round, got.world_size, got.restart_count),
            (Some(2), Some(4), 1)
        );
        assert_eq!(pods[1].launcher, None);
        assert_eq!(pods[2].launcher, None);
    }
}
