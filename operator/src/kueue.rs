//! Admission through Kueue (kueue.x-k8s.io/v1beta2): a job labelled with a LocalQueue
//! (`kueue.x-k8s.io/queue-name`) runs only what its Workload is admitted for.
//!
//! The operator owns one Workload per queued job, `elasticjob-<job>`: one pod set, `workers`,
//! whose count is the pods asked for and whose minCount is minReplicas (Kueue's partial
//! admission), with the pod template the pods are made from and the priority of its class.
//! Kueue admits it for some count between the two; the job then runs exactly that many pods,
//! with the node labels and tolerations of the flavors it was given. When Kueue evicts the
//! Workload (preemption, a stopped queue), the job stops its pods and, once they are gone,
//! gives the quota back (clears the admission), so Kueue can queue it again; it runs again
//! when re-admitted. Scaling below the admitted count marks the difference reclaimable, so
//! Kueue can give it to others. A finished job finishes its Workload.
//!
//! Growing beyond the admitted count while running uses Kueue's Workload slices (its
//! `ElasticJobsViaWorkloadSlices` feature gate), for a job annotated
//! `kueue.x-k8s.io/elastic-job: "true"`: the operator asks for the new count with a
//! replacement slice that names the Workload it replaces. Kueue admits the slice as a whole
//! (its quota counted net of the one it replaces): it first finishes the old slice (reason
//! `WorkloadSliceReplaced`) and then, in a second write, admits the new one. Between the two
//! the job keeps running under the old slice's admission, so growing never stops a pod.
//! Without the annotation, the rest are asked for when the job is queued again.
//!
//! Everything here is a plain function over the Workload's JSON; the controller does the IO.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodTemplateSpec, Toleration};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};
use serde::Deserialize;
use serde_json::{Value, json};

use elasticjob_crds::spec::ElasticJob;
use elasticjob_crds::status::reason;

use crate::desired;
use crate::next_status::Admission;

/// The label that puts a job in a LocalQueue of its namespace.
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// The label naming a Kueue WorkloadPriorityClass (else the pods' PriorityClass counts).
pub const WORKLOAD_PRIORITY_LABEL: &str = "kueue.x-k8s.io/priority-class";
/// The Workload's only pod set.
pub const POD_SET: &str = "workers";
/// Kueue's opt-in to elastic jobs through Workload slices, on the ElasticJob and its
/// Workloads: a scale-up beyond the admitted count is asked for with a replacement slice
/// while the job runs, instead of waiting for the job to be queued again.
pub const ELASTIC_ANNOTATION: &str = "kueue.x-k8s.io/elastic-job";
/// On a replacement slice: `<namespace>/<name>` of the Workload it replaces.
pub const REPLACEMENT_FOR_ANNOTATION: &str = "kueue.x-k8s.io/workload-slice-replacement-for";
/// The reason of the Finished condition Kueue gives a slice it replaced.
const SLICE_REPLACED: &str = "WorkloadSliceReplaced";

fn kueue_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", kind),
        plural,
    )
}

pub fn workload_resource() -> ApiResource {
    kueue_resource("Workload", "workloads")
}

pub fn flavor_resource() -> ApiResource {
    kueue_resource("ResourceFlavor", "resourceflavors")
}

pub fn workload_priority_class_resource() -> ApiResource {
    kueue_resource("WorkloadPriorityClass", "workloadpriorityclasses")
}

/// The LocalQueue the job asks to be admitted by, if any.
pub fn queue_name(job: &ElasticJob) -> Option<&str> {
    job.labels()
        .get(QUEUE_LABEL)
        .map(String::as_str)
        .filter(|q| !q.is_empty())
}

/// Whether `workload` is one of job `job` (UID `uid`) in namespace `ns`: in its namespace,
/// labelled with its name (`elasticjob.dev/job-name`) and owned by it (a job deleted and made
/// again under its name has another UID; its predecessor's Workloads are not its own).
pub fn is_of_job(workload: &DynamicObject, ns: &str, job: &str, uid: &str) -> bool {
    workload.metadata.namespace.as_deref() == Some(ns)
        && workload
            .labels()
            .get(elasticjob_crds::names::LABEL_JOB_NAME)
            == Some(&job.to_string())
        && owned_by(workload, uid)
}

/// Whether `workload` has an owner of UID `uid`.
pub fn owned_by(workload: &DynamicObject, uid: &str) -> bool {
    workload.owner_references().iter().any(|o| o.uid == uid)
}

/// The job's `index`-th Workload: `elasticjob-<job>`, then `elasticjob-<job>-<index>` for the
/// ones asked for after it (a new count before admission, a resumed job, a replacement slice).
pub fn workload_name(job: &str, index: u32) -> String {
    match index {
        0 => format!("elasticjob-{job}"),
        n => format!("elasticjob-{job}-{n}"),
    }
}

/// The index of a Workload of the job, from its name (see [`workload_name`]).
fn workload_index(job: &str, name: &str) -> Option<u32> {
    match name.strip_prefix(workload_name(job, 0).as_str())? {
        "" => Some(0),
        rest => rest.strip_prefix('-')?.parse::<u32>().ok(),
    }
}

/// The index of the job's next Workload, after those it has (by name).
pub fn next_workload_index<'a>(job: &str, names: impl IntoIterator<Item = &'a str>) -> u32 {
    names
        .into_iter()
        .filter_map(|n| workload_index(job, n))
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

/// Whether the job asks Kueue to grow it through Workload slices while it runs.
pub fn uses_slices(job: &ElasticJob) -> bool {
    job.annotations()
        .get(ELASTIC_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// The name of the Workload a replacement slice replaces.
fn replaces(workload: &DynamicObject) -> Option<&str> {
    let key = workload.annotations().get(REPLACEMENT_FOR_ANNOTATION)?;
    Some(key.rsplit_once('/').map_or(key.as_str(), |(_, name)| name))
}

/// Where the Workload's priority comes from, and its value (read by the controller).
#[derive(Debug, Clone, PartialEq)]
pub struct Priority {
    /// `scheduling.k8s.io` PriorityClass or `kueue.x-k8s.io` WorkloadPriorityClass.
    pub group: &'static str,
    pub kind: &'static str,
    pub name: String,
    pub value: i32,
}

/// The priority class the job names: the `kueue.x-k8s.io/priority-class` label (a
/// WorkloadPriorityClass), else the pod template's priorityClassName.
pub fn priority_class(job: &ElasticJob) -> Option<(&'static str, &'static str, String)> {
    if let Some(name) = job.labels().get(WORKLOAD_PRIORITY_LABEL) {
        return Some(("kueue.x-k8s.io", "WorkloadPriorityClass", name.to_string()));
    }
    let name = job
        .spec
        .template
        .spec
        .as_ref()?
        .priority_class_name
        .clone()?;
    Some(("scheduling.k8s.io", "PriorityClass", name))
}

/// Which of the job's Workloads to make: its `index` (see [`workload_name`]), and the name of
/// the one it replaces when it is a slice asking for more pods than that one was admitted for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ask<'a> {
    pub index: u32,
    pub replaces: Option<&'a str>,
}

/// The job's Workload that asks the queue for its pods: `count` = the pods asked for now,
/// `minCount` = minReplicas when fewer (not on a replacement slice, which Kueue admits whole:
/// the slice it replaces keeps the pods admitted so far until then), and `template` as the
/// pods are made.
pub fn desired_workload(
    job: &ElasticJob,
    queue: &str,
    template: PodTemplateSpec,
    priority: Option<&Priority>,
    ask: Ask,
) -> Result<DynamicObject, desired::DesiredError> {
    let name = job.name_any();
    let count = job.spec.desired_replicas();
    let min = job.spec.min_pods() as i32;
    let mut pod_set = json!({"name": POD_SET, "count": count, "template": template});
    if min < count && ask.replaces.is_none() {
        pod_set["minCount"] = json!(min);
    }
    let mut annotations = BTreeMap::new();
    if uses_slices(job) {
        annotations.insert(ELASTIC_ANNOTATION.to_string(), "true".to_string());
    }
    if let Some(old) = ask.replaces {
        annotations.insert(
            REPLACEMENT_FOR_ANNOTATION.to_string(),
            format!("{}/{old}", job.namespace().unwrap_or_default()),
        );
    }
    let mut spec = json!({"queueName": queue, "podSets": [pod_set]});
    if let Some(p) = priority {
        spec["priority"] = json!(p.value);
        spec["priorityClassRef"] = json!({"group": p.group, "kind": p.kind, "name": p.name});
    }
    Ok(DynamicObject {
        types: Some(kube::api::TypeMeta {
            api_version: "kueue.x-k8s.io/v1beta2".into(),
            kind: "Workload".into(),
        }),
        metadata: ObjectMeta {
            name: Some(workload_name(&name, ask.index)),
            namespace: job.namespace(),
            labels: Some(desired::labels(&name)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![desired::owner_reference(job)?]),
            ..ObjectMeta::default()
        },
        data: json!({"spec": spec}),
    })
}

/// Whether an existing Workload asks for what `desired` asks (queue and counts). Only a
/// Workload without quota is replaced when not: an admitted one keeps its admission.
pub fn asks_the_same(existing: &DynamicObject, desired: &DynamicObject) -> bool {
    let ask = |w: &DynamicObject| {
        let s = &w.data["spec"];
        let ps = &s["podSets"][0];
        (
            s["queueName"].clone(),
            ps["count"].clone(),
            ps["minCount"].clone(),
        )
    };
    ask(existing) == ask(desired)
}

/// A Workload condition, as Kueue writes it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WorkloadCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

/// What the Workload's status says, in the parts the operator acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No quota reserved: wait. The message is Kueue's, when it gave one.
    Pending { message: String },
    /// Admitted for `count` pods, with these flavors (by resource).
    Admitted {
        cluster_queue: String,
        count: i32,
        flavors: Vec<String>,
    },
    /// Kueue took the admission back (Evicted True) and waits for the pods to stop.
    Evicted { reason: String, message: String },
    /// Finished (by us, or replaced): nothing to run under it.
    Finished,
}

fn conditions(workload: &DynamicObject) -> Vec<WorkloadCondition> {
    serde_json::from_value(workload.data["status"]["conditions"].clone()).unwrap_or_default()
}

fn is_true(conds: &[WorkloadCondition], type_: &str) -> Option<WorkloadCondition> {
    conds
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .cloned()
}

/// Reads the Workload's status.
pub fn verdict(workload: &DynamicObject) -> Verdict {
    if is_true(&conditions(workload), "Finished").is_some() {
        return Verdict::Finished;
    }
    admission_verdict(workload)
}

/// The Workload's status, Finished aside: a slice Kueue replaced keeps its admission, which
/// the job runs under until the replacement's is written.
fn admission_verdict(workload: &DynamicObject) -> Verdict {
    let conds = conditions(workload);
    let status = &workload.data["status"];
    let reserved = is_true(&conds, "QuotaReserved").is_some() && !status["admission"].is_null();
    if let Some(ev) = is_true(&conds, "Evicted")
        && reserved
    {
        return Verdict::Evicted {
            reason: ev.reason,
            message: ev.message,
        };
    }
    if reserved && is_true(&conds, "Admitted").is_some() {
        let admission = &status["admission"];
        let assignment = admission["podSetAssignments"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == POD_SET))
            .cloned()
            .unwrap_or(Value::Null);
        let asked = workload.data["spec"]["podSets"][0]["count"]
            .as_i64()
            .unwrap_or(0);
        let count = assignment["count"].as_i64().unwrap_or(asked) as i32;
        let mut flavors: Vec<String> = assignment["flavors"]
            .as_object()
            .map(|f| {
                f.values()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        flavors.sort();
        flavors.dedup();
        return Verdict::Admitted {
            cluster_queue: admission["clusterQueue"].as_str().unwrap_or("").to_string(),
            count,
            flavors,
        };
    }
    let message = conds
        .iter()
        .find(|c| c.type_ == "QuotaReserved" && c.status == "False")
        .or_else(|| conds.iter().find(|c| c.type_ == "Admitted"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    Verdict::Pending { message }
}

/// The job's Workloads, sorted out.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    /// The Workload the job runs under (or waits for), with what its status says.
    pub current: Option<(DynamicObject, Verdict)>,
    /// A replacement slice of `current`, asking for more pods, not admitted yet.
    pub replacement: Option<DynamicObject>,
    /// Whether Kueue is admitting `replacement`: it finished `current` for it and is about to
    /// write the replacement's admission. The job runs under `current`'s until then.
    pub replacing: bool,
    /// The rest, to delete: finished ones (they hold nothing), ones left behind by a crash
    /// between a delete and a create, a predecessor once its replacement is admitted.
    pub stale: Vec<DynamicObject>,
}

/// Sorts out the job's Workloads (all it owns). One is current, at most one replacement slice
/// asks for more; ones being deleted are gone already.
pub fn standing(job: &str, all: Vec<DynamicObject>) -> Standing {
    let (mut finished, mut live): (Vec<_>, Vec<_>) = all
        .into_iter()
        .filter(|w| w.metadata.deletion_timestamp.is_none())
        .partition(|w| verdict(w) == Verdict::Finished);
    // Names are numbered in the order they were made (timestamps have seconds only).
    live.sort_by_key(|w| workload_index(job, &w.name_any()));
    let mut out = Standing::default();
    if let Some(i) = live.iter().rposition(|w| replaces(w).is_some()) {
        let slice = live.remove(i);
        let old = replaces(&slice).unwrap_or_default().to_string();
        let is_old = |w: &DynamicObject| w.name_any() == old;
        if !matches!(admission_verdict(&slice), Verdict::Pending { .. }) {
            // Admitted as the replacement: it is the job's Workload now.
            out.current = Some((slice.clone(), verdict(&slice)));
        } else if let Some(j) = live.iter().position(is_old) {
            let old = live.remove(j);
            out.current = Some((old.clone(), verdict(&old)));
            out.replacement = Some(slice);
        } else if let Some(j) = finished
            .iter()
            .position(|w| is_old(w) && finished_reason(w).as_deref() == Some(SLICE_REPLACED))
        {
            let old = finished.remove(j);
            out.current = Some((old.clone(), admission_verdict(&old)));
            out.replacement = Some(slice);
            out.replacing = true;
        } else {
            // What it replaced is gone: it is a Workload like any other.
            live.push(slice);
        }
    }
    if out.current.is_none() {
        out.current = live.pop().map(|w| {
            let v = verdict(&w);
            (w, v)
        });
    }
    out.stale = live.into_iter().chain(finished).collect();
    out
}

fn finished_reason(workload: &DynamicObject) -> Option<String> {
    is_true(&conditions(workload), "Finished").map(|c| c.reason)
}

/// What to do about a replacement slice, given the pods admitted and the pods asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceStep {
    Nothing,
    /// Ask for the job's pods with a new slice replacing the current Workload.
    Create,
    /// The replacement asks for another count than the job now asks for: ask anew.
    Replace,
    /// The replacement is not needed any more.
    Delete,
}

pub fn slice_step(
    uses_slices: bool,
    admitted: i32,
    asked: i32,
    replacement: Option<&DynamicObject>,
) -> SliceStep {
    let wants_more = uses_slices && asked > admitted;
    match (replacement, wants_more) {
        (None, true) => SliceStep::Create,
        (None, false) => SliceStep::Nothing,
        (Some(r), true) if r.data["spec"]["podSets"][0]["count"] == asked => SliceStep::Nothing,
        (Some(_), true) => SliceStep::Replace,
        (Some(_), false) => SliceStep::Delete,
    }
}

/// What the job's status says of the verdict (the Queued condition).
pub fn admission(
    queue: &str,
    workload: &str,
    verdict: &Verdict,
    asked: i32,
    uses_slices: bool,
) -> Admission {
    match verdict {
        Verdict::Admitted {
            cluster_queue,
            count,
            ..
        } => Admission::Admitted {
            message: if *count < asked && uses_slices {
                format!(
                    "admitted by ClusterQueue {cluster_queue} (LocalQueue {queue}) for {count} of the {asked} pods asked; a Workload slice asks for all {asked}, and the others start when it is admitted"
                )
            } else if *count < asked {
                format!(
                    "admitted by ClusterQueue {cluster_queue} (LocalQueue {queue}) for {count} of the {asked} pods asked; the rest are asked for when the job is queued again (annotate the job {ELASTIC_ANNOTATION}=true, with Kueue's ElasticJobsViaWorkloadSlices feature gate on, to ask while it runs)"
                )
            } else {
                format!(
                    "admitted by ClusterQueue {cluster_queue} (LocalQueue {queue}) for {count} pods"
                )
            },
        },
        Verdict::Evicted {
            reason: why,
            message,
        } => Admission::Waiting {
            reason: reason::EVICTED,
            message: format!(
                "LocalQueue {queue} took the job's admission back ({why}: {message}); its pods are stopped and it waits to be admitted again (Workload {workload})"
            ),
        },
        Verdict::Pending { message } => Admission::Waiting {
            reason: reason::PENDING_ADMISSION,
            message: if message.is_empty() {
                format!("waiting for LocalQueue {queue} to admit Workload {workload}")
            } else {
                format!("waiting for LocalQueue {queue} to admit Workload {workload}: {message}")
            },
        },
        Verdict::Finished => Admission::Waiting {
            reason: reason::PENDING_ADMISSION,
            message: format!("Workload {workload} is finished; a new one is asked for"),
        },
    }
}

/// The job as admitted: `count` pods at most (within its bounds), placed with the flavors'
/// node labels and tolerations.
pub fn admitted_job(
    job: &ElasticJob,
    count: i32,
    node_labels: &BTreeMap<String, String>,
    tolerations: &[Toleration],
) -> ElasticJob {
    let mut j = job.clone();
    let run = j.spec.desired_replicas().min(count);
    j.spec.replicas = Some(run.max(j.spec.min_pods() as i32));
    if !node_labels.is_empty() || !tolerations.is_empty() {
        let pod = j.spec.template.spec.get_or_insert_with(Default::default);
        pod.node_selector
            .get_or_insert_with(BTreeMap::new)
            .extend(node_labels.clone());
        let tol = pod.tolerations.get_or_insert_with(Vec::new);
        for t in tolerations {
            if !tol.contains(t) {
                tol.push(t.clone());
            }
        }
    }
    j
}

/// A ResourceFlavor's node labels and tolerations.
pub fn flavor_placement(flavor: &DynamicObject) -> (BTreeMap<String, String>, Vec<Toleration>) {
    let spec = &flavor.data["spec"];
    (
        serde_json::from_value(spec["nodeLabels"].clone()).unwrap_or_default(),
        serde_json::from_value(spec["tolerations"].clone()).unwrap_or_default(),
    )
}

/// The pods of an admitted Workload that the job no longer runs (scaled below the admitted
/// count), for `status.reclaimablePods`; None when it already says so.
pub fn reclaimable_patch(workload: &DynamicObject, admitted: i32, running: i32) -> Option<Value> {
    let want = (admitted - running).max(0);
    let have = workload.data["status"]["reclaimablePods"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == POD_SET))
        .and_then(|p| p["count"].as_i64())
        .unwrap_or(0) as i32;
    (want != have).then(|| {
        let pods = if want == 0 {
            json!([])
        } else {
            json!([{"name": POD_SET, "count": want}])
        };
        precondition(workload, json!({"status": {"reclaimablePods": pods}}))
    })
}

/// After an eviction, once the job's pods are gone: the quota goes back (no admission,
/// QuotaReserved False), and a preempted Workload is marked requeued, as Kueue's own job
/// integrations do, so Kueue queues it again.
pub fn release_patch(workload: &DynamicObject, why: &str, message: &str, now: Timestamp) -> Value {
    let requeued = matches!(why, "Preempted" | "NodeFailures");
    let mut conds = raw_conditions(workload);
    set(
        &mut conds, "Requeued", requeued, why, message, now, workload,
    );
    set(
        &mut conds,
        "QuotaReserved",
        false,
        "Pending",
        message,
        now,
        workload,
    );
    set(
        &mut conds,
        "Admitted",
        false,
        "NoReservation",
        "The workload has no reservation",
        now,
        workload,
    );
    precondition(
        workload,
        json!({"status": {"admission": null, "conditions": conds}}),
    )
}

/// The job finished: its Workload is Finished (reason Succeeded or Failed), which releases
/// its quota.
pub fn finish_patch(
    workload: &DynamicObject,
    succeeded: bool,
    message: &str,
    now: Timestamp,
) -> Value {
    let mut conds = raw_conditions(workload);
    let why = if succeeded { "Succeeded" } else { "Failed" };
    set(&mut conds, "Finished", true, why, message, now, workload);
    precondition(workload, json!({"status": {"conditions": conds}}))
}

fn raw_conditions(workload: &DynamicObject) -> Vec<Value> {
    workload.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Sets a condition in place; its lastTransitionTime moves only when its status does.
fn set(
    conds: &mut Vec<Value>,
    type_: &str,
    status: bool,
    why: &str,
    message: &str,
    now: Timestamp,
    workload: &DynamicObject,
) {
    let status = if status { "True" } else { "False" };
    let mut c = json!({
        "type": type_,
        "status": status,
        "reason": if why.is_empty() { "Unknown" } else { why },
        "message": message.chars().take(32 * 1024).collect::<String>(),
        "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "observedGeneration": workload.metadata.generation.unwrap_or(0),
    });
    match conds.iter_mut().find(|x| x["type"] == type_) {
        Some(old) => {
            if old["status"] == status {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = c;
        }
        None => conds.push(c),
    }
}

/// A merge patch that applies only to the Workload as read (its resourceVersion): Kueue
/// writes the same status, and a lost update would lose an admission or an eviction.
fn precondition(workload: &DynamicObject, mut patch: Value) -> Value {
    patch["metadata"] = json!({"resourceVersion": workload.metadata.resource_version});
    patch
}

#[cfg(test)]
mod tests;
