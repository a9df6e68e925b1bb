//! Why a pod failed: the launcher's report (its termination message), the container's exit code
//! or signal and the pod's own reason are folded into one [`Classification`]: application or
//! infrastructure, retryable or permanent, with a stable reason for events and conditions.
//!
//! The rules, first match wins:
//! 1. the pod's reason: Evicted, Preempting, NodeLost, Shutdown/Terminated (node shutdown),
//!    NodeAffinity, `OutOf<resource>` and UnexpectedAdmissionError (node refused the pod) are
//!    infrastructure, retryable; DeadlineExceeded (the template's own activeDeadlineSeconds) is
//!    application, permanent;
//! 2. a `DisruptionTarget` condition (preemption, eviction, taint, pod GC): infrastructure;
//! 3. a failed init container: the launcher install failing to start is permanent, any other
//!    init failure is retried (launcher install: infrastructure; the user's: application);
//! 4. the trainer container OOMKilled: application, retryable;
//! 5. the container could not start (ContainerCannotRun, StartError): application, permanent;
//! 6. the launcher's report: WorkerFailed → the worker's exit code or signal (below);
//!    Signaled (the launcher got SIGTERM: the pod was stopped) → infrastructure;
//!    RendezvousFailed → infrastructure, except a bad rendezvous configuration (permanent);
//!    StoreFailed, DeviceUnavailable → infrastructure; LauncherError → application, except a
//!    training command that cannot be started (permanent);
//! 7. no report: the container's exit code; 137/143 (SIGKILL/SIGTERM from outside) are
//!    infrastructure, 2 is the launcher's usage error (permanent).
//!
//! Exit codes: those in `failurePolicy.permanentExitCodes` (default 2, 126, 127) are permanent;
//! when `retryableExitCodes` is set, every code not in it is permanent; the rest are retried
//! against the application budget. A worker killed by a signal is retried.

use elasticjob_contract::report::{Reason, RunReport};
use elasticjob_crds::spec::FailurePolicy;
use elasticjob_crds::status::FailureCategory;

use crate::observed::{ContainerEnd, ObservedPod, Termination};

/// Stable failure reasons (status.recentFailures[].reason, event reasons).
pub mod reason {
    pub const WORKER_FAILED: &str = "WorkerFailed";
    pub const WORKER_SIGNALED: &str = "WorkerSignaled";
    pub const WORKER_KILLED: &str = "WorkerKilled";
    pub const USAGE_ERROR: &str = "UsageError";
    pub const COMMAND_NOT_EXECUTABLE: &str = "CommandNotExecutable";
    pub const COMMAND_NOT_FOUND: &str = "CommandNotFound";
    pub const PERMANENT_EXIT_CODE: &str = "PermanentExitCode";
    pub const NON_RETRYABLE_EXIT_CODE: &str = "NonRetryableExitCode";
    pub const OOM_KILLED: &str = "OOMKilled";
    pub const CONTAINER_CANNOT_RUN: &str = "ContainerCannotRun";
    pub const LAUNCHER_ERROR: &str = "LauncherError";
    pub const LAUNCHER_EXITED: &str = "LauncherExited";
    pub const LAUNCHER_CRASHED: &str = "LauncherCrashed";
    pub const LAUNCHER_INSTALL_FAILED: &str = "LauncherInstallFailed";
    pub const INIT_CONTAINER_FAILED: &str = "InitContainerFailed";
    pub const INVALID_LAUNCHER_CONFIG: &str = "InvalidLauncherConfig";
    pub const RENDEZVOUS_FAILED: &str = "RendezvousFailed";
    pub const STORE_FAILED: &str = "StoreFailed";
    pub const DEVICE_UNAVAILABLE: &str = "DeviceUnavailable";
    pub const POD_STOPPED: &str = "PodStopped";
    pub const EVICTED: &str = "Evicted";
    pub const PREEMPTED: &str = "Preempted";
    pub const NODE_LOST: &str = "NodeLost";
    pub const NODE_SHUTDOWN: &str = "NodeShutdown";
    pub const NODE_REJECTED: &str = "NodeRejected";
    pub const POD_DELETED: &str = "PodDeleted";
    pub const POD_DEADLINE_EXCEEDED: &str = "PodDeadlineExceeded";
}

/// The verdict on one failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub category: FailureCategory,
    pub permanent: bool,
    /// Stable, machine-readable: one of [`reason`].
    pub reason: &'static str,
    /// For people: what happened, with the worker's or the pod's message.
    pub message: String,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub rank: Option<u32>,
    pub local_rank: Option<u32>,
}

impl Classification {
    fn new(
        category: FailureCategory,
        permanent: bool,
        reason: &'static str,
        message: String,
    ) -> Self {
        Classification {
            category,
            permanent,
            reason,
            message,
            exit_code: None,
            signal: None,
            rank: None,
            local_rank: None,
        }
    }

    fn app(permanent: bool, reason: &'static str, message: String) -> Self {
        Self::new(FailureCategory::Application, permanent, reason, message)
    }

    fn infra(reason: &'static str, message: String) -> Self {
        Self::new(FailureCategory::Infrastructure, false, reason, message)
    }

    /// The pod was taken away for capacity (preempted, evicted), not broken: a job that keeps
    /// at least minReplicas pods shrinks instead of spending its budget.
    pub fn is_disruption(&self) -> bool {
        matches!(self.reason, reason::PREEMPTED | reason::EVICTED)
    }

    fn with_exit(mut self, exit_code: Option<i32>, signal: Option<String>) -> Self {
        self.exit_code = exit_code;
        self.signal = signal;
        self
    }
}

/// Classifies a failed pod.
pub fn classify(t: &Termination, policy: &FailurePolicy) -> Classification {
    classify_with_disruption(t, None, None, policy)
}

/// Classifies a failed pod, given its `DisruptionTarget` reason and its node's readiness.
pub fn classify_pod(pod: &ObservedPod, policy: &FailurePolicy) -> Classification {
    classify_with_disruption(
        &pod.termination,
        pod.disruption.as_deref(),
        pod.node_ready,
        policy,
    )
}

fn classify_with_disruption(
    t: &Termination,
    disruption: Option<&str>,
    node_ready: Option<bool>,
    policy: &FailurePolicy,
) -> Classification {
    let pod_message = t.pod_message.clone().unwrap_or_default();
    if let Some(c) = t
        .pod_reason
        .as_deref()
        .and_then(|r| by_pod_reason(r, &pod_message))
    {
        return c;
    }
    if let Some(d) = disruption {
        return by_disruption(d, node_ready);
    }
    if let Some(init) = &t.init {
        return by_init(init);
    }
    let Some(c) = &t.trainer else {
        return Classification::infra(
            reason::POD_STOPPED,
            non_empty(pod_message, "the pod failed before its containers ran"),
        );
    };
    let report = c.message.as_deref().and_then(RunReport::parse);
    if c.reason.as_deref() == Some("OOMKilled") {
        let mut out = Classification::app(
            false,
            reason::OOM_KILLED,
            "the container ran out of memory (OOMKilled): raise its memory limit or lower the batch size".into(),
        )
        .with_exit(Some(c.exit_code), Some("SIGKILL".into()));
        if let Some(r) = &report {
            out.rank = r.rank;
            out.local_rank = r.local_rank;
        }
        return out;
    }
    if matches!(
        c.reason.as_deref(),
        Some("ContainerCannotRun" | "StartError")
    ) {
        return Classification::app(
            true,
            reason::CONTAINER_CANNOT_RUN,
            non_empty(
                c.message.clone().unwrap_or_default(),
                "the container could not be started",
            ),
        )
        .with_exit(Some(c.exit_code), None);
    }
    match report {
        Some(r) => by_report(r, policy),
        None => by_container_exit(c, policy),
    }
}

fn by_pod_reason(pod_reason: &str, message: &str) -> Option<Classification> {
    let said = |what: &str| non_empty(message.to_string(), what);
    let c = match pod_reason {
        "Evicted" => Classification::infra(reason::EVICTED, said("the kubelet evicted the pod")),
        "Preempting" => Classification::infra(reason::PREEMPTED, said("the pod was preempted")),
        "NodeLost" => Classification::infra(reason::NODE_LOST, said("the pod's node was lost")),
        "Shutdown" | "Terminated" => {
            Classification::infra(reason::NODE_SHUTDOWN, said("the pod's node shut down"))
        }
        "NodeAffinity" | "UnexpectedAdmissionError" => {
            Classification::infra(reason::NODE_REJECTED, said("the node refused the pod"))
        }
        r if r.starts_with("OutOf") => Classification::infra(
            reason::NODE_REJECTED,
            said(&format!("the node refused the pod: {r}")),
        ),
        "DeadlineExceeded" => Classification::app(
            true,
            reason::POD_DEADLINE_EXCEEDED,
            said("the pod ran past the activeDeadlineSeconds of the pod template"),
        ),
        _ => return None,
    };
    Some(c)
}

fn by_disruption(disruption: &str, node_ready: Option<bool>) -> Classification {
    match disruption {
        "PreemptionByScheduler" | "PreemptionByKubeScheduler" => Classification::infra(
            reason::PREEMPTED,
            "the scheduler preempted the pod for a higher-priority pod".into(),
        ),
        "EvictionByEvictionAPI" => Classification::infra(
            reason::EVICTED,
            "the pod was evicted (a node drain or the eviction API)".into(),
        ),
        "TerminationByKubelet" => Classification::infra(
            reason::EVICTED,
            "the kubelet stopped the pod (node pressure or shutdown)".into(),
        ),
        "DeletionByPodGC" => Classification::infra(
            reason::NODE_LOST,
            "the pod's node is gone; the pod garbage collector deleted it".into(),
        ),
        "DeletionByTaintManager" if node_ready != Some(true) => Classification::infra(
            reason::NODE_LOST,
            "the pod's node is not ready; the pod was evicted from it".into(),
        ),
        other => Classification::infra(
            reason::EVICTED,
            format!("the pod was taken off its node ({other})"),
        ),
    }
}

/// A pod that was running and is gone, without the operator having seen it end or go: deleted
/// with no grace period, or while the operator was not running.
pub fn classify_vanished() -> Classification {
    Classification::infra(
        reason::POD_DELETED,
        "the pod is gone without the operator seeing it end: deleted with no grace period (kubectl delete --force) or while the operator was down".into(),
    )
}

/// A pod going away before its containers ended: deleted by someone other than the operator
/// (eviction, preemption, taint, a person), or stuck on a lost node.
pub fn classify_disruption(pod: &ObservedPod) -> Classification {
    match pod.disruption.as_deref() {
        Some(d) => by_disruption(d, pod.node_ready),
        None if pod.node_ready == Some(false) => Classification::infra(
            reason::NODE_LOST,
            format!(
                "the pod's node {} is not ready; the pod is being deleted",
                pod.node.as_deref().unwrap_or("?")
            ),
        ),
        None => Classification::infra(
            reason::POD_DELETED,
            "the pod was deleted by someone other than the operator".into(),
        ),
    }
}

fn by_init(init: &ContainerEnd) -> Classification {
    let ours = init.name == elasticjob_crds::names::INSTALL_CONTAINER;
    let cannot_start = matches!(
        init.reason.as_deref(),
        Some("ContainerCannotRun" | "StartError")
    );
    let text = non_empty(init.message.clone().unwrap_or_default(), "no message");
    match (ours, cannot_start) {
        (true, true) => Classification::app(
            true,
            reason::LAUNCHER_INSTALL_FAILED,
            format!("the launcher image cannot run its install step (is it an elastic-launch image for this architecture?): {text}"),
        ),
        (true, false) => Classification::infra(
            reason::LAUNCHER_INSTALL_FAILED,
            format!("copying the launcher into the pod failed (exit {}): {text}", init.exit_code),
        ),
        (false, _) => Classification::app(
            cannot_start,
            reason::INIT_CONTAINER_FAILED,
            format!("init container {} failed (exit {}): {text}", init.name, init.exit_code),
        ),
    }
    .with_exit(Some(init.exit_code), None)
}

fn by_report(r: RunReport, policy: &FailurePolicy) -> Classification {
    let mut c = match r.reason {
        Reason::WorkerFailed => by_worker_exit(&r, policy),
        Reason::Signaled => Classification::infra(
            reason::POD_STOPPED,
            format!("the pod was stopped: {}", r.message),
        ),
        _ if r.is_invalid_config() => {
            Classification::app(true, reason::INVALID_LAUNCHER_CONFIG, r.message.clone())
        }
        Reason::RendezvousFailed => {
            Classification::infra(reason::RENDEZVOUS_FAILED, r.message.clone())
        }
        Reason::StoreFailed => Classification::infra(reason::STORE_FAILED, r.message.clone()),
        Reason::DeviceUnavailable => {
            Classification::infra(reason::DEVICE_UNAVAILABLE, r.message.clone())
        }
        _ if r.is_unstartable_command() => {
            let not_found = r.message.contains("No such file") || r.message.contains("not found");
            Classification::app(
                true,
                if not_found {
                    reason::COMMAND_NOT_FOUND
                } else {
                    reason::COMMAND_NOT_EXECUTABLE
                },
                r.message.clone(),
            )
        }
        _ => Classification::app(false, reason::LAUNCHER_ERROR, r.message.clone()),
    };
    c.rank = r.rank;
    c.local_rank = r.local_rank;
    c
}

fn by_worker_exit(r: &RunReport, policy: &FailurePolicy) -> Classification {
    let code = r.exit_code.unwrap_or(1);
    let where_ = match (r.rank, r.local_rank) {
        (Some(rank), Some(local)) => format!("rank {rank} (local rank {local})"),
        _ => "a worker".into(),
    };
    if code < 0 || r.signal.is_some() {
        let signal = r
            .signal
            .clone()
            .unwrap_or_else(|| format!("signal {}", code.unsigned_abs()));
        let killed = signal == "SIGKILL";
        let message = format!(
            "{where_} was killed by {signal}{}: {}",
            if killed {
                " (often the kernel's out-of-memory killer)"
            } else {
                ""
            },
            r.message
        );
        return Classification::app(
            false,
            if killed {
                reason::WORKER_KILLED
            } else {
                reason::WORKER_SIGNALED
            },
            message,
        )
        .with_exit(None, Some(signal));
    }
    let (permanent, why) = exit_code_rule(code, policy);
    Classification::app(
        permanent,
        why.unwrap_or(reason::WORKER_FAILED),
        format!("{where_} exited with code {code}: {}", r.message),
    )
    .with_exit(Some(code), None)
}

/// Whether an exit code is permanent under the policy, and the reason when it is.
pub fn exit_code_rule(code: i32, policy: &FailurePolicy) -> (bool, Option<&'static str>) {
    if policy.permanent_exit_codes.contains(&code) {
        let why = match code {
            2 => reason::USAGE_ERROR,
            126 => reason::COMMAND_NOT_EXECUTABLE,
            127 => reason::COMMAND_NOT_FOUND,
            _ => reason::PERMANENT_EXIT_CODE,
        };
        return (true, Some(why));
    }
    if !policy.retryable_exit_codes.is_empty() && !policy.retryable_exit_codes.contains(&code) {
        return (true, Some(reason::NON_RETRYABLE_EXIT_CODE));
    }
    (false, None)
}

fn by_container_exit(c: &ContainerEnd, policy: &FailurePolicy) -> Classification {
    let log = c.message.clone().unwrap_or_default();
    let code = c.exit_code;
    let tail = if log.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", log.trim())
    };
    match code {
        137 | 143 => {
            let signal = if code == 137 { "SIGKILL" } else { "SIGTERM" };
            Classification::infra(
                reason::POD_STOPPED,
                format!("the container was stopped with {signal} (exit {code}){tail}"),
            )
            .with_exit(Some(code), Some(signal.into()))
        }
        c if c > 128 => Classification::app(
            false,
            reason::LAUNCHER_CRASHED,
            format!(
                "the launcher died of signal {} (exit {c}) without a report{tail}",
                c - 128
            ),
        )
        .with_exit(Some(c), None),
        2 if policy.permanent_exit_codes.contains(&2) => Classification::app(
            true,
            reason::USAGE_ERROR,
            format!("the launcher refused its command line (exit 2){tail}"),
        )
        .with_exit(Some(2), None),
        c => {
            let (permanent, why) = exit_code_rule(c, policy);
            Classification::app(
                permanent,
                why.unwrap_or(reason::LAUNCHER_EXITED),
                format!("the container exited with code {c} without a launcher report{tail}"),
            )
            .with_exit(Some(c), None)
        }
    }
}

fn non_empty(text: String, otherwise: &str) -> String {
    if text.trim().is_empty() {
        otherwise.to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elasticjob_crds::status::FailureCategory::{Application, Infrastructure};

    fn report(reason: &str, exit: Option<i32>, signal: Option<&str>, message: &str) -> String {
        serde_json::json!({
            "kind": "elastic-launch/v1", "reason": reason, "host": "train-worker-1",
            "rank": exit.map(|_| 5), "localRank": exit.map(|_| 1), "exitCode": exit, "signal": signal,
            "message": message, "restartCount": 3, "maxRestarts": 3, "round": 4, "timestamp": 1700000000,
        })
        .to_string()
    }

    fn trainer(exit: i32, reason: Option<&str>, message: Option<String>) -> Termination {
        Termination {
            trainer: Some(ContainerEnd {
                name: "trainer".into(),
                exit_code: exit,
                signal: None,
                reason: reason.map(String::from),
                message,
                finished_at: None,
            }),
            ..Default::default()
        }
    }

    fn verdict(t: &Termination) -> (FailureCategory, bool, &'static str) {
        let c = classify(t, &FailurePolicy::default());
        (c.category, c.permanent, c.reason)
    }

    /// The reports these tests build by hand parse as the contract's.
    #[test]
    fn parses_the_launchers_report() {
        let r = RunReport::parse(&report("WorkerFailed", Some(3), None, "ValueError: x")).unwrap();
        assert_eq!(
            (r.rank, r.local_rank, r.exit_code),
            (Some(5), Some(1), Some(3))
        );
        assert_eq!((r.restart_count, r.round), (3, Some(4)));
    }

    /// The classification table: (case, termination) → (category, permanent, reason).
    #[test]
    fn classification_table() {
        let rep = |reason: &str, exit: Option<i32>, signal: Option<&str>, msg: &str| {
            trainer(1, Some("Error"), Some(report(reason, exit, signal, msg)))
        };
        let pod_reason = |r: &str| Termination {
            pod_reason: Some(r.into()),
            pod_message: Some(format!("pod says {r}")),
            ..Default::default()
        };
        let install = |reason: Option<&str>| Termination {
            init: Some(ContainerEnd {
                name: "elastic-launch-install".into(),
                exit_code: 1,
                reason: reason.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        };
        let table: Vec<(&str, Termination, (FailureCategory, bool, &str))> = vec![
            (
                "worker exit 1",
                rep("WorkerFailed", Some(1), None, "RuntimeError: boom"),
                (Application, false, "WorkerFailed"),
            ),
            (
                "worker exit 3",
                rep("WorkerFailed", Some(3), None, ""),
                (Application, false, "WorkerFailed"),
            ),
            (
                "worker usage error",
                rep("WorkerFailed", Some(2), None, ""),
                (Application, true, "UsageError"),
            ),
            (
                "worker not found",
                rep("WorkerFailed", Some(127), None, ""),
                (Application, true, "CommandNotFound"),
            ),
            (
                "worker not executable",
                rep("WorkerFailed", Some(126), None, ""),
                (Application, true, "CommandNotExecutable"),
            ),
            (
                "worker SIGSEGV",
                rep("WorkerFailed", Some(-11), Some("SIGSEGV"), ""),
                (Application, false, "WorkerSignaled"),
            ),
            (
                "worker SIGKILL",
                rep("WorkerFailed", Some(-9), Some("SIGKILL"), ""),
                (Application, false, "WorkerKilled"),
            ),
            (
                "OOMKilled",
                trainer(
                    137,
                    Some("OOMKilled"),
                    Some(report("WorkerFailed", Some(-9), Some("SIGKILL"), "")),
                ),
                (Application, false, "OOMKilled"),
            ),
            (
                "launcher signaled",
                rep("Signaled", None, None, "launcher received SIGTERM"),
                (Infrastructure, false, "PodStopped"),
            ),
            (
                "rendezvous timeout",
                rep(
                    "RendezvousFailed",
                    None,
                    None,
                    "rendezvous timed out after 600s",
                ),
                (Infrastructure, false, "RendezvousFailed"),
            ),
            (
                "bad rdzv conf",
                rep("RendezvousFailed", None, None, "invalid --rdzv-conf: x"),
                (Application, true, "InvalidLauncherConfig"),
            ),
            (
                "store",
                rep("StoreFailed", None, None, "connection refused"),
                (Infrastructure, false, "StoreFailed"),
            ),
            (
                "device",
                rep("DeviceUnavailable", None, None, "no GPU"),
                (Infrastructure, false, "DeviceUnavailable"),
            ),
            (
                "spawn ENOENT",
                rep(
                    "LauncherError",
                    None,
                    None,
                    "cannot start worker `python`: No such file or directory (os error 2)",
                ),
                (Application, true, "CommandNotFound"),
            ),
            (
                "spawn EACCES",
                rep(
                    "LauncherError",
                    None,
                    None,
                    "cannot start worker `./t`: Permission denied (os error 13)",
                ),
                (Application, true, "CommandNotExecutable"),
            ),
            (
                "launcher error",
                rep("LauncherError", None, None, "log directory: disk full"),
                (Application, false, "LauncherError"),
            ),
            (
                "launcher usage error",
                trainer(2, Some("Error"), Some("usage: elastic-launch ...".into())),
                (Application, true, "UsageError"),
            ),
            (
                "launcher exit 1, logs",
                trainer(1, Some("Error"), Some("panic at ...".into())),
                (Application, false, "LauncherExited"),
            ),
            (
                "launcher exit 127",
                trainer(127, Some("Error"), None),
                (Application, true, "CommandNotFound"),
            ),
            (
                "SIGKILL from outside",
                trainer(137, Some("Error"), None),
                (Infrastructure, false, "PodStopped"),
            ),
            (
                "SIGTERM from outside",
                trainer(143, Some("Error"), None),
                (Infrastructure, false, "PodStopped"),
            ),
            (
                "launcher SIGSEGV",
                trainer(139, Some("Error"), None),
                (Application, false, "LauncherCrashed"),
            ),
            (
                "cannot run",
                trainer(128, Some("StartError"), Some("exec format error".into())),
                (Application, true, "ContainerCannotRun"),
            ),
            (
                "evicted",
                pod_reason("Evicted"),
                (Infrastructure, false, "Evicted"),
            ),
            (
                "preempting",
                pod_reason("Preempting"),
                (Infrastructure, false, "Preempted"),
            ),
            (
                "node lost",
                pod_reason("NodeLost"),
                (Infrastructure, false, "NodeLost"),
            ),
            (
                "node shutdown",
                pod_reason("Shutdown"),
                (Infrastructure, false, "NodeShutdown"),
            ),
            (
                "out of gpus",
                pod_reason("OutOfnvidia.com/gpu"),
                (Infrastructure, false, "NodeRejected"),
            ),
            (
                "pod deadline",
                pod_reason("DeadlineExceeded"),
                (Application, true, "PodDeadlineExceeded"),
            ),
            (
                "install cannot start",
                install(Some("StartError")),
                (Application, true, "LauncherInstallFailed"),
            ),
            (
                "install failed",
                install(Some("Error")),
                (Infrastructure, false, "LauncherInstallFailed"),
            ),
            (
                "nothing ran",
                Termination::default(),
                (Infrastructure, false, "PodStopped"),
            ),
        ];
        for (case, t, want) in table {
            assert_eq!(verdict(&t), want, "{case}");
        }
    }

    #[test]
    fn the_pod_reason_wins_over_the_report() {
        let mut t = trainer(
            1,
            Some("Error"),
            Some(report("Signaled", None, None, "SIGTERM")),
        );
        t.pod_reason = Some("Evicted".into());
        t.pod_message = Some("The node was low on resource: memory.".into());
        let c = classify(&t, &FailurePolicy::default());
        assert_eq!(c.reason, "Evicted");
        assert_eq!(c.message, "The node was low on resource: memory.");
    }

    #[test]
    fn worker_failures_carry_rank_and_message() {
        let t = trainer(
            1,
            Some("Error"),
            Some(report(
                "WorkerFailed",
                Some(3),
                None,
                "ValueError: bad shape",
            )),
        );
        let c = classify(&t, &FailurePolicy::default());
        assert_eq!(
            (c.rank, c.local_rank, c.exit_code),
            (Some(5), Some(1), Some(3))
        );
        assert_eq!(
            c.message,
            "rank 5 (local rank 1) exited with code 3: ValueError: bad shape"
        );
    }

    #[test]
    fn exit_code_rules_are_configurable() {
        let mut policy = FailurePolicy {
            permanent_exit_codes: vec![42],
            ..Default::default()
        };
        let t = |code| trainer(1, None, Some(report("WorkerFailed", Some(code), None, "")));
        let v = |t: &Termination, p: &FailurePolicy| {
            let c = classify(t, p);
            (c.permanent, c.reason)
        };
        assert_eq!(v(&t(42), &policy), (true, "PermanentExitCode"));
        assert_eq!(v(&t(2), &policy), (false, "WorkerFailed"));
        policy.retryable_exit_codes = vec![1, 75];
        assert_eq!(v(&t(75), &policy), (false, "WorkerFailed"));
        assert_eq!(v(&t(3), &policy), (true, "NonRetryableExitCode"));
    }

    #[test]
    fn disruptions() {
        let mut pod = ObservedPod {
            name: "train-worker-1".into(),
            uid: Some("p".into()),
            index: 1,
            phase: crate::observed::Phase::Running,
            ready: true,
            created: None,
            deletion: Some("2026-01-01T00:00:00Z".parse().unwrap()),
            deletion_requested: Some("2026-01-01T00:00:00Z".parse().unwrap()),
            node: Some("n1".into()),
            node_ready: Some(false),
            disruption: None,
            termination: Termination::default(),
            waiting: None,
            ip: None,
            launcher: None,
        };
        assert_eq!(classify_disruption(&pod).reason, "NodeLost");
        pod.node_ready = Some(true);
        assert_eq!(classify_disruption(&pod).reason, "PodDeleted");
        pod.disruption = Some("PreemptionByScheduler".into());
        assert_eq!(classify_disruption(&pod).reason, "Preempted");
        pod.disruption = Some("DeletionByTaintManager".into());
        assert_eq!(classify_disruption(&pod).reason, "Evicted");
        pod.node_ready = Some(false);
        let c = classify_disruption(&pod);
        assert_eq!((c.category, c.reason), (Infrastructure, "NodeLost"));
        // A failed pod with a disruption condition is classified by it.
        pod.phase = crate::observed::Phase::Failed;
        pod.termination = trainer(1, None, Some(report("Signaled", None, None, "SIGTERM")));
        pod.disruption = Some("EvictionByEvictionAPI".into());
        assert_eq!(
            classify_pod(&pod, &FailurePolicy::default()).reason,
            "Evicted"
        );
    }

    /// Found with fuzz/ (operator_termination): a report's negative exit code is negated to name
    /// the signal, which overflowed for i32::MIN.
    #[test]
    fn a_report_with_the_most_negative_exit_code_names_a_signal_without_overflow() {
        let t = trainer(
            1,
            Some("Error"),
            Some(report("WorkerFailed", Some(i32::MIN), None, "")),
        );
        let c = classify(&t, &FailurePolicy::default());
        assert_eq!(c.reason, reason::WORKER_SIGNALED);
        assert_eq!(c.signal.as_deref(), Some("signal 2147483648"));
    }
}
