use super::*;
use crate::fixtures::{at, failed, job, pod, recreated, running};
use elasticjob_contract::stop::StopReason;
use elasticjob_crds::spec::CleanPodPolicy;

/// Plans and feeds the status back into the job, as the controller would.
fn step(job: &mut ElasticJob, pods: &[ObservedPod], secs: i64) -> Plan {
    let p = plan(job, pods, at(secs));
    job.status = Some(p.status.clone());
    p
}

fn creates(p: &Plan) -> Vec<u32> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::CreatePod { index } => Some(*index),
            _ => None,
        })
        .collect()
}

fn deletes(p: &Plan) -> Vec<(String, DeleteReason)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::DeletePod { name, why, .. } => Some((name.clone(), *why)),
            _ => None,
        })
        .collect()
}

/// The reason each running pod's launcher is told before its pod is deleted.
fn told(p: &Plan) -> Vec<(String, StopReason)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::DeletePod {
                tell: Some(t),
                name,
                ..
            } => Some((format!("{}@{}", name, t.ip), t.request.reason)),
            _ => None,
        })
        .collect()
}

fn deleted(p: &Plan) -> Vec<String> {
    deletes(p).into_iter().map(|(n, _)| n).collect()
}

#[test]
fn a_new_job_gets_its_service_and_pods() {
    let mut j = job();
    let p = step(&mut j, &[], 0);
    assert_eq!(
        p.actions,
        [
            Action::ApplyService,
            Action::CreatePod { index: 0 },
            Action::CreatePod { index: 1 }
        ]
    );
    assert_eq!(p.requeue_after, None);
    // Once they exist, nothing more to do but keep the Service applied.
    let p = step(&mut j, &[pod(0, Phase::Pending), pod(1, Phase::Pending)], 1);
    assert_eq!(p.actions, [Action::ApplyService]);
}

#[test]
fn replicas_default_to_max() {
    let mut j = job();
    j.spec.replicas = None;
    assert_eq!(creates(&step(&mut j, &[], 0)), [0, 1, 2]);
}

#[test]
fn scale_down_removes_the_highest_indices_first() {
    let mut j = job();
    j.spec.replicas = Some(3);
    step(&mut j, &[], 0);
    j.spec.replicas = Some(1);
    let pods = [running(0), running(1), running(2)];
    let p = step(&mut j, &pods, 10);
    assert_eq!(
        deletes(&p),
        [
            ("train-worker-2".into(), DeleteReason::ScaleDown),
            ("train-worker-1".into(), DeleteReason::ScaleDown)
        ]
    );
    assert_eq!(
        told(&p),
        [
            ("train-worker-2@10.1.0.12".into(), StopReason::ScaleDown),
            ("train-worker-1@10.1.0.11".into(), StopReason::ScaleDown)
        ]
    );
    let stop = stop_request(DeleteReason::ScaleDown, &j, &p.status).unwrap();
    assert_eq!(stop.message, "the job is scaled down to 1 pods");
    // A failed pod recreated has no launcher to tell.
    assert_eq!(stop_request(DeleteReason::Recreate, &j, &p.status), None);
    assert!(creates(&p).is_empty());
    let e = p.events.iter().find(|e| e.reason == "ScalingDown").unwrap();
    assert_eq!(
        e.note,
        "scaling down to 1 pods: deleting train-worker-2, train-worker-1"
    );
    // Pods already terminating are not deleted again.
    let mut going = running(2);
    going.deletion = Some(at(40));
    let p = step(&mut j, &[running(0), running(1), going], 11);
    assert_eq!(deleted(&p), ["train-worker-1"]);
}

#[test]
fn scale_down_never_removes_pod_zero() {
    let mut j = job();
    // An out-of-bounds replicas (a 1.20 apiserver does not run the CEL rule) is clamped to min.
    j.spec.replicas = Some(0);
    j.spec.min_replicas = 1;
    let p = plan(&j, &[running(0), running(1)], at(0));
    // replicas 0 is invalid (must be at least 1): the job fails instead of losing pod 0.
    assert_eq!(p.verdict, Verdict::Finished(JobState::Failed));
    assert!(!deleted(&p).contains(&"train-worker-0".to_string()));
    let mut j = job();
    j.spec.replicas = Some(1);
    let p = plan(&j, &[running(0), running(1), running(2)], at(0));
    assert!(!deleted(&p).contains(&"train-worker-0".to_string()));
}

#[test]
fn scale_up_creates_the_next_indices() {
    let mut j = job();
    step(&mut j, &[], 0);
    j.spec.replicas = Some(3);
    let p = step(&mut j, &[running(0), running(1)], 10);
    assert_eq!(creates(&p), [2]);
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == "ScalingUp" && e.note.contains("train-worker-2"))
    );
}

#[test]
fn backoff_delays_the_recreation_of_a_failed_pod() {
    let mut j = job();
    step(&mut j, &[], 0);
    // Fails at 100: the first failure waits 10 s.
    let pods = [running(0), failed(1, 1, 100)];
    let p = step(&mut j, &pods, 101);
    assert!(deleted(&p).is_empty() && creates(&p).is_empty());
    assert_eq!(p.requeue_after, Some(Duration::from_secs(9)));
    let p = step(&mut j, &pods, 110);
    assert_eq!(
        deletes(&p),
        [("train-worker-1".into(), DeleteReason::Recreate)]
    );
    // Gone: recreated at once.
    let p = step(&mut j, &[running(0)], 111);
    assert_eq!(creates(&p), [1]);
    // The second failure of the same index within the hour waits 20 s.
    let pods = [running(0), recreated(failed(1, 1, 200), 'b')];
    let p = step(&mut j, &pods, 200);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(20)));
    let p = step(&mut j, &pods, 219);
    assert!(deleted(&p).is_empty());
    let p = step(&mut j, &pods, 220);
    assert_eq!(deleted(&p), ["train-worker-1"]);
}

#[test]
fn backoff_is_exponential_and_capped() {
    let b = Backoff {
        initial_seconds: 10,
        max_seconds: 300,
    };
    let secs: Vec<u64> = (0..8).map(|n| backoff_delay(n, &b).as_secs()).collect();
    assert_eq!(secs, [10, 10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(backoff_delay(200, &b).as_secs(), 300);
    let zero = Backoff {
        initial_seconds: 0,
        max_seconds: 0,
    };
    assert_eq!(backoff_delay(3, &zero), Duration::ZERO);
}

#[test]
fn completion_does_not_wait_for_pods_pending_above_min() {
    let mut j = job();
    j.spec.replicas = Some(3);
    step(&mut j, &[], 0);
    let pods = [
        pod(0, Phase::Succeeded),
        pod(1, Phase::Succeeded),
        pod(2, Phase::Pending),
    ];
    let p = step(&mut j, &pods, 100);
    assert_eq!(p.verdict, Verdict::Finished(JobState::Succeeded));
    assert_eq!(p.status.state, Some(JobState::Succeeded));
    // cleanPodPolicy Running (default): the pending pod goes, finished pods stay for their logs.
    assert_eq!(
        deletes(&p),
        [("train-worker-2".into(), DeleteReason::Cleanup)]
    );
    assert!(!p.actions.contains(&Action::ApplyService));
}

#[test]
fn after_success_running_pods_get_the_close_timeout_to_end_on_their_own() {
    let mut j = job();
    step(&mut j, &[], 0);
    // Pod 0 succeeded; pod 1's launcher is still at the exit barrier.
    let p = step(&mut j, &[pod(0, Phase::Succeeded), running(1)], 100);
    assert_eq!(p.verdict, Verdict::Finished(JobState::Succeeded));
    assert!(deletes(&p).is_empty(), "{:?}", p.actions);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(30)));
    let p = step(&mut j, &[pod(0, Phase::Succeeded), running(1)], 131);
    assert_eq!(
        deletes(&p),
        [("train-worker-1".into(), DeleteReason::Cleanup)]
    );
}

#[test]
fn clean_pod_policies() {
    let pods = [running(0), pod(1, Phase::Failed), running(2)];
    let mut j = job();
    j.spec.replicas = Some(3);
    j.spec.min_replicas = 4; // invalid: the job fails at once
    let for_policy = |policy| {
        let mut j = j.clone();
        j.spec.run_policy.clean_pod_policy = policy;
        deleted(&plan(&j, &pods, at(0)))
    };
    assert!(for_policy(CleanPodPolicy::None).is_empty());
    // Pod 0 hosts the rendezvous: it goes last, once no other pod runs.
    assert_eq!(for_policy(CleanPodPolicy::Running), ["train-worker-2"]);
    assert_eq!(
        for_policy(CleanPodPolicy::All),
        ["train-worker-2", "train-worker-1"]
    );
    let mut j = j.clone();
    j.spec.run_policy.clean_pod_policy = CleanPodPolicy::Running;
    let p = plan(&j, &[running(0), pod(1, Phase::Failed)], at(0));
    assert_eq!(deleted(&p), ["train-worker-0"]);
}

#[test]
fn the_deadline_wakes_the_job_and_fails_it() {
    let mut j = job();
    j.spec.run_policy.active_deadline_seconds = Some(3600);
    step(&mut j, &[], 0);
    let p = step(&mut j, &[running(0), running(1)], 600);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(3000)));
    let p = step(&mut j, &[running(0), running(1)], 3600);
    assert_eq!(p.verdict, Verdict::Finished(JobState::Failed));
    assert_eq!(
        p.status
            .conditions
            .iter()
            .find(|c| c.type_ == "Failed")
            .unwrap()
            .reason,
        "DeadlineExceeded"
    );
    // Its running pods are stopped (cleanPodPolicy Running), pod 0 last; their launchers
    // learn why first.
    assert_eq!(deleted(&p), ["train-worker-1"]);
    assert_eq!(
        told(&p),
        [(
            "train-worker-1@10.1.0.11".into(),
            StopReason::DeadlineExceeded
        )]
    );
    let p = step(&mut j, &[running(0)], 3601);
    assert_eq!(deleted(&p), ["train-worker-0"]);
}

#[test]
fn the_ttl_deletes_a_finished_job() {
    let mut j = job();
    j.spec.run_policy.ttl_seconds_after_finished = Some(60);
    step(&mut j, &[], 0);
    let p = step(
        &mut j,
        &[pod(0, Phase::Succeeded), pod(1, Phase::Succeeded)],
        100,
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(60)));
    assert!(!p.actions.contains(&Action::DeleteJob));
    let p = step(
        &mut j,
        &[pod(0, Phase::Succeeded), pod(1, Phase::Succeeded)],
        160,
    );
    assert!(p.actions.contains(&Action::DeleteJob));
    assert!(p.events.iter().any(|e| e.reason == "TTLExpired"));
}

#[test]
fn suspend_deletes_every_pod_pod_zero_last() {
    let mut j = job();
    step(&mut j, &[], 0);
    j.spec.run_policy.suspend = true;
    let p = step(&mut j, &[running(0), running(1)], 10);
    assert_eq!(p.verdict, Verdict::Suspended);
    assert_eq!(
        deletes(&p),
        [("train-worker-1".into(), DeleteReason::Suspend)]
    );
    assert_eq!(
        told(&p),
        [("train-worker-1@10.1.0.11".into(), StopReason::Suspended)]
    );
    assert!(creates(&p).is_empty());
    let mut going = running(1);
    going.deletion = Some(at(40));
    let p = step(&mut j, &[running(0), going], 11);
    assert!(deleted(&p).is_empty(), "pod 0 waits for the others");
    let p = step(&mut j, &[running(0)], 12);
    assert_eq!(deleted(&p), ["train-worker-0"]);
    let p = step(&mut j, &[], 13);
    assert!(p.actions.is_empty());
    j.spec.run_policy.suspend = false;
    assert_eq!(creates(&step(&mut j, &[], 20)), [0, 1]);
}

#[test]
fn pods_stuck_terminating_on_a_lost_node_are_force_deleted() {
    let mut j = job();
    j.spec.failure_policy.pod_termination_timeout_seconds = 300;
    step(&mut j, &[], 0);
    let mut stuck = running(1);
    // Evicted at 70 with a grace period of 30 s, which a lost node's kubelet never runs: the
    // timeout counts from the eviction.
    stuck.deletion = Some(at(100));
    stuck.deletion_requested = Some(at(70));
    stuck.node_ready = Some(false);
    let p = step(&mut j, &[running(0), stuck.clone()], 369);
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::ForceDeletePod { .. }))
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(1)));
    let p = step(&mut j, &[running(0), stuck.clone()], 370);
    assert!(p.actions.contains(&Action::ForceDeletePod {
        name: "train-worker-1".into(),
        uid: Some("pod-1-a".into())
    }));
    assert!(p.events.iter().any(|e| e.reason == "ForceDeletingPod"));
    assert!(
        creates(&p).is_empty(),
        "the replacement waits until the old pod is gone"
    );
    // The failure was counted once, when the pod started going.
    assert_eq!(p.status.infrastructure_restarts, 1);
    // On a ready node, the kubelet finishes the deletion itself.
    stuck.node_ready = Some(true);
    let p = plan(&j, &[running(0), stuck], at(10_000));
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::ForceDeletePod { .. }))
    );
}

#[test]
fn failed_pods_above_the_desired_count_are_just_deleted() {
    let mut j = job();
    step(&mut j, &[], 0);
    let p = step(&mut j, &[running(0), running(1), failed(2, 1, 5)], 10);
    assert_eq!(
        deletes(&p),
        [("train-worker-2".into(), DeleteReason::ScaleDown)]
    );
    let st = &p.status;
    assert_eq!(
        (st.application_restarts, st.infrastructure_restarts),
        (0, 0),
        "not a failure"
    );
    assert_eq!(
        (st.worker_restarts, st.restart_count),
        (3, 3),
        "its launcher's restarts still count"
    );
}

#[test]
fn a_permanent_failure_stops_recreation_and_cleans_up() {
    let mut j = job();
    step(&mut j, &[], 0);
    let p = step(&mut j, &[running(0), failed(1, 127, 5)], 10);
    assert_eq!(p.verdict, Verdict::Finished(JobState::Failed));
    assert!(creates(&p).is_empty());
    assert_eq!(
        deleted(&p),
        ["train-worker-0"],
        "the failed pod stays for its logs"
    );
}

#[test]
fn a_job_its_queue_does_not_admit_has_no_pods_and_is_charged_nothing() {
    let mut j = job();
    let waiting = Admission::Waiting {
        reason: reason::PENDING_ADMISSION,
        message: "waiting for LocalQueue team-a to admit Workload elasticjob-train".into(),
    };
    let p = plan_admitted(&j, &[], at(0), &waiting);
    j.status = Some(p.status.clone());
    assert_eq!(p.verdict, Verdict::Queued);
    assert!(creates(&p).is_empty());
    assert_eq!(p.status.state, Some(JobState::Queued));
    let queued = next_status::get(&p.status.conditions, condition::QUEUED).unwrap();
    assert_eq!(
        (queued.status.as_str(), queued.reason.as_str()),
        ("True", reason::PENDING_ADMISSION)
    );
    assert!(p.status.start_time.is_none());

    // Admitted: it runs, and the condition says so.
    let admitted = Admission::Admitted {
        message: "admitted by ClusterQueue cq (LocalQueue team-a) for 2 pods".into(),
    };
    let p = plan_admitted(&j, &[], at(10), &admitted);
    j.status = Some(p.status.clone());
    assert_eq!(creates(&p), [0, 1]);
    let queued = next_status::get(&p.status.conditions, condition::QUEUED).unwrap();
    assert_eq!(
        (queued.status.as_str(), queued.reason.as_str()),
        ("False", reason::ADMITTED)
    );

    // Preempted while running: the pods stop (told why), no failure is counted.
    let evicted = Admission::Waiting {
        reason: reason::EVICTED,
        message: "LocalQueue team-a took the job's admission back (Preempted: …)".into(),
    };
    let p = plan_admitted(&j, &[running(0), running(1)], at(20), &evicted);
    assert_eq!(p.verdict, Verdict::Queued);
    assert_eq!(
        deletes(&p),
        [("train-worker-1".into(), DeleteReason::Queued)]
    );
    assert_eq!(
        told(&p),
        [("train-worker-1@10.1.0.11".into(), StopReason::Suspended)]
    );
    assert_eq!(p.status.restart_count, 0);
    assert!(p.status.recent_failures.is_empty());
}
