//! What to do about a job's pods: from the job, its pods and the time, the actions that bring
//! the cluster toward the job's spec, as plain data. The controller carries them out (apply,
//! create, delete), writes [`Plan::status`], publishes [`Plan::events`] and requeues after
//! [`Plan::requeue_after`].
//!
//! - Active: apply the Service; create missing pods below the desired count; delete pods above
//!   it, highest index first (pod 0 is never above it); a failed pod is deleted once its backoff
//!   has passed, and recreated when it is gone.
//! - Suspended: delete every pod, pod 0 last.
//! - Finished: delete pods per cleanPodPolicy (pod 0 last); delete the job once
//!   ttlSecondsAfterFinished has passed.
//! - Always: a pod stuck terminating on a node that is not ready is deleted forcefully
//!   failurePolicy.podTerminationTimeoutSeconds after its deletion was asked for.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use elasticjob_contract::stop::{StopReason, StopRequest};
use elasticjob_crds::spec::{Backoff, CleanPodPolicy, ElasticJob};
use elasticjob_crds::status::{ElasticJobStatus, JobState, condition, reason};

use crate::event::{self, Event};
use crate::next_status::{self, Admission, NextStatus, Verdict};
use crate::observed::{ObservedPod, Phase};

/// Failures of the same pod index within this window count toward its backoff.
pub const BACKOFF_WINDOW: SignedDuration = SignedDuration::from_hours(1);

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply the job's headless Service (`desired::service`).
    ApplyService,
    /// Create pod `<job>-worker-<index>` (`desired::pod`); it does not exist.
    CreatePod { index: u32 },
    /// Delete a pod gracefully; `uid` is the precondition, so a newer pod of the same name is
    /// never deleted by mistake.
    DeletePod {
        name: String,
        uid: Option<String>,
        why: DeleteReason,
        /// Told to the pod's launcher first (when it runs), so its workers learn why.
        tell: Option<Tell>,
    },
    /// Delete a pod with grace period 0: it is stuck terminating on a node that is gone.
    ForceDeletePod { name: String, uid: Option<String> },
    /// Delete the job itself (ttlSecondsAfterFinished passed); its pods and Service go with it.
    DeleteJob,
}

/// What the operator tells a running launcher (`POST /stop` at `ip`) before deleting its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tell {
    pub ip: String,
    pub request: StopRequest,
}

/// The stop reason the workers of a pod deleted for `why` get; None when the pod is not
/// running anyway (a failed pod recreated).
pub fn stop_request(
    why: DeleteReason,
    job: &ElasticJob,
    status: &ElasticJobStatus,
) -> Option<StopRequest> {
    let (reason, message) = match why {
        DeleteReason::Recreate => return None,
        DeleteReason::ScaleDown => (
            StopReason::ScaleDown,
            format!(
                "the job is scaled down to {} pods",
                job.spec.desired_replicas()
            ),
        ),
        DeleteReason::Suspend => (
            StopReason::Suspended,
            "the job is suspended (runPolicy.suspend)".to_string(),
        ),
        DeleteReason::Queued => (
            StopReason::Suspended,
            next_status::get(&status.conditions, condition::QUEUED).map_or_else(
                || "the job's queue stopped it".to_string(),
                |c| format!("the job's queue stopped it: {}", c.message),
            ),
        ),
        DeleteReason::Cleanup => {
            let deadline = next_status::get(&status.conditions, condition::FAILED)
                .is_some_and(|c| c.status == "True" && c.reason == reason::DEADLINE_EXCEEDED);
            if deadline {
                (
                    StopReason::DeadlineExceeded,
                    "the job ran past runPolicy.activeDeadlineSeconds".to_string(),
                )
            } else {
                (
                    StopReason::JobFinished,
                    "the job is over; its pods are cleaned up".to_string(),
                )
            }
        }
    };
    Some(StopRequest { reason, message })
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// Above the desired number of pods.
    ScaleDown,
    /// Failed, and its backoff passed: it is recreated once gone.
    Recreate,
    /// The job is suspended.
    Suspend,
    /// The job's queue has not admitted it, or took its admission back (preemption).
    Queued,
    /// The job finished (cleanPodPolicy).
    Cleanup,
}

/// Everything decided for one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub status: ElasticJobStatus,
    pub verdict: Verdict,
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
    /// When to look again even if nothing changes (a backoff, a deadline, a TTL, a timeout).
    pub requeue_after: Option<Duration>,
}

/// Decides the next status and the actions for `job` given its pods at `now`.
pub fn plan(job: &ElasticJob, pods: &[ObservedPod], now: Timestamp) -> Plan {
    plan_admitted(job, pods, now, &Admission::Unqueued)
}

/// [`plan`] for a job whose queue says `admission`.
pub fn plan_admitted(
    job: &ElasticJob,
    pods: &[ObservedPod],
    now: Timestamp,
    admission: &Admission,
) -> Plan {
    let NextStatus {
        status,
        verdict,
        mut events,
    } = next_status::next_status_admitted(job, pods, now, admission);
    let mut p = Planner {
        actions: Vec::new(),
        wake: Vec::new(),
        events: Vec::new(),
        now,
        job,
        status: &status,
    };
    p.force_delete_stuck(job, pods);
    match verdict {
        Verdict::Active => p.active(job, pods, &status),
        Verdict::Suspended => {
            let all: Vec<&ObservedPod> = pods.iter().collect();
            p.delete_in_order(&all, pods, DeleteReason::Suspend);
        }
        Verdict::Queued => {
            let all: Vec<&ObservedPod> = pods.iter().collect();
            p.delete_in_order(&all, pods, DeleteReason::Queued);
        }
        Verdict::Finished(state) => p.finished(job, pods, &status, state),
    }
    let Planner {
        actions,
        wake,
        events: planned,
        ..
    } = p;
    events.extend(planned);
    Plan {
        status,
        verdict,
        actions,
        events,
        requeue_after: wake.into_iter().min(),
    }
}

struct Planner<'a> {
    actions: Vec<Action>,
    /// Candidate requeue delays.
    wake: Vec<Duration>,
    events: Vec<Event>,
    now: Timestamp,
    job: &'a ElasticJob,
    /// The next status (why the job ended, for the pods' stop reason).
    status: &'a ElasticJobStatus,
}

/// `to - from`, or zero when `to` has passed.
fn until(from: Timestamp, to: Timestamp) -> Duration {
    let d = to.duration_since(from);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

fn add(t: Timestamp, secs: i64) -> Timestamp {
    t.saturating_add(SignedDuration::from_secs(secs))
        .unwrap_or(t)
}

/// The delay before recreating a pod after its `n`-th failure within the window: initial ×
/// 2^(n-1), at most max.
pub fn backoff_delay(n: u32, backoff: &Backoff) -> Duration {
    let initial = backoff.initial_seconds.max(0) as u64;
    let max = backoff.max_seconds.max(0) as u64;
    let factor = 1u64.checked_shl(n.saturating_sub(1)).unwrap_or(u64::MAX);
    Duration::from_secs(initial.saturating_mul(factor).min(max))
}

impl Planner<'_> {
    fn delete(&mut self, pod: &ObservedPod, why: DeleteReason) {
        let tell = match (&pod.ip, pod.is_running()) {
            (Some(ip), true) => stop_request(why, self.job, self.status).map(|request| Tell {
                ip: ip.clone(),
                request,
            }),
            _ => None,
        };
        self.actions.push(Action::DeletePod {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            why,
            tell,
        });
    }

    /// Deletes `targets` (those not already being deleted), highest index first; pod 0 (the
    /// rendezvous host) only when no other pod of the job still runs or is terminating.
    fn delete_in_order(
        &mut self,
        targets: &[&ObservedPod],
        all: &[ObservedPod],
        why: DeleteReason,
    ) {
        let mut targets: Vec<&ObservedPod> = targets
            .iter()
            .copied()
            .filter(|p| p.deletion.is_none())
            .collect();
        targets.sort_by_key(|p| std::cmp::Reverse(p.index));
        let others_left = all.iter().any(|p| p.index != 0 && !p.phase.is_terminal());
        for pod in targets {
            if pod.index == 0 && others_left {
                continue;
            }
            self.delete(pod, why);
        }
    }

    fn force_delete_stuck(&mut self, job: &ElasticJob, pods: &[ObservedPod]) {
        let timeout = job
            .spec
            .failure_policy
            .pod_termination_timeout_seconds
            .max(1) as i64;
        for pod in pods {
            let (Some(requested), Some(false)) = (pod.deletion_requested, pod.node_ready) else {
                continue;
            };
            let due = add(requested, timeout);
            if self.now >= due {
                self.actions.push(Action::ForceDeletePod {
                    name: pod.name.clone(),
                    uid: pod.uid.clone(),
                });
                self.events.push(
                    Event::warning(
                        event::reason::FORCE_DELETING_POD,
                        format!(
                            "pod {} has been terminating for {}s on node {}, which is not ready: deleting it forcefully so it can be replaced",
                            pod.name,
                            self.now.duration_since(requested).as_secs(),
                            pod.node.as_deref().unwrap_or("?")
                        ),
                    )
                    .about(&pod.name),
                );
            } else {
                self.wake.push(until(self.now, due));
            }
        }
    }

    fn active(&mut self, job: &ElasticJob, pods: &[ObservedPod], status: &ElasticJobStatus) {
        self.actions.push(Action::ApplyService);
        let spec = &job.spec;
        let desired = spec.desired_replicas() as u32;
        if let (Some(deadline), Some(start)) =
            (spec.run_policy.active_deadline_seconds, &status.start_time)
        {
            self.wake.push(until(self.now, add(start.0, deadline)));
        }

        let highest_existing = pods.iter().map(|p| p.index).max();
        let mut created = Vec::new();
        for index in 0..desired {
            let Some(pod) = pods.iter().find(|p| p.index == index) else {
                self.actions.push(Action::CreatePod { index });
                created.push(index);
                continue;
            };
            if pod.phase == Phase::Failed && pod.deletion.is_none() {
                self.recreate_after_backoff(pod, status, &spec.failure_policy.backoff);
            }
        }
        if let Some(highest) = highest_existing {
            let new: Vec<String> = created
                .iter()
                .filter(|&&i| i > highest)
                .map(|i| format!("{}-worker-{i}", job.name_any()))
                .collect();
            if !new.is_empty() {
                self.events.push(Event::normal(
                    event::reason::SCALING_UP,
                    format!("scaling up to {desired} pods: creating {}", new.join(", ")),
                ));
            }
        }

        let above: Vec<&ObservedPod> = pods
            .iter()
            .filter(|p| p.index >= desired && p.deletion.is_none())
            .collect();
        if !above.is_empty() {
            let before = self.actions.len();
            self.delete_in_order(&above, pods, DeleteReason::ScaleDown);
            let names: Vec<String> = self.actions[before..]
                .iter()
                .filter_map(|a| match a {
                    Action::DeletePod { name, .. } => Some(name.clone()),
                    _ => None,
                })
                .collect();
            self.events.push(Event::normal(
                event::reason::SCALING_DOWN,
                format!(
                    "scaling down to {desired} pods: deleting {}",
                    names.join(", ")
                ),
            ));
        }
    }

    /// A failed pod is deleted once its backoff has passed (it is recreated once gone): the
    /// n-th failure of its index within [`BACKOFF_WINDOW`] waits `backoff_delay(n)` from the
    /// time it failed.
    fn recreate_after_backoff(
        &mut self,
        pod: &ObservedPod,
        status: &ElasticJobStatus,
        backoff: &Backoff,
    ) {
        let failed_at = status
            .recent_failures
            .iter()
            .find(|r| r.pod_uid.is_some() && r.pod_uid == pod.uid)
            .map(|r| r.time.0)
            .unwrap_or(self.now);
        let window_start = self.now.saturating_sub(BACKOFF_WINDOW).unwrap_or(self.now);
        let n = status
            .recent_failures
            .iter()
            .filter(|r| r.replica_index == Some(pod.index as i32) && r.time.0 >= window_start)
            .count()
            .max(1) as u32;
        let delay = backoff_delay(n, backoff);
        let due = failed_at
            .saturating_add(SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX))
            .unwrap_or(failed_at);
        if self.now >= due {
            self.delete(pod, DeleteReason::Recreate);
        } else {
            self.wake.push(until(self.now, due));
        }
    }

    fn finished(
        &mut self,
        job: &ElasticJob,
        pods: &[ObservedPod],
        status: &ElasticJobStatus,
        state: JobState,
    ) {
        let done = status
            .completion_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(self.now);
        // After a success, the other pods of the final round are at the launchers' exit barrier
        // and end on their own within moments: give them the rendezvous close timeout before
        // deleting them, so they finish cleanly and keep their logs.
        let grace_until = add(done, job.spec.rendezvous.close_timeout_seconds as i64);
        let in_grace = state == JobState::Succeeded && self.now < grace_until;
        let targets: Vec<&ObservedPod> = match job.spec.run_policy.clean_pod_policy {
            CleanPodPolicy::None => Vec::new(),
            CleanPodPolicy::Running => pods
                .iter()
                .filter(|p| p.is_active() && !(in_grace && p.is_running()))
                .collect(),
            CleanPodPolicy::All => pods
                .iter()
                .filter(|p| !(in_grace && p.is_running()))
                .collect(),
        };
        if in_grace && pods.iter().any(|p| p.is_running()) {
            self.wake.push(until(self.now, grace_until));
        }
        self.delete_in_order(&targets, pods, DeleteReason::Cleanup);
        if let Some(ttl) = job.spec.run_policy.ttl_seconds_after_finished {
            let due = add(done, ttl as i64);
            if self.now >= due {
                self.actions.push(Action::DeleteJob);
                self.events.push(Event::normal(
                    event::reason::TTL_EXPIRED,
                    format!("deleting the job: it finished more than {ttl}s ago (runPolicy.ttlSecondsAfterFinished)"),
                ));
            } else {
                self.wake.push(until(self.now, due));
            }
        }
    }
}

#[cfg(test)]
mod tests;
