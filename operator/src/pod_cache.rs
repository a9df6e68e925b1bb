//! The operator's pods, from one watch of every pod with the `elasticjob.dev/job-name` label,
//! indexed by job, so a reconcile reads its job's pods without a LIST (at 1,000 running jobs of
//! 64 pods, a consistent LIST per job every poll is 100 LISTs a second served from etcd).
//!
//! The watch's events are applied here before they trigger the owning job (the same stream
//! feeds the controller's `owns_stream`), so a reconcile always sees at least the event that
//! woke it. The index is a map from job to its pods (by name), kept from the events; a pod
//! whose label changes moves. Pods are stripped of what no decision reads (managed fields,
//! annotations, most of the spec and of the container statuses), which is most of their bytes.
//!
//! # Why the accounting stays exact with a cache
//!
//! Failures are charged once per pod UID (`status.recentFailures` is the record, written with
//! the job's resourceVersion as precondition, so a status computed from an older job is
//! refused). A cache can differ from a LIST in three ways, none of which changes what is
//! charged:
//!
//! - **It lags our own writes.** A pod just created looks missing, one just deleted looks
//!   alive. [`crate::expectations`] holds the job back until the cache shows every create and
//!   delete this process made, so no decision is taken on a view older than our own writes
//!   (and even then, a create is a 409, a delete has a UID precondition, a failure has a UID).
//! - **It goes back in time.** It cannot: relists are quorum reads (kube's default
//!   `ListSemantic::MostRecent`), so the cache only moves forward, and a pod it saw is not
//!   "seen again" after its failure has been trimmed from the status.
//! - **It misses states in between.** So does a LIST every 10 s: a pod created and deleted
//!   between two looks is never seen; no failure is charged for it (there is no record of it
//!   anywhere) and its index, missing, is recreated — with a LIST exactly the same. A pod seen
//!   running whose end was not seen is charged once as vanished (`progress::vanished`, from the
//!   running launchers of the last status). That is the one decision that charges on an
//!   *absence*, so the controller confirms each such absence with a GET before planning
//!   ([`crate::controller`]): a pod the cache does not show but the apiserver does (a cache
//!   behind another process's status write, after a leader change) is not charged.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodSpec, PodStatus};
use kube::runtime::watcher;

use elasticjob_crds::names::LABEL_JOB_NAME;

use crate::expectations::{Cached, Expect, Expectations, JobKey};

/// The index and the expectations; pure (no IO), changed only by [`State::apply`] and
/// [`State::expect`].
#[derive(Debug, Default)]
pub struct State {
    by_job: HashMap<JobKey, BTreeMap<String, Arc<Pod>>>,
    /// (namespace, pod name) → the job it is indexed under.
    job_of: HashMap<(String, String), JobKey>,
    /// Pods of a relist in progress, and the expectation mark when it began.
    relist: Option<(Vec<Pod>, u64)>,
    expectations: Expectations,
    /// Whether a first list has completed.
    synced: bool,
}

/// The job a pod belongs to (its label), and its key in the index.
fn keys(pod: &Pod) -> Option<(JobKey, (String, String))> {
    let ns = pod.metadata.namespace.clone()?;
    let name = pod.metadata.name.clone()?;
    let job = pod.metadata.labels.as_ref()?.get(LABEL_JOB_NAME)?.clone();
    Some(((ns.clone(), job), (ns, name)))
}

fn cached(pod: &Pod) -> Option<Cached<'_>> {
    Some(Cached {
        uid: pod.metadata.uid.as_deref()?,
        deleting: pod.metadata.deletion_timestamp.is_some(),
    })
}

impl State {
    /// Applies one watch event.
    pub fn apply(&mut self, event: &watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(pod) => self.upsert(pod.clone()),
            watcher::Event::Delete(pod) => self.remove(pod),
            watcher::Event::Init => {
                self.relist = Some((Vec::new(), self.expectations.mark()));
            }
            watcher::Event::InitApply(pod) => {
                if let Some((buffer, _)) = &mut self.relist {
                    buffer.push(pod.clone());
                }
            }
            watcher::Event::InitDone => {
                let (buffer, mark) = self.relist.take().unwrap_or_default();
                self.by_job.clear();
                self.job_of.clear();
                for pod in buffer {
                    self.insert(pod);
                }
                let by_job = &self.by_job;
                self.expectations.relisted(mark, |job, pod| {
                    by_job
                        .get(job)
                        .and_then(|pods| pods.get(pod))
                        .and_then(|p| cached(p))
                });
                self.synced = true;
            }
        }
    }

    fn insert(&mut self, pod: Pod) -> Option<(JobKey, String)> {
        let (job, at) = keys(&pod)?;
        if let Some(old) = self.job_of.insert(at.clone(), job.clone())
            && old != job
            && let Some(pods) = self.by_job.get_mut(&old)
        {
            pods.remove(&at.1);
            if pods.is_empty() {
                self.by_job.remove(&old);
            }
        }
        self.by_job
            .entry(job.clone())
            .or_default()
            .insert(at.1.clone(), Arc::new(pod));
        Some((job, at.1))
    }

    fn upsert(&mut self, pod: Pod) {
        if let Some((job, name)) = self.insert(pod) {
            let now = self.by_job.get(&job).and_then(|pods| pods.get(&name));
            self.expectations
                .observe(&job, &name, now.and_then(|p| cached(p)));
        }
    }

    fn remove(&mut self, pod: &Pod) {
        let Some((_, at)) = keys(pod) else {
            return;
        };
        let Some(job) = self.job_of.remove(&at) else {
            return;
        };
        if let Some(pods) = self.by_job.get_mut(&job) {
            pods.remove(&at.1);
            if pods.is_empty() {
                self.by_job.remove(&job);
            }
        }
        self.expectations.observe(&job, &at.1, None);
    }

    /// The pods of `job`.
    pub fn pods(&self, job: &JobKey) -> Vec<Arc<Pod>> {
        self.by_job
            .get(job)
            .map(|pods| pods.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Remembers a write of this process on pod `pod` (UID `uid`) of `job`.
    pub fn expect(&mut self, job: JobKey, pod: &str, uid: &str, what: Expect, now: Instant) {
        let now_cached = self
            .by_job
            .get(&job)
            .and_then(|pods| pods.get(pod))
            .cloned();
        self.expectations.expect(
            job,
            pod,
            uid,
            what,
            now_cached.as_deref().and_then(cached),
            now,
        );
    }

    /// The pods of `job` whose writes the cache does not show yet.
    pub fn unmet(&mut self, job: &JobKey, now: Instant) -> Vec<String> {
        self.expectations.unmet(job, now)
    }

    pub fn forget(&mut self, job: &JobKey) {
        self.expectations.forget(job);
    }

    /// Pods in the index.
    pub fn len(&self) -> usize {
        self.job_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.job_of.is_empty()
    }
}

/// The shared cache: [`State`] behind a lock, and its readiness.
#[derive(Debug)]
pub struct PodCache {
    state: RwLock<State>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl Default for PodCache {
    fn default() -> Self {
        PodCache {
            state: RwLock::default(),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl PodCache {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a watch event (before it triggers the job).
    pub fn apply(&self, event: &watcher::Event<Pod>) {
        let synced = {
            let mut state = self.write();
            state.apply(event);
            state.synced
        };
        if synced {
            self.synced
                .send_if_modified(|s| !std::mem::replace(s, true));
        }
    }

    /// Waits until the first list is in (any number of waiters). Until then a job would look
    /// as if it had no pods.
    pub async fn wait_until_synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn pods(&self, job: &JobKey) -> Vec<Arc<Pod>> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .pods(job)
    }

    pub fn expect(&self, job: JobKey, pod: &str, uid: &str, what: Expect) {
        self.write().expect(job, pod, uid, what, Instant::now());
    }

    pub fn unmet(&self, job: &JobKey) -> Vec<String> {
        self.write().unmet(job, Instant::now())
    }

    pub fn forget(&self, job: &JobKey) {
        self.write().forget(job);
    }
}

/// Drops what no decision reads from a watched pod: managed fields, annotations (the
/// last-applied configuration among them), the spec but its node, and the container
/// statuses' images, IDs and resources. Kept: the metadata the index and `ObservedPod` use
/// (name, namespace, UID, labels, owner references, timestamps, grace period), the phase,
/// conditions, reason, message, IP and the container states.
pub fn strip(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.finalizers = None;
    pod.spec = pod.spec.take().map(|s| PodSpec {
        node_name: s.node_name,
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        conditions: s.conditions,
        reason: s.reason,
        message: s.message,
        pod_ip: s.pod_ip,
        container_statuses: s.container_statuses.map(strip_statuses),
        init_container_statuses: s.init_container_statuses.map(strip_statuses),
        ..PodStatus::default()
    });
}

fn strip_statuses(statuses: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
    statuses
        .into_iter()
        .map(|s| ContainerStatus {
            name: s.name,
            state: s.state,
            last_state: s.last_state,
            ready: s.ready,
            restart_count: s.restart_count,
            ..ContainerStatus::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use watcher::Event;

    fn pod(name: &str, uid: &str, job: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ml", "uid": uid,
                         "labels": {LABEL_JOB_NAME: job}},
        }))
        .unwrap()
    }

    fn key(job: &str) -> JobKey {
        ("ml".into(), job.into())
    }

    fn names(s: &State, job: &str) -> Vec<String> {
        s.pods(&key(job))
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn indexes_pods_by_job_from_the_events() {
        let mut s = State::default();
        s.apply(&Event::Init);
        s.apply(&Event::InitApply(pod("a-worker-0", "1", "a")));
        s.apply(&Event::InitApply(pod("b-worker-0", "2", "b")));
        assert!(names(&s, "a").is_empty(), "not before the list is complete");
        s.apply(&Event::InitDone);
        assert!(s.synced);
        assert_eq!(names(&s, "a"), ["a-worker-0"]);
        s.apply(&Event::Apply(pod("a-worker-1", "3", "a")));
        assert_eq!(names(&s, "a"), ["a-worker-0", "a-worker-1"]);
        s.apply(&Event::Delete(pod("a-worker-0", "1", "a")));
        assert_eq!(names(&s, "a"), ["a-worker-1"]);
        // Relabelled to another job: it moves.
        s.apply(&Event::Apply(pod("a-worker-1", "3", "b")));
        assert!(names(&s, "a").is_empty());
        assert_eq!(names(&s, "b"), ["a-worker-1", "b-worker-0"]);
        // A relist replaces everything.
        s.apply(&Event::Init);
        s.apply(&Event::InitApply(pod("c-worker-0", "4", "c")));
        assert_eq!(
            names(&s, "b").len(),
            2,
            "the old view serves until the list is in"
        );
        s.apply(&Event::InitDone);
        assert!(names(&s, "b").is_empty());
        assert_eq!(names(&s, "c"), ["c-worker-0"]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_job_waits_for_its_own_writes_to_show() {
        let t0 = Instant::now();
        let mut s = State::default();
        s.apply(&Event::Init);
        s.apply(&Event::InitApply(pod("a-worker-0", "1", "a")));
        s.apply(&Event::InitDone);
        s.expect(key("a"), "a-worker-1", "2", Expect::Created, t0);
        s.expect(key("a"), "a-worker-0", "1", Expect::Deleting, t0);
        assert_eq!(s.unmet(&key("a"), t0), ["a-worker-1", "a-worker-0"]);
        s.apply(&Event::Apply(pod("a-worker-1", "2", "a")));
        let mut deleting = pod("a-worker-0", "1", "a");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        s.apply(&Event::Apply(deleting));
        assert!(s.unmet(&key("a"), t0).is_empty());
        // Already in the cache when the write's response came: nothing to wait for.
        s.expect(key("a"), "a-worker-1", "2", Expect::Created, t0);
        assert!(s.unmet(&key("a"), t0).is_empty());
    }

    #[test]
    fn stripping_keeps_what_the_decisions_read() {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "train-worker-2", "namespace": "ml", "uid": "p2",
                         "labels": {LABEL_JOB_NAME: "train"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{…}"},
                         "managedFields": [{"manager": "x"}],
                         "ownerReferences": [{"apiVersion": "elasticjob.dev/v1alpha1", "kind": "ElasticJob",
                                              "name": "train", "uid": "u1", "controller": true}],
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "trainer", "image": "big",
                     "env": [{"name": "A", "value": "x"}]}]},
            "status": {"phase": "Failed", "podIP": "10.0.0.2", "hostIP": "10.1.1.1",
                "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}],
                "containerStatuses": [{"name": "trainer", "ready": false, "restartCount": 0,
                    "image": "big", "imageID": "sha256:…", "containerID": "containerd://…",
                    "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "{}"}}}]},
        }))
        .unwrap();
        let before = crate::ObservedPod::from_pod("train", "u1", Some("trainer"), &p, Some(true));
        strip(&mut p);
        let after = crate::ObservedPod::from_pod("train", "u1", Some("trainer"), &p, Some(true));
        assert_eq!(before, after);
        assert!(p.metadata.managed_fields.is_none() && p.metadata.annotations.is_none());
        assert!(p.spec.as_ref().unwrap().containers.is_empty());
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.container_statuses.as_ref().unwrap()[0].image, "");
        assert_eq!(status.host_ip, None);
        assert_eq!(keys(&p).unwrap().0, key("train"));
    }
}
