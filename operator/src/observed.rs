//! What the operator sees of a job's pods: the few facts the decisions need, taken from a
//! `Pod` (and its node's readiness) once, so the decision functions work on plain data.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use elasticjob_crds::names;

use elasticjob_contract::progress::Progress;

/// A pod's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    pub fn parse(phase: Option<&str>) -> Phase {
        match phase {
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some("Unknown") => Phase::Unknown,
            _ => Phase::Pending,
        }
    }

    /// Succeeded or Failed: its containers will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// One pod of the job.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedPod {
    pub name: String,
    pub uid: Option<String>,
    /// The replica index, from the name `<job>-worker-<i>`.
    pub index: u32,
    pub phase: Phase,
    /// The pod's Ready condition.
    pub ready: bool,
    pub created: Option<Timestamp>,
    /// Set once the pod is being deleted: when its grace period ends.
    pub deletion: Option<Timestamp>,
    /// When its deletion was asked for: `deletion` less the grace period.
    pub deletion_requested: Option<Timestamp>,
    pub node: Option<String>,
    /// Readiness of the pod's node: `None` when the pod has no node or the caller does not know;
    /// `Some(false)` when the node is not ready or no longer exists.
    pub node_ready: Option<bool>,
    /// The reason of a `DisruptionTarget` condition that is True (Kubernetes ≥ 1.26): why the
    /// pod is being taken away (PreemptionByScheduler, EvictionByEvictionAPI, ...).
    pub disruption: Option<String>,
    /// How it ended, for pods that ended or whose containers did.
    pub termination: Termination,
    /// Why a pod that does not run yet is stuck, when Kubernetes says so: `Unschedulable: <the
    /// scheduler's message>`, or `<container>: <waiting reason>: <message>` (ImagePullBackOff,
    /// CreateContainerConfigError, ...; not the normal ContainerCreating and PodInitializing).
    pub waiting: Option<String>,
    /// The pod's IP, once it has one.
    pub ip: Option<String>,
    /// What its launcher's status endpoint said in this reconcile (the controller polls running
    /// pods; `from_pod` leaves it empty).
    pub launcher: Option<Progress>,
}

impl ObservedPod {
    /// What is known of a pod that is gone: its name, UID and index.
    pub fn gone(name: &str, uid: &str, index: u32) -> ObservedPod {
        ObservedPod {
            name: name.into(),
            uid: Some(uid.into()),
            index,
            phase: Phase::Unknown,
            ready: false,
            created: None,
            deletion: None,
            deletion_requested: None,
            node: None,
            node_ready: None,
            disruption: None,
            termination: Termination::default(),
            waiting: None,
            ip: None,
            launcher: None,
        }
    }

    /// A pod that is still there to run or is running: pending, running or unknown, and not
    /// being deleted.
    pub fn is_active(&self) -> bool {
        self.deletion.is_none() && !self.phase.is_terminal()
    }

    pub fn is_running(&self) -> bool {
        self.deletion.is_none() && self.phase == Phase::Running
    }
}

/// How a pod or its containers ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Termination {
    /// `status.reason` of the pod: Evicted, NodeLost, DeadlineExceeded, Shutdown, Terminated,
    /// NodeAffinity, `OutOf<resource>`, UnexpectedAdmissionError, Preempting.
    pub pod_reason: Option<String>,
    pub pod_message: Option<String>,
    /// The trainer container, once terminated.
    pub trainer: Option<ContainerEnd>,
    /// An init container that failed.
    pub init: Option<ContainerEnd>,
}

/// A terminated container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerEnd {
    pub name: String,
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// OOMKilled, Error, Completed, ContainerCannotRun, StartError, ...
    pub reason: Option<String>,
    /// The termination message: the launcher's JSON report, or the log tail
    /// (FallbackToLogsOnError).
    pub message: Option<String>,
    pub finished_at: Option<Timestamp>,
}

impl ObservedPod {
    /// The facts of `pod` if it is pod `<job>-worker-<i>` controlled by the job with `job_uid`
    /// (a pod of an earlier job of the same name is not this job's). `trainer` names the
    /// trainer container; `node_ready` is the readiness of the pod's node.
    pub fn from_pod(
        job: &str,
        job_uid: &str,
        trainer: Option<&str>,
        pod: &Pod,
        node_ready: Option<bool>,
    ) -> Option<ObservedPod> {
        let meta = &pod.metadata;
        let name = meta.name.clone()?;
        let index = names::pod_index(job, &name)?;
        let controlled = meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == job_uid);
        if !controlled {
            return None;
        }
        let status = pod.status.clone().unwrap_or_default();
        let conditions = status.conditions.unwrap_or_default();
        let is_true = |t: &str| {
            conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        let disruption = conditions
            .iter()
            .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
            .map(|c| c.reason.clone().unwrap_or_default());
        let unschedulable = conditions
            .iter()
            .find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
            .map(|c| format!("Unschedulable: {}", c.message.as_deref().unwrap_or("")));
        let statuses = status.container_statuses.unwrap_or_default();
        let init_statuses = status.init_container_statuses.unwrap_or_default();
        let waiting = unschedulable.or_else(|| {
            init_statuses
                .iter()
                .chain(statuses.iter())
                .find_map(stuck_waiting)
        });
        let trainer_status = match trainer {
            Some(t) => statuses.iter().find(|s| s.name == t),
            None => statuses.first(),
        };
        let init = init_statuses
            .iter()
            .filter_map(ended)
            .find(|e| e.exit_code != 0);
        Some(ObservedPod {
            name,
            uid: meta.uid.clone(),
            index,
            phase: Phase::parse(status.phase.as_deref()),
            ready: is_true("Ready"),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            deletion: meta.deletion_timestamp.as_ref().map(|t| t.0),
            deletion_requested: meta.deletion_timestamp.as_ref().map(|t| {
                let grace = meta.deletion_grace_period_seconds.unwrap_or(0).max(0);
                t.0.saturating_sub(SignedDuration::from_secs(grace))
                    .unwrap_or(t.0)
            }),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            node_ready,
            disruption,
            termination: Termination {
                pod_reason: status.reason,
                pod_message: status.message,
                trainer: trainer_status.and_then(ended),
                init,
            },
            waiting,
            ip: status.pod_ip,
            launcher: None,
        })
    }
}

/// `<container>: <reason>: <message>` of a container waiting for something other than its
/// normal start.
fn stuck_waiting(status: &ContainerStatus) -> Option<String> {
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if matches!(reason, "ContainerCreating" | "PodInitializing") {
        return None;
    }
    Some(match waiting.message.as_deref() {
        Some(m) if !m.is_empty() => format!("{}: {reason}: {m}", status.name),
        _ => format!("{}: {reason}", status.name),
    })
}

fn ended(status: &ContainerStatus) -> Option<ContainerEnd> {
    let state = status.state.as_ref()?.terminated.as_ref().or(status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref()))?;
    Some(ContainerEnd {
        name: status.name.clone(),
        exit_code: state.exit_code,
        signal: state.signal,
        reason: state.reason.clone(),
        message: state.message.clone(),
        finished_at: state.finished_at.as_ref().map(|t| t.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn owned() -> serde_json::Value {
        json!([{"apiVersion": "elasticjob.dev/v1alpha1", "kind": "ElasticJob", "name": "train", "uid": "u1", "controller": true}])
    }

    #[test]
    fn reads_a_failed_pod() {
        let p = pod(json!({
            "metadata": {"name": "train-worker-2", "uid": "p2", "ownerReferences": owned(),
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {
                "phase": "Failed",
                "conditions": [{"type": "Ready", "status": "False"},
                               {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}],
                "containerStatuses": [
                    {"name": "sidecar", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                     "state": {"terminated": {"exitCode": 0}}},
                    {"name": "trainer", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                     "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "{}",
                                              "finishedAt": "2026-01-01T00:05:00Z"}}},
                ],
            },
        }));
        let o = ObservedPod::from_pod("train", "u1", Some("trainer"), &p, Some(true)).unwrap();
        assert_eq!(o.index, 2);
        assert_eq!(o.phase, Phase::Failed);
        assert!(!o.ready && !o.is_active());
        assert_eq!(o.node.as_deref(), Some("n1"));
        assert_eq!(o.disruption.as_deref(), Some("EvictionByEvictionAPI"));
        let t = o.termination.trainer.unwrap();
        assert_eq!(
            (t.name.as_str(), t.exit_code, t.message.as_deref()),
            ("trainer", 1, Some("{}"))
        );
        assert_eq!(t.finished_at, Some("2026-01-01T00:05:00Z".parse().unwrap()));
    }

    #[test]
    fn ignores_pods_of_other_jobs() {
        let mut p =
            pod(json!({"metadata": {"name": "train-worker-0", "ownerReferences": owned()}}));
        assert!(ObservedPod::from_pod("train", "u1", None, &p, None).is_some());
        assert!(ObservedPod::from_pod("train", "other-uid", None, &p, None).is_none());
        assert!(ObservedPod::from_pod("trainer", "u1", None, &p, None).is_none());
        p.metadata.name = Some("train-x".into());
        assert!(ObservedPod::from_pod("train", "u1", None, &p, None).is_none());
    }

    #[test]
    fn a_failed_init_container_is_reported() {
        let p = pod(json!({
            "metadata": {"name": "train-worker-0", "ownerReferences": owned(),
                         "deletionTimestamp": "2026-01-01T00:00:30Z", "deletionGracePeriodSeconds": 30},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "elastic-launch-install", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                 "state": {"terminated": {"exitCode": 128, "reason": "StartError"}}}]},
        }));
        let o = ObservedPod::from_pod("train", "u1", None, &p, Some(false)).unwrap();
        assert_eq!(
            o.termination.init.as_ref().unwrap().reason.as_deref(),
            Some("StartError")
        );
        assert_eq!(o.deletion, Some("2026-01-01T00:00:30Z".parse().unwrap()));
        assert_eq!(
            o.deletion_requested,
            Some("2026-01-01T00:00:00Z".parse().unwrap()),
            "its deletion was asked for a grace period earlier"
        );
        assert!(!o.is_active());
    }

    #[test]
    fn says_why_a_pod_is_stuck() {
        let waiting = |statuses: serde_json::Value, conditions: serde_json::Value| {
            let p = pod(json!({
                "metadata": {"name": "train-worker-1", "ownerReferences": owned()},
                "status": {"phase": "Pending", "conditions": conditions, "containerStatuses": statuses},
            }));
            ObservedPod::from_pod("train", "u1", None, &p, None)
                .unwrap()
                .waiting
        };
        let container = |reason: &str, message: &str| {
            json!([{"name": "trainer", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                    "state": {"waiting": {"reason": reason, "message": message}}}])
        };
        assert_eq!(
            waiting(
                container("ImagePullBackOff", "Back-off pulling image \"x\""),
                json!([])
            )
            .as_deref(),
            Some("trainer: ImagePullBackOff: Back-off pulling image \"x\"")
        );
        assert_eq!(waiting(container("ContainerCreating", ""), json!([])), None);
        let unschedulable = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]);
        assert_eq!(
            waiting(json!([]), unschedulable).as_deref(),
            Some("Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
        );
    }
}
