//! What the operator reports: the status of an ElasticJob, and the machine-readable condition
//! types and reasons it uses.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// How many failures `status.recentFailures` keeps (plus those of pods that still exist).
pub const MAX_RECENT_FAILURES: usize = 10;

/// The observed state of an ElasticJob.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::join_lines)]
pub struct ElasticJobStatus {
    /// Where the job is: Created, Running, Restarting, Suspended, Succeeded or Failed (the
    /// condition that holds, in short).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,

    /// The job's conditions. Types: Created, Running, Restarting, Suspended, Succeeded,
    /// Failed. Succeeded and Failed are final: once either is True nothing changes any more.
    /// Each has a machine-readable reason and a message for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pods that exist now, pending or running (the scale subresource's replicas).
    #[serde(default)]
    pub replicas: i32,

    /// Pods that are running and ready.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Label selector of the job's pods, for the scale subresource and autoscalers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Pods recreated after application failures (budget: failurePolicy.maxApplicationRestarts).
    #[serde(default)]
    pub application_restarts: i32,

    /// Pods recreated after infrastructure failures (budget:
    /// failurePolicy.maxInfrastructureRestarts).
    #[serde(default)]
    pub infrastructure_restarts: i32,

    /// Pods preempted or evicted while at least minReplicas others kept running: the job
    /// shrank and grows back when its pods are scheduled again; charged to no budget.
    #[serde(default)]
    pub disruptions: i32,

    /// Worker-group restarts that the pods' launchers made after a worker failed (each pod's
    /// budget: spec.maxRestarts), over the job's life. Read from the launchers' status
    /// endpoints (spec.launcher.statusPort) while they run, and from their final reports.
    #[serde(default)]
    pub worker_restarts: i32,

    /// All restarts: workerRestarts (inside pods) + applicationRestarts +
    /// infrastructureRestarts (pod recreations).
    #[serde(default)]
    pub restart_count: i32,

    /// The newest rendezvous round the launchers report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendezvous_round: Option<i64>,

    /// Worker processes in the newest round, all pods together (the workers' WORLD_SIZE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_size: Option<i32>,

    /// What each pod's launcher reports: one entry per existing pod the operator has seen, by
    /// replica index. A pod that vanishes without the operator seeing it end (force-deleted,
    /// gone between two reconciles, or deleted while the operator was down) is still recorded
    /// as a failure (PodDeleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub launchers: Vec<LauncherStatus>,

    /// The most recent pod failures, newest first: the last 10, and any older ones whose pods
    /// still exist (waiting to be replaced), those without their message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_failures: Vec<FailureRecord>,

    /// How far training is, from what the workers report through ELASTICJOB_PROGRESS_FILE
    /// (the launcher with the highest step); absent until they report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<TrainingProgress>,

    /// The share of the job's active time in which every running pod trained: its launcher
    /// ran workers that were not stalled, with at least minReplicas such pods. Time spent
    /// starting, re-forming, restarting or stalled is not training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goodput: Option<Goodput>,

    /// When the job started running (first pods created), or was last resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the job succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// Training progress as the workers report it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::join_lines)]
pub struct TrainingProgress {
    /// The newest step reported.
    pub step: i64,
    /// Steps in the whole run, when the workers say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// step / total, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    /// Steps per second in the current round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_second: Option<f64>,
    /// Seconds to the last step at the current rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
    /// The newest numeric metrics reported (loss, throughput, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// The pod whose launcher reported it.
    pub pod: String,
    /// When the workers reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<Time>,
}

/// Training time against active time, sampled at every reconcile.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::join_lines)]
pub struct Goodput {
    /// Seconds in which every running pod trained.
    pub training_seconds: f64,
    /// Seconds the job was active (not suspended, not finished).
    pub elapsed_seconds: f64,
    /// trainingSeconds / elapsedSeconds, in percent.
    pub percent: i32,
    /// Whether all pods trained at the last sample, and when that was: the time until the next
    /// sample counts as that.
    pub training: bool,
    pub sampled_at: Time,
}

/// The job's state in one word.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Validated; pods and Service created, not yet running.
    Created,
    /// Pod 0 and at least minReplicas pods are running.
    Running,
    /// A failed pod is being replaced, or fewer than minReplicas pods run after a failure.
    Restarting,
    /// spec.runPolicy.suspend is true.
    Suspended,
    /// Waiting for admission by its queue (Kueue), or stopped by it (preempted or evicted):
    /// no pods; the Queued condition says where it waits and why.
    Queued,
    /// The training finished: the launchers of the last round exited 0.
    Succeeded,
    /// The job failed: see the Failed condition's reason and status.recentFailures.
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Created,
        JobState::Running,
        JobState::Restarting,
        JobState::Suspended,
        JobState::Queued,
        JobState::Succeeded,
        JobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Created => "Created",
            JobState::Running => "Running",
            JobState::Restarting => "Restarting",
            JobState::Suspended => "Suspended",
            JobState::Queued => "Queued",
            JobState::Succeeded => "Succeeded",
            JobState::Failed => "Failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

/// One pod's launcher, as it last reported.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LauncherStatus {
    /// The pod.
    pub pod: String,
    /// UID of the pod (a recreated pod is a new launcher).
    #[serde(rename = "podUID")]
    pub pod_uid: String,
    /// Rendezvous, Running, Succeeded, Failed or Stopping; Pending before the pod starts;
    /// Unknown while the pod runs but its launcher's status endpoint does not answer.
    pub state: String,
    /// Its rendezvous round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<i64>,
    /// Worker processes in its round, all pods together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_size: Option<i32>,
    /// Its worker-group restarts after worker failures (budget: spec.maxRestarts).
    #[serde(default)]
    pub restarts: i32,
    /// Of those, restarts because ranks stopped reporting progress
    /// (failurePolicy.stallTimeoutSeconds).
    #[serde(default)]
    pub stalls: i32,
}

/// Is this failure the training's fault or the cluster's?
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCategory {
    /// The training code or the launcher: counted against maxApplicationRestarts.
    Application,
    /// The node, the scheduler, devices, the network: counted against maxInfrastructureRestarts.
    Infrastructure,
}

/// One pod failure.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailureRecord {
    /// When the pod failed (its container finished), or when the operator saw it go.
    pub time: Time,
    /// The failed pod.
    pub pod: String,
    /// UID of the failed pod (each failure of a pod name is a different pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "podUID")]
    pub pod_uid: Option<String>,
    /// Replica index of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_index: Option<i32>,
    /// The node the pod ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Global rank of the worker process that failed first, when the launcher reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<i32>,
    /// Its local rank in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_rank: Option<i32>,
    /// Exit code of the failed worker process, or of the container when the launcher left no
    /// report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed the worker process or container (SIGKILL, SIGSEGV, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Why, machine-readable. Application: WorkerFailed, WorkerSignaled, WorkerKilled,
    /// OOMKilled, UsageError, CommandNotFound, CommandNotExecutable, PermanentExitCode,
    /// NonRetryableExitCode, ContainerCannotRun, LauncherError, LauncherExited, LauncherCrashed,
    /// InvalidLauncherConfig, InitContainerFailed, PodDeadlineExceeded. Infrastructure:
    /// PodStopped, Evicted, Preempted, NodeLost, NodeShutdown, NodeRejected, PodDeleted,
    /// RendezvousFailed, StoreFailed, DeviceUnavailable. LauncherInstallFailed is either.
    pub reason: String,
    /// Application or Infrastructure: which budget it counts against.
    pub category: FailureCategory,
    /// True when the failure is not retried: the job failed because of it.
    #[serde(default)]
    pub permanent: bool,
    /// The error: the worker's exception message, the launcher's error or the pod's message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Condition types.
pub mod condition {
    pub const CREATED: &str = "Created";
    pub const RUNNING: &str = "Running";
    pub const RESTARTING: &str = "Restarting";
    pub const SUSPENDED: &str = "Suspended";
    /// True once ranks that reported progress fell silent for failurePolicy.stallTimeoutSeconds
    /// (their worker group was restarted); False once training reports progress again.
    pub const STALLED: &str = "Stalled";
    /// True while a pod the job needs cannot be created because another object holds its name
    /// (`<job>-worker-<i>`, not owned by the job); the message names them.
    pub const POD_NAME_CONFLICT: &str = "PodNameConflict";
    /// True while the spec is invalid after the job started (an edit the apiserver accepted
    /// but the operator cannot run): the job goes on with its last valid spec, whose
    /// generation the message names, until the spec is fixed.
    pub const EDIT_REJECTED: &str = "EditRejected";
    /// For a job labelled kueue.x-k8s.io/queue-name: True while it waits for its queue to
    /// admit it, or after the queue stopped it (preempted, evicted), with no pods; the message
    /// says which queue and why (Kueue's own words). False once admitted: the message says for
    /// how many pods.
    pub const QUEUED: &str = "Queued";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
}

/// Condition reasons, machine-readable and stable.
pub mod reason {
    /// Created: the Service and first pods were created.
    pub const JOB_CREATED: &str = "JobCreated";
    /// Running: pod 0 and at least minReplicas pods run.
    pub const PODS_RUNNING: &str = "PodsRunning";
    /// Running False: fewer than minReplicas pods (or not pod 0) run.
    pub const PODS_NOT_RUNNING: &str = "PodsNotRunning";
    /// Restarting: a failed pod is being replaced.
    pub const POD_FAILED: &str = "PodFailed";
    /// Restarting False: the replacement is running.
    pub const RECOVERED: &str = "Recovered";
    /// Suspended True / False.
    pub const SUSPENDED: &str = "Suspended";
    /// Stalled True: ranks reported no progress for the stall timeout.
    pub const NO_PROGRESS: &str = "NoProgress";
    /// Stalled False: training reports progress again.
    pub const PROGRESSING: &str = "Progressing";
    /// PodNameConflict True: a pod that is not the job's holds a name the job needs.
    pub const POD_NAME_TAKEN: &str = "PodNameTaken";
    /// PodNameConflict False: the names are free again.
    pub const POD_NAMES_FREE: &str = "PodNamesFree";
    pub const RESUMED: &str = "Resumed";
    /// Succeeded: the launchers of the final round exited 0.
    pub const JOB_SUCCEEDED: &str = "JobSucceeded";
    /// Failed (a new job) or EditRejected True (a running one): the spec is invalid; the
    /// message says what to fix.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// EditRejected False: the spec is valid again and is the one the job runs.
    pub const SPEC_VALID: &str = "SpecValid";
    /// Failed: a permanent failure (see status.recentFailures).
    pub const PERMANENT_FAILURE: &str = "PermanentFailure";
    /// Failed: the application failure budget is exhausted.
    pub const APPLICATION_RESTART_LIMIT_EXCEEDED: &str = "ApplicationRestartLimitExceeded";
    /// Failed: the infrastructure failure budget is exhausted.
    pub const INFRASTRUCTURE_RESTART_LIMIT_EXCEEDED: &str = "InfrastructureRestartLimitExceeded";
    /// Failed: runPolicy.activeDeadlineSeconds passed.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// Running/Restarting False once the job finished.
    pub const JOB_FINISHED: &str = "JobFinished";
    /// Queued True: waiting for the queue's admission (quota, a LocalQueue that does not
    /// exist yet, Kueue not installed).
    pub const PENDING_ADMISSION: &str = "PendingAdmission";
    /// Queued True: the queue preempted the job for a higher-priority one, or evicted it;
    /// its pods are stopped, no failure budget is charged, and it runs again once re-admitted.
    pub const EVICTED: &str = "Evicted";
    /// Queued False: the queue admitted the job.
    pub const ADMITTED: &str = "Admitted";
}
