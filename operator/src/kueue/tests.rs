use super::*;
use crate::fixtures::{at, job};

const FIRST: Ask = Ask {
    index: 0,
    replaces: None,
};

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
    let Admission::Admitted { message } = admission("team-a", "elasticjob-train", &v, 4, false)
    else {
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
    let Admission::Waiting { reason: r, message } =
        admission("team-a", "elasticjob-train", &v, 4, false)
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
        admission("team-a", "elasticjob-train", &v, 4, false),
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

fn named(mut wl: DynamicObject, ns: &str, status: Value) -> DynamicObject {
    wl.metadata.namespace = Some(ns.into());
    wl.data["status"] = status;
    wl
}

fn admitted_status(count: i32) -> Value {
    json!({
        "conditions": [cond("QuotaReserved", "True", "QuotaReserved", "r"),
                       cond("Admitted", "True", "Admitted", "a")],
        "admission": {"clusterQueue": "cq", "podSetAssignments": [{"name": "workers", "count": count}]}
    })
}

#[test]
fn a_scale_up_beyond_the_admission_asks_with_a_replacement_slice_when_the_job_opts_in() {
    let mut j = queued_job();
    j.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ELASTIC_ANNOTATION.into(), "true".into());
    assert!(uses_slices(&j));
    let ns = j.namespace().unwrap();
    let ask = Ask {
        index: 1,
        replaces: Some("elasticjob-train"),
    };
    let slice = desired_workload(&j, "team-a", PodTemplateSpec::default(), None, ask).unwrap();
    assert_eq!(slice.name_any(), "elasticjob-train-1");
    assert_eq!(
        slice.annotations()[REPLACEMENT_FOR_ANNOTATION],
        format!("{ns}/elasticjob-train")
    );
    assert_eq!(slice.annotations()[ELASTIC_ANNOTATION], "true");
    // Kueue admits a slice whole.
    assert!(slice.data["spec"]["podSets"][0].get("minCount").is_none());

    // 3 admitted, 4 asked: a slice for 4, once; asked anew for another count; none when it is
    // not needed or the job does not opt in.
    assert_eq!(slice_step(true, 3, 4, None), SliceStep::Create);
    assert_eq!(slice_step(true, 3, 4, Some(&slice)), SliceStep::Nothing);
    assert_eq!(slice_step(true, 2, 3, Some(&slice)), SliceStep::Replace);
    assert_eq!(slice_step(false, 3, 4, None), SliceStep::Nothing);
    assert_eq!(slice_step(true, 4, 4, None), SliceStep::Nothing);
    assert_eq!(slice_step(true, 4, 4, Some(&slice)), SliceStep::Delete);
    let Admission::Admitted { message } = admission(
        "team-a",
        "elasticjob-train",
        &verdict(&named(slice.clone(), &ns, admitted_status(3))),
        4,
        true,
    ) else {
        panic!()
    };
    assert!(
        message.contains("a Workload slice asks for all 4"),
        "{message}"
    );
}

#[test]
fn a_job_runs_under_the_replaced_slice_until_kueue_writes_the_replacements_admission() {
    let j = queued_job();
    let ns = j.namespace().unwrap();
    let first = desired_workload(&j, "team-a", PodTemplateSpec::default(), None, FIRST).unwrap();
    let slice = desired_workload(
        &j,
        "team-a",
        PodTemplateSpec::default(),
        None,
        Ask {
            index: 1,
            replaces: Some("elasticjob-train"),
        },
    )
    .unwrap();
    let names = |s: &Standing| {
        (
            s.current.as_ref().map(|(w, _)| w.name_any()),
            s.replacement.as_ref().map(|w| w.name_any()),
            s.stale.iter().map(|w| w.name_any()).collect::<Vec<_>>(),
            s.replacing,
        )
    };

    // Asked: the admitted one is current, the slice waits beside it.
    let old = named(first.clone(), &ns, admitted_status(2));
    let new = named(slice.clone(), &ns, json!({}));
    let s = standing("train", vec![new.clone(), old.clone()]);
    assert_eq!(
        names(&s),
        (
            Some("elasticjob-train".into()),
            Some("elasticjob-train-1".into()),
            vec![],
            false
        )
    );
    assert!(matches!(
        s.current.unwrap().1,
        Verdict::Admitted { count: 2, .. }
    ));

    // Kueue finished the old one for the slice, and has not written the slice's admission
    // yet: the job keeps its 2 pods, and neither Workload is touched.
    let mut replaced = admitted_status(2);
    replaced["conditions"].as_array_mut().unwrap().push(cond(
        "Finished",
        "True",
        "WorkloadSliceReplaced",
        "Replaced",
    ));
    let old_finished = named(first.clone(), &ns, replaced);
    let s = standing("train", vec![old_finished.clone(), new.clone()]);
    assert_eq!(
        names(&s),
        (
            Some("elasticjob-train".into()),
            Some("elasticjob-train-1".into()),
            vec![],
            true
        )
    );
    assert!(matches!(
        s.current.unwrap().1,
        Verdict::Admitted { count: 2, .. }
    ));

    // Admitted: the slice is current, the old one goes.
    let new_admitted = named(slice.clone(), &ns, admitted_status(4));
    let s = standing("train", vec![old_finished, new_admitted]);
    assert_eq!(
        names(&s),
        (
            Some("elasticjob-train-1".into()),
            None,
            vec!["elasticjob-train".into()],
            false
        )
    );
    assert!(matches!(
        s.current.unwrap().1,
        Verdict::Admitted { count: 4, .. }
    ));

    // A slice whose predecessor is gone (finished by the job, or deleted) is an ordinary
    // Workload; finished ones and older ones left by a crash go.
    let mut done = json!({"conditions": [cond("Finished", "True", "Succeeded", "done")]});
    let gone = named(first.clone(), &ns, done.take());
    let s = standing("train", vec![gone, new.clone()]);
    assert_eq!(
        names(&s),
        (
            Some("elasticjob-train-1".into()),
            None,
            vec!["elasticjob-train".into()],
            false
        )
    );
    let mut deleting = named(first, &ns, json!({}));
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
    );
    let s = standing("train", vec![deleting]);
    assert!(s.current.is_none() && s.stale.is_empty());
}

#[test]
fn a_jobs_workloads_are_those_in_its_namespace_with_its_label_and_owned_by_it() {
    let j = queued_job();
    let ns = j.namespace().unwrap();
    let uid = j.uid().unwrap();
    let mine = desired_workload(&j, "team-a", PodTemplateSpec::default(), None, FIRST).unwrap();
    assert!(is_of_job(&mine, &ns, "train", &uid));
    let mut elsewhere = mine.clone();
    elsewhere.metadata.namespace = Some("other".into());
    let mut other_job = mine.clone();
    other_job.metadata.labels.as_mut().unwrap().insert(
        elasticjob_crds::names::LABEL_JOB_NAME.into(),
        "other".into(),
    );
    // Left by a job of the same name deleted before this one was made.
    let mut predecessor = mine.clone();
    predecessor.metadata.owner_references.as_mut().unwrap()[0].uid = "old-uid".into();
    let mut unlabelled = mine.clone();
    unlabelled.metadata.labels = None;
    for (what, w) in [
        ("another namespace", &elsewhere),
        ("another job", &other_job),
        ("a predecessor", &predecessor),
        ("no label", &unlabelled),
    ] {
        assert!(!is_of_job(w, &ns, "train", &uid), "{what}");
    }
    assert!(owned_by(&mine, &uid) && !owned_by(&predecessor, &uid));
}
