use super::*;
use crate::fixtures::{at, job};

const FIRST: u32 = 0;

fn queued_job() -> ElasticJob {
    let mut j = job();
    j.spec.min_replicas = 2;
    j.spec.max_replicas = 4;
    j.spec.replicas = Some(4);
    j.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(QUEUE_LABEL.into(), "team-a".into());
    j
}

fn workload_with_status(status: Value) -> DynamicObject {
    let j = queued_job();
    let mut wl = desired_workload(&j, "team-a", PodTemplateSpec::default(), None, FIRST).unwrap();
    wl.metadata.resource_version = Some("42".into());
    wl.metadata.generation = Some(1);
    wl.data["status"] = status;
    wl
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-03-01T11:00:00Z"})
}

#[test]
fn the_workload_asks_for_the_pods_with_minreplicas_as_its_minimum() {
    let j = queued_job();
    assert_eq!(queue_name(&j), Some("team-a"));
    let p = Priority {
        group: "scheduling.k8s.io",
        kind: "PriorityClass",
        name: "high".into(),
        value: 1000,
    };
    let wl = desired_workload(&j, "team-a", PodTemplateSpec::default(), Some(&p), FIRST).unwrap();
    assert_eq!(wl.name_any(), "elasticjob-train");
    let spec = &wl.data["spec"];
    assert_eq!(spec["queueName"], "team-a");
    assert_eq!(spec["podSets"][0]["name"], POD_SET);
    assert_eq!(spec["podSets"][0]["count"], 4);
    assert_eq!(spec["podSets"][0]["minCount"], 2);
    assert_eq!(spec["priority"], 1000);
    assert_eq!(spec["priorityClassRef"]["name"], "high");
    assert_eq!(wl.owner_references()[0].uid, j.uid().unwrap());

    // A fixed-size job asks for all of it: no minCount.
    let mut fixed = queued_job();
    fixed.spec.min_replicas = 4;
    let wl = desired_workload(&fixed, "team-a", PodTemplateSpec::default(), None, FIRST).unwrap();
    assert!(wl.data["spec"]["podSets"][0].get("minCount").is_none());
    assert!(!asks_the_same(
        &wl,
        &desired_workload(&j, "team-a", PodTemplateSpec::default(), None, FIRST).unwrap()
    ));
}

#[test]
fn an_unlabelled_job_is_not_queued() {
    assert_eq!(queue_name(&job()), None);
}

#[test]
fn a_partial_admission_runs_the_admitted_count_with_the_flavors_placement() {
    let wl = workload_with_status(json!({
        "conditions": [cond("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
                       cond("Admitted", "True", "Admitted", "The workload is admitted")],
        "admission": {"clusterQueue": "cq", "podSetAssignments": [
            {"name": "workers", "count": 3, "flavors": {"cpu": "default", "nvidia.com/gpu": "a100"}}]}
    }));
    let v = verdict(&wl);
    assert_eq!(
        v,
        Verdict::Admitted {
            cluster_queue: "cq".into(),
            count: 3,
            flavors: vec!["a100".into(), "default".into()],
        }
    );
    let Admission::Admitted { message } = admission("team-a", "elasticjob-train", &v, 4) else {
        panic!()
    };
    assert!(message.contains("for 3 of the 4 pods"), "{message}");

    let labels = BTreeMap::from([("gpu".to_string(), "a100".to_string())]);
    let tol = vec![Toleration {
        key: Some("gpu".into()),
        operator: Some("Exists".into()),
        ..Default::default()
    }];
    let j = admitted_job(&queued_job(), 3, &labels, &tol);
    assert_eq!(j.spec.desired_replicas(), 3);
    let pod = j.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.node_selector.as_ref().unwrap()["gpu"], "a100");
    assert_eq!(pod.tolerations.as_ref().unwrap(), &tol);

    // Scaled below the admitted count: the rest is reclaimable, once.
    let patch = reclaimable_patch(&wl, 3, 2).unwrap();
    assert_eq!(
        patch["status"]["reclaimablePods"],
        json!([{"name": "workers", "count": 1}])
    );
    assert_eq!(patch["metadata"]["resourceVersion"], "42");
    assert!(reclaimable_patch(&wl, 3, 3).is_none());
}

#[test]
fn a_pending_workload_says_why_in_kueues_words() {
    let wl = workload_with_status(
        json!({"conditions": [cond("QuotaReserved", "False", "Pending",
        "couldn't assign flavors to pod set workers: insufficient quota for nvidia.com/gpu")]}),
    );
    let v = verdict(&wl);
    let Admission::Waiting { reason: r, message } = admission("team-a", "elasticjob-train", &v, 4)
    else {
        panic!()
    };
    assert_eq!(r, reason::PENDING_ADMISSION);
    assert!(
        message.contains("insufficient quota for nvidia.com/gpu"),
        "{message}"
    );
    assert!(message.contains("LocalQueue team-a"), "{message}");
}

#[test]
fn an_evicted_workload_stops_the_job_and_is_released_with_a_requeue() {
    let wl = workload_with_status(json!({
        "conditions": [cond("QuotaReserved", "True", "QuotaReserved", "reserved"),
                       cond("Admitted", "True", "Admitted", "admitted"),
                       cond("Evicted", "True", "Preempted", "Preempted to accommodate a higher priority Workload")],
        "admission": {"clusterQueue": "cq", "podSetAssignments": [{"name": "workers", "count": 4}]}
    }));
    let v = verdict(&wl);
    assert!(matches!(&v, Verdict::Evicted { reason, .. } if reason == "Preempted"));
    assert!(matches!(
        admission("team-a", "elasticjob-train", &v, 4),
        Admission::Waiting {
            reason: reason::EVICTED,
            ..
        }
    ));

    let patch = release_patch(&wl, "Preempted", "preempted", at(0));
    assert!(patch["status"]["admission"].is_null());
    let conds = patch["status"]["conditions"].as_array().unwrap();
    let find = |t: &str| conds.iter().find(|c| c["type"] == t).unwrap().clone();
    assert_eq!(find("QuotaReserved")["status"], "False");
    assert_eq!(find("Admitted")["status"], "False");
    assert_eq!(find("Requeued")["status"], "True");
    // Kueue's own condition is kept as it was.
    assert_eq!(find("Evicted")["status"], "True");
    assert_eq!(patch["metadata"]["resourceVersion"], "42");
}

#[test]
fn a_finished_job_finishes_its_workload() {
    let wl = workload_with_status(
        json!({"conditions": [cond("QuotaReserved", "True", "QuotaReserved", "r")]}),
    );
    let patch = finish_patch(&wl, true, "the ElasticJob succeeded", at(0));
    let conds = patch["status"]["conditions"].as_array().unwrap();
    assert_eq!(conds.len(), 2);
    assert_eq!(conds[1]["type"], "Finished");
    assert_eq!(conds[1]["reason"], "Succeeded");
    let mut done = wl.clone();
    done.data["status"]["conditions"] = patch["status"]["conditions"].clone();
    assert_eq!(verdict(&done), Verdict::Finished);
}

#[test]
fn workloads_are_numbered_after_the_job() {
    assert_eq!(workload_name("train", 0), "elasticjob-train");
    assert_eq!(workload_name("train", 2), "elasticjob-train-2");
    assert_eq!(next_workload_index("train", []), 0);
    assert_eq!(next_workload_index("train", ["elasticjob-train"]), 1);
    assert_eq!(
        next_workload_index("train", ["elasticjob-train-3", "elasticjob-train", "other"]),
        4
    );
    // Another job whose name extends this one's is not counted.
    assert_eq!(next_workload_index("train", ["elasticjob-train-big"]), 0);
}
