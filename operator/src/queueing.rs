//! The IO of admission through a queue (Kueue's Workload, see [`crate::kueue`]) and of gang
//! scheduling (a scheduler-plugins PodGroup, see [`crate::gang`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{PodTemplateSpec, Toleration};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, info, warn};

use elasticjob_crds::spec::ElasticJob;
use elasticjob_crds::status::reason;

use crate::controller::{Context, Error, MANAGER};
use crate::desired;
use crate::expectations::JobKey;
use crate::gang;
use crate::kueue::{self, Verdict};
use crate::next_status::Admission;
use crate::workload_writes::Source;

fn api_err(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { what, source }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Asks the job's queue for its pods (creating or replacing its Workload, or asking for more
/// with a replacement slice, as needed)
/// and returns the job as admitted with what its status says. `active_pods`: the job's pods
/// that have not stopped (an evicted job gives its quota back only once they are gone).
pub async fn admit<'a>(
    ctx: &Context,
    job: &'a ElasticJob,
    ns: &str,
    queue: &str,
    active_pods: usize,
) -> Result<(Cow<'a, ElasticJob>, Admission), Error> {
    let name = job.name_any();
    if ctx.kueue.is_none() {
        let message = format!(
            "the job is labelled {}={queue}, but Kueue's Workload API (kueue.x-k8s.io/v1beta2) is not installed: install Kueue (v0.15 or newer) and restart the operator, or remove the label to run the job without a queue",
            kueue::QUEUE_LABEL
        );
        return Ok((Cow::Borrowed(job), waiting(message)));
    }
    let api = JobWorkloads::new(ctx, ns, job);
    let (all, next_index) = api.read(job).await?;
    let kueue::Standing {
        current,
        replacement,
        replacing,
        stale,
    } = kueue::standing(&name, all);
    for w in &stale {
        api.delete(w).await?;
    }
    let Some((wl, verdict)) = current else {
        let created = create_workload(
            &api,
            job,
            queue,
            kueue::Ask {
                index: next_index,
                replaces: None,
            },
        )
        .await?;
        return Ok((Cow::Borrowed(job), created));
    };
    let wl_name = wl.name_any();
    let asked = job.spec.desired_replicas();
    let slices = kueue::uses_slices(job);
    let said = kueue::admission(queue, &wl_name, &verdict, asked, slices);
    let first_ask = kueue::Ask {
        index: next_index,
        replaces: None,
    };
    match &verdict {
        Verdict::Admitted { count, flavors, .. } => {
            if !replacing {
                let step = kueue::slice_step(slices, *count, asked, replacement.as_ref());
                if let (kueue::SliceStep::Replace | kueue::SliceStep::Delete, Some(r)) =
                    (step, &replacement)
                {
                    api.delete(r).await?;
                }
                if let kueue::SliceStep::Create | kueue::SliceStep::Replace = step {
                    let ask = kueue::Ask {
                        index: next_index,
                        replaces: Some(&wl_name),
                    };
                    create_workload(&api, job, queue, ask).await?;
                }
            }
            let (labels, tolerations) = placement(ctx, flavors).await?;
            let job = kueue::admitted_job(job, *count, &labels, &tolerations);
            if !replacing
                && let Some(patch) =
                    kueue::reclaimable_patch(&wl, *count, job.spec.desired_replicas())
            {
                api.patch_status(&wl_name, &patch).await?;
            }
            return Ok((Cow::Owned(job), said));
        }
        Verdict::Pending { .. } => {
            if let Some(r) = &replacement {
                api.delete(r).await?;
            }
            let desired = workload(ctx, job, queue, None, first_ask)?;
            if !kueue::asks_the_same(&wl, &desired) {
                // Not admitted yet: ask again for what the job asks now.
                api.delete(&wl).await?;
                create_workload(&api, job, queue, first_ask).await?;
            }
        }
        Verdict::Finished => {}
        Verdict::Evicted {
            reason: why,
            message,
        } => {
            // Asked again, whole, once the evicted one is released.
            if let Some(r) = &replacement {
                api.delete(r).await?;
            }
            if active_pods == 0 {
                let patch = kueue::release_patch(&wl, why, message, Timestamp::now());
                api.patch_status(&wl_name, &patch).await?;
                info!(job = %name, namespace = %ns, workload = %wl_name, reason = %why, "pods stopped after eviction; quota released");
            }
        }
    }
    Ok((Cow::Borrowed(job), said))
}

/// A suspended or finished job gives its quota back: a suspended one by deleting its
/// Workloads (it asks again when resumed), a finished one by finishing them.
pub async fn release(ctx: &Context, job: &ElasticJob, ns: &str, finished: Option<bool>) {
    if ctx.kueue.is_none() {
        return;
    }
    let api = JobWorkloads::new(ctx, ns, job);
    let live = match api.read(job).await {
        Ok((all, _)) => all
            .into_iter()
            .filter(|w| kueue::verdict(w) != Verdict::Finished),
        Err(e) => {
            warn!(job = %job.name_any(), namespace = %ns, error = %e, "reading the Workloads to release");
            return;
        }
    };
    for wl in live {
        let result = match finished {
            Some(succeeded) => {
                let message = if succeeded {
                    "the ElasticJob succeeded"
                } else {
                    "the ElasticJob failed"
                };
                let patch = kueue::finish_patch(&wl, succeeded, message, Timestamp::now());
                api.patch_status(&wl.name_any(), &patch).await
            }
            None => api.delete(&wl).await,
        };
        if let Err(e) = result {
            warn!(workload = %wl.name_any(), namespace = %ns, error = %e, "releasing the Workload");
        }
    }
}

fn waiting(message: String) -> Admission {
    Admission::Waiting {
        reason: reason::PENDING_ADMISSION,
        message,
    }
}

/// One job's Workloads as a reconcile reads and writes them: the Workload API of its
/// namespace, the Workload cache, and the record of this process's writes that says which of
/// the two to read ([`crate::workload_writes`]).
struct JobWorkloads<'a> {
    ctx: &'a Context,
    api: Api<DynamicObject>,
    job: JobKey,
}

impl<'a> JobWorkloads<'a> {
    fn new(ctx: &'a Context, ns: &str, job: &ElasticJob) -> JobWorkloads<'a> {
        JobWorkloads {
            ctx,
            api: Api::namespaced_with(ctx.client.clone(), ns, &kueue::workload_resource()),
            job: (ns.to_string(), job.name_any()),
        }
    }

    /// The job's Workloads (by name), and the index of its next one: from the cache, or with
    /// a LIST while the cache may not show this process's last write to them (why this is
    /// exact: [`crate::workload_writes`]).
    async fn read(&self, job: &ElasticJob) -> Result<(Vec<DynamicObject>, u32), Error> {
        let (ns, name) = &self.job;
        let uid = job.uid().unwrap_or_default();
        let of_job = |w: &DynamicObject| kueue::is_of_job(w, ns, name, &uid);
        let source = self
            .ctx
            .workload_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .source(&self.job, Instant::now());
        debug!(job = %name, namespace = %ns, ?source, "reading the job's Workloads");
        let mut all: Vec<DynamicObject> = match (source, &self.ctx.kueue) {
            (Source::Cache, Some(caches)) => caches
                .workloads
                .state_filter(of_job)
                .into_iter()
                .map(Arc::unwrap_or_clone)
                .collect(),
            _ => {
                let selector = format!("{}={name}", elasticjob_crds::names::LABEL_JOB_NAME);
                self.api
                    .list(&kube::api::ListParams::default().labels(&selector))
                    .await
                    .map_err(api_err(format!("listing the Workloads of {ns}/{name}")))?
                    .items
                    .into_iter()
                    .filter(of_job)
                    .collect()
            }
        };
        all.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let next =
            kueue::next_workload_index(name, all.iter().filter_map(|w| w.metadata.name.as_deref()));
        Ok((all, next))
    }

    /// Before each write (it may be applied even when its request fails): the job reads its
    /// Workloads with a LIST until the cache surely shows it.
    fn writing(&self) {
        self.ctx
            .workload_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(self.job.clone(), Instant::now());
    }

    async fn delete(&self, wl: &DynamicObject) -> Result<(), Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: wl.uid(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        self.writing();
        match self.api.delete(&wl.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(api_err(format!("deleting Workload {}", wl.name_any()))(e)),
        }
    }

    /// A conflict means Kueue wrote the Workload since it was read: the next reconcile (its
    /// watch event) reads it again.
    async fn patch_status(&self, name: &str, patch: &serde_json::Value) -> Result<(), Error> {
        self.writing();
        match self
            .api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(()),
            Err(e) => Err(api_err(format!(
                "writing the status of Workload {}/{name}",
                self.job.0
            ))(e)),
        }
    }
}

fn workload(
    ctx: &Context,
    job: &ElasticJob,
    queue: &str,
    priority: Option<&kueue::Priority>,
    ask: kueue::Ask,
) -> Result<DynamicObject, Error> {
    let desired_err = |source| Error::Desired {
        job: format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        source,
    };
    // The template Kueue sizes the pods by: pod 0 as the operator makes it (the launcher's
    // init container and sidecars included).
    let pod = desired::pod(job, 0, &ctx.settings).map_err(desired_err)?;
    let template = PodTemplateSpec {
        metadata: Some(kube::api::ObjectMeta {
            labels: pod.metadata.labels,
            ..Default::default()
        }),
        spec: pod.spec,
    };
    kueue::desired_workload(job, queue, template, priority, ask).map_err(desired_err)
}

/// Creates the job's Workload as `ask` says and what the job waits for meanwhile.
async fn create_workload(
    api: &JobWorkloads<'_>,
    job: &ElasticJob,
    queue: &str,
    ask: kueue::Ask<'_>,
) -> Result<Admission, Error> {
    let priority = priority(api.ctx, job).await?;
    let wl = workload(api.ctx, job, queue, priority.as_ref(), ask)?;
    let name = wl.name_any();
    let pending = Verdict::Pending {
        message: String::new(),
    };
    let said = kueue::admission(
        queue,
        &name,
        &pending,
        job.spec.desired_replicas(),
        kueue::uses_slices(job),
    );
    api.writing();
    match api.api.create(&PostParams::default(), &wl).await {
        Ok(_) => {
            info!(job = %job.name_any(), workload = %name, %queue, replaces = ask.replaces, "asked the queue for admission");
            Ok(said)
        }
        Err(e) if is_status(&e, 409) => {
            // Ours but not seen yet, or someone else's.
            let uid = job.uid().unwrap_or_default();
            match api.api.get_opt(&name).await {
                Ok(Some(other)) if !kueue::owned_by(&other, &uid) => Ok(waiting(format!(
                    "Workload {}/{name} exists and does not belong to this job: delete it so the job can ask its queue for admission",
                    job.namespace().unwrap_or_default()
                ))),
                _ => Ok(said),
            }
        }
        Err(e) => Err(api_err(format!("creating Workload {name}"))(e)),
    }
}

/// The priority of the job's class, for Kueue's preemption.
async fn priority(ctx: &Context, job: &ElasticJob) -> Result<Option<kueue::Priority>, Error> {
    let Some((group, kind, name)) = kueue::priority_class(job) else {
        return Ok(None);
    };
    let value = if kind == "PriorityClass" {
        let api: Api<PriorityClass> = Api::all(ctx.client.clone());
        api.get_opt(&name)
            .await
            .map_err(api_err(format!("reading PriorityClass {name}")))?
            .map(|pc| pc.value)
    } else {
        let api: Api<DynamicObject> = Api::all_with(
            ctx.client.clone(),
            &kueue::workload_priority_class_resource(),
        );
        api.get_opt(&name)
            .await
            .map_err(api_err(format!("reading WorkloadPriorityClass {name}")))?
            .and_then(|c| c.data["value"].as_i64())
            .map(|v| v as i32)
    };
    Ok(value.map(|value| kueue::Priority {
        group,
        kind,
        name,
        value,
    }))
}

/// The node labels and tolerations of the flavors the job was admitted with, from the flavor
/// cache. A flavor it does not hold is read from the apiserver: one made just before the
/// admission that names it may not be in the cache yet, and pods made without its node labels
/// would stay where they land.
async fn placement(
    ctx: &Context,
    flavors: &[String],
) -> Result<(BTreeMap<String, String>, Vec<Toleration>), Error> {
    let resource = kueue::flavor_resource();
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource);
    let mut labels = BTreeMap::new();
    let mut tolerations = Vec::new();
    for f in flavors {
        let cached = ctx
            .kueue
            .as_ref()
            .and_then(|k| k.flavors.get(&ObjectRef::new_with(f, resource.clone())));
        let flavor = match cached {
            Some(flavor) => Some(flavor),
            None => api
                .get_opt(f)
                .await
                .map_err(api_err(format!("reading ResourceFlavor {f}")))?
                .map(Arc::new),
        };
        if let Some(flavor) = flavor {
            let (l, t) = kueue::flavor_placement(&flavor);
            labels.extend(l);
            tolerations.extend(t);
        }
    }
    Ok((labels, tolerations))
}

/// Creates the job's PodGroup before its pods, or brings its minMember up to date.
pub async fn apply_pod_group(ctx: &Context, job: &ElasticJob, ns: &str) -> Result<(), Error> {
    let Some(group) = gang::pod_group(job).map_err(|source| Error::Desired {
        job: format!("{ns}/{}", job.name_any()),
        source,
    })?
    else {
        return Ok(());
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &gang::pod_group_resource());
    let name = group.name_any();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&group))
        .await
        .map_err(api_err(format!(
            "applying PodGroup {ns}/{name} (is scheduler-plugins' PodGroup CRD installed? spec.gang needs it)"
        )))?;
    Ok(())
}
