//! Why a worker is being stopped, told to the worker before its SIGTERM so it can checkpoint
//! just in time, and how long it has.
//!
//! The launcher writes one [`StopNotice`] (JSON) to the file named by [`FILE_ENV`] in every
//! worker's environment, then signals the workers. A new round starts with no file. The reason
//! is the launcher's own knowledge (a peer lost, a node joining, a local worker failing) or,
//! when the launcher itself is stopped, what the operator told it beforehand with
//! `POST /stop` ([`StopRequest`]: scale-down, suspend, preemption, the deadline); a SIGTERM
//! nobody explained is [`StopReason::PodStopped`].

use serde::{Deserialize, Serialize};

/// The worker environment variable naming the stop-notice file.
pub const FILE_ENV: &str = "ELASTICJOB_STOP_REASON_FILE";

/// The launcher's status-endpoint path the operator posts a [`StopRequest`] to.
pub const PATH: &str = "/stop";

/// Why the workers are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// A node joins: the job grows (scale-up, a replacement), or a peer re-forms.
    MembershipChanged,
    /// A peer of the round stopped heartbeating (killed, node lost, partitioned).
    PeerLost,
    /// A worker of this node failed; its local peers are stopped with it.
    WorkerFailed,
    /// Ranks that reported progress fell silent for the stall timeout; the group restarts.
    Stalled,
    /// The rendezvous store is unreachable; the round is re-formed.
    StoreLost,
    /// The job is scaled down and this pod goes.
    ScaleDown,
    /// The job is suspended.
    Suspended,
    /// The pod is preempted for higher-priority work.
    Preempted,
    /// The pod is evicted (a drain, node pressure, the eviction API).
    Evicted,
    /// The job ran past its activeDeadlineSeconds.
    DeadlineExceeded,
    /// The job is over (finished or deleted) and its pods are cleaned up.
    JobFinished,
    /// The launcher got a termination signal nobody explained.
    PodStopped,
    /// A reason this version does not know (a newer launcher's or operator's).
    #[serde(other)]
    Unknown,
}

/// What a worker finds in its stop-notice file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopNotice {
    pub reason: StopReason,
    /// For people: what happened.
    pub message: String,
    /// The rendezvous round being stopped.
    #[serde(default)]
    pub round: Option<u64>,
    /// Seconds between the SIGTERM and the SIGKILL: the time left to checkpoint.
    pub grace_seconds: f64,
}

/// The operator's explanation, posted to the launcher before it deletes the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    pub reason: StopReason,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notice_has_a_stable_shape() {
        let n = StopNotice {
            reason: StopReason::ScaleDown,
            message: "scaled from 3 to 2 pods".into(),
            round: Some(4),
            grace_seconds: 28.0,
        };
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"reason": "ScaleDown", "message": "scaled from 3 to 2 pods",
                "round": 4, "graceSeconds": 28.0})
        );
        assert_eq!(serde_json::from_value::<StopNotice>(json).unwrap(), n);
    }

    #[test]
    fn a_newer_reason_parses_as_unknown() {
        let r: StopRequest =
            serde_json::from_str(r#"{"reason": "Hibernated", "message": ""}"#).unwrap();
        assert_eq!(r.reason, StopReason::Unknown);
    }
}
