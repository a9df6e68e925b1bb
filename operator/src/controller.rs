//! The reconcile loop: the IO around [`crate::plan()`].
//!
//! For each ElasticJob (kube-rs `Controller`, woken by changes of the job's spec, labels,
//! annotations or deletion, not its status, which only this loop writes; by changes of the pods,
//! Service and Kueue Workloads it owns; by the plan's requeue time; and by the launcher poller
//! ([`crate::poller`]) when a launcher's progress changes): read its pods from the pod cache
//! ([`crate::pod_cache`]; a job waits while the cache does not show its last pod writes) and its
//! launchers' progress from the poller, compute the plan, write the status if it changed, carry
//! out the actions (the Service only if the cached one differs), publish the events. Writes are
//! idempotent and names are
//! deterministic, so an operator that crashes mid-reconcile and starts again neither duplicates
//! a pod nor loses what it recorded: the status is written before any pod is deleted, and a
//! failure is recorded once by its pod's UID.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use elasticjob_crds::names;
use elasticjob_crds::spec::ElasticJob;
use elasticjob_crds::status::{ElasticJobStatus, JobState, reason};
use elasticjob_crds::validate::{describe, validate, validate_edit};

use crate::bad_nodes;
use crate::caches::{Caches, KueueCaches, Scope};
use crate::desired::{self, Settings};
use crate::event::{Event, EventType};
use crate::expectations::{Expect, JobKey};
use crate::kueue;
use crate::metrics::Outcome;
use crate::metrics::{BudgetLabel, Metrics, ReasonLabel};
use crate::next_status::{self, Admission, RejectedEdit, Verdict};
use crate::observed::ObservedPod;
use crate::plan::{Action, DeleteReason, Plan, plan_admitted};
use crate::pod_cache::PodCache;
use crate::poll::LauncherClient;
use crate::poller::{self, Poller, PollerConfig};
use crate::queueing;
use crate::workload_writes::Writes as WorkloadWrites;

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "elasticjob-operator";
/// Pod creations in flight at once.
const CREATE_CONCURRENCY: usize = 16;
/// Look again at least this often, even if nothing changes.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a running job is looked at even if nothing changes: its goodput sample period.
const GOODPUT_RESYNC: Duration = Duration::from_secs(crate::training::GOODPUT_SAMPLE_EVERY as u64);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("building the objects of {job}: {source}")]
    Desired {
        job: String,
        #[source]
        source: desired::DesiredError,
    },
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Nodes, for the readiness of each pod's node (a lost node's pods); trimmed to their
    /// Ready condition ([`crate::caches::trim_node`]).
    pub nodes: Store<Node>,
    /// The jobs' pods, from the watch that also triggers their jobs.
    pub pods: Arc<PodCache>,
    /// The jobs' Services, so an unchanged one is not applied again.
    pub services: Store<Service>,
    /// Tells launchers why their pods stop.
    pub launchers: LauncherClient,
    /// Reads the launchers' progress in the background; the reconcile says which pods to read
    /// and takes what was read last, without waiting on the network.
    pub poller: Poller,
    /// By job UID: the pods that could not be created because something else holds their name
    /// (index → what), as the last creations found; the next status says so.
    pub name_conflicts: Mutex<HashMap<String, BTreeMap<u32, String>>>,
    /// By job UID: the generation whose spec is saved as the job's last valid one.
    pub saved_specs: Mutex<HashMap<String, i64>>,
    /// Kueue's Workloads and ResourceFlavors; `None` when the cluster does not serve Kueue's
    /// Workload API (looked up at start).
    pub kueue: Option<KueueCaches>,
    /// This process's recent writes to each job's Workloads: such a job reads them with a LIST
    /// until the Workload cache surely shows the write.
    pub workload_writes: Mutex<WorkloadWrites>,
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// One reconcile of one job.
pub async fn reconcile(job: Arc<ElasticJob>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let _in_flight = ctx.metrics.reconcile_started();
    let result = reconcile_job(&job, &ctx).await;
    let (outcome, result) = match result {
        Ok(Reconciled::Done(r)) => (Outcome::Ok, Ok(r)),
        Ok(Reconciled::Stale(r)) => (Outcome::Stale, Ok(r)),
        Err(e) => (Outcome::Error, Err(e)),
    };
    ctx.metrics
        .observe_reconcile(outcome, started.elapsed().as_secs_f64());
    result
}

async fn reconcile_job(job: &ElasticJob, ctx: &Context) -> Result<Reconciled, Error> {
    let (Some(ns), Some(uid)) = (job.namespace(), job.uid()) else {
        return Ok(Reconciled::Done(Requeue::await_change()));
    };
    let name = job.name_any();
    let key: JobKey = (ns.clone(), name.clone());
    let job_ref = reflector::ObjectRef::from_obj(job);
    if !job.spec.run_policy.managed_here() {
        // Another controller runs it (spec.runPolicy.managedBy): leave it alone.
        ctx.poller.untrack(&job_ref);
        return Ok(Reconciled::Done(Requeue::await_change()));
    }
    if job.meta().deletion_timestamp.is_some() {
        // Garbage collection removes the pods, the Service and the Workloads through their owner
        // references.
        ctx.pods.forget(&key);
        ctx.workload_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(&key);
        ctx.poller.untrack(&job_ref);
        return Ok(Reconciled::Done(Requeue::await_change()));
    }
    // Before the first list is in, every job would look as if it had no pods.
    ctx.pods.wait_until_synced().await;
    let unmet = ctx.pods.unmet(&key);
    if !unmet.is_empty() {
        // The watch event that shows the last write triggers the job again; this is a fallback.
        debug!(job = %name, namespace = %ns, pods = ?unmet, "the pod cache does not show this job's last writes yet");
        return Ok(Reconciled::Stale(Requeue::requeue(STALE_RETRY)));
    }
    let (job, rejected) = &job_to_run(ctx, job, &ns, &uid).await?;
    let job: &ElasticJob = job;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = ctx.pods.pods(&key);
    let (job, admission) = &admit(ctx, job, &ns, &pods).await?;
    let job: &ElasticJob = job;
    let trainer = desired::trainer_name(job);
    let observe = |p: &Pod| {
        let node_ready = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .map(|n| node_is_ready(&ctx.nodes, n));
        ObservedPod::from_pod(&name, &uid, trainer.as_deref(), p, node_ready)
    };
    let mut observed: Vec<ObservedPod> = pods.iter().filter_map(|p| observe(p)).collect();
    for pod in unconfirmed_absences(job, &observed) {
        // Charged as vanished if it is really gone: the cache must not be the only witness.
        let fresh = pods_api
            .get_opt(&pod.name)
            .await
            .map_err(kube_err(format!("reading pod {ns}/{}", pod.name)))?;
        if let Some(o) = fresh
            .filter(|p| p.uid() == pod.uid)
            .and_then(|p| observe(&p))
        {
            debug!(job = %name, namespace = %ns, pod = %o.name, "a running pod not in the cache yet");
            observed.push(o);
        }
    }
    if job_is_active(job) {
        let port = job.spec.launcher.status_port;
        ctx.poller.track(&job_ref, poller::targets(&observed, port));
        ctx.poller.fill(&mut observed);
    } else {
        ctx.poller.untrack(&job_ref);
    }
    let now = Timestamp::now();
    let mut plan = plan_admitted(job, &observed, now, admission);
    debug!(job = %name, namespace = %ns, verdict = ?plan.verdict, actions = ?plan.actions, "plan");

    // Status first: a failure is recorded (by pod UID) before its pod is deleted, so a crash
    // in between neither loses nor double-counts it.
    let old = job.status.clone().unwrap_or_default();
    let conflicts = name_conflicts_of(ctx, &uid, job);
    next_status::name_conflicts(&mut plan.status, &conflicts, now, job.metadata.generation);
    plan.events.extend(next_status::rejected_edit(
        &mut plan.status,
        rejected.as_ref(),
        now,
        job.metadata.generation,
    ));
    if plan.status != old {
        if !write_status(ctx, job, &ns, &plan.status).await? {
            // The job changed since the cache gave it to us (often: our own last status
            // write, not seen yet). Acting on it could count a failure twice or undo a
            // condition; the watch event of the change reconciles again, this is a fallback.
            debug!(job = %name, namespace = %ns, "the job changed since it was read; reconciling the fresh one");
            return Ok(Reconciled::Stale(Requeue::requeue(STALE_RETRY)));
        }
        count_restarts(&ctx.metrics, &old, &plan.status);
    }
    publish_events(ctx, job, &plan.events).await;
    if kueue::queue_name(job).is_some() {
        match plan.verdict {
            Verdict::Finished(state) => {
                queueing::release(ctx, job, &ns, Some(state == JobState::Succeeded)).await
            }
            Verdict::Suspended => queueing::release(ctx, job, &ns, None).await,
            Verdict::Active | Verdict::Queued => {}
        }
    }
    let found = execute(ctx, job, &ns, &plan).await?;
    let warnings = remember_conflicts(ctx, &uid, job, &plan, found);
    if !warnings.is_empty() {
        publish_events(ctx, job, &warnings).await;
        // Said in the status by the next reconcile.
        return Ok(Reconciled::Done(Requeue::requeue(STALE_RETRY)));
    }
    // The poller asks for a reconcile when a launcher's progress changes; a running job is
    // still looked at every goodput sample period, so its goodput stays as fresh when nothing
    // changes (no network IO: the progress is read from the poller).
    let resync = if job_is_active(job) && observed.iter().any(ObservedPod::is_running) {
        GOODPUT_RESYNC
    } else {
        RESYNC
    };
    Ok(Reconciled::Done(match plan.requeue_after {
        Some(d) => Requeue::requeue(d.clamp(Duration::from_millis(200), resync)),
        None => Requeue::requeue(resync),
    }))
}

/// How a reconcile ended, for the duration metric.
enum Reconciled {
    /// It acted on what it saw.
    Done(Requeue),
    /// It did nothing: the job or its pods in the cache were older than the operator's own
    /// last writes.
    Stale(Requeue),
}

/// The pods the job's last status saw running that the cache no longer shows and whose
/// absence would be charged (`next_status::vanished_pods`).
fn unconfirmed_absences(job: &ElasticJob, observed: &[ObservedPod]) -> Vec<ObservedPod> {
    let Some(status) = &job.status else {
        return Vec::new();
    };
    let desired = job.spec.desired_replicas().max(0) as u32;
    next_status::vanished_pods(job, &status.launchers, observed, desired)
}

/// The job as its queue admits it, and what its status says of that: as it is when it is not
/// queued (no `kueue.x-k8s.io/queue-name` label), finished or suspended.
async fn admit<'a>(
    ctx: &Context,
    job: &'a ElasticJob,
    ns: &str,
    pods: &[Arc<Pod>],
) -> Result<(Cow<'a, ElasticJob>, Admission), Error> {
    let Some(queue) = kueue::queue_name(job) else {
        return Ok((Cow::Borrowed(job), Admission::Unqueued));
    };
    let finished = job
        .status
        .as_ref()
        .is_some_and(|s| next_status::finished_state(&s.conditions).is_some());
    if finished || job.spec.run_policy.suspend {
        return Ok((Cow::Borrowed(job), Admission::Unqueued));
    }
    let active = pods
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded") | Some("Failed"))
        })
        .count();
    queueing::admit(ctx, job, ns, queue, active).await
}

/// The job to act on: as it is when its spec is valid (saved as its last valid spec once per
/// generation); with its last valid spec when an edit made the spec invalid after that, so an
/// edit the apiserver accepted (one without CEL, or one CEL cannot judge) never stops a running
/// job; as it is when no valid spec was ever saved (it fails, as a new invalid job does).
async fn job_to_run<'a>(
    ctx: &Context,
    job: &'a ElasticJob,
    ns: &str,
    uid: &str,
) -> Result<(Cow<'a, ElasticJob>, Option<RejectedEdit>), Error> {
    let finished = job
        .status
        .as_ref()
        .is_some_and(|s| next_status::finished_state(&s.conditions).is_some());
    if finished {
        ctx.saved_specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
        return Ok((Cow::Borrowed(job), None));
    }
    let generation = job.metadata.generation.unwrap_or_default();
    let valid = validate(job);
    let saved_already = ctx
        .saved_specs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(uid)
        == Some(&generation);
    if valid.is_ok() && saved_already {
        return Ok((Cow::Borrowed(job), None));
    }
    let saved = saved_specs(ctx, job, ns).await?;
    let last_valid = desired::newest_valid_spec(&saved, uid);
    let issues = match (valid, &last_valid) {
        (Err(issues), _) => issues,
        (Ok(()), Some((_, running))) => validate_edit(running, &job.spec),
        (Ok(()), None) => Vec::new(),
    };
    if issues.is_empty() {
        save_valid_spec(ctx, job, ns, &saved).await?;
        ctx.saved_specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_string(), generation);
        return Ok((Cow::Borrowed(job), None));
    }
    let Some((running_generation, spec)) = last_valid else {
        return Ok((Cow::Borrowed(job), None));
    };
    let mut run = job.clone();
    run.spec = spec;
    Ok((
        Cow::Owned(run),
        Some(RejectedEdit {
            issues: describe(&issues),
            running_generation,
        }),
    ))
}

/// Saves the job's (valid) spec as this generation's ControllerRevision and deletes the older
/// ones (`saved`): the newest is the one a bad edit falls back to.
async fn save_valid_spec(
    ctx: &Context,
    job: &ElasticJob,
    ns: &str,
    saved: &[ControllerRevision],
) -> Result<(), Error> {
    let revision = desired::valid_spec_revision(job).map_err(|source| Error::Desired {
        job: format!("{ns}/{}", job.name_any()),
        source,
    })?;
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), &revision).await {
        Ok(_) => {}
        // Saved by an earlier reconcile, or an operator before this one.
        Err(e) if is_status(&e, 409) => {}
        Err(e) => {
            return Err(kube_err(format!(
                "saving the spec of {ns}/{} as ControllerRevision {}",
                job.name_any(),
                revision.name_any()
            ))(e));
        }
    }
    for old in saved.iter().filter(|r| r.revision < revision.revision) {
        let name = old.name_any();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                return Err(kube_err(format!("deleting ControllerRevision {ns}/{name}"))(e));
            }
        }
    }
    Ok(())
}

/// The job's saved specs (ControllerRevisions with its label).
async fn saved_specs(
    ctx: &Context,
    job: &ElasticJob,
    ns: &str,
) -> Result<Vec<ControllerRevision>, Error> {
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), ns);
    let name = job.name_any();
    let list = api
        .list(&ListParams::default().labels(&names::selector(&name)))
        .await
        .map_err(kube_err(format!("listing the saved specs of {ns}/{name}")))?;
    Ok(list.items)
}

/// Neither finished nor suspended: its launchers' progress is worth reading.
fn job_is_active(job: &ElasticJob) -> bool {
    let status = job.status.as_ref();
    let finished =
        status.is_some_and(|s| crate::next_status::finished_state(&s.conditions).is_some());
    !finished && !job.spec.run_policy.suspend
}

/// What of a job is worth a reconcile: its identity, generation (spec), labels, annotations
/// and deletion. Not its status, which only the operator writes.
fn job_change(job: &ElasticJob) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = job.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.deletion_timestamp.as_ref().map(|t| t.0).hash(&mut h);
    Some(h.finish())
}

/// Ready unless the node says otherwise or is gone (`Some(false)`); unknown nodes that the
/// cache has never seen count as gone only once the cache is filled (it is, before reconciles).
fn node_is_ready(nodes: &Store<Node>, name: &str) -> bool {
    let Some(node) = nodes.get(&reflector::ObjectRef::new(name)) else {
        return false;
    };
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// How soon a reconcile that read a job older than the apiserver's is retried.
const STALE_RETRY: Duration = Duration::from_millis(500);

/// Writes `status`; false, and nothing written, when the job has changed since `job` was read.
async fn write_status(
    ctx: &Context,
    job: &ElasticJob,
    ns: &str,
    status: &ElasticJobStatus,
) -> Result<bool, Error> {
    let name = job.name_any();
    let api: Api<ElasticJob> = Api::namespaced(ctx.client.clone(), ns);
    let patch = status_patch(job, status);
    match api
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 409) => Ok(false),
        Err(e) => Err(kube_err(format!("writing the status of {ns}/{name}"))(e)),
    }
}

/// The server-side apply of `status`, computed from `job`: it carries the job's
/// resourceVersion, so the apiserver refuses it (409) when the job has changed since (a status
/// computed from a cache that had not yet seen the last write would overwrite that write).
pub fn status_patch(job: &ElasticJob, status: &ElasticJobStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": ElasticJob::api_version(&()),
        "kind": ElasticJob::kind(&()),
        "metadata": {
            "name": job.name_any(),
            "resourceVersion": job.resource_version(),
        },
        "status": status,
    })
}

fn count_restarts(m: &Metrics, old: &ElasticJobStatus, new: &ElasticJobStatus) {
    for (budget, before, after) in [
        (
            "application",
            old.application_restarts,
            new.application_restarts,
        ),
        (
            "infrastructure",
            old.infrastructure_restarts,
            new.infrastructure_restarts,
        ),
        ("worker", old.worker_restarts, new.worker_restarts),
    ] {
        if after > before {
            m.restarts
                .get_or_create(&BudgetLabel {
                    budget: budget.into(),
                })
                .inc_by((after - before) as u64);
        }
    }
}

async fn publish_events(ctx: &Context, job: &ElasticJob, events: &[Event]) {
    let regarding = job.object_ref(&());
    for e in events {
        let secondary = e.pod.as_ref().map(|p| ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(p.clone()),
            namespace: job.namespace(),
            ..Default::default()
        });
        let ev = KubeEvent {
            type_: match e.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: e.reason.clone(),
            note: Some(truncate_note(&e.note)),
            action: "Reconcile".into(),
            secondary,
        };
        // An event that cannot be published is not worth failing the reconcile for.
        if let Err(err) = ctx.recorder.publish(&ev, &regarding).await {
            if namespace_terminating(&err) {
                debug!(job = %job.name_any(), reason = %e.reason, "publishing an event: {err}");
            } else {
                warn!(job = %job.name_any(), reason = %e.reason, "publishing an event: {err}");
            }
        }
    }
}

/// An event's note as the apiserver takes it: at most 1024 bytes (cut at a char boundary, with
/// an ellipsis).
fn truncate_note(note: &str) -> String {
    const MAX: usize = 1024;
    if note.len() <= MAX {
        return note.to_string();
    }
    let mut end = MAX - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &note[..end])
}

/// Carries out the plan; returns the pods that could not be created because something else
/// holds their name (index → what).
async fn execute(
    ctx: &Context,
    job: &ElasticJob,
    ns: &str,
    plan: &Plan,
) -> Result<BTreeMap<u32, String>, Error> {
    let name = job.name_any();
    let desired_err = |source| Error::Desired {
        job: format!("{ns}/{name}"),
        source,
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let key: JobKey = (ns.to_string(), name.clone());
    // Pod creations go out concurrently (a 256-replica job is created at the apiserver's pace,
    // not one round trip at a time); everything else in the plan's order.
    let creates: Vec<u32> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::CreatePod { index } => Some(*index),
            _ => None,
        })
        .collect();
    if !creates.is_empty() {
        ensure_store_token(ctx, job, ns).await?;
        queueing::apply_pod_group(ctx, job, ns).await?;
    }
    // New pods avoid the nodes of the failures the status (just written) records.
    let avoid = &job.spec.failure_policy.avoid_failed_nodes;
    let avoided = if creates.is_empty() {
        Vec::new()
    } else {
        bad_nodes::avoided_nodes(&plan.status.recent_failures, avoid, Timestamp::now())
    };
    let new_pods: Vec<String> = creates.iter().map(|&i| names::pod_name(&name, i)).collect();
    if let Some(event) = bad_nodes::event(&new_pods, &avoided, avoid) {
        info!(job = %name, namespace = %ns, pods = ?new_pods, nodes = ?avoided, "new pods avoid nodes that lost pods of the job");
        publish_events(ctx, job, &[event]).await;
    }
    let avoided = &avoided;
    let created = futures::stream::iter(creates)
        .map(|index| create_pod(ctx, job, &pods, index, avoided))
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let conflicts: BTreeMap<u32, String> = created
        .into_iter()
        .collect::<Result<Vec<Option<(u32, String)>>, Error>>()?
        .into_iter()
        .flatten()
        .collect();
    // Launchers about to be stopped first learn why (for their workers' stop notice), all at
    // once and each within a bound: a launcher that does not answer is deleted all the same.
    let port = job.spec.launcher.status_port;
    let tells = plan.actions.iter().filter_map(|a| match a {
        Action::DeletePod { tell: Some(t), .. } => {
            Some(ctx.launchers.tell_stop(&t.ip, port, &t.request))
        }
        _ => None,
    });
    futures::future::join_all(tells).await;
    for action in &plan.actions {
        match action {
            Action::ApplyService => {
                let svc = desired::service(job).map_err(desired_err)?;
                let cached = ctx
                    .services
                    .get(&reflector::ObjectRef::new(&svc.name_any()).within(ns));
                if cached.is_some_and(|live| desired::holds(&svc, live.as_ref())) {
                    continue;
                }
                let api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
                api.patch(
                    &svc.name_any(),
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&svc),
                )
                .await
                .map_err(kube_err(format!("applying the Service of {ns}/{name}")))?;
            }
            Action::CreatePod { .. } => {}
            Action::DeletePod {
                name: pod,
                uid,
                why,
                ..
            } => {
                delete_pod(ctx, &key, &pods, pod, uid.clone(), None).await?;
                ctx.metrics
                    .pod_deletions
                    .get_or_create(&ReasonLabel {
                        reason: delete_reason(*why).into(),
                    })
                    .inc();
                info!(job = %name, namespace = %ns, %pod, reason = delete_reason(*why), "deleted pod");
            }
            Action::ForceDeletePod { name: pod, uid } => {
                delete_pod(ctx, &key, &pods, pod, uid.clone(), Some(0)).await?;
                ctx.metrics
                    .pod_deletions
                    .get_or_create(&ReasonLabel {
                        reason: "force".into(),
                    })
                    .inc();
                warn!(job = %name, namespace = %ns, %pod, "force-deleted pod stuck on a lost node");
            }
            Action::DeleteJob => {
                let api: Api<ElasticJob> = Api::namespaced(ctx.client.clone(), ns);
                let mut dp = DeleteParams::background();
                dp.preconditions = job.uid().map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                });
                match api.delete(&name, &dp).await {
                    Ok(_) => {
                        info!(job = %name, namespace = %ns, "deleted job (ttlSecondsAfterFinished)")
                    }
                    Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                    Err(e) => return Err(kube_err(format!("deleting job {ns}/{name}"))(e)),
                }
            }
        }
    }
    Ok(conflicts)
}

/// The name conflicts last found for the job, less those of pods it no longer wants.
fn name_conflicts_of(ctx: &Context, uid: &str, job: &ElasticJob) -> BTreeMap<u32, String> {
    let wanted = job.spec.desired_replicas().max(0) as u32;
    let mut all = ctx.name_conflicts.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mine) = all.get_mut(uid) else {
        return BTreeMap::new();
    };
    mine.retain(|index, _| *index < wanted);
    let out = mine.clone();
    if mine.is_empty() {
        all.remove(uid);
    }
    out
}

/// Remembers what the plan's creations found: conflicts replace those of the same pods, a
/// pod created clears its own. Returns a warning per new conflict.
fn remember_conflicts(
    ctx: &Context,
    uid: &str,
    job: &ElasticJob,
    plan: &Plan,
    found: BTreeMap<u32, String>,
) -> Vec<Event> {
    let mut all = ctx.name_conflicts.lock().unwrap_or_else(|p| p.into_inner());
    let mine = all.entry(uid.to_string()).or_default();
    let mut new = Vec::new();
    for action in &plan.actions {
        let Action::CreatePod { index } = action else {
            continue;
        };
        match found.get(index) {
            Some(what) => {
                if mine.insert(*index, what.clone()).is_none() {
                    new.push((*index, what.clone()));
                }
            }
            None => {
                mine.remove(index);
            }
        }
    }
    if mine.is_empty() {
        all.remove(uid);
    }
    drop(all);
    new.into_iter()
        .map(|(index, what)| {
            let pod = names::pod_name(&job.name_any(), index);
            warn!(job = %job.name_any(), pod = %pod, "cannot create the pod: {what}");
            Event::warning(
                reason::POD_NAME_TAKEN,
                format!("cannot create pod {pod}: {what}; delete or rename it"),
            )
            .about(&pod)
        })
        .collect()
}

/// Creates the job's launcher token Secret unless it exists: its pods read the token from it.
/// Created, never read: the operator needs no access to any Secret's contents.
async fn ensure_store_token(ctx: &Context, job: &ElasticJob, ns: &str) -> Result<(), Error> {
    let token: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secret = desired::store_token_secret(job, token).map_err(|source| Error::Desired {
        job: format!("{ns}/{}", job.name_any()),
        source,
    })?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        // Made when the job's first pods were.
        Err(e) if is_status(&e, 409) => Ok(()),
        Err(e) => Err(kube_err(format!(
            "creating Secret {ns}/{}",
            secret.name_any()
        ))(e)),
    }
}

/// Creates pod `index`; `Some((index, what))` when something that is not the job's holds its
/// name.
async fn create_pod(
    ctx: &Context,
    job: &ElasticJob,
    pods: &Api<Pod>,
    index: u32,
    avoided: &[String],
) -> Result<Option<(u32, String)>, Error> {
    let pod =
        desired::new_pod(job, index, &ctx.settings, avoided).map_err(|source| Error::Desired {
            job: format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
            source,
        })?;
    match pods.create(&PostParams::default(), &pod).await {
        Ok(created) => {
            if let (Some(ns), Some(uid)) = (created.namespace(), created.uid()) {
                ctx.pods.expect(
                    (ns, job.name_any()),
                    &created.name_any(),
                    &uid,
                    Expect::Created,
                );
            }
            ctx.metrics.pod_creations.inc();
            info!(job = %job.name_any(), pod = %pod.name_any(), "created pod");
            Ok(None)
        }
        // Created by an earlier reconcile whose watch event has not arrived yet, or someone
        // else's.
        Err(e) if is_status(&e, 409) => {
            let name = pod.name_any();
            let holder = match pods.get_opt(&name).await {
                Ok(Some(existing)) => existing,
                // Gone since: the next reconcile creates it.
                Ok(None) => return Ok(None),
                Err(e) => return Err(kube_err(format!("reading pod {name}"))(e)),
            };
            Ok(foreign_holder(job, &holder).map(|what| (index, what)))
        }
        Err(e) => Err(kube_err(format!("creating pod {}", pod.name_any()))(e)),
    }
}

/// What the pod holding one of the job's pod names is, unless it is the job's own.
pub fn foreign_holder(job: &ElasticJob, pod: &Pod) -> Option<String> {
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true));
    if owner.is_some_and(|o| Some(o.uid.as_str()) == job.meta().uid.as_deref()) {
        return None;
    }
    let by = match owner {
        Some(o) => format!("owned by {} {}", o.kind, o.name),
        None => "owned by no controller".to_string(),
    };
    Some(format!("pod {} exists, {by}", pod.name_any()))
}

fn delete_reason(why: DeleteReason) -> &'static str {
    match why {
        DeleteReason::ScaleDown => "scale-down",
        DeleteReason::Recreate => "recreate",
        DeleteReason::Suspend => "suspend",
        DeleteReason::Queued => "queued",
        DeleteReason::Cleanup => "cleanup",
    }
}

/// Deletes a pod of `job`; the UID precondition makes sure a newer pod of the same name
/// survives.
async fn delete_pod(
    ctx: &Context,
    job: &JobKey,
    api: &Api<Pod>,
    name: &str,
    uid: Option<String>,
    grace: Option<u32>,
) -> Result<(), Error> {
    let dp = DeleteParams {
        grace_period_seconds: grace,
        preconditions: uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {
            if let Some(uid) = uid {
                let what = if grace == Some(0) {
                    Expect::Gone
                } else {
                    Expect::Deleting
                };
                ctx.pods.expect(job.clone(), name, &uid, what);
            }
            Ok(())
        }
        // Already gone, or already replaced by a newer pod of that name.
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(kube_err(format!("deleting pod {name}"))(e)),
    }
}

/// Requeue after a failed reconcile (the error is logged and counted).
pub fn error_policy(job: Arc<ElasticJob>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.reconcile_errors.inc();
    match err {
        Error::Kube { source, .. } if namespace_terminating(source) => {
            debug!(job = %job.name_any(), namespace = ?job.namespace(), "reconcile failed: {err}");
        }
        _ => warn!(job = %job.name_any(), namespace = ?job.namespace(), "reconcile failed: {err}"),
    }
    Requeue::requeue(Duration::from_secs(5))
}

/// Whether the apiserver refused a write because the job's namespace is being deleted: the job
/// goes with it (pods deleted first are not recreated), so that is no failure to warn about.
fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403
        && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

/// How to run the controller: what to watch, how to shape objects, who reports events.
pub struct RunConfig {
    pub scope: Scope,
    pub settings: Settings,
    pub reporter: Reporter,
    /// Jobs reconciled at once.
    pub concurrency: u16,
}

/// Runs the controller over `caches` (started before, see [`crate::caches`]) until a shutdown
/// signal. `ready` turns true once it is reconciling;
/// `metrics`'s job-state gauge is refreshed from the controller's cache through `on_store`.
pub async fn run(
    client: Client,
    mut caches: Caches,
    cfg: RunConfig,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    on_store: impl FnOnce(Store<ElasticJob>),
) {
    let RunConfig {
        scope,
        settings,
        reporter,
        concurrency,
    } = cfg;
    if caches.nodes.wait_until_ready().await.is_err() {
        warn!("the node cache never filled");
    }
    caches.watch_kueue(&client, &scope, &metrics).await;
    if let Some(kueue) = &caches.kueue {
        info!("waiting for the Workload and ResourceFlavor caches to fill");
        if !kueue.wait_until_ready().await {
            warn!("the Workload or ResourceFlavor cache never filled");
        }
    }
    let triggers = caches.triggers();
    // The job's own status writes are not a reason to look again (the reconcile that wrote
    // it has acted on it, and requeued itself); spec, label, annotation and deletion changes
    // are. The cache still gets every change.
    let (jobs, job_writer) = reflector::store();
    let job_events = watcher(scope.api::<ElasticJob>(&client), watcher::Config::default())
        .default_backoff()
        .modify(|j: &mut ElasticJob| j.metadata.managed_fields = None)
        .reflect(job_writer)
        .applied_objects()
        .predicate_filter(job_change, Default::default())
        .inspect_ok({
            let metrics = metrics.clone();
            move |_| metrics.trigger("job")
        });
    let mut controller = Controller::for_stream(job_events, jobs)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .owns_stream(triggers.pods)
        .owns_stream(triggers.services);
    if let Some(workload_changes) = triggers.workloads {
        controller = controller.owns_stream_with(workload_changes, kueue::workload_resource());
    }
    let store = controller.store();
    // Stopped when dropped, with the controller.
    let (poller, changed, _poller_task) =
        Poller::start(PollerConfig::default(), metrics.clone(), move |job| {
            store.get(job).is_some()
        });
    let controller = controller.reconcile_on(changed).shutdown_on_signal();
    on_store(controller.store());
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings,
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        nodes: caches.nodes.clone(),
        pods: caches.pods.clone(),
        services: caches.services.clone(),
        launchers: LauncherClient::default(),
        poller,
        name_conflicts: Mutex::default(),
        saved_specs: Mutex::default(),
        kueue: caches.kueue.clone(),
        workload_writes: Mutex::new(WorkloadWrites::new(Instant::now())),
    });
    // Ready once connected with the node cache filled and the controller built. Not by awaiting
    // the controller's own store: its readiness future wakes only one waiter (kube-runtime 5's
    // DelayedInit is a oneshot), and a second waiter can starve the controller's runner.
    ready.store(true, Ordering::SeqCst);
    info!("caches synced; reconciling");
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|r| {
            if let Err(e) = r {
                debug!("controller: {e}");
            }
            futures::future::ready(())
        })
        .await;
    drop(caches);
    ready.store(false, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_into_a_namespace_being_deleted_is_told_apart() {
        // The apiserver's answer, as it comes.
        let forbidden = |cause: &str| {
            kube::Error::Api(Box::new(
                serde_json::from_value(serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                    "reason": "Forbidden",
                    "message": "secrets \"j0-store-token\" is forbidden: unable to create new content in namespace scale because it is being terminated",
                    "details": {"name": "j0-store-token", "kind": "secrets",
                                "causes": [{"reason": cause, "field": "metadata.namespace"}]},
                }))
                .unwrap(),
            ))
        };
        assert!(namespace_terminating(&forbidden("NamespaceTerminating")));
        assert!(!namespace_terminating(&forbidden("FieldValueForbidden")));
    }

    #[test]
    fn a_pod_holding_a_jobs_pod_name_is_foreign_unless_the_job_controls_it() {
        let job = crate::fixtures::job();
        let owned_by = |uid: &str, kind: &str| Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("train-worker-1".into()),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        kind: kind.into(),
                        name: "other".into(),
                        uid: uid.into(),
                        controller: Some(true),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            foreign_holder(&job, &owned_by(crate::fixtures::UID, "ElasticJob")),
            None
        );
        assert_eq!(
            foreign_holder(&job, &owned_by("another-uid", "ElasticJob")).as_deref(),
            Some("pod train-worker-1 exists, owned by ElasticJob other")
        );
        let bare = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("train-worker-1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            foreign_holder(&job, &bare).as_deref(),
            Some("pod train-worker-1 exists, owned by no controller")
        );
    }

    #[test]
    fn a_status_write_is_refused_if_the_job_changed_since_it_was_read() {
        let mut job = crate::fixtures::job();
        job.metadata.resource_version = Some("41".into());
        let status = ElasticJobStatus {
            application_restarts: 2,
            ..Default::default()
        };
        let patch = status_patch(&job, &status);
        assert_eq!(patch["metadata"]["resourceVersion"], "41");
        assert_eq!(patch["metadata"]["name"], "train");
        assert_eq!(patch["status"]["applicationRestarts"], 2);
        assert_eq!(patch["kind"], "ElasticJob");
    }

    #[test]
    fn notes_are_cut_to_the_apiservers_limit_on_a_char_boundary() {
        assert_eq!(truncate_note("short"), "short");
        let long = "é".repeat(700);
        let t = truncate_note(&long);
        assert!(t.len() <= 1024, "{}", t.len());
        assert!(t.ends_with('…'));
        assert!(long.starts_with(t.trim_end_matches('…')));
    }
}
