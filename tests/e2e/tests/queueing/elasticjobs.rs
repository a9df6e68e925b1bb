//! ElasticJobs under Kueue and under the coscheduling scheduler, applied with kubectl as a
//! user would, once the operator knows Kueue is there (it looks at start: the suite restarts
//! it after installing Kueue, as the README tells users to).
//!
//! Pods run `idle.py` (plain Python, no torch) and ask for 500m CPU each, so quota is counted
//! in pods: a ClusterQueue with 1500m holds three.

use std::time::{Duration, Instant};

use elasticjob_e2e::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(150);

/// An idle job of `min..=max` pods of 500m CPU, sleeping `sleep` seconds, in `queue` if any.
fn idle_job(name: &str, min: i32, max: i32, sleep: u32, queue: Option<&str>) -> Value {
    let mut job = idle_job_doc(
        name,
        &json!({"minReplicas": min, "maxReplicas": max, "replicas": max,
                "failurePolicy": {"backoff": {"initialSeconds": 1}}}),
    );
    set_env(&mut job, &[("SLEEP", &sleep.to_string())]);
    let c = job.pointer_mut("/spec/template/spec/containers/0").unwrap();
    c["resources"] = json!({"requests": {"cpu": "500m", "memory": "128Mi"},
                            "limits": {"memory": "512Mi"}});
    if let Some(q) = queue {
        job["metadata"]["labels"] = json!({QUEUE_LABEL: q});
    }
    job
}

fn apply_job(env: &Env, ns: &str, job: &Value) {
    env.kubectl.apply_in(ns, job);
}

fn queued_cond(env: &Env, ns: &str, job: &str) -> Option<(String, String, String)> {
    condition_srm(&env.status(ns, job), "Queued")
}

/// Waits until the job's Queued condition has `status` (and, if given, `reason`).
fn wait_queued(env: &Env, ns: &str, job: &str, status: &str, reason: Option<&str>) -> String {
    let j = env.wait_job(ns, job, &format!("Queued={status}"), T, |j| {
        condition_srm(&j["status"], "Queued")
            .is_some_and(|(s, r, _)| s == status && reason.is_none_or(|want| r == want))
    });
    condition_srm(&j["status"], "Queued").unwrap().2
}

fn workload(env: &Env, ns: &str, job: &str) -> Option<Value> {
    env.kubectl.json(&[
        "get",
        "workloads.kueue.x-k8s.io",
        "-n",
        ns,
        &format!("elasticjob-{job}"),
    ])
}

/// Two elastic jobs share quota for three pods: the first runs at its max (2), the second at
/// what is left (1 ≥ its min 1, partial admission); a third whose min (2) does not fit waits
/// with no pods, saying why; a job without the label runs untouched by Kueue. Scaling the first
/// down marks the pod reclaimable; deleting it admits the third.
pub fn elastic_jobs_share_a_queue(env: &Env, ns: &str) {
    env.kubectl.apply_in(ns, &idle_configmap());
    let q = env.apply_kueue_queues(ns, &QueueQuota::new("1500m", "4Gi", 0));
    let lq = q.local_queue.as_str();

    apply_job(env, ns, &idle_job("first", 1, 2, 3600, Some(lq)));
    let msg = wait_queued(env, ns, "first", "False", Some("Admitted"));
    eprintln!("first: {msg}");
    env.wait_pods(ns, "first", "2 running", T, |p| {
        p.iter().filter(|p| phase(p) == "Running").count() == 2
    });

    apply_job(env, ns, &idle_job("second", 1, 2, 3600, Some(lq)));
    let msg = wait_queued(env, ns, "second", "False", Some("Admitted"));
    eprintln!("second: {msg}");
    assert!(msg.contains("for 1 of the 2 pods"), "{msg}");
    env.wait_pods(ns, "second", "1 running", T, |p| {
        p.iter().filter(|p| phase(p) == "Running").count() == 1
    });
    let wl = workload(env, ns, "second").expect("the second job's Workload");
    assert_eq!(wl["spec"]["podSets"][0]["count"], 2, "{wl:#}");
    assert_eq!(wl["spec"]["podSets"][0]["minCount"], 1, "{wl:#}");
    assert_eq!(
        wl["status"]["admission"]["podSetAssignments"][0]["count"], 1,
        "{wl:#}"
    );

    apply_job(env, ns, &idle_job("third", 2, 2, 5, Some(lq)));
    let msg = wait_queued(env, ns, "third", "True", Some("PendingAdmission"));
    eprintln!("third: {msg}");
    assert!(msg.contains("LocalQueue"), "{msg}");
    // Kueue's own reason is passed on once it has looked at the Workload.
    let j = env.wait_job(ns, "third", "Kueue's reason in Queued", T, |j| {
        condition_srm(&j["status"], "Queued").is_some_and(|(_, _, m)| m.contains("quota"))
    });
    eprintln!(
        "third: {}",
        condition_srm(&j["status"], "Queued").unwrap().2
    );
    assert_eq!(j["status"]["state"], "Queued");
    assert!(env.pods(ns, "third").is_empty(), "a queued job has no pods");

    // Untouched by Kueue: no label, no Workload, runs although the quota is used up.
    apply_job(env, ns, &idle_job("free", 1, 1, 3600, None));
    env.wait_state(ns, "free", "Running", T);
    assert!(workload(env, ns, "free").is_none());
    assert!(queued_cond(env, ns, "free").is_none());

    // Run by another controller (MultiKueue, say): this operator leaves it alone.
    let mut elsewhere = idle_job("elsewhere", 1, 1, 3600, Some(lq));
    elsewhere["spec"]["runPolicy"] = json!({"managedBy": "kueue.x-k8s.io/multikueue"});
    apply_job(env, ns, &elsewhere);
    // Nothing may happen to it: watched for 5 s, failing at the first sign of the operator.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        let j = env.job(ns, "elsewhere").unwrap();
        assert!(j["status"].is_null(), "{:#}", j["status"]);
        assert!(env.pods(ns, "elsewhere").is_empty());
        assert!(workload(env, ns, "elsewhere").is_none());
        std::thread::sleep(Duration::from_millis(500));
    }

    // Scale-down: the pod given up is reclaimable quota.
    env.kubectl
        .ok(&["scale", "-n", ns, "elasticjob/first", "--replicas=1"]);
    wait_until(
        "the first job's Workload to mark 1 pod reclaimable",
        T,
        Duration::from_millis(500),
        || {
            workload(env, ns, "first").filter(|w| {
                w["status"]["reclaimablePods"] == json!([{"name": "workers", "count": 1}])
            })
        },
        || {
            format!(
                "{:#}",
                workload(env, ns, "first").unwrap_or_default()["status"]
            )
        },
    );

    // Deleting the first job frees its quota: the third is admitted and finishes.
    env.kubectl.ok(&["delete", "elasticjob", "-n", ns, "first"]);
    wait_queued(env, ns, "third", "False", Some("Admitted"));
    env.wait_state(ns, "third", "Succeeded", T);
    wait_until(
        "the third job's Workload to be Finished",
        T,
        Duration::from_millis(500),
        || {
            workload(env, ns, "third").filter(|w| {
                condition(&w["status"], "Finished").is_some_and(|c| c["status"] == "True")
            })
        },
        || {
            format!(
                "{:#}",
                workload(env, ns, "third").unwrap_or_default()["status"]
            )
        },
    );
    for job in ["second", "free", "elsewhere"] {
        env.kubectl.ok(&["delete", "elasticjob", "-n", ns, job]);
    }
}

/// A higher-priority job preempts a lower one: the lower one's pods stop, it is Queued with
/// reason Evicted and charged nothing, and once the higher one finished it is admitted again
/// and finishes too.
pub fn a_higher_priority_job_preempts_and_the_lower_one_finishes_later(env: &Env, ns: &str) {
    env.kubectl.apply_in(ns, &idle_configmap());
    let q = env.apply_kueue_queues(ns, &QueueQuota::new("1", "4Gi", 0));
    let lq = q.local_queue.as_str();
    for (name, value) in [("ej-e2e-low", 10), ("ej-e2e-high", 1000)] {
        env.kubectl.apply_in(
            ns,
            &json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                    "metadata": {"name": name}, "value": value}),
        );
    }
    let mut low = idle_job("low", 1, 2, 20, Some(lq));
    low["spec"]["template"]["spec"]["priorityClassName"] = json!("ej-e2e-low");
    apply_job(env, ns, &low);
    env.wait_pods(ns, "low", "2 running", T, |p| {
        p.iter().filter(|p| phase(p) == "Running").count() == 2
    });
    let wl = workload(env, ns, "low").unwrap();
    assert_eq!(wl["spec"]["priority"], 10, "{wl:#}");

    let mut high = idle_job("high", 2, 2, 5, Some(lq));
    high["spec"]["template"]["spec"]["priorityClassName"] = json!("ej-e2e-high");
    let t0 = Instant::now();
    apply_job(env, ns, &high);
    let msg = wait_queued(env, ns, "low", "True", Some("Evicted"));
    eprintln!(
        "low preempted {:.1}s after high was applied: {msg}",
        t0.elapsed().as_secs_f64()
    );
    env.wait_pods(ns, "low", "no pods", T, |p| p.is_empty());
    env.wait_state(ns, "high", "Succeeded", T);
    eprintln!(
        "high succeeded {:.1}s after it was applied",
        t0.elapsed().as_secs_f64()
    );
    let done = env.wait_state(ns, "low", "Succeeded", Duration::from_secs(240));
    let st = &done["status"];
    assert_eq!(
        (int(&st["restartCount"]), failures(st).len()),
        (0, 0),
        "a preemption is charged to no budget: {st:#}"
    );
    for name in ["ej-e2e-low", "ej-e2e-high"] {
        env.kubectl.ok(&["delete", "priorityclass", name]);
    }
}

/// Two gang-scheduled jobs (spec.gang) whose pods each take a whole node's 4 GPUs: the three
/// nodes hold one job's minimum (2) but not both. One job gets both its pods; the other gets
/// none bound (never one pod holding a node while it waits), and runs once the first finished.
pub fn gang_jobs_get_their_minimum_or_nothing(env: &Env, ns: &str) {
    env.install_coscheduling();
    env.kubectl.apply_in(ns, &idle_configmap());
    let gang_job = |name: &str, sleep: u32| {
        let mut j = idle_job(name, 2, 2, sleep, None);
        set_gpus(&mut j, Some(4));
        j["spec"]["gang"] = json!({"scheduleTimeoutSeconds": 20});
        j
    };
    apply_job(env, ns, &gang_job("a", 25));
    apply_job(env, ns, &gang_job("b", 5));
    let bound = |job: &str| {
        env.pods(ns, job)
            .iter()
            .filter(|p| p["spec"]["nodeName"].is_string() && !is_deleting(p))
            .count()
    };
    // Whichever the scheduler takes first runs both pods.
    let (first, second) = wait_until(
        "one job to have both pods bound",
        T,
        Duration::from_millis(300),
        || match (bound("a"), bound("b")) {
            (2, _) => Some(("a", "b")),
            (_, 2) => Some(("b", "a")),
            _ => None,
        },
        || {
            format!(
                "a: {}\nb: {}",
                pod_summary(&env.pods(ns, "a")),
                pod_summary(&env.pods(ns, "b"))
            )
        },
    );
    let pg = env
        .kubectl
        .json_ok(&["get", "podgroups.scheduling.x-k8s.io", "-n", ns, first]);
    assert_eq!(pg["spec"]["minMember"], 2, "{pg:#}");
    let pod = &env.pods(ns, first)[0];
    assert_eq!(pod["spec"]["schedulerName"], COSCHEDULER_NAME);
    assert_eq!(pod["metadata"]["labels"][POD_GROUP_LABEL], first);
    // While the first runs, the second never holds a node with part of its gang.
    let t = Instant::now();
    while env
        .job(ns, first)
        .is_some_and(|j| j["status"]["state"] != "Succeeded")
    {
        let n = bound(second);
        assert!(
            n == 0 || n == 2,
            "{second} has {n} of its 2 pods bound while {first} runs:\n{}",
            pod_summary(&env.pods(ns, second))
        );
        assert!(t.elapsed() < T, "{first} did not finish");
        std::thread::sleep(Duration::from_millis(300));
    }
    env.wait_state(ns, second, "Succeeded", Duration::from_secs(240));
}

/// A job that opts in to Kueue's Workload slices (`kueue.x-k8s.io/elastic-job: "true"`) grows
/// while it runs: scaled beyond its admitted count, it asks with a replacement slice, and once
/// Kueue admits the slice the new pod starts next to the running one, which is not stopped. A
/// slice that does not fit waits while the job runs what it has, and is withdrawn when the job
/// scales back.
pub fn a_job_that_opts_in_to_slices_grows_without_stopping(env: &Env, ns: &str) {
    env.kubectl.apply_in(ns, &idle_configmap());
    // Two pods of 500m.
    let q = env.apply_kueue_queues(ns, &QueueQuota::new("1", "4Gi", 0));
    let mut job = idle_job("grow", 1, 3, 3600, Some(&q.local_queue));
    job["spec"]["replicas"] = json!(1);
    job["metadata"]["annotations"] = json!({"kueue.x-k8s.io/elastic-job": "true"});
    apply_job(env, ns, &job);
    env.wait_pods(ns, "grow", "1 running", T, |p| {
        p.iter().filter(|p| phase(p) == "Running").count() == 1
    });
    let first_pod = uids(&env.pods(ns, "grow"));
    let scale = |n: u32| {
        env.kubectl.ok(&[
            "scale",
            "-n",
            ns,
            "elasticjob/grow",
            &format!("--replicas={n}"),
        ])
    };

    scale(2);
    env.wait_pods(ns, "grow", "2 running", T, |p| {
        p.iter().filter(|p| phase(p) == "Running").count() == 2
    });
    let slice = workload(env, ns, "grow-1").expect("the replacement slice elasticjob-grow-1");
    assert_eq!(
        slice["metadata"]["annotations"]["kueue.x-k8s.io/workload-slice-replacement-for"],
        format!("{ns}/elasticjob-grow"),
        "{slice:#}"
    );
    assert_eq!(
        slice["status"]["admission"]["podSetAssignments"][0]["count"], 2,
        "{slice:#}"
    );
    let now = uids(&env.pods(ns, "grow"));
    for (name, uid) in &first_pod {
        assert_eq!(
            now.get(name),
            Some(uid),
            "{name} was replaced while growing"
        );
    }
    let msg = wait_queued(env, ns, "grow", "False", Some("Admitted"));
    assert!(msg.contains("for 2 pods"), "{msg}");
    wait_until(
        "the replaced slice elasticjob-grow to be gone",
        T,
        Duration::from_millis(500),
        || workload(env, ns, "grow").is_none().then_some(()),
        || {
            format!(
                "{:#}",
                workload(env, ns, "grow").unwrap_or_default()["status"]
            )
        },
    );

    // Beyond the quota: the slice for 3 waits, the job keeps its 2 pods and says so.
    scale(3);
    let waiting = wait_until(
        "the slice elasticjob-grow-2 to wait for quota",
        T,
        Duration::from_millis(500),
        || {
            let w = workload(env, ns, "grow-2")?;
            let pending = w["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "QuotaReserved"
                        && c["status"] == "False"
                        && c["message"].as_str().is_some_and(|m| !m.is_empty())
                })
            });
            pending.then_some(w)
        },
        || format!("{:#}", workload(env, ns, "grow-2").unwrap_or_default()),
    );
    eprintln!("grow-2 waits: {}", waiting["status"]["conditions"]);
    let msg = wait_queued(env, ns, "grow", "False", Some("Admitted"));
    assert!(msg.contains("for 2 of the 3 pods"), "{msg}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        uids(&env.pods(ns, "grow")),
        now,
        "the running pods were touched"
    );

    // Back to 2: the slice is withdrawn.
    scale(2);
    wait_until(
        "the slice elasticjob-grow-2 to be withdrawn",
        T,
        Duration::from_millis(500),
        || workload(env, ns, "grow-2").is_none().then_some(()),
        || format!("{:#}", workload(env, ns, "grow-2").unwrap_or_default()),
    );
    assert_eq!(
        uids(&env.pods(ns, "grow")),
        now,
        "the running pods were touched"
    );
    env.kubectl.ok(&["delete", "elasticjob", "-n", ns, "grow"]);
}
