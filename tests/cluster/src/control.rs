//! The fault-injection channel of a running `cluster up`: a Unix socket in the state dir
//! (`<dir>/control.sock`) that takes one JSON [`Fault`] per connection and answers one JSON
//! line. `cluster fault --dir DIR ...` is its client; tests that start the cluster in-process
//! call [`apply`] (or [`crate::nodes::RealNodes`]) directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::nodes::RealNodes;

/// What can be done to a running cluster behind Kubernetes' back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Fault {
    /// Signal every process of a pod's running containers (default SIGKILL).
    KillPod {
        namespace: String,
        name: String,
        signal: String,
    },
    /// Take the pod's network link down (nothing reaches it, it reaches nothing).
    CutNetwork { namespace: String, name: String },
    /// Bring it back up.
    RestoreNetwork { namespace: String, name: String },
    /// The node's machine is gone: its kubelet, containerd and containers die at once.
    LoseNode { node: String },
    /// Cut the node's network; everything of it keeps running.
    PartitionNode { node: String },
    /// Bring a lost or partitioned node back.
    RestoreNode { node: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    message: String,
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// Applies one fault to the nodes; Ok: what was done.
pub fn apply(nodes: &RealNodes, f: &Fault) -> Result<String, String> {
    match f {
        Fault::KillPod {
            namespace,
            name,
            signal,
        } => {
            let sig = parse_signal(signal)?;
            let n = nodes.kill_pod(namespace, name, sig)?;
            Ok(format!(
                "sent {sig} to {n} process(es) of {namespace}/{name}"
            ))
        }
        Fault::CutNetwork { namespace, name } => nodes
            .set_pod_network(namespace, name, false)
            .map(|_| format!("network of {namespace}/{name} cut")),
        Fault::RestoreNetwork { namespace, name } => nodes
            .set_pod_network(namespace, name, true)
            .map(|_| format!("network of {namespace}/{name} restored")),
        Fault::LoseNode { node } => nodes
            .lose_node(node)
            .map(|n| format!("node {node} lost ({n} processes killed)")),
        Fault::PartitionNode { node } => nodes
            .partition_node(node, true)
            .map(|_| format!("node {node} partitioned")),
        Fault::RestoreNode { node } => nodes
            .restore_node(node)
            .map(|_| format!("node {node} restored")),
    }
}

/// `KILL`, `SIGKILL`, `9`, ...
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("no signal number {n}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse()
        .map_err(|_| format!("unknown signal {s:?} (e.g. KILL, TERM, 9)"))
}

/// Serves the socket until the handle is aborted (removes a stale socket file first).
pub fn serve(state_dir: &Path, nodes: Arc<RealNodes>) -> std::io::Result<JoinHandle<()>> {
    let path = socket_path(state_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let nodes = nodes.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(conn, nodes).await {
                    warn!("control socket: {e}");
                }
            });
        }
    }))
}

async fn handle(conn: UnixStream, nodes: Arc<RealNodes>) -> std::io::Result<()> {
    let (r, mut w) = conn.into_split();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Fault>(&line) {
        Ok(f) => match tokio::task::spawn_blocking(move || apply(&nodes, &f)).await {
            Ok(Ok(message)) => Reply { ok: true, message },
            Ok(Err(message)) => Reply { ok: false, message },
            Err(e) => Reply {
                ok: false,
                message: e.to_string(),
            },
        },
        Err(e) => Reply {
            ok: false,
            message: format!("bad request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&reply).expect("json");
    out.push(b'\n');
    w.write_all(&out).await
}

/// Sends one fault to the cluster running from `state_dir`; Ok: what it did.
pub async fn send(state_dir: &Path, f: &Fault) -> Result<String, String> {
    let path = socket_path(state_dir);
    let conn = UnixStream::connect(&path).await.map_err(|e| {
        format!(
            "{}: {e} (is `cluster up --dir {}` running?)",
            path.display(),
            state_dir.display()
        )
    })?;
    let (r, mut w) = conn.into_split();
    let mut req = serde_json::to_vec(f).expect("json");
    req.push(b'\n');
    w.write_all(&req).await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(r)
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    let reply: Reply =
        serde_json::from_str(&line).map_err(|e| format!("bad reply {line:?}: {e}"))?;
    if reply.ok {
        Ok(reply.message)
    } else {
        Err(reply.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_wire_format() {
        assert_eq!(parse_signal("KILL"), Ok(Signal::SIGKILL));
        assert_eq!(parse_signal("sigterm"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
        assert!(parse_signal("NOPE").is_err());
        let f = Fault::LoseNode {
            node: "node-1".into(),
        };
        let j = serde_json::to_string(&f).unwrap();
        assert_eq!(j, r#"{"op":"lose-node","node":"node-1"}"#);
        assert_eq!(serde_json::from_str::<Fault>(&j).unwrap(), f);
    }
}
