//! A stand-in for every launcher's status endpoint at once (run by `bench/operator_scale.sh`).
//!
//! kwok gives the fake pods IPs in 127.0.0.0/8, and one socket bound to `0.0.0.0:<port>`
//! accepts connections to every one of them, so this one process answers the operator's
//! `GET /status` (a steady `Running` [`Progress`] of round 1, the same body every time, so that
//! nothing changes) and `POST /stop` for all pods.
//!
//! `--silent F`: the fraction of pod IPs that never answer (chosen by a hash of the local
//! address, so the same pods stay silent): the connection is accepted and held open without a
//! byte until the operator gives up and closes it.
//!
//! `GET /sim-stats` on 127.0.0.1 answers the counts so far as one JSON object:
//! `{"connections":..,"status":..,"stop":..,"silent":..,"other":..}`.
//!
//! Usage: `launcher-sim --port 29401 [--silent 0.1]`.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use elasticjob_contract::KIND;
use elasticjob_contract::progress::{Progress, State};

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    status: AtomicU64,
    stop: AtomicU64,
    silent: AtomicU64,
    other: AtomicU64,
}

/// Whether the launcher at `ip` is one of the silent fraction.
fn is_silent(ip: IpAddr, fraction: f64) -> bool {
    if fraction <= 0.0 || ip == IpAddr::V4(Ipv4Addr::LOCALHOST) {
        return false;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ip.hash(&mut h);
    (h.finish() % 10_000) < (fraction * 10_000.0) as u64
}

fn body() -> String {
    serde_json::to_string(&Progress {
        kind: KIND.into(),
        state: State::Running,
        round: Some(1),
        group_rank: Some(0),
        nnodes: Some(1),
        world_size: Some(1),
        local_world_size: 1,
        restart_count: 0,
        max_restarts: 0,
        re_forms: 0,
        training: None,
        stalls: 0,
        last_stall: None,
    })
    .expect("progress serializes")
}

async fn serve(
    mut s: TcpStream,
    local: SocketAddr,
    counts: Arc<Counts>,
    silent: f64,
    body: Arc<String>,
) {
    counts.connections.fetch_add(1, Ordering::Relaxed);
    if is_silent(local.ip(), silent) {
        counts.silent.fetch_add(1, Ordering::Relaxed);
        // Hold the connection open, answering nothing, until the client gives up.
        let mut sink = [0u8; 4096];
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        return;
    }
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // Drain a request body (POST /stop) so the client sees a clean answer.
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < length {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => have += n,
        }
    }
    let (code, answer) = match (method, path) {
        ("GET", "/status") => {
            counts.status.fetch_add(1, Ordering::Relaxed);
            ("200 OK", body.as_str().to_string())
        }
        ("POST", "/stop") => {
            counts.stop.fetch_add(1, Ordering::Relaxed);
            ("200 OK", "{}".to_string())
        }
        ("GET", "/sim-stats") => (
            "200 OK",
            format!(
                r#"{{"connections":{},"status":{},"stop":{},"silent":{},"other":{}}}"#,
                counts.connections.load(Ordering::Relaxed),
                counts.status.load(Ordering::Relaxed),
                counts.stop.load(Ordering::Relaxed),
                counts.silent.load(Ordering::Relaxed),
                counts.other.load(Ordering::Relaxed),
            ),
        ),
        _ => {
            counts.other.fetch_add(1, Ordering::Relaxed);
            ("404 Not Found", String::new())
        }
    };
    let response = format!(
        "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = s.write_all(response.as_bytes()).await;
    let _ = s.shutdown().await;
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| bench::flag(&args, k);
    let port: u16 = arg("--port").unwrap_or_else(|| "29401".into()).parse()?;
    let silent: f64 = arg("--silent").unwrap_or_else(|| "0".into()).parse()?;
    let listener = TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("binding 0.0.0.0:{port}"))?;
    let counts = Arc::new(Counts::default());
    let body = Arc::new(body());
    eprintln!("launcher-sim: answering on 0.0.0.0:{port}, silent fraction {silent}");
    loop {
        let (s, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors under a burst: wait a moment and go on.
                eprintln!("launcher-sim: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(local) = s.local_addr() else { continue };
        tokio::spawn(serve(s, local, counts.clone(), silent, body.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_silent_fraction_is_about_right_and_stable() {
        let ips: Vec<IpAddr> = (0..10_000u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x7f40_0000 + i)))
            .collect();
        let n = ips.iter().filter(|ip| is_silent(**ip, 0.1)).count();
        assert!((800..1200).contains(&n), "{n}");
        assert_eq!(ips.iter().filter(|ip| is_silent(**ip, 0.0)).count(), 0);
        assert!(!is_silent(IpAddr::V4(Ipv4Addr::LOCALHOST), 1.0));
        assert_eq!(is_silent(ips[7], 0.1), is_silent(ips[7], 0.1));
    }

    #[test]
    fn the_body_is_a_launcher_status() {
        let p = Progress::parse(&body()).expect("parses as a launcher status");
        assert_eq!(p.state, State::Running);
    }
}
