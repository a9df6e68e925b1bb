//! Reads the launchers' status endpoints (`GET http://<pod IP>:<statusPort>/status`): the IO
//! behind [`crate::progress`], scheduled by [`crate::poller`]; and tells a launcher why its pod is about to be deleted
//! (`POST /stop`). No credentials either way; a launcher that does not answer in time is
//! skipped (its last report in the status stays; its pod is deleted all the same).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::debug;

use elasticjob_contract::progress::Progress;
use elasticjob_contract::stop::{self, StopRequest};

/// How long one launcher gets to answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// A status is a few hundred bytes; anything much larger is not a launcher.
const MAX_BODY: usize = 64 * 1024;

/// What one read of a launcher's `/status` got.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok(Box<Progress>),
    /// No answer within the timeout (often: a network policy drops the packets).
    Timeout,
    /// No connection, or it broke: refused, unreachable, reset.
    Refused,
    /// An answer, but not a launcher's status: an HTTP error, too large, or unparsable.
    BadBody,
}

impl Outcome {
    /// The metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
            Outcome::BadBody => "bad_body",
        }
    }

    pub fn into_progress(self) -> Option<Progress> {
        match self {
            Outcome::Ok(p) => Some(*p),
            _ => None,
        }
    }
}

/// An HTTP/1 client for the launchers, shared by all reconciles and the poller.
#[derive(Clone)]
pub struct LauncherClient {
    http: Client<HttpConnector, Empty<Bytes>>,
    post: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for LauncherClient {
    fn default() -> Self {
        LauncherClient::new(TIMEOUT, Duration::from_secs(30))
    }
}

impl LauncherClient {
    /// A client whose requests get `timeout`, and whose `/status` connections stay open while
    /// idle for `keep_idle`: a launcher is read every poll interval, and a new connection each
    /// time would cost the operator a handshake and a TIME_WAIT socket per read.
    pub fn new(timeout: Duration, keep_idle: Duration) -> Self {
        // No connect timeout of its own: `timeout` bounds the whole read, and a connection that
        // never forms (a network policy dropping the packets) then counts as a timeout.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        LauncherClient {
            // One connection per launcher is enough: it is read one request at a time. The
            // timer reaps idle connections, so those of pods no longer polled do not linger.
            http: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .pool_idle_timeout(keep_idle)
                .pool_timer(TokioTimer::new())
                .build(connector.clone()),
            // A stop is told once per pod, just before it goes: nothing to keep.
            post: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
            timeout,
        }
    }

    /// Tells the launcher at `ip` why its pod is about to be deleted; best effort, bounded.
    pub async fn tell_stop(&self, ip: &str, port: i32, request: &StopRequest) {
        let url = endpoint_url(ip, port, stop::PATH);
        let body = serde_json::to_vec(request).expect("stop request serializes");
        let answer = tokio::time::timeout(self.timeout, async {
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

    /// Reads the status of the launcher at `ip`:`port`.
    pub async fn status(&self, ip: &str, port: i32) -> Outcome {
        let url = status_url(ip, port);
        let answer = tokio::time::timeout(self.timeout, async {
            let uri: hyper::Uri = url.parse().map_err(|_| Outcome::BadBody)?;
            let response = self.http.get(uri).await.map_err(|e| {
                debug!(url, error = %e, "launcher status not read");
                Outcome::Refused
            })?;
            if !response.status().is_success() {
                debug!(url, status = %response.status(), "launcher status: HTTP error");
                return Err(Outcome::BadBody);
            }
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| {
                    debug!(url, error = %e, "launcher status body not read");
                    Outcome::BadBody
                })?
                .to_bytes();
            Progress::parse(&String::from_utf8_lossy(&body)).ok_or_else(|| {
                debug!(url, "not a launcher's status");
                Outcome::BadBody
            })
        })
        .await;
        match answer {
            Ok(Ok(progress)) => Outcome::Ok(Box::new(progress)),
            Ok(Err(outcome)) => outcome,
            Err(_) => {
                debug!(url, "launcher status: no answer in time");
                Outcome::Timeout
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(
            status_url("10.1.2.3", 29401),
            "http://10.1.2.3:29401/status"
        );
        assert_eq!(status_url("fd00::5", 1), "http://[fd00::5]:1/status");
    }

    /// A server on loopback that answers every request with `body`, then closes.
    async fn answering(body: &'static str) -> i32 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port() as i32;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
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
        port
    }

    /// Real servers on loopback: a launcher's body is read; anything else is a bad body; a
    /// closed port is refused.
    #[tokio::test]
    async fn outcomes_of_a_status_read() {
        let client = LauncherClient::default();
        let launcher = answering(
            r#"{"kind":"elastic-launch/v1","state":"Running","round":2,"worldSize":4,"restartCount":1}"#,
        )
        .await;
        let Outcome::Ok(got) = client.status("127.0.0.1", launcher).await else {
            panic!("the launcher answered");
        };
        assert_eq!(
            (got.round, got.world_size, got.restart_count),
            (Some(2), Some(4), 1)
        );
        let other = answering("hello").await;
        assert_eq!(client.status("127.0.0.1", other).await, Outcome::BadBody);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port() as i32
        };
        assert_eq!(client.status("127.0.0.1", closed).await, Outcome::Refused);
    }
}
