//! What the user writes: the `ElasticJob` resource and its spec. Doc comments here become the
//! CRD's field descriptions, which `kubectl explain elasticjob.spec` shows: they are written for
//! users.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::ElasticJobStatus;

/// An elastic PyTorch training job: between minReplicas and maxReplicas pods, each running the
/// user's command under a torchrun-compatible launcher that starts one worker per GPU (or per
/// nprocPerNode). The pods find each other through a headless Service named after the job; pod
/// 0 hosts the rendezvous. Failed pods are recreated within the budgets of spec.failurePolicy;
/// kubectl scale (or an HPA) changes the number of pods between the bounds.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "elasticjob.dev",
    version = "v1alpha1",
    kind = "ElasticJob",
    plural = "elasticjobs",
    singular = "elasticjob",
    shortname = "ej",
    namespaced,
    status = "ElasticJobStatus",
    derive = "PartialEq",
    doc = "An ElasticJob runs elastic PyTorch training (torchrun) across a varying number of pods. See spec for what to set and status for what happened.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "Where the job is: Created, Running, Restarting, Suspended, Queued, Succeeded or Failed"
    ),
    printcolumn(
        name = "Min",
        type_ = "integer",
        json_path = ".spec.minReplicas",
        description = "Fewest pods training runs on"
    ),
    printcolumn(
        name = "Max",
        type_ = "integer",
        json_path = ".spec.maxReplicas",
        description = "Most pods training runs on"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Pods that exist now (pending or running)"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Pods that are ready"
    ),
    printcolumn(
        name = "World",
        type_ = "integer",
        json_path = ".status.worldSize",
        description = "Worker processes in the newest rendezvous round",
        priority = 1
    ),
    printcolumn(
        name = "Progress",
        type_ = "integer",
        json_path = ".status.progress.percent",
        description = "Percent of the run's steps done, as the workers report (ELASTICJOB_PROGRESS_FILE)"
    ),
    printcolumn(
        name = "Goodput",
        type_ = "integer",
        json_path = ".status.goodput.percent",
        description = "Percent of the job's active time in which all its pods trained",
        priority = 1
    ),
    printcolumn(
        name = "Restarts",
        type_ = "integer",
        json_path = ".status.restartCount",
        description = "Worker-group restarts inside pods plus pods recreated after failures"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Pods asked for (spec.replicas)",
        priority = 1
    ),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 48")
        .message("metadata.name must be a DNS label of at most 48 characters (lower-case letters, digits and '-', starting with a letter): it names the Service and prefixes the pod host names <name>-worker-<i>")
        .reason(Reason::FieldValueInvalid)
)]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas")
        .message("minReplicas must be less than or equal to maxReplicas")
        .field_path(".minReplicas")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.replicas) || (self.replicas >= self.minReplicas && self.replicas <= self.maxReplicas)")
        .message("replicas must be within [minReplicas, maxReplicas]")
        .field_path(".replicas")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.template.spec) || self.template.spec.containers.all(c, !has(c.env) || c.env.all(e, !e.name.startsWith('PET_') && !e.name.startsWith('ELASTICJOB_') && !(e.name in ['MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'GROUP_WORLD_SIZE', 'ROLE_RANK', 'ROLE_NAME', 'ROLE_WORLD_SIZE', 'TORCHELASTIC_RESTART_COUNT', 'TORCHELASTIC_MAX_RESTARTS', 'TORCHELASTIC_RUN_ID', 'TORCHELASTIC_USE_AGENT_STORE'])))")
        .message("a container sets a reserved environment variable (PET_*, ELASTICJOB_*, MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, ROLE_RANK, ROLE_NAME, ROLE_WORLD_SIZE, TORCHELASTIC_*): the operator and the launcher set these; remove it (launcher options go on a torchrun command line)")
        .field_path(".template.spec.containers")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::join_lines)]
pub struct ElasticJobSpec {
    /// The fewest pods (nodes) training runs on. A rendezvous round starts once this many pods
    /// have joined; pods beyond it join when they can, and pods pending beyond it never hold the
    /// job up. Default 1.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,

    /// The most pods (nodes) training runs on. The launcher's `--nnodes` is
    /// minReplicas:maxReplicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// How many pods to run now, within [minReplicas, maxReplicas]. Default: maxReplicas. This is
    /// what `kubectl scale` and a HorizontalPodAutoscaler change (scale subresource); scaling
    /// down removes the highest-numbered pods first and never pod 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,

    /// Worker processes per pod: `auto` (the number of accelerators the trainer container asks
    /// for: its `nvidia.com/gpu`, `amd.com/gpu`, `gpu.intel.com/i915`, `gpu.intel.com/xe` or
    /// `habana.ai/gaudi` limit, else request; without one, what the launcher finds: visible
    /// accelerators, then CPUs), `gpu` (the NVIDIA or AMD GPUs the launcher finds), `cpu` (the
    /// CPUs it finds) or a positive integer (a number or a string of digits). Default auto.
    #[serde(default, deserialize_with = "null_as_default")]
    pub nproc_per_node: NprocPerNode,

    /// How many times each pod's launcher restarts its worker processes after a worker fails,
    /// before the pod itself fails (torchrun's `--max-restarts`). Pod failures are then counted
    /// against spec.failurePolicy. Default 3.
    #[serde(default = "default_max_restarts")]
    #[schemars(range(min = 0))]
    pub max_restarts: i32,

    /// How the pods find each other: pod 0's launcher hosts the rendezvous store on this port,
    /// reachable through the job's headless Service; the timeouts are torchrun's `--rdzv-conf`
    /// keys of the same names.
    #[serde(default)]
    pub rendezvous: RendezvousSpec,

    /// What happens when a pod fails. A failed pod is classified as an application failure (the
    /// training code or the launcher: a worker's non-zero exit, a crash, out of memory) or an
    /// infrastructure failure (the node was lost, the pod was evicted or preempted, a GPU went
    /// missing, the rendezvous store was unreachable), and as retryable or permanent. A
    /// retryable failure recreates the pod, after a backoff, while its budget lasts; a permanent
    /// failure or an exhausted budget fails the job. Each failure is listed in
    /// status.recentFailures and counted in status.applicationRestarts or
    /// status.infrastructureRestarts.
    #[serde(default)]
    pub failure_policy: FailurePolicy,

    /// Suspension, deadline, clean-up and time to live of the job.
    #[serde(default)]
    pub run_policy: RunPolicy,

    /// Where the launcher (elastic-launch, a drop-in torchrun) comes from.
    #[serde(default)]
    pub launcher: LauncherSpec,

    /// Gang scheduling with the coscheduling plugin (kubernetes-sigs/scheduler-plugins): the
    /// operator creates a PodGroup whose minMember is minReplicas and has the pods scheduled by
    /// that scheduler, so either at least minReplicas pods are placed together or none are (two
    /// jobs that cannot both reach their minimum never each hold part of the cluster); pods
    /// above the minimum join as they fit. Unset: the default scheduler places each pod alone.
    /// Under Kueue, leave this unset: Kueue admits the job only when its minimum fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang: Option<GangPolicy>,

    /// The pods to run, as in a Deployment or Job. The container that trains is the only
    /// container, or the one named `trainer`; its command (with args) is what you would run on
    /// one node, e.g. `["torchrun", "--tee", "3", "train.py"]` or `["python", "train.py"]`, and
    /// the operator runs it under the launcher. Its environment must not set PET_*,
    /// ELASTICJOB_* or the variables the launcher gives workers (RANK, WORLD_SIZE, MASTER_ADDR,
    /// ...). The operator sets the pod's name, hostname, subdomain and restartPolicy (Never).
    #[schemars(schema_with = "crate::schema::pod_template")]
    pub template: PodTemplateSpec,
}

/// `null` (allowed by the schema of an optional int-or-string) reads as the default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn default_min_replicas() -> i32 {
    1
}

fn default_max_restarts() -> i32 {
    3
}

impl ElasticJobSpec {
    /// The number of pods to run: spec.replicas (default maxReplicas) clamped to
    /// [minReplicas, maxReplicas].
    pub fn desired_replicas(&self) -> i32 {
        let min = self.min_pods() as i32;
        let max = self.max_replicas.max(min);
        self.replicas.unwrap_or(max).clamp(min, max)
    }

    /// The fewest pods training runs on: minReplicas, at least 1.
    pub fn min_pods(&self) -> usize {
        self.min_replicas.max(1) as usize
    }

    /// Index of the trainer container in the template: the only container, else the one named
    /// `trainer`.
    pub fn trainer_container_index(&self) -> Option<usize> {
        let containers = &self.template.spec.as_ref()?.containers;
        match containers.len() {
            0 => None,
            1 => Some(0),
            _ => containers
                .iter()
                .position(|c| c.name == crate::names::TRAINER_CONTAINER),
        }
    }
}

/// `spec.nprocPerNode` as written: an integer or a string. It is kept as written so that a job
/// with a bad value still loads and gets a Failed condition saying what to fix; [`Self::parse`]
/// gives its meaning.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(transparent)]
pub struct NprocPerNode(pub IntOrString);

impl Default for NprocPerNode {
    fn default() -> Self {
        NprocPerNode(IntOrString::String("auto".into()))
    }
}

/// The meaning of `spec.nprocPerNode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nproc {
    Auto,
    Gpu,
    Cpu,
    Count(u32),
}

impl NprocPerNode {
    pub fn count(n: u32) -> Self {
        NprocPerNode(IntOrString::Int(n as i32))
    }

    pub fn parse(&self) -> Result<Nproc, String> {
        match &self.0 {
            IntOrString::Int(n) if *n >= 1 => Ok(Nproc::Count(*n as u32)),
            IntOrString::Int(n) => Err(format!(
                "nprocPerNode is {n}: it must be at least 1, or auto, gpu or cpu"
            )),
            IntOrString::String(s) => match s.as_str() {
                "auto" => Ok(Nproc::Auto),
                "gpu" => Ok(Nproc::Gpu),
                "cpu" => Ok(Nproc::Cpu),
                s if is_count(s) => Ok(Nproc::Count(s.parse().expect("checked"))),
                s => Err(format!(
                    "nprocPerNode is \"{s}\": it must be auto, gpu, cpu or a positive integer"
                )),
            },
        }
    }
}

/// A positive decimal integer without sign or leading zeros, as the CEL rule's regex.
fn is_count(s: &str) -> bool {
    !s.starts_with('0') && s.chars().all(|c| c.is_ascii_digit()) && s.parse::<u32>().is_ok()
}

impl schemars::JsonSchema for NprocPerNode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NprocPerNode".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": "string(self) in ['auto', 'gpu', 'cpu'] || string(self).matches('^[1-9][0-9]*$')",
                "message": "nprocPerNode must be auto, gpu, cpu or a positive integer",
                "reason": "FieldValueInvalid",
            }],
        })
    }
}

/// Rendezvous settings: how the pods' launchers form rounds. Timeouts are torchrun's
/// `--rdzv-conf` keys of the same names.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.conf) || self.conf.all(k, !(k in ['join_timeout', 'last_call_timeout', 'close_timeout', 'is_host']))")
        .message("rendezvous.conf must not set join_timeout, last_call_timeout or close_timeout (use the fields of the same names) or is_host (the operator sets it)")
        .field_path(".conf")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("self.port == oldSelf.port")
        .message("rendezvous.port cannot change: the job's running pods meet on the old port, and new pods would not find them; delete the job and create it again to change it")
        .field_path(".port")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct RendezvousSpec {
    /// TCP port of the rendezvous store that pod 0's launcher hosts; also the port of the job's
    /// headless Service. Default 29400 (torchrun's).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Seconds a launcher waits for a rendezvous round to form (at least minReplicas pods)
    /// before it gives up and its pod fails. Default 600.
    #[serde(default = "default_join_timeout")]
    #[schemars(range(min = 1))]
    pub join_timeout_seconds: i32,

    /// Seconds a round stays open for more pods once minReplicas have joined, when fewer than
    /// maxReplicas have. Default 30.
    #[serde(default = "default_last_call_timeout")]
    #[schemars(range(min = 1))]
    pub last_call_timeout_seconds: i32,

    /// Seconds the launchers wait for each other when closing the rendezvous. Default 30.
    #[serde(default = "default_close_timeout")]
    #[schemars(range(min = 1))]
    pub close_timeout_seconds: i32,

    /// More `--rdzv-conf` settings for the launcher, e.g. heartbeat_timeout,
    /// keep_alive_interval, keep_alive_max_attempt, read_timeout. Keys and values must not
    /// contain commas; keys must not contain '='.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub conf: BTreeMap<String, String>,
}

fn default_port() -> i32 {
    29400
}
fn default_join_timeout() -> i32 {
    600
}
fn default_last_call_timeout() -> i32 {
    30
}
fn default_close_timeout() -> i32 {
    30
}

impl Default for RendezvousSpec {
    fn default() -> Self {
        RendezvousSpec {
            port: default_port(),
            join_timeout_seconds: default_join_timeout(),
            last_call_timeout_seconds: default_last_call_timeout(),
            close_timeout_seconds: default_close_timeout(),
            conf: BTreeMap::new(),
        }
    }
}

/// Failure handling: budgets, exit-code rules, backoff, and the force-delete timeout
/// (`spec.failurePolicy`; its field description is the user's explanation).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// How many pods may be recreated after application failures, counted over the whole job,
    /// before the job fails. Default 3.
    #[serde(default = "default_max_application_restarts")]
    #[schemars(range(min = 0))]
    pub max_application_restarts: i32,

    /// How many pods may be recreated after infrastructure failures (node lost, eviction,
    /// preemption, device or store failures), counted over the whole job, before the job fails.
    /// Default 10.
    #[serde(default = "default_max_infrastructure_restarts")]
    #[schemars(range(min = 0))]
    pub max_infrastructure_restarts: i32,

    /// Exit codes of a training process (or, when the launcher left no report, of the
    /// container) that fail the job at once: retrying will not help. Default [2, 126, 127]
    /// (usage error, not executable, command not found).
    #[serde(default = "default_permanent_exit_codes")]
    #[schemars(length(max = 255), inner(range(min = 1, max = 255)))]
    pub permanent_exit_codes: Vec<i32>,

    /// When not empty, only these exit codes are retried; any other non-zero exit code of a
    /// training process fails the job at once. Default empty: every exit code not in
    /// permanentExitCodes is retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 255), inner(range(min = 1, max = 255)))]
    pub retryable_exit_codes: Vec<i32>,

    /// Delay before a failed pod is recreated: the n-th failure of the same pod within the last
    /// hour waits initialSeconds × 2^(n-1), at most maxSeconds.
    #[serde(default)]
    pub backoff: Backoff,

    /// Seconds after its deletion was asked for (its eviction from a lost node, typically) that a
    /// pod still there on a node that is not ready (or gone) is deleted forcefully, so that it is
    /// replaced. A kubelet that is gone runs no grace period, and Kubernetes alone would leave
    /// the pod terminating forever. Its launcher, if it still runs behind a partition, stopped
    /// its workers within seconds of losing the others (the rendezvous heartbeat). Default 15.
    #[serde(default = "default_pod_termination_timeout")]
    #[schemars(range(min = 1))]
    pub pod_termination_timeout_seconds: i32,

    /// Seconds a pod stays bound to a node that is not ready or unreachable before Kubernetes
    /// evicts it, so that it is replaced (an infrastructure failure, NodeLost) and the job
    /// re-forms: the operator gives each pod NoExecute tolerations of node.kubernetes.io/not-ready
    /// and node.kubernetes.io/unreachable for this long, unless the pod template tolerates
    /// those taints itself. The other pods re-form without it within seconds; this is how long
    /// the job stays below its replicas when the node does not come back. Kubernetes' own
    /// default is 300 s. Default 30.
    #[serde(default = "default_node_lost_timeout")]
    #[schemars(range(min = 0))]
    pub node_lost_timeout_seconds: i32,

    /// Seconds after which ranks that reported progress (a JSON line such as {"step": 120} appended
    /// to the file named by ELASTICJOB_PROGRESS_FILE) and then fell silent count as stalled: a
    /// hung collective or a dead GPU that does not crash. Their pod's launcher restarts its worker
    /// group (counted against spec.maxRestarts) and the job gets a Stalled condition naming the
    /// silent ranks. Unset: stalls are not detected (the collective's own timeout applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub stall_timeout_seconds: Option<i32>,

    /// New pods (replacements and scale-ups) avoid the nodes where this job recently lost a pod
    /// because of the node: NodeLost, NodeShutdown, NodeRejected (the kubelet refused the pod,
    /// e.g. UnexpectedAdmissionError or `OutOf<resource>` from a failing device plugin) and
    /// DeviceUnavailable (status.recentFailures). Failures of the training code say nothing
    /// about the node and are not counted. The avoidance is a preference (a node affinity term
    /// preferredDuringSchedulingIgnoredDuringExecution, weight 100, matchFields metadata.name
    /// NotIn each node), added to the template's own affinity: the scheduler picks another
    /// node when one fits, and still uses an avoided node rather than leave the pod Pending.
    /// Running pods are never moved. The job's AvoidingNodes events name the nodes. Default
    /// on.
    #[serde(default)]
    pub avoid_failed_nodes: AvoidFailedNodes,
}

/// Which nodes new pods avoid after node failures (`spec.failurePolicy.avoidFailedNodes`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AvoidFailedNodes {
    /// False: new pods go wherever the scheduler puts them. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Seconds a node failure counts: a node is avoided while this job lost a pod there
    /// because of the node within this many seconds. Default 1800 (30 minutes).
    #[serde(default = "default_avoid_window")]
    #[schemars(range(min = 1))]
    pub window_seconds: i32,

    /// The most nodes avoided at once: those of the most recent failures. Default 3.
    #[serde(default = "default_avoid_max_nodes")]
    #[schemars(range(min = 1))]
    pub max_nodes: i32,
}

fn default_avoid_window() -> i32 {
    1800
}
fn default_avoid_max_nodes() -> i32 {
    3
}

impl Default for AvoidFailedNodes {
    fn default() -> Self {
        AvoidFailedNodes {
            enabled: true,
            window_seconds: default_avoid_window(),
            max_nodes: default_avoid_max_nodes(),
        }
    }
}

fn default_max_application_restarts() -> i32 {
    3
}
fn default_max_infrastructure_restarts() -> i32 {
    10
}
/// 2: usage error (argparse, bash builtins); 126: not executable; 127: command not found.
pub fn default_permanent_exit_codes() -> Vec<i32> {
    vec![2, 126, 127]
}
fn default_pod_termination_timeout() -> i32 {
    15
}
fn default_node_lost_timeout() -> i32 {
    30
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            max_application_restarts: default_max_application_restarts(),
            max_infrastructure_restarts: default_max_infrastructure_restarts(),
            permanent_exit_codes: default_permanent_exit_codes(),
            retryable_exit_codes: Vec::new(),
            backoff: Backoff::default(),
            pod_termination_timeout_seconds: default_pod_termination_timeout(),
            node_lost_timeout_seconds: default_node_lost_timeout(),
            stall_timeout_seconds: None,
            avoid_failed_nodes: AvoidFailedNodes::default(),
        }
    }
}

/// Exponential backoff: the n-th failure of the same pod within the last hour waits
/// initialSeconds × 2^(n-1), at most maxSeconds, before the pod is recreated.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.initialSeconds <= self.maxSeconds")
        .message("backoff.initialSeconds must be less than or equal to backoff.maxSeconds")
        .reason(Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Delay before the first recreation of a failed pod, in seconds. Default 10.
    #[serde(default = "default_backoff_initial")]
    #[schemars(range(min = 0))]
    pub initial_seconds: i32,
    /// Longest delay, in seconds. Default 300.
    #[serde(default = "default_backoff_max")]
    #[schemars(range(min = 0))]
    pub max_seconds: i32,
}

fn default_backoff_initial() -> i32 {
    10
}
fn default_backoff_max() -> i32 {
    300
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_seconds: default_backoff_initial(),
            max_seconds: default_backoff_max(),
        }
    }
}

/// Suspension, deadline, clean-up and time to live.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("has(self.managedBy) == has(oldSelf.managedBy) && (!has(self.managedBy) || self.managedBy == oldSelf.managedBy)")
        .message("runPolicy.managedBy cannot change: the controller that runs the job is chosen when it is created")
        .field_path(".managedBy")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct RunPolicy {
    /// True stops the job: its pods are deleted (the Service stays) and the Suspended condition
    /// is set; false again starts it anew, from your checkpoints. The deadline does not run
    /// while suspended. Default false.
    #[serde(default)]
    pub suspend: bool,

    /// Seconds the job may run, counted from its start (or its last resume); then its pods are
    /// stopped and it fails with reason DeadlineExceeded. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,

    /// Seconds after the job succeeded or failed when it is deleted, with its pods and Service.
    /// Unset: kept until you delete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// Which pods to delete when the job finishes: None (keep all), Running (delete the pods
    /// still pending or running, keep finished ones for their logs) or All. Default Running.
    #[serde(default)]
    pub clean_pod_policy: CleanPodPolicy,

    /// The controller that runs this job. Unset or `elasticjob.dev/elasticjob-operator`: this
    /// operator. Any other value (MultiKueue's `kueue.x-k8s.io/multikueue`, for example): this
    /// operator leaves the job, its pods and its status alone, as Kubernetes Jobs do with
    /// spec.managedBy. Cannot change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub managed_by: Option<String>,
}

/// spec.runPolicy.managedBy of the jobs this operator runs (also the value it takes when unset).
pub const MANAGED_BY_THIS_OPERATOR: &str = "elasticjob.dev/elasticjob-operator";

impl RunPolicy {
    /// Whether this operator runs the job (spec.runPolicy.managedBy unset or this operator).
    pub fn managed_here(&self) -> bool {
        self.managed_by
            .as_deref()
            .is_none_or(|m| m == MANAGED_BY_THIS_OPERATOR)
    }
}

/// How the job's pods are gang-scheduled (see spec.gang).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self == oldSelf")
        .message("gang cannot change while the job exists: its pods are already bound to a scheduler; delete the job and create it again")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct GangPolicy {
    /// The scheduler that runs the coscheduling plugin. Default `scheduler-plugins-scheduler`
    /// (the name scheduler-plugins' chart installs it under).
    #[serde(default = "default_gang_scheduler")]
    #[schemars(length(min = 1, max = 63))]
    pub scheduler_name: String,
    /// Seconds the pods of a gang wait in the scheduler for the rest of their minimum before
    /// all of them are sent back to the queue (the PodGroup's scheduleTimeoutSeconds).
    /// Default 60.
    #[serde(default = "default_gang_timeout")]
    #[schemars(range(min = 1))]
    pub schedule_timeout_seconds: i32,
}

pub fn default_gang_scheduler() -> String {
    "scheduler-plugins-scheduler".to_string()
}
fn default_gang_timeout() -> i32 {
    60
}

/// Which pods are deleted when the job finishes.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum CleanPodPolicy {
    None,
    #[default]
    Running,
    All,
}

/// Where the launcher (elastic-launch, a drop-in torchrun) comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LauncherSpec {
    /// True: an init container copies the launcher from the launcher image into the pod (an
    /// emptyDir at /elasticjob/bin), so your image needs nothing. False: your image must have
    /// `elastic-launch` on its PATH. Default true.
    #[serde(default = "default_true")]
    pub inject: bool,

    /// The launcher image used by the init container. Default: the operator's launcher image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// Pull policy of the launcher image: Always, IfNotPresent or Never. Default: Kubernetes'
    /// default for the image's tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,

    /// TCP port on which each pod's launcher serves its progress read-only (GET /status: state,
    /// rendezvous round, world size, worker restarts; GET /metrics for Prometheus). The
    /// operator reads it into status.launchers and status.workerRestarts; the pods get no
    /// Kubernetes API access for this. Must differ from rendezvous.port. Default 29401.
    #[serde(default = "default_status_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub status_port: i32,

    /// Python modules (for example torch) that standby interpreters import while the workers
    /// train, so that restarted workers start without waiting for the import (`--prewarm`).
    /// For DDP add torch._dynamo, which its constructor imports (about 2 s).
    /// Costs one idle interpreter per worker.
    /// Only for a Python command: `python [-u] script.py [args]` or `python [-u] -m module
    /// [args]` (the launcher then starts that interpreter itself, as PYTHON_EXEC), or `torchrun
    /// script.py [args]`; any other command is refused. Whatever those modules read from the
    /// environment at import time sees the pod's environment, not the worker's (no RANK yet).
    /// Default: none (workers start fresh, as under torchrun).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(
            length(min = 1, max = 253),
            regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
        )
    )]
    pub prewarm: Vec<String>,
}

fn default_status_port() -> i32 {
    29401
}

fn default_true() -> bool {
    true
}

impl Default for LauncherSpec {
    fn default() -> Self {
        LauncherSpec {
            inject: true,
            image: None,
            image_pull_policy: None,
            status_port: default_status_port(),
            prewarm: Vec::new(),
        }
    }
}
