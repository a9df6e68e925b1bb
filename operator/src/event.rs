//! Events the operator publishes about a job: plain data, published by the controller through
//! the kube-rs recorder (regarding the job, related to the pod when there is one).

/// Normal or Warning, as Kubernetes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    /// Machine-readable, stable: a condition reason, a failure reason, or one of [`reason`].
    pub reason: String,
    /// For people.
    pub note: String,
    /// The pod it is about, if any (the event's related object).
    pub pod: Option<String>,
}

impl Event {
    pub fn normal(reason: &str, note: impl Into<String>) -> Self {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: note.into(),
            pod: None,
        }
    }

    pub fn warning(reason: &str, note: impl Into<String>) -> Self {
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: note.into(),
            pod: None,
        }
    }

    pub fn about(mut self, pod: &str) -> Self {
        self.pod = Some(pod.into());
        self
    }
}

/// Event reasons that are not condition or failure reasons.
pub mod reason {
    /// A spec problem the operator works around (replicas out of bounds, ...).
    pub const SPEC_WARNING: &str = "SpecWarning";
    pub const SCALING_UP: &str = "ScalingUp";
    pub const SCALING_DOWN: &str = "ScalingDown";
    /// A pod stuck terminating on a lost node is deleted forcefully.
    pub const FORCE_DELETING_POD: &str = "ForceDeletingPod";
    /// runPolicy.ttlSecondsAfterFinished passed.
    pub const TTL_EXPIRED: &str = "TTLExpired";
    /// A pod's launcher restarted its workers after a worker failed (status.workerRestarts).
    pub const WORKERS_RESTARTED: &str = "WorkersRestarted";
    /// New pods prefer other nodes than those where the job recently lost pods to the node
    /// (failurePolicy.avoidFailedNodes).
    pub const AVOIDING_NODES: &str = "AvoidingNodes";
}
