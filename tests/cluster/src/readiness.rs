//! Readiness probes of the kubelet stand-in: `exec` (run inside the container's namespaces and
//! root), `tcpSocket` and `httpGet` (from the host to the pod's IP), with Kubernetes' timing
//! fields and defaults. A container with a probe is ready only after `successThreshold`
//! successes and unready after `failureThreshold` failures; without one it is ready while it runs.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::rootfs::JoinContainer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<String>),
    Tcp(u16),
    Http { port: u16, path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// A probe's port: a number, or the name of one of the container's `ports`.
fn port(v: &Value, c: &Value) -> Result<u16, String> {
    if let Some(n) = v.as_u64() {
        return u16::try_from(n).map_err(|_| format!("port {n} out of range"));
    }
    let name = v.as_str().unwrap_or("");
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| format!("probe port {v} is neither a number nor a named port"))
}

/// The container's `readinessProbe` (None: it has none).
pub fn parse(c: &Value) -> Result<Option<Probe>, String> {
    let p = &c["readinessProbe"];
    if !p.is_object() {
        return Ok(None);
    }
    let action = if let Some(cmd) = p["exec"]["command"].as_array() {
        Action::Exec(
            cmd.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        )
    } else if p["tcpSocket"].is_object() {
        Action::Tcp(port(&p["tcpSocket"]["port"], c)?)
    } else if p["httpGet"].is_object() {
        Action::Http {
            port: port(&p["httpGet"]["port"], c)?,
            path: p["httpGet"]["path"].as_str().unwrap_or("/").to_string(),
        }
    } else {
        return Err("readinessProbe needs exec, tcpSocket or httpGet".into());
    };
    let secs = |k: &str, default: u64| Duration::from_secs(p[k].as_u64().unwrap_or(default));
    Ok(Some(Probe {
        action,
        initial_delay: secs("initialDelaySeconds", 0),
        period: secs("periodSeconds", 10).max(Duration::from_secs(1)),
        timeout: secs("timeoutSeconds", 1).max(Duration::from_secs(1)),
        success_threshold: p["successThreshold"].as_u64().unwrap_or(1).max(1) as u32,
        failure_threshold: p["failureThreshold"].as_u64().unwrap_or(3).max(1) as u32,
    }))
}

/// The ready state after one more result, Kubernetes' way: `ready` flips only after enough
/// consecutive results the other way. `streak` counts consecutive results equal to the last one.
pub fn next_ready(p: &Probe, ready: bool, ok: bool, streak: &mut (bool, u32)) -> bool {
    if streak.0 == ok {
        streak.1 += 1;
    } else {
        *streak = (ok, 1);
    }
    match (ready, ok) {
        (false, true) if streak.1 >= p.success_threshold => true,
        (true, false) if streak.1 >= p.failure_threshold => false,
        _ => ready,
    }
}

/// Where a probe runs: the pod's IP, and the container's pid and dir (for `exec`).
pub struct Target {
    pub ip: Ipv4Addr,
    pub pid: i32,
    pub container_dir: PathBuf,
}

/// One probe run: true on success.
pub async fn check(p: &Probe, t: &Target) -> bool {
    let run = async {
        match &p.action {
            Action::Tcp(port) => TcpStream::connect((t.ip, *port)).await.is_ok(),
            Action::Http { port, path } => http_ok(t.ip, *port, path).await.unwrap_or(false),
            Action::Exec(argv) => exec_ok(argv, t).await,
        }
    };
    tokio::time::timeout(p.timeout, run).await.unwrap_or(false)
}

async fn http_ok(ip: Ipv4Addr, port: u16, path: &str) -> std::io::Result<bool> {
    let mut s = TcpStream::connect((ip, port)).await?;
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.20\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut head = vec![0u8; 64];
    let n = s.read(&mut head).await?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((200..400).contains(&code))
}

async fn exec_ok(argv: &[String], t: &Target) -> bool {
    let Some(prog) = argv.first() else {
        return false;
    };
    let Ok(join) = JoinContainer::new(t.pid, &t.container_dir) else {
        return false;
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // SAFETY: only setns/chroot/chdir between fork and exec.
    unsafe {
        cmd.pre_exec(move || join.enter());
    }
    match cmd.status().await {
        Ok(s) => s.success(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_actions_named_ports_and_defaults() {
        let c = json!({"ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 2}});
        let p = parse(&c).unwrap().unwrap();
        assert_eq!(
            p.action,
            Action::Http {
                port: 8080,
                path: "/healthz".into()
            }
        );
        assert_eq!(p.period, Duration::from_secs(2));
        assert_eq!((p.success_threshold, p.failure_threshold), (1, 3));
        assert_eq!(p.timeout, Duration::from_secs(1));
        let c = json!({"readinessProbe": {"tcpSocket": {"port": 9}}});
        assert_eq!(parse(&c).unwrap().unwrap().action, Action::Tcp(9));
        let c = json!({"readinessProbe": {"exec": {"command": ["test", "-f", "/ready"]}}});
        assert_eq!(
            parse(&c).unwrap().unwrap().action,
            Action::Exec(vec!["test".into(), "-f".into(), "/ready".into()])
        );
        assert_eq!(parse(&json!({})).unwrap(), None);
        assert!(parse(&json!({"readinessProbe": {"tcpSocket": {"port": "nope"}}})).is_err());
    }

    #[test]
    fn thresholds_decide_flips() {
        let mut p = parse(&json!({"readinessProbe": {"tcpSocket": {"port": 1},
            "successThreshold": 2, "failureThreshold": 2}}))
        .unwrap()
        .unwrap();
        let mut streak = (false, 0);
        let mut ready = false;
        ready = next_ready(&p, ready, true, &mut streak);
        assert!(!ready, "one success of two");
        ready = next_ready(&p, ready, true, &mut streak);
        assert!(ready);
        ready = next_ready(&p, ready, false, &mut streak);
        assert!(ready, "one failure of two");
        ready = next_ready(&p, ready, true, &mut streak);
        ready = next_ready(&p, ready, false, &mut streak);
        assert!(ready, "failures must be consecutive");
        ready = next_ready(&p, ready, false, &mut streak);
        assert!(!ready);
        p.success_threshold = 1;
        assert!(next_ready(&p, false, true, &mut (false, 0)));
    }
}
