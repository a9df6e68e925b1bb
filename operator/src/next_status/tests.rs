use super::*;
use crate::fixtures::{at, failed, job, pod, recreated, running};
use elasticjob_crds::status::FailureCategory;

/// Runs `next_status` and feeds the status back into the job, as the controller would.
fn step(job: &mut ElasticJob, pods: &[ObservedPod], secs: i64) -> NextStatus {
    let next = next_status(job, pods, at(secs));
    job.status = Some(next.status.clone());
    next
}

fn cond<'a>(st: &'a ElasticJobStatus, type_: &str) -> Option<&'a Condition> {
    get(&st.conditions, type_)
}

fn status_of(st: &ElasticJobStatus, type_: &str) -> Option<(String, String)> {
    cond(st, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

fn tf(status: &str, reason: &str) -> Option<(String, String)> {
    Some((status.into(), reason.into()))
}

#[test]
fn a_new_job_is_created() {
    let mut j = job();
    let n = step(&mut j, &[], 0);
    assert_eq!(n.verdict, Verdict::Active);
    let st = &n.status;
    assert_eq!(st.state, Some(JobState::Created));
    assert_eq!(status_of(st, "Created"), tf("True", "JobCreated"));
    assert_eq!(
        cond(st, "Running"),
        None,
        "no Running=False before it ever ran"
    );
    assert_eq!(st.start_time, Some(Time(at(0))));
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(
        st.selector.as_deref(),
        Some("elasticjob.dev/job-name=train")
    );
    assert_eq!(
        n.events,
        vec![Event::normal(
            "JobCreated",
            &cond(st, "Created").unwrap().message
        )]
    );
}

#[test]
fn running_once_pod_zero_and_min_replicas_run() {
    let mut j = job();
    j.spec.min_replicas = 2;
    step(&mut j, &[], 0);
    let n = step(&mut j, &[running(1), pod(0, Phase::Pending)], 5);
    assert_eq!(n.status.state, Some(JobState::Created));
    let n = step(&mut j, &[running(0), running(1)], 10);
    assert_eq!(n.status.state, Some(JobState::Running));
    assert_eq!(status_of(&n.status, "Running"), tf("True", "PodsRunning"));
    assert_eq!((n.status.replicas, n.status.ready_replicas), (2, 2));
    assert!(n.events.iter().any(|e| e.reason == "PodsRunning"));
    // Still running later: no new event, lastTransitionTime unchanged.
    let n = step(&mut j, &[running(0), running(1)], 20);
    assert!(n.events.is_empty(), "{:?}", n.events);
    assert_eq!(
        cond(&n.status, "Running").unwrap().last_transition_time,
        Time(at(10))
    );
}

#[test]
fn conditions_only_move_forward() {
    let mut conds = Vec::new();
    assert!(set_condition(
        &mut conds,
        "Running",
        true,
        "PodsRunning",
        "2 running",
        at(0),
        Some(1)
    ));
    // Same status: the message changes, the transition time does not.
    assert!(!set_condition(
        &mut conds,
        "Running",
        true,
        "PodsRunning",
        "3 running",
        at(5),
        Some(2)
    ));
    assert_eq!(conds[0].last_transition_time, Time(at(0)));
    assert_eq!(
        (conds[0].message.as_str(), conds[0].observed_generation),
        ("3 running", Some(2))
    );
    // Running ↔ Restarting may alternate.
    assert!(set_condition(
        &mut conds,
        "Running",
        false,
        "PodFailed",
        "",
        at(6),
        Some(2)
    ));
    assert!(set_condition(
        &mut conds,
        "Restarting",
        true,
        "PodFailed",
        "",
        at(6),
        Some(2)
    ));
    assert!(set_condition(
        &mut conds,
        "Running",
        true,
        "PodsRunning",
        "",
        at(7),
        Some(2)
    ));
    assert!(set_condition(
        &mut conds,
        "Restarting",
        false,
        "Recovered",
        "",
        at(7),
        Some(2)
    ));
    // Finishing is final.
    assert!(finish(
        &mut conds,
        JobState::Failed,
        "PermanentFailure",
        "boom",
        at(8),
        Some(2)
    ));
    assert_eq!(finished_state(&conds), Some(JobState::Failed));
    assert_eq!(get(&conds, "Running").unwrap().status, "False");
    assert_eq!(get(&conds, "Running").unwrap().reason, "JobFinished");
    let frozen = conds.clone();
    assert!(!set_condition(
        &mut conds,
        "Running",
        true,
        "PodsRunning",
        "",
        at(9),
        Some(3)
    ));
    assert!(!finish(
        &mut conds,
        JobState::Succeeded,
        "JobSucceeded",
        "",
        at(9),
        Some(3)
    ));
    assert!(!finish(
        &mut conds,
        JobState::Failed,
        "DeadlineExceeded",
        "",
        at(9),
        Some(3)
    ));
    assert_eq!(conds, frozen);
}

#[test]
fn a_finished_job_never_changes() {
    let mut j = job();
    step(&mut j, &[], 0);
    step(&mut j, &[running(0), running(1)], 5);
    let done = step(
        &mut j,
        &[pod(0, Phase::Succeeded), pod(1, Phase::Succeeded)],
        10,
    );
    assert_eq!(done.verdict, Verdict::Finished(JobState::Succeeded));
    assert_eq!(done.status.completion_time, Some(Time(at(10))));
    let later = step(&mut j, &[failed(0, 1, 20), failed(1, 1, 20)], 30);
    assert_eq!(later.verdict, Verdict::Finished(JobState::Succeeded));
    assert_eq!(later.status.conditions, done.status.conditions);
    assert!(later.status.recent_failures.is_empty());
    assert_eq!(later.status.completion_time, Some(Time(at(10))));
}

#[test]
fn completion_with_pods_pending_above_min() {
    let mut j = job();
    j.spec.replicas = Some(3);
    step(&mut j, &[], 0);
    step(&mut j, &[running(0), running(1), pod(2, Phase::Pending)], 5);
    let n = step(
        &mut j,
        &[
            pod(0, Phase::Succeeded),
            pod(1, Phase::Succeeded),
            pod(2, Phase::Pending),
        ],
        60,
    );
    assert_eq!(n.verdict, Verdict::Finished(JobState::Succeeded));
    assert_eq!(
        status_of(&n.status, "Succeeded"),
        tf("True", "JobSucceeded")
    );
    assert_eq!(status_of(&n.status, "Running"), tf("False", "JobFinished"));
    assert!(n.events.iter().any(|e| e.reason == "JobSucceeded"));
}

#[test]
fn a_retryable_failure_is_recorded_once_and_counted() {
    let mut j = job();
    step(&mut j, &[], 0);
    step(&mut j, &[running(0), running(1)], 5);
    let pods = [running(0), failed(1, 1, 30)];
    let n = step(&mut j, &pods, 31);
    let st = &n.status;
    assert_eq!(n.verdict, Verdict::Active);
    assert_eq!(st.state, Some(JobState::Restarting));
    assert_eq!(status_of(st, "Restarting"), tf("True", "PodFailed"));
    assert_eq!(status_of(st, "Running"), tf("False", "PodFailed"));
    assert_eq!(
        (
            st.application_restarts,
            st.infrastructure_restarts,
            st.worker_restarts,
            st.restart_count
        ),
        (1, 0, 3, 4),
        "the failed pod's launcher reported 3 worker-group restarts"
    );
    let f = &st.recent_failures[0];
    assert_eq!(f.pod, "train-worker-1");
    assert_eq!(f.pod_uid.as_deref(), Some("pod-1-a"));
    assert_eq!(
        (f.replica_index, f.rank, f.local_rank, f.exit_code),
        (Some(1), Some(3), Some(1), Some(1))
    );
    assert_eq!(f.node.as_deref(), Some("node-1"));
    assert_eq!(
        (f.reason.as_str(), f.category, f.permanent),
        ("WorkerFailed", FailureCategory::Application, false)
    );
    assert_eq!(f.time, Time(at(30)));
    assert!(f.message.contains("RuntimeError: CUDA error"));
    let warning = n
        .events
        .iter()
        .find(|e| e.reason == "WorkerFailed")
        .unwrap();
    assert_eq!(warning.pod.as_deref(), Some("train-worker-1"));
    assert!(
        warning
            .note
            .contains("recreating the pod (1 of 3 application restarts)"),
        "{}",
        warning.note
    );

    // Seen again: not counted again.
    let n = step(&mut j, &pods, 35);
    assert_eq!(n.status.application_restarts, 1);
    assert_eq!(n.status.recent_failures.len(), 1);
    assert!(n.events.iter().all(|e| e.reason != "WorkerFailed"));

    // The replacement runs: Running again, Restarting False.
    let n = step(&mut j, &[running(0), recreated(running(1), 'b')], 60);
    assert_eq!(n.status.state, Some(JobState::Running));
    assert_eq!(status_of(&n.status, "Restarting"), tf("False", "Recovered"));
    assert_eq!(status_of(&n.status, "Running"), tf("True", "PodsRunning"));
}

#[test]
fn a_permanent_failure_fails_the_job_with_pod_and_rank() {
    let mut j = job();
    step(&mut j, &[], 0);
    let n = step(&mut j, &[running(0), failed(1, 2, 30)], 31);
    assert_eq!(n.verdict, Verdict::Finished(JobState::Failed));
    let c = cond(&n.status, "Failed").unwrap();
    assert_eq!(c.reason, "PermanentFailure");
    assert!(
        c.message.contains(
            "pod train-worker-1 on node node-1 (rank 3, local rank 1) failed: UsageError"
        ),
        "{}",
        c.message
    );
    assert!(n.status.recent_failures[0].permanent);
    assert_eq!(n.status.application_restarts, 0);
    assert_eq!(n.status.state, Some(JobState::Failed));
    assert!(n.events.iter().any(|e| e.reason == "PermanentFailure"));
}

#[test]
fn an_exhausted_budget_fails_the_job() {
    let mut j = job();
    j.spec.failure_policy.max_application_restarts = 1;
    step(&mut j, &[], 0);
    step(&mut j, &[running(0), failed(1, 1, 10)], 11);
    assert_eq!(j.status.as_ref().unwrap().application_restarts, 1);
    let n = step(&mut j, &[running(0), recreated(failed(1, 1, 40), 'b')], 41);
    assert_eq!(n.verdict, Verdict::Finished(JobState::Failed));
    let c = cond(&n.status, "Failed").unwrap();
    assert_eq!(c.reason, "ApplicationRestartLimitExceeded");
    assert!(
        c.message
            .contains("all 1 application restarts (failurePolicy) are used"),
        "{}",
        c.message
    );
    assert_eq!(n.status.application_restarts, 1);
    assert!(n.status.recent_failures[0].permanent);
}

#[test]
fn infrastructure_failures_have_their_own_budget() {
    let mut j = job();
    j.spec.failure_policy.max_application_restarts = 0;
    // Below minReplicas, so the eviction is charged (above it the job would just shrink).
    j.spec.min_replicas = 2;
    step(&mut j, &[], 0);
    let mut evicted = pod(1, Phase::Failed);
    evicted.termination.pod_reason = Some("Evicted".into());
    let n = step(&mut j, &[running(0), evicted], 10);
    assert_eq!(n.verdict, Verdict::Active);
    assert_eq!(
        (
            n.status.application_restarts,
            n.status.infrastructure_restarts
        ),
        (0, 1)
    );
    assert_eq!(
        n.status.recent_failures[0].category,
        FailureCategory::Infrastructure
    );
}

#[test]
fn a_pod_taken_from_a_lost_node_is_an_infrastructure_failure() {
    let mut j = job();
    step(&mut j, &[], 0);
    let mut lost = running(1);
    lost.node_ready = Some(false);
    lost.deletion = Some(at(100));
    let n = step(&mut j, &[running(0), lost.clone()], 90);
    let f = &n.status.recent_failures[0];
    assert_eq!(
        (f.reason.as_str(), f.category),
        ("NodeLost", FailureCategory::Infrastructure)
    );
    assert_eq!(n.status.infrastructure_restarts, 1);
    assert_eq!(n.status.state, Some(JobState::Restarting));
    // When it turns up Failed (same pod), it is not counted again.
    lost.phase = Phase::Failed;
    let n = step(&mut j, &[running(0), lost], 95);
    assert_eq!(n.status.infrastructure_restarts, 1);
}

#[test]
fn preemption_above_min_shrinks_the_job_without_charging_a_budget() {
    let mut j = job();
    j.spec.replicas = Some(3);
    j.spec.min_replicas = 2;
    step(&mut j, &[], 0);
    step(&mut j, &[running(0), running(1), running(2)], 5);
    let preempted = |i: u32, uid: char| {
        let mut p = recreated(running(i), uid);
        p.disruption = Some("PreemptionByScheduler".into());
        p.deletion = Some(at(100));
        p
    };
    // Two of min 2 keep running: not charged, counted as a disruption, with an event.
    let n = step(&mut j, &[running(0), running(1), preempted(2, 'a')], 10);
    let st = &n.status;
    assert_eq!((st.disruptions, st.infrastructure_restarts), (1, 0));
    assert_eq!(st.recent_failures[0].reason, "Preempted");
    assert!(
        n.events
            .iter()
            .any(|e| e.reason == "Preempted" && e.note.contains("not charged")),
        "{:#?}",
        n.events
    );
    // Evicted below min (one left of min 2): charged as before.
    let evicted = |i: u32, uid: char| {
        let mut p = recreated(running(i), uid);
        p.disruption = Some("EvictionByEvictionAPI".into());
        p.deletion = Some(at(100));
        p
    };
    let n = step(
        &mut j,
        &[running(0), evicted(1, 'a'), preempted(2, 'c')],
        20,
    );
    let st = &n.status;
    assert_eq!(st.infrastructure_restarts, 2, "{:#?}", st.recent_failures);
    assert_eq!(st.disruptions, 1);
    // A real infrastructure failure above min is still charged.
    let mut lost = recreated(running(2), 'd');
    lost.node_ready = Some(false);
    lost.deletion = Some(at(100));
    let n = step(&mut j, &[running(0), recreated(running(1), 'e'), lost], 30);
    assert_eq!(n.status.infrastructure_restarts, 3);
}

#[test]
fn pods_removed_by_scale_down_are_not_failures() {
    let mut j = job();
    j.spec.replicas = Some(1);
    step(&mut j, &[], 0);
    let mut leaving = running(1);
    leaving.deletion = Some(at(30));
    let n = step(&mut j, &[running(0), leaving, failed(2, 143, 5)], 10);
    assert!(n.status.recent_failures.is_empty());
    assert_eq!(
        (
            n.status.application_restarts,
            n.status.infrastructure_restarts
        ),
        (0, 0)
    );
}

#[test]
fn recent_failures_are_bounded_and_newest_first() {
    let mut j = job();
    j.spec.failure_policy.max_application_restarts = 100;
    step(&mut j, &[], 0);
    for k in 0..12 {
        let p = recreated(failed(1, 1, 100 * k), char::from(b'a' + k as u8));
        step(&mut j, &[running(0), p], 100 * k + 1);
    }
    let st = j.status.unwrap();
    assert_eq!(st.recent_failures.len(), MAX_RECENT_FAILURES);
    assert_eq!(st.recent_failures[0].time, Time(at(1100)));
    assert_eq!(st.recent_failures[9].time, Time(at(200)));
    assert_eq!(st.application_restarts, 12);
}

#[test]
fn many_pods_failing_at_once_are_each_counted_once() {
    let mut j = job();
    j.spec.max_replicas = 16;
    j.spec.replicas = Some(16);
    j.spec.failure_policy.max_infrastructure_restarts = 100;
    step(&mut j, &[], 0);
    // Pod 0's node is gone: the 15 others lose the store and fail.
    let mut pods = vec![running(0)];
    for i in 1..16 {
        let mut p = pod(i, Phase::Failed);
        p.termination = failed(i, 1, 50).termination;
        let t = p.termination.trainer.as_mut().unwrap();
        t.message = Some(
            serde_json::json!({"kind": "elastic-launch/v1", "reason": "StoreFailed", "message": "connection refused"})
                .to_string(),
        );
        pods.push(p);
    }
    let n = step(&mut j, &pods, 60);
    assert_eq!(n.status.infrastructure_restarts, 15);
    assert_eq!(
        n.status.recent_failures.len(),
        15,
        "entries of pods still there are kept"
    );
    let n = step(&mut j, &pods, 70);
    assert_eq!(n.status.infrastructure_restarts, 15, "not counted again");
    // Once the failed pods are gone, the list is cut to the newest 10.
    let n = step(&mut j, &[running(0)], 80);
    assert_eq!(n.status.recent_failures.len(), MAX_RECENT_FAILURES);
    assert_eq!(n.status.infrastructure_restarts, 15);
}

#[test]
fn an_invalid_job_fails_and_says_what_to_fix() {
    let mut j = job();
    j.spec.min_replicas = 5;
    let n = step(&mut j, &[], 0);
    assert_eq!(n.verdict, Verdict::Finished(JobState::Failed));
    let c = cond(&n.status, "Failed").unwrap();
    assert_eq!(c.reason, "InvalidSpec");
    assert!(
        c.message
            .contains("spec.minReplicas: minReplicas 5 is greater than maxReplicas 3"),
        "{}",
        c.message
    );
    assert!(
        n.events
            .iter()
            .any(|e| e.reason == "InvalidSpec" && e.type_ == crate::event::EventType::Warning)
    );
    assert_eq!(cond(&n.status, "Created"), None);
}

#[test]
fn spec_warnings_are_events_once_per_generation() {
    let mut j = job();
    j.spec.replicas = Some(7);
    let n = step(&mut j, &[], 0);
    assert!(
        n.events
            .iter()
            .any(|e| e.reason == "SpecWarning" && e.note.contains("running 3 pods"))
    );
    let n = step(&mut j, &[], 5);
    assert!(n.events.iter().all(|e| e.reason != "SpecWarning"));
}

#[test]
fn suspend_and_resume() {
    let mut j = job();
    step(&mut j, &[], 0);
    step(&mut j, &[running(0), running(1)], 5);
    j.spec.run_policy.suspend = true;
    let n = step(&mut j, &[running(0), running(1)], 10);
    assert_eq!(n.verdict, Verdict::Suspended);
    assert_eq!(n.status.state, Some(JobState::Suspended));
    assert_eq!(status_of(&n.status, "Suspended"), tf("True", "Suspended"));
    assert_eq!(status_of(&n.status, "Running"), tf("False", "Suspended"));
    assert_eq!(n.status.start_time, None);
    j.spec.run_policy.suspend = false;
    let n = step(&mut j, &[], 100);
    assert_eq!(n.verdict, Verdict::Active);
    assert_eq!(status_of(&n.status, "Suspended"), tf("False", "Resumed"));
    assert_eq!(n.status.start_time, Some(Time(at(100))));
    assert!(n.events.iter().any(|e| e.reason == "Resumed"));
}

#[test]
fn the_deadline_is_enforced_from_the_start() {
    let mut j = job();
    j.spec.run_policy.active_deadline_seconds = Some(600);
    step(&mut j, &[], 0);
    let n = step(&mut j, &[running(0), running(1)], 599);
    assert_eq!(n.verdict, Verdict::Active);
    let n = step(&mut j, &[running(0), running(1)], 600);
    assert_eq!(n.verdict, Verdict::Finished(JobState::Failed));
    let c = cond(&n.status, "Failed").unwrap();
    assert_eq!(c.reason, "DeadlineExceeded");
    assert!(c.message.contains("activeDeadlineSeconds (600s)"));
}

#[test]
fn long_messages_keep_their_head_and_end() {
    let long = format!("head {} THE END", "x".repeat(5000));
    let s = shorten(&long, 100);
    assert_eq!(s.chars().count(), 100);
    assert!(s.starts_with("head ") && s.ends_with("THE END") && s.contains('…'));
    assert_eq!(shorten("short", 100), "short");
}

#[test]
fn launcher_restarts_are_counted_once_with_an_event() {
    let mut j = job();
    step(&mut j, &[], 0);
    let reporting = |index: u32, round: u64, restarts: u32| {
        let mut p = running(index);
        p.launcher = Some(elasticjob_contract::progress::Progress {
            state: elasticjob_contract::progress::State::Running,
            round: Some(round),
            world_size: Some(4),
            restart_count: restarts,
            ..elasticjob_contract::progress::Progress::new(2, 3)
        });
        p
    };
    let n = step(&mut j, &[reporting(0, 1, 0), reporting(1, 1, 1)], 5);
    let st = &n.status;
    assert_eq!((st.worker_restarts, st.restart_count), (1, 1));
    assert_eq!((st.rendezvous_round, st.world_size), (Some(1), Some(4)));
    assert_eq!(st.launchers.len(), 2);
    assert_eq!(
        st.state,
        Some(JobState::Running),
        "a worker restart is not a pod failure"
    );
    let restarted: Vec<_> = n
        .events
        .iter()
        .filter(|e| e.reason == "WorkersRestarted")
        .collect();
    assert_eq!(restarted.len(), 1);
    assert!(
        restarted[0]
            .note
            .contains("train-worker-1: its launcher restarted the workers"),
        "{}",
        restarted[0].note
    );
    let n = step(&mut j, &[reporting(0, 2, 0), running(1)], 15);
    assert_eq!(
        n.status.worker_restarts, 1,
        "counted once; a silent pod keeps its entry"
    );
    assert!(n.events.iter().all(|e| e.reason != "WorkersRestarted"));
}

#[test]
fn pods_stuck_pending_are_named_with_kubernetes_reason() {
    let mut j = job();
    j.spec.min_replicas = 2;
    step(&mut j, &[], 0);
    let mut stuck = pod(1, Phase::Pending);
    stuck.waiting = Some("trainer: ImagePullBackOff: Back-off pulling image \"nope\"".into());
    let n = step(&mut j, &[running(0), stuck], 5);
    let c = cond(&n.status, "Running").expect("a Running=False condition says why");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "PodsNotRunning")
    );
    assert!(
        c.message
            .contains("train-worker-1 trainer: ImagePullBackOff: Back-off pulling image"),
        "{}",
        c.message
    );
    // Once enough run, the stuck pod above minReplicas is still named.
    let mut j = job();
    j.spec.min_replicas = 1;
    step(&mut j, &[], 0);
    let mut unschedulable = pod(1, Phase::Pending);
    unschedulable.waiting =
        Some("Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into());
    let n = step(&mut j, &[running(0), unschedulable], 5);
    let c = cond(&n.status, "Running").unwrap();
    assert_eq!(c.status, "True");
    assert!(
        c.message
            .contains("train-worker-1 Unschedulable: 0/3 nodes"),
        "{}",
        c.message
    );
}

#[test]
fn a_running_pod_that_vanishes_unseen_is_a_counted_failure() {
    let mut j = job();
    step(&mut j, &[], 0);
    step(&mut j, &[running(0), running(1)], 5);
    assert_eq!(j.status.as_ref().unwrap().launchers.len(), 2);
    // Force-deleted between two reconciles: the pod is simply gone.
    let n = step(&mut j, &[running(0)], 10);
    let st = &n.status;
    assert_eq!(st.infrastructure_restarts, 1);
    let f = &st.recent_failures[0];
    assert_eq!(
        (f.pod.as_str(), f.pod_uid.as_deref(), f.reason.as_str()),
        ("train-worker-1", Some("pod-1-a"), "PodDeleted")
    );
    assert!(
        f.message.contains("without the operator seeing it end"),
        "{}",
        f.message
    );
    // Counted once: the replacement comes and the old entry is gone.
    let n = step(&mut j, &[running(0), recreated(running(1), 'b')], 20);
    assert_eq!(n.status.infrastructure_restarts, 1);
    let n = step(&mut j, &[running(0), recreated(running(1), 'b')], 30);
    assert_eq!(n.status.infrastructure_restarts, 1);
}

#[test]
fn pods_gone_by_scale_down_or_after_a_recorded_failure_are_not_counted_again() {
    let mut j = job();
    step(&mut j, &[], 0);
    step(&mut j, &[running(0), running(1)], 5);
    j.spec.replicas = Some(1);
    let n = step(&mut j, &[running(0)], 10);
    assert!(n.status.recent_failures.is_empty(), "scaled away");
    let mut j = job();
    step(&mut j, &[], 0);
    step(&mut j, &[running(0), running(1)], 5);
    let n = step(&mut j, &[running(0), failed(1, 1, 30)], 31);
    assert_eq!(n.status.application_restarts, 1);
    let n = step(&mut j, &[running(0)], 40);
    assert_eq!(
        (
            n.status.application_restarts,
            n.status.infrastructure_restarts
        ),
        (1, 0),
        "deleted for its recreation: already recorded"
    );
}

#[test]
fn a_pod_deleted_and_gone_between_two_reconciles_is_still_counted() {
    let mut j = job();
    step(&mut j, &[], 0);
    // The last reconcile saw pod 1 still pending; by the next it was deleted and is gone.
    step(&mut j, &[running(0), pod(1, Phase::Pending)], 5);
    let n = step(&mut j, &[running(0)], 10);
    assert_eq!(n.status.infrastructure_restarts, 1, "{:#?}", n.status);
    assert_eq!(n.status.recent_failures[0].reason, "PodDeleted");
}

#[test]
fn a_pod_name_held_by_another_object_is_a_condition_until_it_is_free() {
    let mut st = ElasticJobStatus::default();
    name_conflicts(&mut st, &BTreeMap::new(), at(0), Some(1));
    assert_eq!(
        cond(&st, condition::POD_NAME_CONFLICT),
        None,
        "never conflicted: absent"
    );
    let conflicts = BTreeMap::from([(
        1,
        "pod train-worker-1 exists, owned by no controller".into(),
    )]);
    name_conflicts(&mut st, &conflicts, at(1), Some(1));
    assert_eq!(
        status_of(&st, condition::POD_NAME_CONFLICT),
        tf("True", reason::POD_NAME_TAKEN)
    );
    let message = &cond(&st, condition::POD_NAME_CONFLICT).unwrap().message;
    assert!(
        message.contains("1 of the job's pods cannot be created: pod train-worker-1 exists, owned by no controller; delete or rename"),
        "{message}"
    );
    name_conflicts(&mut st, &BTreeMap::new(), at(2), Some(1));
    assert_eq!(
        status_of(&st, condition::POD_NAME_CONFLICT),
        tf("False", reason::POD_NAMES_FREE)
    );
}

/// The apiserver refuses an object over about 1.5 MiB (etcd's request limit): a status past it
/// can never be written again, and the job neither recovers nor fails.
#[test]
fn a_thousand_pods_failing_at_once_keep_a_writable_status_and_the_right_counters() {
    const PODS: u32 = 1000;
    let mut j = job();
    j.spec.max_replicas = PODS as i32;
    j.spec.replicas = Some(PODS as i32);
    j.spec.failure_policy.max_application_restarts = 10 * PODS as i32;
    step(&mut j, &[], 0);
    let running_pods: Vec<ObservedPod> = (0..PODS).map(running).collect();
    step(&mut j, &running_pods, 10);
    // Every pod's launcher reports a worker failure with a 1 KiB traceback.
    let traceback = format!(
        "Traceback (most recent call last):\n{}",
        "  x\n".repeat(400)
    );
    let failing: Vec<ObservedPod> = (0..PODS)
        .map(|i| {
            let mut p = failed(i, 1, 50);
            let t = p.termination.trainer.as_mut().unwrap();
            let mut report: serde_json::Value =
                serde_json::from_str(t.message.as_deref().unwrap()).unwrap();
            report["message"] = traceback.clone().into();
            t.message = Some(report.to_string());
            p
        })
        .collect();
    let n = step(&mut j, &failing, 60);
    let size = serde_json::to_vec(&n.status).unwrap().len();
    assert!(size < 512 * 1024, "the status is {size} bytes");
    assert_eq!(n.status.application_restarts, PODS as i32);
    assert_eq!(
        n.status.recent_failures.len(),
        PODS as usize,
        "each pod's failure is kept until the pod is gone"
    );
    assert!(
        n.status.recent_failures[..MAX_RECENT_FAILURES]
            .iter()
            .all(|r| !r.message.is_empty())
    );
    // Seen again (the pods are deleted one by one): nothing is counted twice.
    let n = step(&mut j, &failing[1..], 70);
    assert_eq!(n.status.application_restarts, PODS as i32);
}

#[test]
fn an_invalid_edit_of_a_started_job_is_a_condition_and_one_warning_until_fixed() {
    let mut st = ElasticJobStatus::default();
    assert_eq!(rejected_edit(&mut st, None, at(0), Some(3)), None);
    assert_eq!(
        cond(&st, condition::EDIT_REJECTED),
        None,
        "never rejected: absent"
    );
    let edit = RejectedEdit {
        issues:
            "spec.failurePolicy.retryableExitCodes: exit codes 3 are also in permanentExitCodes"
                .into(),
        running_generation: 3,
    };
    let event = rejected_edit(&mut st, Some(&edit), at(1), Some(4)).expect("a warning");
    assert_eq!(event.type_, crate::event::EventType::Warning);
    assert_eq!(
        status_of(&st, condition::EDIT_REJECTED),
        tf("True", reason::INVALID_SPEC)
    );
    let message = &cond(&st, condition::EDIT_REJECTED).unwrap().message;
    assert_eq!(
        message,
        "generation 4 of the spec is invalid: spec.failurePolicy.retryableExitCodes: exit codes 3 are also in permanentExitCodes; the job keeps running generation 3, its last valid spec, until the spec is fixed"
    );
    assert_eq!(&event.note, message);
    assert_eq!(
        rejected_edit(&mut st, Some(&edit), at(2), Some(4)),
        None,
        "said once"
    );
    assert!(
        rejected_edit(&mut st, Some(&edit), at(3), Some(5)).is_some(),
        "a second bad edit is said again"
    );
    assert_eq!(rejected_edit(&mut st, None, at(4), Some(6)), None);
    assert_eq!(
        status_of(&st, condition::EDIT_REJECTED),
        tf("False", reason::SPEC_VALID)
    );
}
