//! The job's next status, from the job, its pods and the time: conditions that only move
//! forward, failures recorded once each and counted against their budget, the job's state.
//!
//! Conditions: Created, Running, Restarting, Suspended, Succeeded, Failed. Succeeded and Failed
//! are final: once one is True, nothing changes any more. Running and Restarting exclude each
//! other and may alternate; Suspended comes and goes with `runPolicy.suspend`. A condition's
//! lastTransitionTime changes only when its status does.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use elasticjob_crds::names;
use elasticjob_crds::spec::ElasticJob;
use elasticjob_crds::status::{
    ElasticJobStatus, FailureCategory, FailureRecord, JobState, LauncherStatus,
    MAX_RECENT_FAILURES, condition, reason,
};
use elasticjob_crds::validate::{describe, validate, warnings};

use crate::event::{self, Event};
use crate::failure::{self, Classification};
use crate::observed::{ObservedPod, Phase};
use crate::progress;
use crate::training;

/// Longest message kept in a failure record.
pub const MAX_FAILURE_MESSAGE: usize = 1024;
/// Longest condition message written (the API allows 32 KiB; people read these).
pub const MAX_CONDITION_MESSAGE: usize = 2048;

/// What the job should do, once its status is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Run: create, replace and scale pods.
    Active,
    /// Stop every pod; keep the job.
    Suspended,
    /// Not admitted by the job's queue (waiting, or preempted): no pods, no budget charged.
    Queued,
    /// Done (Succeeded or Failed): clean up per cleanPodPolicy, then the TTL.
    Finished(JobState),
}

/// What the job's queue (Kueue) allows it, as the controller read it from its Workload.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Admission {
    /// The job is not queued: it runs as its spec says.
    #[default]
    Unqueued,
    /// Admitted; the message says by which queue and for how many pods.
    Admitted { message: String },
    /// Waiting for admission, or stopped by the queue: no pods. `reason` is a Queued
    /// condition reason (PendingAdmission, Evicted).
    Waiting {
        reason: &'static str,
        message: String,
    },
}

/// The next status, what it means for the pods, and the events of the change.
#[derive(Debug, Clone, PartialEq)]
pub struct NextStatus {
    pub status: ElasticJobStatus,
    pub verdict: Verdict,
    pub events: Vec<Event>,
}

// ---- conditions ----------------------------------------------------------------------------

pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Succeeded or Failed, when one of them is True.
pub fn finished_state(conditions: &[Condition]) -> Option<JobState> {
    if is_true(conditions, condition::SUCCEEDED) {
        Some(JobState::Succeeded)
    } else if is_true(conditions, condition::FAILED) {
        Some(JobState::Failed)
    } else {
        None
    }
}

/// Sets a condition (lastTransitionTime moves only when the status changes). Does nothing once
/// the job is finished. Returns whether the status changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) -> bool {
    if finished_state(conditions).is_some() {
        return false;
    }
    upsert(conditions, type_, status, reason, message, now, generation)
}

/// Sets a condition only if it exists already or is to become True: a job that never ran has
/// no Running=False condition.
pub fn update_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) -> bool {
    if !status && get(conditions, type_).is_none() {
        return false;
    }
    set_condition(conditions, type_, status, reason, message, now, generation)
}

/// Finishes the job: Running, Restarting (where present) go False and Succeeded or Failed goes
/// True. Once finished, nothing changes: a second call does nothing and returns false.
pub fn finish(
    conditions: &mut Vec<Condition>,
    outcome: JobState,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) -> bool {
    if finished_state(conditions).is_some() {
        return false;
    }
    let done = format!("the job {}", outcome.as_str().to_lowercase());
    for type_ in [condition::RUNNING, condition::RESTARTING] {
        update_condition(
            conditions,
            type_,
            false,
            reason::JOB_FINISHED,
            &done,
            now,
            generation,
        );
    }
    let type_ = match outcome {
        JobState::Failed => condition::FAILED,
        _ => condition::SUCCEEDED,
    };
    upsert(conditions, type_, true, reason, message, now, generation)
}

fn upsert(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) -> bool {
    let status = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => {
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
            false
        }
        Some(c) => {
            *c = condition(type_, status, reason, message, now, generation);
            true
        }
        None => {
            conditions.push(condition(type_, status, reason, message, now, generation));
            true
        }
    }
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(now),
        observed_generation: generation,
    }
}

/// Sets PodNameConflict from `conflicts` (pod index → what holds its name, as execution found
/// them): True naming them, False once they are gone (absent if there never were any).
pub fn name_conflicts(
    st: &mut ElasticJobStatus,
    conflicts: &BTreeMap<u32, String>,
    now: Timestamp,
    generation: Option<i64>,
) {
    let (status, reason, message) = if conflicts.is_empty() {
        (
            false,
            reason::POD_NAMES_FREE,
            "the job's pod names are free".to_string(),
        )
    } else {
        let named: Vec<&str> = conflicts.values().map(String::as_str).collect();
        let message = format!(
            "{} of the job's pods cannot be created: {}; delete or rename what holds the name",
            conflicts.len(),
            named.join("; ")
        );
        (
            true,
            reason::POD_NAME_TAKEN,
            shorten(&message, MAX_CONDITION_MESSAGE),
        )
    };
    update_condition(
        &mut st.conditions,
        condition::POD_NAME_CONFLICT,
        status,
        reason,
        &message,
        now,
        generation,
    );
}

/// An edit of a started job that the operator does not run: the spec's problems, and the
/// generation of the last valid spec, which the job keeps running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEdit {
    pub issues: String,
    pub running_generation: i64,
}

/// Sets EditRejected from the edit the reconcile rejected, if any; a Warning event when the
/// condition becomes True or says something new (a second bad edit).
pub fn rejected_edit(
    st: &mut ElasticJobStatus,
    rejected: Option<&RejectedEdit>,
    now: Timestamp,
    generation: Option<i64>,
) -> Option<Event> {
    let Some(r) = rejected else {
        update_condition(
            &mut st.conditions,
            condition::EDIT_REJECTED,
            false,
            reason::SPEC_VALID,
            "the spec is valid and is the one the job runs",
            now,
            generation,
        );
        return None;
    };
    let message = shorten(
        &format!(
            "generation {} of the spec is invalid: {}; the job keeps running generation {}, its last valid spec, until the spec is fixed",
            generation.unwrap_or_default(),
            r.issues,
            r.running_generation
        ),
        MAX_CONDITION_MESSAGE,
    );
    let said = get(&st.conditions, condition::EDIT_REJECTED)
        .is_some_and(|c| c.status == "True" && c.message == message);
    set_condition(
        &mut st.conditions,
        condition::EDIT_REJECTED,
        true,
        reason::INVALID_SPEC,
        &message,
        now,
        generation,
    );
    (!said).then(|| Event::warning(reason::INVALID_SPEC, message))
}

/// Events for conditions that became True (and for a resume).
fn transition_events(old: &[Condition], new: &[Condition]) -> Vec<Event> {
    let mut events = Vec::new();
    for c in new {
        let was = get(old, &c.type_).map(|o| o.status.as_str());
        if c.status == "True" && was != Some("True") {
            let warning = c.type_ == condition::FAILED || c.type_ == condition::RESTARTING;
            events.push(if warning {
                Event::warning(&c.reason, &c.message)
            } else {
                Event::normal(&c.reason, &c.message)
            });
        }
        if c.type_ == condition::SUSPENDED && c.status == "False" && was == Some("True") {
            events.push(Event::normal(&c.reason, &c.message));
        }
    }
    events
}

// ---- failures ------------------------------------------------------------------------------

/// Puts a failure first in the list.
pub fn push_failure(list: &mut Vec<FailureRecord>, record: FailureRecord) {
    list.insert(0, record);
}

/// Keeps the newest [`MAX_RECENT_FAILURES`] failures, and beyond them the failures of pods that
/// still exist (`live` pod UIDs): the list is how a failure is known to be counted already, so
/// a failed pod's entry stays until the pod is gone, even when many pods fail at once. Those
/// older entries lose their message, so the status stays far below the apiserver's object size
/// limit however many pods fail together (about 300 bytes a pod).
pub fn trim_failures(list: &mut Vec<FailureRecord>, live: &HashSet<&str>) {
    let mut kept = 0;
    list.retain_mut(|r| {
        kept += 1;
        if kept <= MAX_RECENT_FAILURES {
            return true;
        }
        r.message.clear();
        live.contains(record_key(r))
    });
}

/// The failure record of a pod and its classification.
pub fn failure_record(pod: &ObservedPod, c: &Classification, now: Timestamp) -> FailureRecord {
    let t = &pod.termination;
    let time = t
        .trainer
        .as_ref()
        .and_then(|e| e.finished_at)
        .or_else(|| t.init.as_ref().and_then(|e| e.finished_at))
        .unwrap_or(now);
    FailureRecord {
        time: Time(time),
        pod: pod.name.clone(),
        pod_uid: pod.uid.clone(),
        replica_index: Some(pod.index as i32),
        node: pod.node.clone(),
        rank: c.rank.map(|r| r as i32),
        local_rank: c.local_rank.map(|r| r as i32),
        exit_code: c.exit_code,
        signal: c.signal.clone(),
        reason: c.reason.into(),
        category: c.category,
        permanent: c.permanent,
        message: shorten(&c.message, MAX_FAILURE_MESSAGE),
    }
}

/// At most `max` characters: the head and the end (where Python puts the exception).
pub fn shorten(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return text.to_string();
    }
    let head = max / 5;
    let tail = max - head - 1;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// The key a failure is recorded under, so each pod's failure is counted once.
fn pod_key(pod: &ObservedPod) -> &str {
    pod.uid.as_deref().unwrap_or(&pod.name)
}

fn record_key(r: &FailureRecord) -> &str {
    r.pod_uid.as_deref().unwrap_or(&r.pod)
}

/// A pod of the job that failed or is being taken away (not by the operator), with its
/// classification. Pods at or above the desired count are being scaled away and are not
/// failures.
fn failed_pods<'a>(
    pods: &'a [ObservedPod],
    desired: u32,
    job: &ElasticJob,
) -> Vec<(&'a ObservedPod, Classification)> {
    let policy = &job.spec.failure_policy;
    pods.iter()
        .filter(|p| p.index < desired)
        .filter_map(|p| match p.phase {
            Phase::Failed => Some((p, failure::classify_pod(p, policy))),
            Phase::Succeeded => None,
            _ if p.deletion.is_some() => Some((p, failure::classify_disruption(p))),
            _ => None,
        })
        .collect()
}

/// Pods below the desired count that were running at the last status and are gone now,
/// unseen (`progress::vanished`): each is charged once as a failure. (The controller confirms
/// their absence with the apiserver first: see `pod_cache`.)
pub fn vanished_pods(
    job: &ElasticJob,
    old: &[LauncherStatus],
    pods: &[ObservedPod],
    desired: u32,
) -> Vec<ObservedPod> {
    let name = job.name_any();
    progress::vanished(old, pods)
        .into_iter()
        .filter_map(|l| {
            let index = names::pod_index(&name, &l.pod)?;
            (index < desired).then(|| ObservedPod::gone(&l.pod, &l.pod_uid, index))
        })
        .collect()
}

// ---- the next status -----------------------------------------------------------------------

fn seconds(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

/// Computes the next status of `job` from its pods at time `now`.
pub fn next_status(job: &ElasticJob, pods: &[ObservedPod], now: Timestamp) -> NextStatus {
    next_status_admitted(job, pods, now, &Admission::Unqueued)
}

/// [`next_status`] of a job whose queue says `admission`.
pub fn next_status_admitted(
    job: &ElasticJob,
    pods: &[ObservedPod],
    now: Timestamp,
    admission: &Admission,
) -> NextStatus {
    let name = job.name_any();
    let generation = job.metadata.generation;
    let old = job.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let mut events = Vec::new();
    st.observed_generation = generation;
    st.selector = Some(names::selector(&name));
    st.replicas = pods.iter().filter(|p| p.is_active()).count() as i32;
    st.ready_replicas = pods.iter().filter(|p| p.is_active() && p.ready).count() as i32;

    let was_finished = finished_state(&old.conditions).is_some();
    if !was_finished {
        fold_launchers(job, pods, &old, &mut st, &mut events);
        fold_training(job, pods, &old, now, &mut st, &mut events);
    }
    let verdict = decide(job, pods, now, &old, &mut st, &mut events, admission);
    if !was_finished {
        let desired = job.spec.desired_replicas() as u32;
        let min = job.spec.min_pods();
        let training_now = verdict == Verdict::Active && training::all_training(pods, desired, min);
        let active = !matches!(verdict, Verdict::Suspended | Verdict::Queued);
        let finishing = matches!(verdict, Verdict::Finished(_));
        if finishing || training::goodput_due(old.goodput.as_ref(), training_now, active, now) {
            st.goodput = Some(training::sample_goodput(
                old.goodput.as_ref(),
                training_now,
                active,
                now,
            ));
        }
    }
    st.restart_count = st.worker_restarts + st.application_restarts + st.infrastructure_restarts;
    st.state = Some(match verdict {
        Verdict::Finished(state) => state,
        Verdict::Suspended => JobState::Suspended,
        Verdict::Queued => JobState::Queued,
        Verdict::Active => active_state(&st),
    });
    events.extend(transition_events(&old.conditions, &st.conditions));
    NextStatus {
        status: st,
        verdict,
        events,
    }
}

/// The launchers' reports: `status.launchers`, the newest round and its world size, and
/// worker-group restarts not counted before (each gets an event).
fn fold_launchers(
    job: &ElasticJob,
    pods: &[ObservedPod],
    old: &ElasticJobStatus,
    st: &mut ElasticJobStatus,
    events: &mut Vec<Event>,
) {
    let folded = progress::fold(&old.launchers, pods);
    st.worker_restarts = old.worker_restarts.saturating_add(folded.total_new());
    for (pod, count, _) in &folded.new_restarts {
        let note = format!(
            "{pod}: its launcher restarted the workers after a worker failed (restart {count} of spec.maxRestarts {})",
            job.spec.max_restarts
        );
        events.push(Event::warning(event::reason::WORKERS_RESTARTED, note).about(pod));
    }
    (st.rendezvous_round, st.world_size) = progress::newest_round(&folded.launchers);
    st.launchers = folded.launchers;
}

/// How long Stalled stays True after a stall before training's progress turns it False: the
/// status write itself wakes the next reconcile, so without a hold a stall that recovered would
/// show for milliseconds.
const STALLED_HOLD: SignedDuration = SignedDuration::from_secs(60);

/// The workers' progress, and the Stalled condition: True (with an event) when a launcher's
/// stall count went up since the last status, however quickly its group recovered; False
/// again, at least STALLED_HOLD later, once no stall is open.
fn fold_training(
    job: &ElasticJob,
    pods: &[ObservedPod],
    old: &ElasticJobStatus,
    now: Timestamp,
    st: &mut ElasticJobStatus,
    events: &mut Vec<Event>,
) {
    st.progress = training::progress(st.progress.as_ref(), pods);
    let generation = job.metadata.generation;
    let stalls = |launchers: &[LauncherStatus], uid: &str| {
        launchers
            .iter()
            .find(|l| l.pod_uid == uid)
            .map_or(0, |l| l.stalls)
    };
    let new_stall = pods.iter().find_map(|p| {
        let uid = p.uid.as_deref()?;
        let stall = p.launcher.as_ref()?.last_stall.as_ref()?;
        (stalls(&st.launchers, uid) > stalls(&old.launchers, uid)).then_some((p, stall))
    });
    if let Some((pod, stall)) = new_stall {
        let message = training::stall_message(pod, stall);
        set_condition(
            &mut st.conditions,
            condition::STALLED,
            true,
            reason::NO_PROGRESS,
            &message,
            now,
            generation,
        );
        events.push(Event::warning(condition::STALLED, message).about(&pod.name));
    } else if training::open_stall(pods).is_none()
        && get(&st.conditions, condition::STALLED).is_some_and(|c| {
            c.status != "True" || now.duration_since(c.last_transition_time.0) >= STALLED_HOLD
        })
    {
        update_condition(
            &mut st.conditions,
            condition::STALLED,
            false,
            reason::PROGRESSING,
            "training reports progress",
            now,
            generation,
        );
    }
}

fn active_state(st: &ElasticJobStatus) -> JobState {
    if is_true(&st.conditions, condition::RESTARTING) {
        JobState::Restarting
    } else if is_true(&st.conditions, condition::RUNNING) {
        JobState::Running
    } else {
        JobState::Created
    }
}

fn fail(
    st: &mut ElasticJobStatus,
    why: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    finish(
        &mut st.conditions,
        JobState::Failed,
        why,
        message,
        now,
        generation,
    );
    st.completion_time = Some(Time(now));
}

fn decide(
    job: &ElasticJob,
    pods: &[ObservedPod],
    now: Timestamp,
    old: &ElasticJobStatus,
    st: &mut ElasticJobStatus,
    events: &mut Vec<Event>,
    admission: &Admission,
) -> Verdict {
    let spec = &job.spec;
    let generation = job.metadata.generation;
    if let Some(state) = finished_state(&st.conditions) {
        return Verdict::Finished(state);
    }

    match validate(job) {
        Err(issues) => {
            let message = format!("the spec is invalid: {}", describe(&issues));
            fail(st, reason::INVALID_SPEC, &message, now, generation);
            return Verdict::Finished(JobState::Failed);
        }
        Ok(()) if old.observed_generation != generation => {
            for w in warnings(job) {
                events.push(Event::warning(event::reason::SPEC_WARNING, w.to_string()));
            }
        }
        Ok(()) => {}
    }

    let conditions = &mut st.conditions;
    if spec.run_policy.suspend {
        let msg = "the job is suspended (spec.runPolicy.suspend): its pods are deleted";
        set_condition(
            conditions,
            condition::SUSPENDED,
            true,
            reason::SUSPENDED,
            msg,
            now,
            generation,
        );
        for type_ in [condition::RUNNING, condition::RESTARTING] {
            update_condition(
                conditions,
                type_,
                false,
                reason::SUSPENDED,
                msg,
                now,
                generation,
            );
        }
        st.start_time = None;
        return Verdict::Suspended;
    }
    match admission {
        Admission::Unqueued => {}
        Admission::Admitted { message } => {
            set_condition(
                conditions,
                condition::QUEUED,
                false,
                reason::ADMITTED,
                message,
                now,
                generation,
            );
        }
        Admission::Waiting {
            reason: why,
            message,
        } => {
            set_condition(
                conditions,
                condition::QUEUED,
                true,
                why,
                message,
                now,
                generation,
            );
            for type_ in [condition::RUNNING, condition::RESTARTING] {
                update_condition(conditions, type_, false, why, message, now, generation);
            }
            // As while suspended: the deadline counts from the next admission.
            st.start_time = None;
            return Verdict::Queued;
        }
    }
    update_condition(
        conditions,
        condition::SUSPENDED,
        false,
        reason::RESUMED,
        "the job was resumed",
        now,
        generation,
    );
    let start = st.start_time.get_or_insert(Time(now)).0;
    set_condition(
        conditions,
        condition::CREATED,
        true,
        reason::JOB_CREATED,
        &format!(
            "the job's Service {} and pods {}-worker-<i> are created",
            job.name_any(),
            job.name_any()
        ),
        now,
        generation,
    );

    if let Some(deadline) = spec.run_policy.active_deadline_seconds
        && now >= start.saturating_add(seconds(deadline)).unwrap_or(start)
    {
        let message = format!(
            "the job ran for more than runPolicy.activeDeadlineSeconds ({deadline}s) since it started at {start}"
        );
        fail(st, reason::DEADLINE_EXCEEDED, &message, now, generation);
        return Verdict::Finished(JobState::Failed);
    }

    let desired = spec.desired_replicas() as u32;
    let policy = &spec.failure_policy;
    let recorded: HashSet<&str> = old.recent_failures.iter().map(record_key).collect();
    let mut new: Vec<(FailureRecord, Classification)> = failed_pods(pods, desired, job)
        .into_iter()
        .filter(|(p, _)| !recorded.contains(pod_key(p)))
        .map(|(p, c)| (failure_record(p, &c, now), c))
        .collect();
    for gone in vanished_pods(job, &old.launchers, pods, desired) {
        if !recorded.contains(pod_key(&gone)) {
            let c = failure::classify_vanished();
            new.push((failure_record(&gone, &c, now), c));
        }
    }
    new.sort_by(|a, b| a.0.time.cmp(&b.0.time).then(a.0.pod.cmp(&b.0.pod)));
    // A launcher exits 0 only when the final round's workers succeeded or the rendezvous is
    // closed because they did; any pod may be the one (pod 0 is not special: the store moves).
    let succeeded = pods.iter().find(|p| p.phase == Phase::Succeeded);

    let min = spec.min_pods();
    let still_running = pods
        .iter()
        .filter(|p| p.index < desired && p.is_running())
        .count();
    let mut failed: Option<(&'static str, String)> = None;
    for (mut record, c) in new {
        let who = describe_failure(&record);
        let disposition = if failed.is_some() {
            "the job has already failed".to_string()
        } else if c.permanent {
            failed = Some((
                reason::PERMANENT_FAILURE,
                format!("{who}: permanent failure"),
            ));
            "permanent: the job fails".to_string()
        } else if succeeded.is_some() {
            "not retried: the job succeeded".to_string()
        } else if c.is_disruption() && still_running >= min {
            st.disruptions += 1;
            format!(
                "{still_running} pods keep running (minReplicas {min}): the job shrinks and grows back when the pod is scheduled again; not charged to any budget"
            )
        } else {
            let (used, max, what, limit_reason) = match c.category {
                FailureCategory::Application => (
                    &mut st.application_restarts,
                    policy.max_application_restarts,
                    "application",
                    reason::APPLICATION_RESTART_LIMIT_EXCEEDED,
                ),
                FailureCategory::Infrastructure => (
                    &mut st.infrastructure_restarts,
                    policy.max_infrastructure_restarts,
                    "infrastructure",
                    reason::INFRASTRUCTURE_RESTART_LIMIT_EXCEEDED,
                ),
            };
            if *used >= max {
                record.permanent = true;
                failed = Some((
                    limit_reason,
                    format!("{who}; all {max} {what} restarts (failurePolicy) are used"),
                ));
                format!("{what} failure; no {what} restarts left ({max} used): the job fails")
            } else {
                *used += 1;
                format!("{what} failure; recreating the pod ({used} of {max} {what} restarts)")
            }
        };
        events.push(
            Event::warning(&record.reason, format!("{who} ({disposition})")).about(&record.pod),
        );
        push_failure(&mut st.recent_failures, record);
    }
    let live: HashSet<&str> = pods.iter().map(pod_key).collect();
    trim_failures(&mut st.recent_failures, &live);

    if let Some((why, message)) = failed {
        fail(st, why, &message, now, generation);
        return Verdict::Finished(JobState::Failed);
    }
    if let Some(pod) = succeeded {
        let message = format!(
            "the launchers of the final round exited 0 ({} succeeded)",
            pod.name
        );
        finish(
            &mut st.conditions,
            JobState::Succeeded,
            reason::JOB_SUCCEEDED,
            &message,
            now,
            generation,
        );
        st.completion_time = Some(Time(now));
        return Verdict::Finished(JobState::Succeeded);
    }

    running_conditions(job, pods, desired, now, st);
    Verdict::Active
}

/// `pod X on node N (rank r, local rank l) failed: Reason: message`.
fn describe_failure(r: &FailureRecord) -> String {
    let mut who = format!("pod {}", r.pod);
    if let Some(node) = &r.node {
        who += &format!(" on node {node}");
    }
    if let (Some(rank), Some(local)) = (r.rank, r.local_rank) {
        who += &format!(" (rank {rank}, local rank {local})");
    }
    format!("{who} failed: {}: {}", r.reason, r.message)
}

fn running_conditions(
    job: &ElasticJob,
    pods: &[ObservedPod],
    desired: u32,
    now: Timestamp,
    st: &mut ElasticJobStatus,
) {
    let generation = job.metadata.generation;
    let min = job.spec.min_pods();
    let running = pods
        .iter()
        .filter(|p| p.index < desired && p.is_running())
        .count();
    let replacing: Vec<&str> = pods
        .iter()
        .filter(|p| p.index < desired)
        .filter(|p| p.phase == Phase::Failed || (p.deletion.is_some() && !p.phase.is_terminal()))
        .map(|p| p.name.as_str())
        .collect();
    // Any MIN pods train: none is special (the rendezvous store moves to a survivor).
    let enough = running >= min;
    let conditions = &mut st.conditions;
    let was_running =
        is_true(conditions, condition::RUNNING) || is_true(conditions, condition::RESTARTING);
    let mut counts = format!(
        "{running} of {desired} pods running (minReplicas {min}, maxReplicas {})",
        job.spec.max_replicas
    );
    let stuck: Vec<String> = pods
        .iter()
        .filter(|p| p.index < desired && p.is_active() && !p.is_running())
        .filter_map(|p| Some(format!("{} {}", p.name, p.waiting.as_deref()?)))
        .collect();
    if !stuck.is_empty() {
        counts = shorten(
            &format!("{counts}; waiting: {}", stuck.join("; ")),
            MAX_CONDITION_MESSAGE,
        );
    }
    if !replacing.is_empty() || (was_running && !enough) {
        let (why, message) = if replacing.is_empty() {
            (
                reason::PODS_NOT_RUNNING,
                format!("waiting for pods to run again: {counts}"),
            )
        } else {
            (
                reason::POD_FAILED,
                format!("replacing failed pods {}: {counts}", replacing.join(", ")),
            )
        };
        set_condition(
            conditions,
            condition::RESTARTING,
            true,
            why,
            &message,
            now,
            generation,
        );
        update_condition(
            conditions,
            condition::RUNNING,
            false,
            why,
            &message,
            now,
            generation,
        );
    } else if !enough && !stuck.is_empty() {
        // Never ran yet, and Kubernetes says why: show it rather than a silent Created.
        set_condition(
            conditions,
            condition::RUNNING,
            false,
            reason::PODS_NOT_RUNNING,
            &format!("waiting for pods to run: {counts}"),
            now,
            generation,
        );
    } else if enough {
        set_condition(
            conditions,
            condition::RUNNING,
            true,
            reason::PODS_RUNNING,
            &counts,
            now,
            generation,
        );
        update_condition(
            conditions,
            condition::RESTARTING,
            false,
            reason::RECOVERED,
            &counts,
            now,
            generation,
        );
    }
}

#[cfg(test)]
mod tests;
