//! Kueue and the coscheduling scheduler on the cluster, as their users run them (issue 15's
//! infrastructure): installed with the harness ([`Env::install_kueue`],
//! [`Env::apply_kueue_queues`] with examples/kueue-queues.yaml, [`Env::install_coscheduling`]),
//! then shown to work on plain Kubernetes objects, before any operator integration:
//! - Kueue admits a `batch/v1` Job labelled with the queue (created suspended by Kueue's webhook,
//!   unsuspended at admission) and holds a second one that does not fit the quota, suspended and
//!   without pods, until the first is gone;
//! - a bare Workload (no owner) with `count: 3, minCount: 1` in a queue with quota for 2 is
//!   admitted with 2 (partial admission); a higher-priority Workload preempts it: what Kueue
//!   writes into both is printed (the facts the operator's integration relies on);
//! - the coscheduling scheduler binds a PodGroup's pods (minMember 2) together, and leaves both
//!   Pending while only one fits.
//!
//! `cargo test -p elasticjob-e2e --features e2e-tests --test queueing -- --nocapture`: its own
//! local cluster (wrap in `flock /tmp/elasticjob-cluster.lock`), torn down at the end.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use elasticjob_e2e::*;
use serde_json::{Value, json};

/// Restricted-compliant pod spec running the pause image (preloaded on every node).
fn pause_pod_spec(cpu: &str, gpus: u32) -> Value {
    let mut limits = json!({"cpu": cpu, "memory": "64Mi"});
    if gpus > 0 {
        limits["nvidia.com/gpu"] = json!(gpus.to_string());
    }
    json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65535,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "main",
            "image": "registry.k8s.io/pause:3.10",
            "imagePullPolicy": "Never",
            "resources": {"requests": limits.clone(), "limits": limits},
            "securityContext": {"allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}},
        }],
    })
}

fn queued_job(name: &str, queue: &str, cpu: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {QUEUE_LABEL: queue}},
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 0,
            "template": {"spec": pause_pod_spec(cpu, 0)},
        },
    })
}

fn bare_workload(name: &str, queue: &str, count: i64, min: Option<i64>, priority: i64) -> Value {
    let mut ps = json!({
        "name": "workers",
        "count": count,
        "template": {"spec": pause_pod_spec("1", 0)},
    });
    if let Some(m) = min {
        ps["minCount"] = json!(m);
    }
    json!({
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {"name": name},
        "spec": {"queueName": queue, "priority": priority, "podSets": [ps]},
    })
}

fn cond<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    condition(&obj["status"], type_)
}

fn is_true(obj: &Value, type_: &str) -> bool {
    cond(obj, type_).is_some_and(|c| c["status"] == "True")
}

/// The Workload Kueue made for a Job (owned by it).
fn job_workload(env: &Env, ns: &str, job: &str) -> Option<Value> {
    let list = env
        .kubectl
        .json(&["get", "workloads.kueue.x-k8s.io", "-n", ns])?;
    list["items"]
        .as_array()?
        .iter()
        .find(|w| {
            w["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["kind"] == "Job" && o["name"] == job)
        })
        .cloned()
}

fn workload(env: &Env, ns: &str, name: &str) -> Value {
    env.kubectl
        .json_ok(&["get", "workloads.kueue.x-k8s.io", "-n", ns, name])
}

/// The status as YAML-ish JSON for the log (the report's evidence).
fn show(what: &str, w: &Value) {
    eprintln!(
        "==== {what}: metadata.finalizers={} spec.active={}\nstatus: {:#}",
        w["metadata"]["finalizers"], w["spec"]["active"], w["status"]
    );
}

fn job_pods(env: &Env, ns: &str, job: &str) -> Vec<Value> {
    env.kubectl
        .json(&["get", "pods", "-n", ns, "-l", &format!("job-name={job}")])
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
}

const T: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(500);

fn kueue_admits_a_job_and_holds_one_over_quota(env: &Env, ns: &str) {
    let q = env.apply_kueue_queues(ns, &QueueQuota::new("1", "1Gi", 0));
    env.kubectl
        .apply_in(ns, &queued_job("first", &q.local_queue, "600m"));
    let first = env.kubectl.json_ok(&["get", "job", "-n", ns, "first"]);
    eprintln!(
        "first as created: spec.suspend={}",
        first["spec"]["suspend"]
    );
    assert_eq!(
        first["spec"]["suspend"], true,
        "Kueue's webhook suspends a queued Job at creation"
    );
    let wl = wait_until(
        "the first Job's Workload to be admitted",
        T,
        POLL,
        || job_workload(env, ns, "first").filter(|w| is_true(w, "Admitted")),
        || format!("{:#}", job_workload(env, ns, "first").unwrap_or_default()),
    );
    show("Workload of Job first (admitted)", &wl);
    wait_until(
        "the first Job to be unsuspended and its pod to run",
        T,
        POLL,
        || {
            let j = env.kubectl.json(&["get", "job", "-n", ns, "first"])?;
            (j["spec"]["suspend"] == false
                && job_pods(env, ns, "first")
                    .iter()
                    .any(|p| p["status"]["phase"] == "Running"))
            .then_some(())
        },
        || pod_summary(&job_pods(env, ns, "first")),
    );

    env.kubectl
        .apply_in(ns, &queued_job("second", &q.local_queue, "600m"));
    let wl2 = wait_until(
        "the second Job's Workload to be pending for quota",
        T,
        POLL,
        || {
            job_workload(env, ns, "second").filter(|w| {
                cond(w, "QuotaReserved")
                    .is_some_and(|c| c["status"] == "False" && c["reason"] == "Pending")
            })
        },
        || format!("{:#}", job_workload(env, ns, "second").unwrap_or_default()),
    );
    show("Workload of Job second (over quota)", &wl2);
    // Held: still suspended, no pods, for a while.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let j = env.kubectl.json_ok(&["get", "job", "-n", ns, "second"]);
        assert_eq!(
            j["spec"]["suspend"], true,
            "the second Job was let go over quota"
        );
        assert!(
            job_pods(env, ns, "second").is_empty(),
            "the second Job has pods"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // The quota is what holds it: the first gone, the second runs.
    env.kubectl
        .ok(&["delete", "job", "-n", ns, "first", "--wait=false"]);
    wait_until(
        "the second Job to be admitted once the first is gone",
        T,
        POLL,
        || {
            let j = env.kubectl.json(&["get", "job", "-n", ns, "second"])?;
            (j["spec"]["suspend"] == false).then_some(())
        },
        || format!("{:#}", job_workload(env, ns, "second").unwrap_or_default()),
    );
    env.kubectl
        .ok(&["delete", "job", "-n", ns, "second", "--wait=false"]);
}

fn bare_workload_partial_admission_and_preemption(env: &Env, ns: &str) {
    // Quota for 2 pods of 1 CPU.
    let q = env.apply_kueue_queues(ns, &QueueQuota::new("2", "1Gi", 0));
    env.kubectl
        .apply_in(ns, &bare_workload("elastic", &q.local_queue, 3, Some(1), 0));
    let w = wait_until(
        "the bare Workload to be admitted",
        T,
        POLL,
        || Some(workload(env, ns, "elastic")).filter(|w| is_true(w, "Admitted")),
        || format!("{:#}", workload(env, ns, "elastic")),
    );
    show(
        "bare Workload count 3 minCount 1, quota for 2 (admitted)",
        &w,
    );
    let yaml = env.kubectl.ok(&[
        "get",
        "workloads.kueue.x-k8s.io",
        "-n",
        ns,
        "elastic",
        "-o",
        "yaml",
    ]);
    eprintln!("==== kubectl get workload elastic -o yaml (partially admitted)\n{yaml}");
    let psa = &w["status"]["admission"]["podSetAssignments"];
    assert_eq!(psa.as_array().map(Vec::len), Some(1), "{psa}");
    assert_eq!(psa[0]["count"], 2, "partial admission to the quota: {psa}");

    // A higher-priority Workload that needs the whole quota preempts it.
    env.kubectl
        .apply_in(ns, &bare_workload("urgent", &q.local_queue, 2, None, 100));
    let t0 = Instant::now();
    let evicted = wait_until(
        "the bare Workload to be evicted by preemption",
        T,
        POLL,
        || Some(workload(env, ns, "elastic")).filter(|w| is_true(w, "Evicted")),
        || format!("{:#}", workload(env, ns, "elastic")),
    );
    show(
        &format!(
            "bare Workload preempted ({:.1}s)",
            t0.elapsed().as_secs_f64()
        ),
        &evicted,
    );
    // What Kueue does next with no owner to stop pods: watch it for 20 s.
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < Duration::from_secs(20) {
        let w = workload(env, ns, "elastic");
        let now = format!(
            "admission={} conditions={}",
            w["status"]["admission"], w["status"]["conditions"]
        );
        if now != last {
            eprintln!("==== +{:.1}s elastic: {now}", t.elapsed().as_secs_f64());
            last = now;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let yaml = env.kubectl.ok(&[
        "get",
        "workloads.kueue.x-k8s.io",
        "-n",
        ns,
        "elastic",
        "-o",
        "yaml",
    ]);
    eprintln!("==== kubectl get workload elastic -o yaml (20 s after preemption)\n{yaml}");
    let urgent = workload(env, ns, "urgent");
    show("the preemptor 20 s later", &urgent);

    // The owner's part, as Kueue's job framework does it once the job's pods are gone
    // (jobframework/reconciler.go, "handle eviction"): Requeued True (reason Preempted),
    // QuotaReserved False (reason Pending, the eviction's message), Admitted False, no
    // admission. Then the preemptor gets the quota and the preempted one waits again.
    let w = workload(env, ns, "elastic");
    let evicted_msg = cond(&w, "Evicted")
        .map(|c| c["message"].clone())
        .unwrap_or_default();
    let at = cond(&w, "Evicted")
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or_default();
    let mut conditions: Vec<Value> = w["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            !matches!(
                c["type"].as_str(),
                Some("QuotaReserved" | "Admitted" | "Requeued")
            )
        })
        .collect();
    conditions.push(
        json!({"type": "QuotaReserved", "status": "False", "reason": "Pending",
                           "message": evicted_msg, "lastTransitionTime": at}),
    );
    conditions.push(
        json!({"type": "Admitted", "status": "False", "reason": "NoReservation",
                           "message": "The workload has no reservation", "lastTransitionTime": at}),
    );
    conditions.push(
        json!({"type": "Requeued", "status": "True", "reason": "Preempted",
                           "message": evicted_msg, "lastTransitionTime": at}),
    );
    let patch = json!({"status": {"admission": null, "conditions": conditions}});
    let o = env.kubectl.run(
        &[
            "patch",
            "workloads.kueue.x-k8s.io",
            "-n",
            ns,
            "elastic",
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
    eprintln!(
        "==== owner clears status.admission: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let urgent = wait_until(
        "the preemptor to be admitted",
        T,
        POLL,
        || Some(workload(env, ns, "urgent")).filter(|w| is_true(w, "Admitted")),
        || {
            format!(
                "urgent: {:#}\nelastic: {:#}",
                workload(env, ns, "urgent")["status"],
                workload(env, ns, "elastic")["status"]
            )
        },
    );
    show("the preemptor admitted", &urgent);
    std::thread::sleep(Duration::from_secs(3));
    let w = workload(env, ns, "elastic");
    show("the preempted Workload after its owner released it", &w);
    assert!(
        !is_true(&w, "QuotaReserved"),
        "the preempted Workload got quota back while the preemptor holds it"
    );
}

fn coscheduling_places_a_gang_or_nothing(env: &Env, ns: &str) {
    env.install_coscheduling();
    let pg = |name: &str| {
        json!({
            "apiVersion": "scheduling.x-k8s.io/v1alpha1",
            "kind": "PodGroup",
            "metadata": {"name": name},
            "spec": {"minMember": 2, "scheduleTimeoutSeconds": 30},
        })
    };
    let member = |group: &str, i: usize, gpus: u32, node: Option<&str>| {
        let mut spec = pause_pod_spec("100m", gpus);
        spec["schedulerName"] = json!(COSCHEDULER_NAME);
        if let Some(n) = node {
            spec["nodeSelector"] = json!({"kubernetes.io/hostname": n});
        }
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{group}-{i}"), "labels": {POD_GROUP_LABEL: group}},
            "spec": spec,
        })
    };
    let pods_of = |group: &str| -> Vec<Value> {
        env.kubectl
            .json(&[
                "get",
                "pods",
                "-n",
                ns,
                "-l",
                &format!("{POD_GROUP_LABEL}={group}"),
            ])
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
    };

    // A gang that fits: both bound, by the second scheduler.
    env.kubectl.apply_in(ns, &pg("fits"));
    for i in 0..2 {
        env.kubectl.apply_in(ns, &member("fits", i, 1, None));
    }
    wait_until(
        "both members of PodGroup fits to run",
        T,
        POLL,
        || {
            let pods = pods_of("fits");
            (pods.len() == 2 && pods.iter().all(|p| phase(p) == "Running")).then_some(())
        },
        || pod_summary(&pods_of("fits")),
    );
    let events = env.kubectl.ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "reason=Scheduled",
        "-o",
        "custom-columns=OBJ:.involvedObject.name,FROM:.source.component,BY:.reportingComponent",
    ]);
    eprintln!("==== Scheduled events:\n{events}");
    assert!(
        events.contains(COSCHEDULER_NAME),
        "the members were not bound by {COSCHEDULER_NAME}:\n{events}"
    );
    let group = wait_until(
        "PodGroup fits' status from the PodGroup controller",
        T,
        POLL,
        || {
            let g = env.kubectl.json(&["get", "podgroup", "-n", ns, "fits"])?;
            matches!(g["status"]["phase"].as_str(), Some("Running" | "Scheduled")).then_some(g)
        },
        || {
            format!(
                "{:#}",
                env.kubectl
                    .json(&["get", "podgroup", "-n", ns, "fits"])
                    .unwrap_or_default()
            )
        },
    );
    eprintln!("==== PodGroup fits: status {:#}", group["status"]);
    env.kubectl.ok(&[
        "delete",
        "pods",
        "-n",
        ns,
        "-l",
        &format!("{POD_GROUP_LABEL}=fits"),
        "--wait",
    ]);

    // A gang where only one member fits (3 GPUs each on one 4-GPU node): none is bound.
    let node = env
        .kubectl
        .ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    env.kubectl.apply_in(ns, &pg("too-big"));
    for i in 0..2 {
        env.kubectl
            .apply_in(ns, &member("too-big", i, 3, Some(node.trim())));
    }
    // Past the permit timeout (10 s) twice over: the scheduler tried and rolled back.
    std::thread::sleep(Duration::from_secs(25));
    let pods = pods_of("too-big");
    eprintln!("==== PodGroup too-big after 25 s:\n{}", pod_summary(&pods));
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(phase(p), "Pending", "{}", pod_summary(&pods));
        assert!(
            p["spec"]["nodeName"].is_null(),
            "a member of a gang that cannot fit was bound: {}",
            pod_summary(&pods)
        );
    }
    let g = env
        .kubectl
        .json_ok(&["get", "podgroup", "-n", ns, "too-big"]);
    eprintln!("==== PodGroup too-big: status {:#}", g["status"]);
    // Without the gang rule one of them would run: make room for both (one GPU each would do,
    // but the spec is fixed) by dropping to one member: the PodGroup asks for 1.
    env.kubectl.ok(&[
        "patch",
        "podgroup",
        "-n",
        ns,
        "too-big",
        "--type=merge",
        "-p",
        r#"{"spec":{"minMember":1}}"#,
    ]);
    wait_until(
        "one member to run once the PodGroup's minMember is 1",
        T,
        POLL,
        || {
            pods_of("too-big")
                .iter()
                .any(|p| phase(p) == "Running")
                .then_some(())
        },
        || pod_summary(&pods_of("too-big")),
    );
}

#[path = "queueing/elasticjobs.rs"]
mod elasticjobs;

type Scenario = fn(&Env, &str);

/// Whether to run the scenario: all, or those named in `ELASTICJOB_E2E_SCENARIOS`
/// (comma-separated), to run one while working on it.
fn selected(name: &str) -> bool {
    std::env::var("ELASTICJOB_E2E_SCENARIOS")
        .map_or(true, |only| only.split(',').any(|s| s.trim() == name))
}

#[test]
fn queueing_and_gang_scheduling() {
    let env = Env::start();
    let suffix = run_suffix();
    let scenarios: [(&str, Scenario); 3] = [
        ("kueue-jobs", kueue_admits_a_job_and_holds_one_over_quota),
        ("kueue-bare", bare_workload_partial_admission_and_preemption),
        ("gang", coscheduling_places_a_gang_or_nothing),
    ];
    let t0 = Instant::now();
    let installed = catch_unwind(AssertUnwindSafe(|| env.install_kueue()));
    eprintln!("Kueue installed in {:.1}s", t0.elapsed().as_secs_f64());
    let mut failures = Vec::new();
    if let Err(e) = installed {
        failures.push(format!("install_kueue: {}", panic_message(&*e)));
    } else {
        for (name, f) in scenarios.into_iter().filter(|(n, _)| selected(n)) {
            let ns = format!("{name}-{suffix}");
            env.create_namespace(&ns);
            eprintln!("---- {name} in {ns}");
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(&env, &ns))) {
                failures.push(format!("{name}: {}", panic_message(&*e)));
                eprintln!("{}", env.diagnostics(&ns));
                let _ = env.kubectl.run(&["get", "pods", "-A", "-o", "wide"], None);
            }
            env.delete_kueue_queues(&ns);
            env.delete_namespace(&ns);
        }
        // ElasticJobs: the operator looks for Kueue's API when it starts.
        env.restart_operator(Duration::ZERO);
        let jobs: [(&str, Scenario); 4] = [
            ("ej-share", elasticjobs::elastic_jobs_share_a_queue),
            (
                "ej-grow",
                elasticjobs::a_job_that_opts_in_to_slices_grows_without_stopping,
            ),
            (
                "ej-preempt",
                elasticjobs::a_higher_priority_job_preempts_and_the_lower_one_finishes_later,
            ),
            (
                "ej-gang",
                elasticjobs::gang_jobs_get_their_minimum_or_nothing,
            ),
        ];
        for (name, f) in jobs.into_iter().filter(|(n, _)| selected(n)) {
            let ns = format!("{name}-{suffix}");
            env.create_namespace(&ns);
            eprintln!("---- {name} in {ns}");
            let t = Instant::now();
            match catch_unwind(AssertUnwindSafe(|| f(&env, &ns))) {
                Ok(()) => eprintln!("---- {name} passed in {:.1}s", t.elapsed().as_secs_f64()),
                Err(e) => {
                    failures.push(format!("{name}: {}", panic_message(&*e)));
                    eprintln!("{}", env.diagnostics(&ns));
                }
            }
            env.delete_kueue_queues(&ns);
        }
    }
    if env.is_local() {
        env.shutdown();
    }
    assert!(failures.is_empty(), "failed:\n{}", failures.join("\n"));
}
