//! What the pod tells Kubernetes: a small JSON summary of the run, written to the container's
//! termination message file (Kubernetes keeps at most 4096 bytes of it). The operator reads it
//! from the pod's status: which rank failed and why, and the final worker-group restart count
//! (a success reports it too, so no restart between two polls of `--status-port` goes
//! uncounted).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::errors::ProcessFailure;

/// Kubernetes truncates termination messages beyond this.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// The default path inside a Kubernetes container.
pub const KUBERNETES_TERMINATION_LOG: &str = "/dev/termination-log";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Always `elastic-launch/v1`, so the operator knows the shape.
    pub kind: &'static str,
    /// `Succeeded`, or why it failed: `WorkerFailed`, `Signaled`, `RendezvousFailed`,
    /// `StoreFailed`, `DeviceUnavailable` or `LauncherError`.
    pub reason: String,
    pub host: String,
    pub rank: Option<u32>,
    pub local_rank: Option<u32>,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub message: String,
    pub restart_count: u32,
    pub max_restarts: u32,
    pub round: Option<u64>,
    pub timestamp: i64,
}

impl RunSummary {
    pub fn succeeded(
        host: &str,
        restart_count: u32,
        max_restarts: u32,
        round: Option<u64>,
    ) -> Self {
        RunSummary {
            round,
            ..Self::launcher(
                "Succeeded",
                "the workers succeeded".into(),
                host,
                restart_count,
                max_restarts,
            )
        }
    }

    pub fn from_worker(
        root: &ProcessFailure,
        host: &str,
        restart_count: u32,
        max_restarts: u32,
        round: Option<u64>,
    ) -> Self {
        RunSummary {
            kind: crate::progress::KIND,
            reason: "WorkerFailed".into(),
            host: host.into(),
            rank: Some(root.global_rank),
            local_rank: Some(root.local_rank),
            exit_code: Some(root.exitcode),
            signal: root.signal_name().map(str::to_string),
            message: root.message.clone(),
            restart_count,
            max_restarts,
            round,
            timestamp: root.timestamp,
        }
    }

    pub fn launcher(
        reason: &str,
        message: String,
        host: &str,
        restart_count: u32,
        max_restarts: u32,
    ) -> Self {
        RunSummary {
            kind: crate::progress::KIND,
            reason: reason.into(),
            host: host.into(),
            rank: None,
            local_rank: None,
            exit_code: None,
            signal: None,
            message,
            restart_count,
            max_restarts,
            round: None,
            timestamp: chrono::Utc::now().timestamp(),
        }
    }

    /// JSON no longer than the limit: the message is shortened (keeping its end, where Python
    /// puts the exception) until the whole document fits.
    pub fn to_bounded_json(&self) -> String {
        let mut summary = self.clone();
        loop {
            let json = serde_json::to_string(&summary).expect("summary serializes");
            if json.len() <= TERMINATION_MESSAGE_LIMIT || summary.message.is_empty() {
                return json;
            }
            let excess = json.len() - TERMINATION_MESSAGE_LIMIT + 4;
            let chars: Vec<char> = summary.message.chars().collect();
            let keep = chars
                .len()
                .saturating_sub(excess.max(chars.len() / 8).max(1));
            summary.message = format!(
                "…{}",
                chars[chars.len() - keep..].iter().collect::<String>()
            );
        }
    }
}

/// Where to write the summary: the explicit setting, else the Kubernetes default when it
/// exists and is writable (so running outside a pod writes nothing).
pub fn termination_message_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.into());
    }
    let default = Path::new(KUBERNETES_TERMINATION_LOG);
    let writable = std::fs::OpenOptions::new()
        .append(true)
        .open(default)
        .is_ok();
    writable.then(|| default.into())
}

/// Writes `summary` to `path`.
pub fn write_summary(path: &Path, summary: &RunSummary) -> std::io::Result<()> {
    std::fs::write(path, summary.to_bounded_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_to_the_limit_keeping_the_end() {
        let mut s = RunSummary::launcher("WorkerFailed", "x".repeat(10_000) + "THE END", "h", 1, 3);
        let json = s.to_bounded_json();
        assert!(json.len() <= TERMINATION_MESSAGE_LIMIT, "{}", json.len());
        assert!(json.contains("THE END\""));
        s.message = "short".into();
        let v: serde_json::Value = serde_json::from_str(&s.to_bounded_json()).unwrap();
        assert_eq!(v["message"], "short");
        assert_eq!(v["restartCount"], 1);
        assert_eq!(v["kind"], "elastic-launch/v1");
    }
}
