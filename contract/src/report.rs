//! The launcher's last word: a small JSON document written to the trainer container's
//! termination message, which Kubernetes keeps in the pod's status (at most
//! [`TERMINATION_MESSAGE_LIMIT`] bytes) and the operator reads to say which rank failed and why.
//! A success writes one too, with the final worker-group restart count, so no restart between
//! two polls of `/status` goes uncounted.

use serde::{Deserialize, Serialize};

use crate::KIND;

/// Kubernetes truncates termination messages beyond this many bytes.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// How the launcher's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    Succeeded,
    /// A worker failed and no restarts were left: `rank`, `exitCode`, `signal` say which.
    WorkerFailed,
    /// The launcher got SIGTERM (or another handled signal): the pod was being stopped.
    Signaled,
    /// No round could be formed or joined. A message starting with
    /// [`message::INVALID_RDZV_CONF`] or [`message::INVALID_ENDPOINT`] means the configuration
    /// is wrong, which no retry fixes.
    RendezvousFailed,
    /// The rendezvous store could not be hosted or reached.
    StoreFailed,
    /// `--nproc-per-node` asked for devices the node does not have.
    DeviceUnavailable,
    /// Anything else the launcher itself failed at; a message starting with
    /// [`message::CANNOT_START_WORKER`] means the training command cannot be started.
    LauncherError,
    /// A reason this version does not know (a newer launcher's).
    #[serde(other)]
    Unknown,
}

impl Reason {
    /// The reason as it appears in the report's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Succeeded => "Succeeded",
            Reason::WorkerFailed => "WorkerFailed",
            Reason::Signaled => "Signaled",
            Reason::RendezvousFailed => "RendezvousFailed",
            Reason::StoreFailed => "StoreFailed",
            Reason::DeviceUnavailable => "DeviceUnavailable",
            Reason::LauncherError => "LauncherError",
            Reason::Unknown => "Unknown",
        }
    }
}

/// Message prefixes that carry meaning beyond the [`Reason`]. The launcher's error messages
/// start with them; the operator recognizes them.
pub mod message {
    pub const INVALID_RDZV_CONF: &str = "invalid --rdzv-conf";
    pub const INVALID_ENDPOINT: &str = "invalid rendezvous endpoint";
    pub const CANNOT_START_WORKER: &str = "cannot start worker";
}

/// The termination-message document. Every field but `kind` and `reason` has a default, so
/// reports from older launchers, which had fewer fields, still parse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// Always [`KIND`].
    pub kind: String,
    pub reason: Reason,
    /// The node (pod) the launcher ran on.
    #[serde(default)]
    pub host: String,
    /// The failed worker's global and local rank.
    #[serde(default)]
    pub rank: Option<u32>,
    #[serde(default)]
    pub local_rank: Option<u32>,
    /// The failed worker's exit code; negative when a signal killed it.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The signal's name (`SIGKILL`) when a signal killed the worker.
    #[serde(default)]
    pub signal: Option<String>,
    /// For people: the worker's error (the end of its traceback) or the launcher's.
    #[serde(default)]
    pub message: String,
    /// Worker-group restarts after this node's workers failed, and the budget.
    #[serde(default)]
    pub restart_count: u32,
    #[serde(default)]
    pub max_restarts: u32,
    /// The rendezvous round of the last worker group.
    #[serde(default)]
    pub round: Option<u64>,
    /// Unix seconds of the failure (or of the end).
    #[serde(default)]
    pub timestamp: i64,
}

impl RunReport {
    /// A report with `reason` and `message` and nothing about a worker.
    pub fn new(reason: Reason, message: String, host: &str, timestamp: i64) -> Self {
        RunReport {
            kind: KIND.into(),
            reason,
            host: host.into(),
            rank: None,
            local_rank: None,
            exit_code: None,
            signal: None,
            message,
            restart_count: 0,
            max_restarts: 0,
            round: None,
            timestamp,
        }
    }

    /// Reads a termination message; None unless it is a launcher's report.
    pub fn parse(message: &str) -> Option<RunReport> {
        serde_json::from_str::<RunReport>(message.trim())
            .ok()
            .filter(|r| r.kind == KIND)
    }

    /// True when the launcher's configuration is wrong (a retry cannot help).
    pub fn is_invalid_config(&self) -> bool {
        self.reason == Reason::RendezvousFailed
            && (self.message.starts_with(message::INVALID_RDZV_CONF)
                || self.message.starts_with(message::INVALID_ENDPOINT))
    }

    /// True when the training command could not be started at all.
    pub fn is_unstartable_command(&self) -> bool {
        self.message.starts_with(message::CANNOT_START_WORKER)
    }

    /// JSON no longer than [`TERMINATION_MESSAGE_LIMIT`]: the message is shortened, keeping its
    /// end (where Python puts the exception), until the whole document fits.
    pub fn to_bounded_json(&self) -> String {
        let mut report = self.clone();
        loop {
            let json = serde_json::to_string(&report).expect("a report serializes");
            if json.len() <= TERMINATION_MESSAGE_LIMIT || report.message.is_empty() {
                return json;
            }
            let excess = json.len() - TERMINATION_MESSAGE_LIMIT + 4;
            let chars: Vec<char> = report.message.chars().collect();
            let keep = chars
                .len()
                .saturating_sub(excess.max(chars.len() / 8).max(1));
            // Nothing kept: no "…" either, or a report too long without its message (a very
            // long host) would loop forever on a message of "…" (found with fuzz/).
            report.message = if keep == 0 {
                String::new()
            } else {
                format!(
                    "…{}",
                    chars[chars.len() - keep..].iter().collect::<String>()
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker_failed() -> RunReport {
        RunReport {
            rank: Some(3),
            local_rank: Some(1),
            exit_code: Some(-9),
            signal: Some("SIGKILL".into()),
            restart_count: 2,
            max_restarts: 3,
            round: Some(5),
            ..RunReport::new(
                Reason::WorkerFailed,
                "killed".into(),
                "job-worker-1",
                1_700_000_000,
            )
        }
    }

    /// Found with fuzz/ (operator_termination): when the rest of the report alone passes the
    /// limit, the message was cut to "…" again and again, forever.
    #[test]
    fn a_report_too_long_without_its_message_ends_with_an_empty_message() {
        let mut r = worker_failed();
        r.host = "h".repeat(TERMINATION_MESSAGE_LIMIT);
        let json = r.to_bounded_json();
        let again = RunReport::parse(&json).unwrap();
        assert_eq!(again.message, "");
        assert_eq!(again.host, r.host);
    }

    #[test]
    fn round_trips() {
        let r = worker_failed();
        assert_eq!(RunReport::parse(&r.to_bounded_json()), Some(r));
    }

    #[test]
    fn the_wire_shape_is_camel_case_with_nulls() {
        let v: serde_json::Value = serde_json::from_str(
            &RunReport::new(Reason::Succeeded, "done".into(), "h", 1).to_bounded_json(),
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "kind": "elastic-launch/v1", "reason": "Succeeded", "host": "h", "rank": null,
                "localRank": null, "exitCode": null, "signal": null, "message": "done",
                "restartCount": 0, "maxRestarts": 0, "round": null, "timestamp": 1
            })
        );
    }

    /// What launchers before `restartCount`, `maxRestarts` and `round` wrote.
    #[test]
    fn an_older_report_still_parses() {
        let old = r#"{"kind":"elastic-launch/v1","reason":"WorkerFailed","host":"p","rank":3,
            "localRank":1,"exitCode":1,"signal":null,"message":"ValueError: x","timestamp":5}"#;
        let r = RunReport::parse(old).unwrap();
        assert_eq!(
            (r.reason, r.rank, r.exit_code),
            (Reason::WorkerFailed, Some(3), Some(1))
        );
        assert_eq!((r.restart_count, r.round), (0, None));
        let minimal =
            RunReport::parse(r#"{"kind":"elastic-launch/v1","reason":"Signaled"}"#).unwrap();
        assert_eq!(minimal.reason, Reason::Signaled);
    }

    #[test]
    fn a_newer_reason_is_unknown_not_an_error() {
        let r = RunReport::parse(r#"{"kind":"elastic-launch/v1","reason":"Quantum"}"#).unwrap();
        assert_eq!(r.reason, Reason::Unknown);
    }

    #[test]
    fn reason_names_are_their_json() {
        use Reason::*;
        for r in [
            Succeeded,
            WorkerFailed,
            Signaled,
            RendezvousFailed,
            StoreFailed,
            DeviceUnavailable,
            LauncherError,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn other_messages_are_not_reports() {
        assert_eq!(
            RunReport::parse("Traceback (most recent call last):\n..."),
            None
        );
        assert_eq!(
            RunReport::parse(r#"{"kind":"other","reason":"WorkerFailed"}"#),
            None
        );
    }

    #[test]
    fn long_messages_are_cut_to_the_limit_keeping_the_end() {
        let mut r = worker_failed();
        r.message = "x".repeat(10_000) + "THE END";
        let json = r.to_bounded_json();
        assert!(json.len() <= TERMINATION_MESSAGE_LIMIT, "{}", json.len());
        assert!(json.contains("THE END\""));
        let multibyte = RunReport {
            message: "é".repeat(5_000),
            ..worker_failed()
        };
        assert!(multibyte.to_bounded_json().len() <= TERMINATION_MESSAGE_LIMIT);
    }

    #[test]
    fn configuration_errors_and_unstartable_commands_are_recognized() {
        let rdzv = |m: &str| RunReport::new(Reason::RendezvousFailed, m.into(), "h", 0);
        assert!(rdzv("invalid --rdzv-conf: join_timeout=x").is_invalid_config());
        assert!(rdzv("invalid rendezvous endpoint: :x").is_invalid_config());
        assert!(!rdzv("rendezvous timed out after 600s").is_invalid_config());
        let err = RunReport::new(
            Reason::LauncherError,
            "cannot start worker 0: No such file".into(),
            "h",
            0,
        );
        assert!(err.is_unstartable_command());
    }
}
