//! End-to-end scenarios of the ElasticJob operator (issue 5), driven with plain kubectl where a
//! user would use it. One environment (cluster + CRD + operator, see the crate docs) for all
//! scenarios, started at the first one that runs; scenarios run one at a time, each in its own
//! namespace; the environment is torn down at the end, whatever happened.
//!
//! `cargo test -p elasticjob-e2e --features e2e-tests -- [FILTER]` (libtest-style arguments:
//! a name filter, `--list`, `--exact`, `--skip`). On failure a scenario prints the job's status,
//! pod states, trainer log tails, events and the operator's log tail.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use elasticjob_e2e::*;
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};

/// A scenario: the environment and its own namespace.
type Scenario = fn(&Env, &str);

const SCENARIOS: &[(&str, Scenario)] = &[
    ("s00_harness", harness),
    ("s01_example_job_succeeds", example_job_succeeds),
    (
        "s02_worker_crash_is_restarted_by_the_launcher",
        worker_crash_restarted_by_launcher,
    ),
    ("s03_killed_pod_is_recreated", killed_pod_is_recreated),
    (
        "s04_killed_store_host_pod0_is_survived",
        killed_store_host_is_survived,
    ),
    (
        "s05_permanent_failures_fail_the_job",
        permanent_failures_fail_the_job,
    ),
    (
        "s06_scale_up_and_down_changes_world_size",
        scale_up_and_down,
    ),
    ("s07_suspend_and_resume", suspend_and_resume),
    ("s08_active_deadline_fails_the_job", active_deadline),
    (
        "s09_deleting_the_job_removes_its_pods",
        deleting_the_job_removes_its_pods,
    ),
    ("s10_operator_restart_mid_job", operator_restart_mid_job),
    ("s11_invalid_specs_are_refused_or_failed", invalid_specs),
    (
        "s12_faults_above_min_train_again_in_seconds",
        faults_above_min_train_again_in_seconds,
    ),
    (
        "s13_workers_learn_why_they_stop",
        workers_learn_why_they_stop,
    ),
    (
        "s14_hung_rank_is_caught_progress_and_goodput",
        hung_rank_is_caught,
    ),
    (
        "s15_a_foreign_pod_holding_a_pod_name_is_reported",
        foreign_pod_holding_a_pod_name,
    ),
    (
        "s17_a_store_host_cut_off_alone_does_not_train_alone",
        store_host_cut_off_alone,
    ),
    (
        "s18_every_accelerator_sizes_the_workers",
        every_accelerator_sizes_the_workers,
    ),
    (
        "s19_a_replacement_avoids_the_node_that_lost_a_pod",
        replacement_avoids_failed_node,
    ),
    (
        "s20_quiet_running_jobs_cost_the_apiserver_almost_nothing",
        quiet_jobs_cost_almost_nothing,
    ),
    // Last: the lost node stays lost for the rest of the run.
    ("s16_node_loss_replaces_the_pod_on_another_node", node_loss),
];

/// How long a torch job of a few pods may take to finish on a 2-core machine.
const T_JOB: Duration = Duration::from_secs(300);
/// How long until pods run / a job runs.
const T_RUN: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Suite {
    env: OnceLock<Result<Env, String>>,
    timings: Mutex<Vec<(String, Duration, bool)>>,
}

impl Suite {
    fn env(&self) -> &Env {
        let env = self
            .env
            .get_or_init(|| catch_unwind(Env::start).map_err(|e| panic_message(&*e)));
        match env {
            Ok(env) => env,
            Err(e) => panic!("the e2e environment failed to start: {e}"),
        }
    }

    fn run(&self, name: &str, scenario: Scenario) -> Result<(), Failed> {
        let env = self.env();
        let short: String = name
            .split_once('_')
            .map(|(n, _)| n)
            .unwrap_or(name)
            .to_string();
        let ns = if env.is_local() {
            format!("e2e-{short}")
        } else {
            format!("e2e-{short}-{}", run_suffix())
        };
        env.create_namespace(&ns);
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| scenario(env, &ns)));
        let took = t.elapsed();
        self.timings
            .lock()
            .unwrap()
            .push((name.to_string(), took, result.is_ok()));
        match result {
            Ok(()) => {
                eprintln!("e2e: {name} passed in {:.1}s", took.as_secs_f64());
                env.delete_namespace(&ns);
                Ok(())
            }
            Err(e) => {
                let msg = panic_message(&*e);
                eprintln!(
                    "e2e: {name} FAILED after {:.1}s: {msg}\n======== diagnostics of namespace {ns} (kept)\n{}",
                    took.as_secs_f64(),
                    env.diagnostics(&ns)
                );
                Err(msg.into())
            }
        }
    }
}

fn main() {
    let mut args = Arguments::from_args();
    // One cluster, one 2-core machine: scenarios run one after the other.
    args.test_threads = Some(1);
    let suite = Arc::new(Suite::default());
    let trials = SCENARIOS
        .iter()
        .map(|&(name, scenario)| {
            let s = suite.clone();
            Trial::test(name, move || s.run(name, scenario))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let suite = Arc::try_unwrap(suite).unwrap_or_else(|_| panic!("scenarios still hold the suite"));
    let timings = suite.timings.into_inner().unwrap();
    if !timings.is_empty() {
        eprintln!("\ne2e timings:");
        for (name, took, ok) in &timings {
            eprintln!(
                "  {:<52} {:>7.1}s  {}",
                name,
                took.as_secs_f64(),
                if *ok { "ok" } else { "FAILED" }
            );
        }
    }
    if let Some(Ok(env)) = suite.env.into_inner() {
        env.shutdown();
    }
    conclusion.exit();
}

// ---- helpers ---------------------------------------------------------------------------------

/// A torch job from the example: `pods` pods (min = max = replicas) × 1 worker, one fake GPU
/// each, backoff 1 s, a short grace period.
fn torch_job(name: &str, pods: u32, spec_patch: Value, script_env: &[(&str, &str)]) -> Value {
    let mut job = job_doc(
        name,
        &json!({"minReplicas": pods, "maxReplicas": pods, "replicas": pods, "nprocPerNode": 1,
            "failurePolicy": {"backoff": {"initialSeconds": 1}},
            "template": {"spec": {"terminationGracePeriodSeconds": 5}}}),
        script_env,
    );
    set_gpus(&mut job, Some(1));
    merge(&mut job["spec"], &spec_patch);
    job
}

/// Waits until any of the job's pods' trainer logs contains `needle`; returns all logs.
fn wait_log(env: &Env, ns: &str, job: &str, needle: &str, timeout: Duration) -> String {
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        &format!("{needle:?} in the trainer logs of {ns}/{job}"),
        timeout,
        Duration::from_secs(1),
        || {
            let logs = env.job_logs(ns, job);
            let found = logs.contains(needle);
            *last.borrow_mut() = logs.clone();
            found.then_some(logs)
        },
        || {
            format!(
                "{}\nstatus: {:#}",
                tail(&last.borrow(), 40),
                env.status(ns, job)
            )
        },
    )
}

/// The time of the first log line holding every one of `needles` (the launcher's lines start
/// with an RFC 3339 timestamp).
fn first_line_time(log: &str, needles: &[&str]) -> Option<f64> {
    log.lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| parse_time(l.split_whitespace().next()?))
}

/// Per pod UID, how much of its trainer log exists now.
fn log_marks(env: &Env, ns: &str, job: &str) -> Vec<(String, usize)> {
    env.pods(ns, job)
        .iter()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
            (uid, env.logs(ns, name).map(|l| l.len()).unwrap_or(0))
        })
        .collect()
}

/// The trainer logs written since `marks` (whole logs of pods that are new).
fn logs_since(env: &Env, ns: &str, job: &str, marks: &[(String, usize)]) -> String {
    let mut out = String::new();
    for p in env.pods(ns, job) {
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        let uid = p["metadata"]["uid"].as_str().unwrap_or("");
        let from = marks
            .iter()
            .find(|(u, _)| u == uid)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        if let Ok(log) = env.logs(ns, name) {
            out += log.get(from..).unwrap_or("");
        }
    }
    out
}

fn wait_new_log(
    env: &Env,
    ns: &str,
    job: &str,
    marks: &[(String, usize)],
    needle: &str,
    timeout: Duration,
) {
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        &format!("{needle:?} in new trainer log lines of {ns}/{job}"),
        timeout,
        Duration::from_secs(1),
        || {
            let new = logs_since(env, ns, job, marks);
            let found = new.contains(needle);
            *last.borrow_mut() = new;
            found.then_some(())
        },
        || {
            format!(
                "new lines:\n{}\npods:\n{}status: {:#}",
                tail(&last.borrow(), 30),
                pod_summary(&env.pods(ns, job)),
                env.status(ns, job)
            )
        },
    );
}

/// Waits until every pod in `names` exists, runs and is not being deleted.
fn wait_running(env: &Env, ns: &str, job: &str, n: usize) -> Vec<Value> {
    env.wait_pods(ns, job, &format!("{n} running pods"), T_RUN, |pods| {
        pods.iter()
            .filter(|p| phase(p) == "Running" && !is_deleting(p))
            .count()
            == n
    })
}

fn assert_no_failures(status: &Value, why: &str) {
    assert_eq!(
        counters(status),
        (0, 0),
        "{why}: no pod should have been recreated; status:\n{status:#}"
    );
    assert!(
        failures(status).is_empty(),
        "{why}: no pod failure expected; status:\n{status:#}"
    );
}

/// The `[train] step N  loss X` values of a log, in order.
fn losses(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.split("[train] step").nth(1))
        .filter_map(|r| r.split("loss").nth(1))
        .filter_map(|x| x.trim().parse().ok())
        .collect()
}

// ---- scenarios -------------------------------------------------------------------------------

/// The harness itself: the cluster's nodes, the CRD, the example accepted by the schema, the
/// images (launcher install, torch in the trainer image, both under Pod Security `restricted`),
/// the chart-installed operator and its health and metrics endpoints.
fn harness(env: &Env, ns: &str) {
    let k = &env.kubectl;
    k.ok(&["get", "crd", CRD]);
    let example = example_path();
    let dry = k.run(
        &[
            "apply",
            "--dry-run=server",
            "-n",
            ns,
            "-f",
            example.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        dry.status.success(),
        "the schema refuses examples/elasticjob.yaml: {}",
        stderr(&dry)
    );
    assert!(
        stdout(&dry).contains("elasticjob.elasticjob.dev/train"),
        "{}",
        stdout(&dry)
    );

    if env.is_local() {
        let nodes = k.json(&["get", "nodes"]).unwrap();
        let items = nodes["items"].as_array().unwrap();
        assert_eq!(items.len(), 3, "3 nodes");
        for n in items {
            assert_eq!(n["status"]["allocatable"]["nvidia.com/gpu"], "4", "{n:#}");
        }
        // The images the nodes were loaded with: the launcher image's binary installs itself
        // into an emptyDir (as the operator's init container does), the trainer image has
        // Python with torch; both pass the namespace's `restricted` Pod Security Standard.
        let mount = json!([{"name": "bin", "mountPath": "/elasticjob/bin"}]);
        let restricted = json!({"allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}});
        k.apply_in(
            ns,
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "images"},
            "spec": {"restartPolicy": "Never", "volumes": [{"name": "bin", "emptyDir": {}}],
                "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"}},
                "initContainers": [{"name": "install", "image": LAUNCHER_IMAGE,
                    "securityContext": restricted,
                    "args": ["__install", "/elasticjob/bin"], "volumeMounts": mount}],
                // Two GPUs from the device plugin: the launcher finds them itself (as it does
                // with NVIDIA's plugin, through NVIDIA_VISIBLE_DEVICES) and starts a worker per
                // GPU for `--nproc-per-node=gpu`.
                "containers": [{"name": "trainer", "image": TRAINER_IMAGE, "volumeMounts": mount,
                    "securityContext": restricted,
                    "resources": {"limits": {"nvidia.com/gpu": 2}},
                    "command": ["/bin/sh", "-c",
                        "python -c 'import torch; print(\"torch\", torch.__version__)' && /elasticjob/bin/elastic-launch --standalone --nproc-per-node=gpu --no-python sh -c 'echo worker $LOCAL_RANK of $LOCAL_WORLD_SIZE'"]}]}}),
        );
        let pod = wait_until(
            "pod images to finish",
            T_RUN,
            Duration::from_millis(500),
            || {
                let p = k.json(&["get", "pod", "images", "-n", ns])?;
                matches!(phase(&p), "Succeeded" | "Failed").then_some(p)
            },
            String::new,
        );
        let log = env
            .container_logs(ns, "images", "trainer")
            .unwrap_or_else(|e| e);
        assert_eq!(
            phase(&pod),
            "Succeeded",
            "{}\nlog: {log}",
            pod_summary(std::slice::from_ref(&pod))
        );
        assert!(log.contains("torch 2."), "log: {log}");
        for w in ["worker 0 of 2", "worker 1 of 2"] {
            assert!(log.contains(w), "{w}: log: {log}");
        }
    }

    // The operator, as the chart installed it: a pod of its Deployment, running as the chart's
    // ServiceAccount, in charge (the leader Lease), its endpoints answering through the
    // apiserver's pod proxy (`kubectl get --raw`: no kube-proxy or port-forward needed).
    let pod = env.operator_pod().expect("an operator pod in charge");
    let node = env.operator_node().expect("the operator pod's node");
    eprintln!("e2e: operator pod {pod} on node {node}");
    let pods = env.operator_pods();
    let p = pods
        .iter()
        .find(|p| p["metadata"]["name"] == pod.as_str())
        .unwrap();
    let sa = p["spec"]["serviceAccountName"].as_str().unwrap_or_default();
    assert!(
        !sa.is_empty() && sa != "default",
        "the operator runs as the chart's ServiceAccount, not {sa:?}"
    );
    for path in ["/healthz", "/readyz"] {
        env.operator_get(path)
            .unwrap_or_else(|e| panic!("GET {path} on the operator: {e}"));
    }
    let metrics = env
        .operator_get("/metrics")
        .unwrap_or_else(|e| panic!("GET /metrics on the operator: {e}"));
    assert!(
        metrics.contains("elasticjob_operator_leader 1"),
        "the pod in charge is the leader:\n{metrics}"
    );
    assert!(metrics.contains("elasticjob_jobs{"), "{metrics}");
}

/// Scenario 1: `kubectl apply -f examples/elasticjob.yaml`: 2 pods × 2 workers of real PyTorch reach
/// Succeeded; the loss lines are in the pod log and the loss went down.
fn example_job_succeeds(env: &Env, ns: &str) {
    let path = example_path();
    if env.gpus && env.trainer_image.is_none() {
        env.kubectl
            .ok(&["apply", "-n", ns, "-f", path.to_str().unwrap()]);
    } else {
        let ex = example();
        apply_all(env, ns, &[ex.configmap, ex.job]);
    }
    let t = Instant::now();
    let job = env.wait_state(ns, "train", "Succeeded", T_JOB);
    eprintln!(
        "e2e: train Succeeded {:.1}s after apply",
        t.elapsed().as_secs_f64()
    );
    let st = &job["status"];
    let (s, reason, _) = condition_srm(st, "Succeeded").expect("a Succeeded condition");
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("True", "JobSucceeded"),
        "{st:#}"
    );
    assert!(st["completionTime"].is_string(), "{st:#}");
    assert!(st["startTime"].is_string(), "{st:#}");
    assert_no_failures(st, "a clean run");

    let logs = env.all_job_logs(ns, "train");
    assert!(
        logs.contains("[train] world_size=4 "),
        "2 pods × 2 workers:\n{logs}"
    );
    assert!(logs.contains("after 20 steps on 4 workers"), "{logs}");
    let l = losses(&logs);
    assert!(l.len() >= 4, "loss lines (every 5 steps):\n{logs}");
    assert!(
        l.last().unwrap() < l.first().unwrap(),
        "the loss went down: {l:?}"
    );
    // What a user sees.
    let table = env.kubectl.ok(&["get", "ej", "train", "-n", ns]);
    assert!(table.contains("Succeeded"), "{table}");
}

/// Scenario 2: A worker crash inside a pod is restarted by the launcher (maxRestarts): no pod is
/// recreated, the job succeeds. With `launcher.prewarm: [torch]`, the restarted workers are the
/// interpreters that imported torch while the crashed round trained (the crash comes 10 steps of
/// 1 s after the first, time enough for the import on a loaded machine).
fn worker_crash_restarted_by_launcher(env: &Env, ns: &str) {
    let ex = example();
    let job = torch_job(
        "crash",
        2,
        json!({"maxRestarts": 3, "launcher": {"prewarm": ["torch"]}}),
        &[
            ("STEPS", "15"),
            ("STEP_SLEEP", "1"),
            ("FAIL_AT_STEP", "10"),
            ("FAIL_RANK", "1"),
            ("FAIL_EXIT_CODE", "3"),
        ],
    );
    apply_all(env, ns, &[ex.configmap, job]);
    let before = uids(&wait_running(env, ns, "crash", 2));
    let job = env.wait_state(ns, "crash", "Succeeded", T_JOB);
    let st = &job["status"];
    // Pod 1 may be gone: it can still be finishing when pod 0's success ends the job, and
    // cleanPodPolicy Running deletes it. The local cluster keeps the logs of gone pods.
    let logs = env.all_job_logs(ns, "crash");
    if env.is_local() || logs.contains("== crash-worker-1") {
        assert!(
            logs.contains("rank 1 fails at step 10 with exit code 3"),
            "the worker crashed:\n{logs}"
        );
    }
    assert!(
        logs.contains("[train] world_size=2 restart=1 "),
        "the workers ran again after the crash, as the launcher's restart 1:\n{logs}"
    );
    assert!(logs.contains("after 15 steps on 2 workers"), "{logs}");
    assert!(
        logs.lines().any(|l| l.contains("started workers")
            && l.contains("restart_count=1 ")
            && !l.contains("prewarmed=0")),
        "the restarted workers were prewarmed interpreters (spec.launcher.prewarm):\n{logs}"
    );
    let after = uids(&env.pods(ns, "crash"));
    assert!(
        after
            .iter()
            .all(|(name, uid)| before.get(name) == Some(uid)),
        "the launcher restarted the worker; no pod was recreated: before {before:?}, after {after:?}"
    );
    assert_no_failures(st, "a worker restart inside the pod is not a pod failure");
    assert_eq!(
        (int(&st["workerRestarts"]), int(&st["restartCount"])),
        (1, 1),
        "the launcher's worker-group restart is counted in status.workerRestarts and restartCount: {st:#}"
    );
    let restarted: Vec<_> = env
        .events(ns, "crash")
        .into_iter()
        .filter(|(_, reason, _)| reason == "WorkersRestarted")
        .collect();
    assert_eq!(
        restarted.len(),
        1,
        "one WorkersRestarted event: {restarted:?}"
    );
    assert!(
        restarted[0].2.contains("its launcher restarted the workers after a worker failed (restart 1 of spec.maxRestarts 3)"),
        "{restarted:?}"
    );
}

/// Scenario 3: A killed pod (SIGKILL to its processes) is recreated, the job re-forms and succeeds, and
/// status names the failed pod and its exit code.
fn killed_pod_is_recreated(env: &Env, ns: &str) {
    kill_pod_and_recover(env, ns, "kill", 1);
}

/// Scenario 4: Killing pod 0, which hosts the rendezvous store, mid-run is survived.
fn killed_store_host_is_survived(env: &Env, ns: &str) {
    kill_pod_and_recover(env, ns, "store", 0);
}

fn kill_pod_and_recover(env: &Env, ns: &str, name: &str, victim: u32) {
    let ex = example();
    let job = torch_job(
        name,
        2,
        json!({"maxRestarts": 3}),
        &[("STEPS", "40"), ("STEP_SLEEP", "0.25")],
    );
    apply_all(env, ns, &[ex.configmap, job]);
    wait_running(env, ns, name, 2);
    wait_log(env, ns, name, "[train] step  ", T_JOB);
    let pod = format!("{name}-worker-{victim}");
    let old_uid = uids(&env.pods(ns, name))[&pod].clone();
    env.faults
        .kill_pod(ns, &pod, Signal::SIGKILL)
        .unwrap_or_else(|e| panic!("kill {pod}: {e}"));
    eprintln!("e2e: killed {pod} ({old_uid})");

    let job = env.wait_job(
        ns,
        name,
        &format!("a failure of {pod} in status.recentFailures"),
        T_RUN,
        |j| {
            failures(&j["status"])
                .iter()
                .any(|f| f["podUID"] == old_uid.as_str())
        },
    );
    let st = &job["status"];
    let f = failures(st)
        .into_iter()
        .find(|f| f["podUID"] == old_uid.as_str())
        .unwrap();
    assert_eq!(f["pod"], pod.as_str(), "{f:#}");
    assert_eq!(f["exitCode"], 137, "SIGKILL: exit code 137: {f:#}");
    assert_eq!(
        f["category"], "Infrastructure",
        "killed from outside: {f:#}"
    );
    assert_eq!(f["permanent"], false, "{f:#}");
    assert!(int(&st["infrastructureRestarts"]) >= 1, "{st:#}");
    // What `kubectl describe ej` shows: a Warning event with the failure's reason. Checked at
    // the end, so that a missing event does not hide whether the job recovered.
    let reason = f["reason"].as_str().unwrap_or_default().to_string();
    let event = {
        let t = Instant::now();
        loop {
            let ev = env.events(ns, name);
            if ev.iter().any(|(t, r, _)| t == "Warning" && *r == reason) {
                break Ok(());
            }
            if t.elapsed() > Duration::from_secs(20) {
                break Err(format!(
                    "no Warning event {reason} about job {name} within 20 s of the failure; events: {ev:#?}"
                ));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    };

    env.wait_pods(ns, name, &format!("a new {pod}"), T_RUN, |pods| {
        pods.iter().any(|p| {
            p["metadata"]["name"] == pod.as_str()
                && p["metadata"]["uid"] != old_uid.as_str()
                && !is_deleting(p)
        })
    });
    let job = env.wait_state(ns, name, "Succeeded", T_JOB);
    let st = &job["status"];
    assert!(
        failures(st).iter().any(|f| f["podUID"] == old_uid.as_str()),
        "the failure is still listed: {st:#}"
    );
    assert!(int(&st["restartCount"]) >= 1, "{st:#}");
    let logs = env.all_job_logs(ns, name);
    assert!(logs.contains("after 40 steps on 2 workers"), "{logs}");
    if let Err(e) = event {
        panic!("the job recovered, but: {e}");
    }
}

/// Scenario 5: Permanent failures fail the job at once with the right reason: exit code 2 (a default
/// permanent code), a code listed in permanentExitCodes; and a retryable failure fails the job
/// once failurePolicy.maxApplicationRestarts is used up.
fn permanent_failures_fail_the_job(env: &Env, ns: &str) {
    let ex = example();
    let one = json!({"maxRestarts": 0});
    let fail = |code: &'static str| {
        [
            ("STEPS", "10"),
            ("FAIL_AT_STEP", "1"),
            ("FAIL_RANK", "0"),
            ("FAIL_EXIT_CODE", code),
        ]
    };
    let usage = torch_job("usage", 1, one.clone(), &fail("2"));
    let listed = torch_job(
        "listed",
        1,
        json!({"maxRestarts": 0, "failurePolicy": {"permanentExitCodes": [42]}}),
        &fail("42"),
    );
    let budget = torch_job(
        "budget",
        1,
        json!({"maxRestarts": 0, "failurePolicy": {"maxApplicationRestarts": 1}}),
        &fail("1"),
    );
    apply_all(env, ns, &[ex.configmap, usage, listed, budget]);

    for (job, cond_reason, failure_reason, code) in [
        ("usage", "PermanentFailure", "UsageError", 2),
        ("listed", "PermanentFailure", "PermanentExitCode", 42),
        (
            "budget",
            "ApplicationRestartLimitExceeded",
            "WorkerFailed",
            1,
        ),
    ] {
        let j = env.wait_state(ns, job, "Failed", T_JOB);
        let st = &j["status"];
        let (s, reason, message) = condition_srm(st, "Failed").expect("a Failed condition");
        assert_eq!(
            (s.as_str(), reason.as_str()),
            ("True", cond_reason),
            "{job}: {st:#}"
        );
        let pod = format!("{job}-worker-0");
        assert!(
            message.contains(&pod),
            "{job}: the message names the pod: {message}"
        );
        let fs = failures(st);
        let newest = fs
            .first()
            .unwrap_or_else(|| panic!("{job}: no recentFailures: {st:#}"));
        assert_eq!(newest["pod"], pod.as_str(), "{job}: {newest:#}");
        assert_eq!(newest["reason"], failure_reason, "{job}: {newest:#}");
        assert_eq!(newest["exitCode"], code, "{job}: {newest:#}");
        assert_eq!(
            newest["rank"], 0,
            "{job}: the launcher reported the rank: {newest:#}"
        );
        assert_eq!(newest["category"], "Application", "{job}: {newest:#}");
        assert_eq!(newest["permanent"], true, "{job}: {newest:#}");
        if job == "budget" {
            assert_eq!(int(&st["applicationRestarts"]), 1, "{st:#}");
            assert_eq!(fs.len(), 2, "failed, recreated, failed: {st:#}");
        } else {
            assert_eq!(counters(st), (0, 0), "{job}: not retried: {st:#}");
        }
        let events = wait_until(
            &format!("a Warning event {cond_reason} about {job}"),
            Duration::from_secs(20),
            Duration::from_secs(1),
            || {
                let ev = env.events(ns, job);
                ev.iter()
                    .any(|(t, r, _)| t == "Warning" && r == cond_reason)
                    .then_some(ev)
            },
            || format!("{:?}", env.events(ns, job)),
        );
        eprintln!("e2e: {job}: {} events", events.len());
    }
}

/// Scenario 6: `kubectl scale ej/<name> --replicas=N` up and down mid-run changes WORLD_SIZE.
fn scale_up_and_down(env: &Env, ns: &str) {
    let ex = example();
    let mut job = job_doc(
        "elastic",
        &json!({"minReplicas": 1, "maxReplicas": 3, "replicas": 2, "nprocPerNode": 1,
            "maxRestarts": 10, "rendezvous": {"lastCallTimeoutSeconds": 3},
            "failurePolicy": {"backoff": {"initialSeconds": 1}},
            "template": {"spec": {"terminationGracePeriodSeconds": 5}}}),
        &[("STEPS", "200"), ("STEP_SLEEP", "0.2")],
    );
    set_gpus(&mut job, Some(1));
    apply_all(env, ns, &[ex.configmap, job]);
    wait_running(env, ns, "elastic", 2);
    wait_log(env, ns, "elastic", "[train] world_size=2 ", T_JOB);

    let marks = log_marks(env, ns, "elastic");
    env.kubectl
        .ok(&["scale", "ej/elastic", "--replicas=3", "-n", ns]);
    let t = Instant::now();
    wait_new_log(env, ns, "elastic", &marks, "[train] world_size=3 ", T_JOB);
    eprintln!(
        "e2e: world size 3 {:.1}s after scaling up",
        t.elapsed().as_secs_f64()
    );
    env.wait_job(ns, "elastic", "status.replicas 3", T_RUN, |j| {
        j["status"]["replicas"] == 3
    });

    let marks = log_marks(env, ns, "elastic");
    env.kubectl
        .ok(&["scale", "ej/elastic", "--replicas=1", "-n", ns]);
    let t = Instant::now();
    env.wait_pods(ns, "elastic", "pods 1 and 2 gone", T_RUN, |pods| {
        pods.len() == 1 && pods[0]["metadata"]["name"] == "elastic-worker-0"
    });
    wait_new_log(env, ns, "elastic", &marks, "[train] world_size=1 ", T_JOB);
    eprintln!(
        "e2e: world size 1 {:.1}s after scaling down",
        t.elapsed().as_secs_f64()
    );
    env.wait_job(ns, "elastic", "status.replicas 1", T_RUN, |j| {
        j["status"]["replicas"] == 1
    });

    let job = env.wait_state(ns, "elastic", "Succeeded", T_JOB);
    assert_no_failures(&job["status"], "scaling is not a failure");
    let logs = env.all_job_logs(ns, "elastic");
    assert!(logs.contains("after 200 steps on 1 workers"), "{logs}");
}

/// Scenario 7: Suspend (`runPolicy.suspend: true`): the pods go away, the Suspended condition is set;
/// resume brings them back and the job finishes.
fn suspend_and_resume(env: &Env, ns: &str) {
    let ex = example();
    let job = torch_job(
        "pause",
        2,
        json!({}),
        &[("STEPS", "40"), ("STEP_SLEEP", "0.25")],
    );
    apply_all(env, ns, &[ex.configmap, job]);
    wait_running(env, ns, "pause", 2);
    wait_log(env, ns, "pause", "[train] step  ", T_JOB);

    patch_job(
        env,
        ns,
        "pause",
        &json!({"spec": {"runPolicy": {"suspend": true}}}),
    );
    let job = env.wait_job(ns, "pause", "state Suspended", T_RUN, |j| {
        j["status"]["state"] == "Suspended"
    });
    let (s, reason, _) = condition_srm(&job["status"], "Suspended").expect("Suspended condition");
    assert_eq!((s.as_str(), reason.as_str()), ("True", "Suspended"));
    env.wait_pods(ns, "pause", "no pods while suspended", T_RUN, |p| {
        p.is_empty()
    });
    env.kubectl.ok(&["get", "service", "pause", "-n", ns]);
    let st = env.status(ns, "pause");
    assert_ne!(
        condition_srm(&st, "Running").map(|c| c.0),
        Some("True".into()),
        "not Running while suspended: {st:#}"
    );
    assert_eq!(int(&st["replicas"]), 0, "{st:#}");

    patch_job(
        env,
        ns,
        "pause",
        &json!({"spec": {"runPolicy": {"suspend": false}}}),
    );
    env.wait_job(ns, "pause", "Suspended=False (Resumed)", T_RUN, |j| {
        condition_srm(&j["status"], "Suspended")
            .is_some_and(|(s, r, _)| s == "False" && r == "Resumed")
    });
    wait_running(env, ns, "pause", 2);
    let job = env.wait_state(ns, "pause", "Succeeded", T_JOB);
    assert_no_failures(&job["status"], "suspension is not a failure");
}

/// Scenario 8: runPolicy.activeDeadlineSeconds fails a running job on time with reason
/// DeadlineExceeded, and its running pods are deleted (cleanPodPolicy Running).
fn active_deadline(env: &Env, ns: &str) {
    let deadline = 15.0;
    let job = idle_job_doc(
        "deadline",
        &json!({"minReplicas": 1, "maxReplicas": 1, "replicas": 1,
            "runPolicy": {"activeDeadlineSeconds": deadline as i64}}),
    );
    apply_all(env, ns, &[idle_configmap(), job]);
    let job = env.wait_state(ns, "deadline", "Failed", Duration::from_secs(90));
    let st = &job["status"];
    let (s, reason, message) = condition_srm(st, "Failed").expect("a Failed condition");
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("True", "DeadlineExceeded"),
        "{st:#}"
    );
    assert!(message.contains("activeDeadlineSeconds"), "{message}");
    let start = parse_time(st["startTime"].as_str().expect("startTime")).unwrap();
    let failed = parse_time(
        condition(st, "Failed").unwrap()["lastTransitionTime"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let ran = failed - start;
    assert!(
        (deadline..=deadline + 10.0).contains(&ran),
        "failed {ran:.0}s after the start, deadline {deadline}s: {st:#}"
    );
    env.wait_pods(ns, "deadline", "running pods deleted", T_RUN, |pods| {
        pods.iter()
            .all(|p| matches!(phase(p), "Succeeded" | "Failed"))
    });
}

/// Scenario 9: Deleting the job removes its pods and Service (garbage collection through owner
/// references).
fn deleting_the_job_removes_its_pods(env: &Env, ns: &str) {
    let mut job = idle_job_doc(
        "gc",
        &json!({"minReplicas": 2, "maxReplicas": 2, "replicas": 2}),
    );
    // A shell command that calls torchrun itself: it runs once per pod, the launcher standing
    // in as its torchrun.
    job["spec"]["template"]["spec"]["containers"][0]["command"] = json!([
        "sh",
        "-c",
        "echo '[setup] once per pod' && torchrun /workspace/idle.py"
    ]);
    apply_all(env, ns, &[idle_configmap(), job]);
    let pods = wait_running(env, ns, "gc", 2);
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let log = wait_until(
            &format!("the idle worker of {name}"),
            T_RUN,
            Duration::from_millis(500),
            || {
                env.logs(ns, name)
                    .ok()
                    .filter(|l| l.contains("[idle] rank"))
            },
            || env.logs(ns, name).unwrap_or_else(|e| e),
        );
        assert_eq!(log.matches("[setup] once per pod").count(), 1, "{log}");
        assert_eq!(log.matches("[idle] rank").count(), 1, "{log}");
    }
    for p in &pods {
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ElasticJob", "{owner:#}");
        assert_eq!(owner["controller"], true, "{owner:#}");
    }
    env.kubectl
        .ok(&["delete", "elasticjob", "gc", "-n", ns, "--timeout=60s"]);
    env.wait_pods(ns, "gc", "pods gone", T_RUN, |p| p.is_empty());
    wait_until(
        "Service gc gone",
        T_RUN,
        Duration::from_millis(500),
        || {
            (!env
                .kubectl
                .run(&["get", "service", "gc", "-n", ns], None)
                .status
                .success())
            .then_some(())
        },
        || "service gc still there".into(),
    );
}

/// Scenario 15: a pod the job does not own holds the name of one of its pods: the job says so
/// (PodNameConflict True naming it, a PodNameTaken Warning), runs with the pods it can make,
/// and makes the missing one once the name is free.
fn foreign_pod_holding_a_pod_name(env: &Env, ns: &str) {
    let restricted = json!({"allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]}});
    env.kubectl.apply_in(
        ns,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nc-worker-1"},
            "spec": {"terminationGracePeriodSeconds": 1,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "squatter", "image": TRAINER_IMAGE,
                    "securityContext": restricted,
                    "command": ["python", "-c", "import time; time.sleep(3600)"]}]}}),
    );
    let job = idle_job_doc(
        "nc",
        &json!({"minReplicas": 1, "maxReplicas": 2, "replicas": 2}),
    );
    apply_all(env, ns, &[idle_configmap(), job]);
    let st = env.wait_job(ns, "nc", "PodNameConflict True", T_RUN, |j| {
        condition_srm(&j["status"], "PodNameConflict")
            .is_some_and(|(s, r, _)| s == "True" && r == "PodNameTaken")
    });
    let (_, _, message) = condition_srm(&st["status"], "PodNameConflict").unwrap();
    assert!(
        message.contains("pod nc-worker-1 exists, owned by no controller"),
        "{message}"
    );
    let events = env.events(ns, "nc");
    assert!(
        events
            .iter()
            .any(|(t, r, m)| t == "Warning" && r == "PodNameTaken" && m.contains("nc-worker-1")),
        "{events:?}"
    );
    // Pod 0 runs meanwhile (minReplicas 1).
    wait_running(env, ns, "nc", 1);
    env.kubectl
        .ok(&["delete", "pod", "nc-worker-1", "-n", ns, "--timeout=60s"]);
    let pods = wait_running(env, ns, "nc", 2);
    assert!(
        pods.iter()
            .all(|p| p["metadata"]["ownerReferences"][0]["kind"] == "ElasticJob"),
        "{}",
        pod_summary(&pods)
    );
    env.wait_job(ns, "nc", "PodNameConflict False", T_RUN, |j| {
        condition_srm(&j["status"], "PodNameConflict")
            .is_some_and(|(s, r, _)| s == "False" && r == "PodNamesFree")
    });
}

/// Scenario 10: Restarting the operator mid-job neither duplicates pods nor loses status (here: a
/// recorded failure of a pod someone deleted).
fn operator_restart_mid_job(env: &Env, ns: &str) {
    let ex = example();
    let job = torch_job(
        "restart",
        2,
        json!({}),
        // 40 s of training: the job must still run while the operator restarts (11 s later).
        &[("STEPS", "160"), ("STEP_SLEEP", "0.25")],
    );
    apply_all(env, ns, &[ex.configmap, job]);
    wait_running(env, ns, "restart", 2);
    // A failure for the status to remember: a user deletes pod 1.
    let old = uids(&env.pods(ns, "restart"))["restart-worker-1"].clone();
    env.kubectl.ok(&[
        "delete",
        "pod",
        "restart-worker-1",
        "-n",
        ns,
        "--wait=false",
    ]);
    env.wait_job(
        ns,
        "restart",
        "the deleted pod's failure recorded",
        T_RUN,
        |j| {
            failures(&j["status"])
                .iter()
                .any(|f| f["podUID"] == old.as_str())
        },
    );
    wait_running(env, ns, "restart", 2);
    let job = env.wait_state(ns, "restart", "Running", T_RUN);
    wait_log(env, ns, "restart", "[train] step  ", T_JOB);
    let pods_before = uids(&env.pods(ns, "restart"));
    let st_before = job["status"].clone();
    let counters_before = counters(&st_before);
    assert_eq!(
        counters_before.1, 1,
        "one infrastructure restart: {st_before:#}"
    );

    env.restart_operator(Duration::from_secs(3));
    // Let the new operator reconcile a few times while the job runs.
    std::thread::sleep(Duration::from_secs(8));
    let pods_after = env.pods(ns, "restart");
    assert_eq!(
        uids(&pods_after),
        pods_before,
        "the restarted operator kept the same pods:\n{}",
        pod_summary(&pods_after)
    );
    let st = env.status(ns, "restart");
    assert_eq!(counters(&st), counters_before, "counters kept: {st:#}");
    assert_eq!(
        st["startTime"], st_before["startTime"],
        "startTime kept: {st:#}"
    );
    assert_eq!(
        failures(&st)
            .iter()
            .map(|f| f["podUID"].clone())
            .collect::<Vec<_>>(),
        failures(&st_before)
            .iter()
            .map(|f| f["podUID"].clone())
            .collect::<Vec<_>>(),
        "recentFailures kept: {st:#}"
    );
    for c in ["Created", "Running"] {
        assert_eq!(
            condition(&st, c).map(|c| (c["status"].clone(), c["lastTransitionTime"].clone())),
            condition(&st_before, c)
                .map(|c| (c["status"].clone(), c["lastTransitionTime"].clone())),
            "condition {c} kept: {st:#}"
        );
    }

    let job = env.wait_state(ns, "restart", "Succeeded", T_JOB);
    assert_eq!(
        counters(&job["status"]),
        counters_before,
        "nothing counted twice: {:#}",
        job["status"]
    );
    let logs = env.all_job_logs(ns, "restart");
    assert!(logs.contains("after 160 steps on 2 workers"), "{logs}");
}

/// Scenario 11: An invalid spec is refused by the schema (minReplicas 0: OpenAPI minimum) or by the
/// CRD's CEL rules (min > max, a bad nprocPerNode) on the apiserver (the local cluster's 1.34
/// must); on a cluster without CEL (before 1.25) it is marked Failed with reason InvalidSpec and a
/// message that says what to fix, and no pods are made. An invalid edit of a running job never
/// stops it (see [`invalid_edits_of_a_running_job`]).
fn invalid_specs(env: &Env, ns: &str) {
    let ex = example();
    env.kubectl.apply_in(ns, &ex.configmap);

    let mut zero = job_doc("zero-min", &json!({"minReplicas": 0}), &[]);
    env.adapt(&mut zero);
    let o = env.kubectl.try_apply_in(ns, &zero);
    assert!(
        !o.status.success(),
        "minReplicas 0 must be refused: {}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert!(
        err.contains("minReplicas") && err.contains("greater than or equal to 1"),
        "the schema's message: {err}"
    );
    assert!(env.job(ns, "zero-min").is_none());

    for (name, patch, cel_message, field) in [
        (
            "bad-bounds",
            json!({"minReplicas": 3, "maxReplicas": 2, "replicas": null}),
            "minReplicas must be less than or equal to maxReplicas",
            "minReplicas",
        ),
        (
            "bad-nproc",
            json!({"nprocPerNode": "lots"}),
            "nprocPerNode must be auto, gpu, cpu or a positive integer",
            "nprocPerNode",
        ),
    ] {
        let mut job = job_doc(name, &patch, &[]);
        env.adapt(&mut job);
        let o = env.kubectl.try_apply_in(ns, &job);
        if !o.status.success() {
            // A cluster with CEL (≥ 1.25) refuses it at once.
            assert!(stderr(&o).contains(cel_message), "{name}: {}", stderr(&o));
            continue;
        }
        // The local cluster is Kubernetes 1.34: its apiserver evaluates the CRD's CEL rules.
        assert!(
            !env.is_local(),
            "{name}: the local apiserver accepted it; its CEL rule ({cel_message}) did not run"
        );
        let j = env.wait_state(ns, name, "Failed", T_RUN);
        let st = &j["status"];
        let (s, reason, message) = condition_srm(st, "Failed").expect("a Failed condition");
        assert_eq!(
            (s.as_str(), reason.as_str()),
            ("True", "InvalidSpec"),
            "{name}: {st:#}"
        );
        assert!(
            message.contains(field),
            "{name}: the message names {field}: {message}"
        );
        let events = wait_until(
            &format!("a Warning event InvalidSpec about {name}"),
            Duration::from_secs(20),
            Duration::from_secs(1),
            || {
                let ev = env.events(ns, name);
                ev.iter()
                    .any(|(t, r, _)| t == "Warning" && r == "InvalidSpec")
                    .then_some(ev)
            },
            || format!("{:?}", env.events(ns, name)),
        );
        eprintln!("e2e: {name}: {events:?}");
        assert!(
            env.pods(ns, name).is_empty(),
            "{name}: no pods for an invalid job"
        );
        assert!(
            env.kubectl
                .run(&["get", "service", name, "-n", ns], None)
                .status
                .success()
                .eq(&false),
            "{name}: no Service for an invalid job"
        );
    }
    invalid_edits_of_a_running_job(env, ns);
}

/// An edit of a running job: one the CRD's transition rule refuses (the rendezvous port), and
/// one the apiserver accepts but the operator cannot run (an exit code both retryable and
/// permanent): the job goes on with its last valid spec, replaces a lost pod from it, says what
/// to fix, and takes the next valid edit.
fn invalid_edits_of_a_running_job(env: &Env, ns: &str) {
    let job = idle_job_doc(
        "edited",
        &json!({"minReplicas": 1, "maxReplicas": 2, "replicas": 1}),
    );
    apply_all(env, ns, &[idle_configmap(), job]);
    wait_running(env, ns, "edited", 1);
    let patch = |p: Value| {
        env.kubectl.run(
            &[
                "patch",
                "ej",
                "edited",
                "-n",
                ns,
                "--type=merge",
                "-p",
                &p.to_string(),
            ],
            None,
        )
    };

    let o = patch(json!({"spec": {"rendezvous": {"port": 29500}}}));
    if o.status.success() {
        // No CEL (before 1.25): the operator refuses it instead.
        assert!(
            !env.is_local(),
            "the local apiserver accepted a port change: the transition rule did not run"
        );
        env.wait_job(ns, "edited", "EditRejected for the port", T_RUN, |j| {
            condition_srm(&j["status"], "EditRejected")
                .is_some_and(|(s, _, m)| s == "True" && m.contains("spec.rendezvous.port"))
        });
        let o = patch(json!({"spec": {"rendezvous": {"port": 29400}}}));
        assert!(o.status.success(), "{}", stderr(&o));
    } else {
        assert!(
            stderr(&o).contains("rendezvous.port cannot change"),
            "the transition rule's message: {}",
            stderr(&o)
        );
    }

    let running_generation = env.job(ns, "edited").unwrap()["metadata"]["generation"].clone();
    let pod0 = uids(&env.pods(ns, "edited"))["edited-worker-0"].clone();
    // Valid for the schema and CEL; the operator refuses it. With it, a scale to 2 that must
    // wait for the fix.
    let o = patch(json!({"spec": {"replicas": 2, "failurePolicy":
        {"permanentExitCodes": [3], "retryableExitCodes": [3]}}}));
    assert!(o.status.success(), "{}", stderr(&o));
    let j = env.wait_job(ns, "edited", "EditRejected True", T_RUN, |j| {
        condition_srm(&j["status"], "EditRejected").is_some_and(|(s, _, _)| s == "True")
    });
    let (_, reason, message) = condition_srm(&j["status"], "EditRejected").unwrap();
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains(
            "spec.failurePolicy.retryableExitCodes: exit codes 3 are also in permanentExitCodes"
        ) && message.contains(&format!(
            "the job keeps running generation {running_generation}, its last valid spec"
        )),
        "{message}"
    );
    let events = env.events(ns, "edited");
    assert!(
        events.iter().any(|(t, r, m)| t == "Warning"
            && r == "InvalidSpec"
            && m.contains("retryableExitCodes")),
        "{events:?}"
    );
    assert!(
        condition_srm(&j["status"], "Failed").is_none(),
        "not failed: {:#}",
        j["status"]
    );
    // Still one pod (the scale waits), the same one; a lost pod is replaced from the last
    // valid spec.
    let pods = env.pods(ns, "edited");
    assert_eq!(
        uids(&pods).into_iter().collect::<Vec<_>>(),
        [("edited-worker-0".to_string(), pod0.clone())],
        "{}",
        pod_summary(&pods)
    );
    env.kubectl.ok(&[
        "delete",
        "pod",
        "edited-worker-0",
        "-n",
        ns,
        "--timeout=60s",
    ]);
    let pods = wait_running(env, ns, "edited", 1);
    assert_eq!(pods.len(), 1, "{}", pod_summary(&pods));
    assert_ne!(uids(&pods)["edited-worker-0"], pod0, "pod 0 was replaced");
    let st = env.status(ns, "edited");
    assert!(condition_srm(&st, "Failed").is_none(), "not failed: {st:#}");

    // The fix: the pending scale to 2 goes ahead.
    let o = patch(json!({"spec": {"failurePolicy": {"retryableExitCodes": []}}}));
    assert!(o.status.success(), "{}", stderr(&o));
    env.wait_job(ns, "edited", "EditRejected False", T_RUN, |j| {
        condition_srm(&j["status"], "EditRejected")
            .is_some_and(|(s, r, _)| s == "False" && r == "SpecValid")
    });
    wait_running(env, ns, "edited", 2);
}

/// Evicts `pod` through the Eviction API, as `kubectl drain` or the cluster autoscaler would
/// (the pod gets the DisruptionTarget condition, then is deleted gracefully).
fn evict(env: &Env, ns: &str, pod: &str) {
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod, "namespace": ns}})
    .to_string();
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction");
    let out = env
        .kubectl
        .run(&["create", "--raw", &path, "-f", "-"], Some(&body));
    assert!(
        out.status.success(),
        "evicting {pod}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Scenario 17: a partition that leaves pod 0, the rendezvous store's host, alone on its side
/// (3 pods, min 1). The other two move the store and train; pod 0 keeps its store and sees them
/// fall silent, but one of three is no quorum: it waits instead of training alone with its own
/// ranks 0.. (two copies of rank 0 would write the same checkpoint). Healed, it finds the
/// moved store and joins as a scale-up.
fn store_host_cut_off_alone(env: &Env, ns: &str) {
    three_pods_training(env, ns, "quorum", 1);

    let marks = log_marks(env, ns, "quorum");
    let pod0_from = env.logs(ns, "quorum-worker-0").unwrap_or_default().len();
    let pod0 = || {
        let log = env.logs(ns, "quorum-worker-0").unwrap_or_default();
        log.get(pod0_from..).unwrap_or_default().to_string()
    };
    env.faults
        .set_pod_network(ns, "quorum-worker-0", false)
        .unwrap_or_else(|e| panic!("cut the network of quorum-worker-0: {e}"));
    let t = Instant::now();
    wait_new_log(env, ns, "quorum", &marks, "[train] world_size=2 ", T_JOB);
    eprintln!(
        "e2e: pods 1 and 2 training again {:.1}s after pod 0 was cut off",
        t.elapsed().as_secs_f64()
    );
    wait_until(
        "pod 0 waiting for a quorum",
        T_RUN,
        Duration::from_secs(1),
        || pod0().contains("waiting for a quorum").then_some(()),
        || tail(&pod0(), 40),
    );
    // Never, for longer than its last call (30 s by default) would have taken to form a round
    // alone: looked at every second, failing at the first sign.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(35) {
        let alone = pod0();
        assert!(
            !alone.contains("[train] world_size=1 ") && !alone.contains("world_size=1 workers"),
            "pod 0 trained alone while cut off:\n{}",
            tail(&alone, 60)
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    let marks = log_marks(env, ns, "quorum");
    env.faults
        .set_pod_network(ns, "quorum-worker-0", true)
        .unwrap_or_else(|e| panic!("restore the network of quorum-worker-0: {e}"));
    let t = Instant::now();
    wait_new_log(env, ns, "quorum", &marks, "[train] world_size=3 ", T_JOB);
    eprintln!(
        "e2e: pod 0 back in the job {:.1}s after its network was restored",
        t.elapsed().as_secs_f64()
    );
    let st = env.status(ns, "quorum");
    assert_eq!(
        counters(&st),
        (0, 0),
        "a partition healed is no pod failure: {st:#}"
    );
}

/// A job of 3 pods × 1 PyTorch worker (min `min`, 10 restarts, 1 s backoff) that trains until
/// stopped, once all three train together.
fn three_pods_training(env: &Env, ns: &str, name: &str, min: u32) {
    let mut job = job_doc(
        name,
        &json!({"minReplicas": min, "maxReplicas": 3, "replicas": 3, "nprocPerNode": 1,
            "maxRestarts": 10,
            "failurePolicy": {"backoff": {"initialSeconds": 1}},
            "template": {"spec": {"terminationGracePeriodSeconds": 5}}}),
        &[("STEPS", "1000000"), ("STEP_SLEEP", "0.2")],
    );
    set_gpus(&mut job, Some(1));
    apply_all(env, ns, &[example().configmap, job]);
    wait_running(env, ns, name, 3);
    wait_log(env, ns, name, "[train] world_size=3 ", T_JOB);
}

/// Scenario 12: with the CRD's rendezvous defaults (30 s last call), 3 pods × 1 PyTorch worker,
/// min 2: a silent partition of a pod (no RST: the heartbeat must notice), an eviction above
/// minReplicas and a pod SIGKILLed each leave two pods training again within seconds, not
/// after heartbeat + last call (15 + 30 s before); the partitioned pod comes back as a
/// scale-up; the eviction is a disruption charged to no budget and the job grows back; an
/// eviction that leaves fewer than min pods running is charged as before.
fn faults_above_min_train_again_in_seconds(env: &Env, ns: &str) {
    // Below the 45 s that the heartbeat (15 s) and the last call (30 s) alone took before, with
    // room for a slow `import torch` on a loaded 2-core machine (usually 7 to 12 s in all).
    const BACK_TRAINING: Duration = Duration::from_secs(40);
    three_pods_training(env, ns, "goodput", 2);

    // A silent partition of pod 2: only the heartbeat can tell.
    let marks = log_marks(env, ns, "goodput");
    env.faults
        .set_pod_network(ns, "goodput-worker-2", false)
        .unwrap_or_else(|e| panic!("cut the network of goodput-worker-2: {e}"));
    let t = Instant::now();
    wait_new_log(env, ns, "goodput", &marks, "[train] world_size=2 ", T_JOB);
    let took = t.elapsed();
    eprintln!(
        "e2e: two pods training again {:.1}s after pod 2 was cut off",
        took.as_secs_f64()
    );
    assert!(
        took < BACK_TRAINING,
        "training resumed only {took:?} after the partition"
    );
    // Fenced: pod 2, unable to renew its heartbeat lease, stopped its workers (gone by the
    // lease's end) before the other two started the round without it: never two copies of a
    // rank. The launchers' log lines carry their time.
    let new = logs_since(env, ns, "goodput", &marks);
    let fenced = first_line_time(
        &new,
        &["stopping workers before this node's heartbeat lease ends"],
    );
    let restarted = first_line_time(&new, &["started workers", "world_size=2 "]);
    match (fenced, restarted) {
        (Some(fenced), Some(restarted)) => {
            eprintln!(
                "e2e: pod 2 fenced {:.2}s before the others started the round without it",
                restarted - fenced
            );
            assert!(
                fenced < restarted,
                "pod 2 fenced after the others restarted:\n{}",
                tail(&new, 60)
            );
        }
        _ => panic!("no fence or no restart in the logs:\n{}", tail(&new, 60)),
    }
    let marks = log_marks(env, ns, "goodput");
    env.faults
        .set_pod_network(ns, "goodput-worker-2", true)
        .unwrap_or_else(|e| panic!("restore the network of goodput-worker-2: {e}"));
    let t = Instant::now();
    wait_new_log(env, ns, "goodput", &marks, "[train] world_size=3 ", T_JOB);
    eprintln!(
        "e2e: pod 2 back in the job {:.1}s after its network was restored",
        t.elapsed().as_secs_f64()
    );
    let st = env.status(ns, "goodput");
    assert_eq!(
        counters(&st),
        (0, 0),
        "a partition healed is no pod failure: {st:#}"
    );

    // Eviction above min: the job shrinks, nothing is charged, it grows back.
    let marks = log_marks(env, ns, "goodput");
    let evicted_uid = uids(&env.pods(ns, "goodput"))["goodput-worker-2"].clone();
    evict(env, ns, "goodput-worker-2");
    let t = Instant::now();
    // Two pods, or already three again: the replacement may join before the shrunk round's
    // rank 0 got to print.
    wait_new_log(env, ns, "goodput", &marks, "[train] world_size=", T_JOB);
    let took = t.elapsed();
    eprintln!(
        "e2e: two pods training again {:.1}s after pod 2 was evicted",
        took.as_secs_f64()
    );
    assert!(
        took < BACK_TRAINING,
        "training resumed only {took:?} after the eviction"
    );
    let job = env.wait_job(ns, "goodput", "the eviction recorded", T_RUN, |j| {
        failures(&j["status"])
            .iter()
            .any(|f| f["podUID"] == evicted_uid.as_str())
    });
    let st = &job["status"];
    assert_eq!(int(&st["disruptions"]), 1, "{st:#}");
    assert_eq!(
        counters(st),
        (0, 0),
        "an eviction above min is not charged: {st:#}"
    );
    env.wait_job(ns, "goodput", "status.worldSize 3 again", T_JOB, |j| {
        j["status"]["worldSize"] == 3
    });
    eprintln!(
        "e2e: back to 3 pods {:.1}s after the eviction",
        t.elapsed().as_secs_f64()
    );

    // A pod killed (SIGKILL: a crash, an OOM kill): its peers' collectives fail at once on the
    // reset connections, they re-join before a heartbeat could notice, and find its agent gone
    // by its closed store connection.
    wait_running(env, ns, "goodput", 3);
    let marks = log_marks(env, ns, "goodput");
    env.faults
        .kill_pod(ns, "goodput-worker-2", Signal::SIGKILL)
        .unwrap_or_else(|e| panic!("kill goodput-worker-2: {e}"));
    let t = Instant::now();
    wait_new_log(env, ns, "goodput", &marks, "[train] world_size=", T_JOB);
    let took = t.elapsed();
    eprintln!(
        "e2e: two pods training again {:.1}s after pod 2 was killed",
        took.as_secs_f64()
    );
    assert!(
        took < BACK_TRAINING,
        "training resumed only {took:?} after the kill"
    );
    env.wait_job(ns, "goodput", "status.worldSize 3 again", T_JOB, |j| {
        j["status"]["worldSize"] == 3
    });

    // Pod 0 killed: it hosts the rendezvous store. The survivors move the store to the lowest
    // of them and re-form at once, without waiting for a new pod 0; the new pod 0 finds the
    // moved store and joins as a scale-up.
    wait_running(env, ns, "goodput", 3);
    let marks = log_marks(env, ns, "goodput");
    env.faults
        .kill_pod(ns, "goodput-worker-0", Signal::SIGKILL)
        .unwrap_or_else(|e| panic!("kill goodput-worker-0: {e}"));
    let t = Instant::now();
    wait_new_log(env, ns, "goodput", &marks, "[train] world_size=", T_JOB);
    let took = t.elapsed();
    eprintln!(
        "e2e: two pods training again {:.1}s after pod 0 (the store host) was killed",
        took.as_secs_f64()
    );
    assert!(
        took < BACK_TRAINING,
        "training resumed only {took:?} after pod 0 was killed"
    );
    let moved = env.logs(ns, "goodput-worker-1").unwrap_or_default();
    assert!(
        moved.contains("this node hosts it now"),
        "pod 1, the lowest survivor, hosts the store: {moved}"
    );
    env.wait_job(ns, "goodput", "status.worldSize 3 again", T_JOB, |j| {
        j["status"]["worldSize"] == 3
    });
    eprintln!(
        "e2e: back to 3 pods {:.1}s after pod 0 was killed",
        t.elapsed().as_secs_f64()
    );

    // Two evicted at once leave one of min 2: at least the second is charged.
    wait_running(env, ns, "goodput", 3);
    let st = env.status(ns, "goodput");
    let (disruptions_before, infra_before) =
        (int(&st["disruptions"]), int(&st["infrastructureRestarts"]));
    let before = uids(&env.pods(ns, "goodput"));
    evict(env, ns, "goodput-worker-2");
    evict(env, ns, "goodput-worker-1");
    let job = env.wait_job(ns, "goodput", "both evictions recorded", T_RUN, |j| {
        ["goodput-worker-1", "goodput-worker-2"].iter().all(|p| {
            failures(&j["status"])
                .iter()
                .any(|f| f["podUID"] == before[*p].as_str())
        })
    });
    // The operator may see the two one after the other: the first still leaves min 2 running
    // (a disruption), the second leaves one (charged); or both at once (both charged).
    let st = &job["status"];
    let (disruptions, infra) = (
        int(&st["disruptions"]) - disruptions_before,
        int(&st["infrastructureRestarts"]) - infra_before,
    );
    assert!(
        infra >= 1 && disruptions + infra == 2,
        "below min, evictions are charged: {st:#}"
    );
}

/// Scenario 14: a rank hangs (HANG_AT_STEP: it sleeps instead of training; the other rank
/// blocks in its collective) with failurePolicy.stallTimeoutSeconds 15: the silent ranks are
/// caught, the Stalled condition and event name them, the launcher restarts the group (counted),
/// and the job succeeds. Its status shows the workers' progress and a goodput below 100%.
fn hung_rank_is_caught(env: &Env, ns: &str) {
    let ex = example();
    let job = torch_job(
        "hung",
        2,
        json!({"maxRestarts": 3, "failurePolicy": {"stallTimeoutSeconds": 15}}),
        &[
            ("STEPS", "30"),
            ("STEP_SLEEP", "0.2"),
            ("HANG_AT_STEP", "10"),
            ("FAIL_RANK", "1"),
        ],
    );
    apply_all(env, ns, &[ex.configmap, job]);
    wait_running(env, ns, "hung", 2);
    let job = env.wait_job(ns, "hung", "a Stalled condition", T_JOB, |j| {
        condition_srm(&j["status"], "Stalled").is_some_and(|(s, _, _)| s == "True")
    });
    let (_, reason, message) = condition_srm(&job["status"], "Stalled").unwrap();
    assert_eq!(reason, "NoProgress");
    assert!(
        message.contains("reported no progress") && message.contains("hung-worker-"),
        "{message}"
    );
    let job = env.wait_state(ns, "hung", "Succeeded", T_JOB);
    let st = &job["status"];
    assert!(
        int(&st["workerRestarts"]) >= 1,
        "the stall restarted a group: {st:#}"
    );
    // The last poll of the launchers (every 10 s) saw some step of the 30.
    assert_eq!(st["progress"]["total"], 30, "{st:#}");
    assert!(int(&st["progress"]["step"]) >= 1, "{st:#}");
    let goodput = int(&st["goodput"]["percent"]);
    assert!(
        (1..100).contains(&goodput),
        "15 s stalled and a restart are not training: {st:#}"
    );
    let ev = env.events(ns, "hung");
    assert!(
        ev.iter().any(|(t, r, _)| t == "Warning" && r == "Stalled"),
        "{ev:#?}"
    );
}

/// Scenario 13: workers read why they are stopped from $ELASTICJOB_STOP_REASON_FILE: on a
/// scale-down the removed pod's worker reads ScaleDown (the operator told its launcher before
/// deleting the pod) with the grace the pod's terminationGracePeriodSeconds leaves (5 s → 2 s);
/// the worker that stays reads PeerLost (its launcher re-formed without the other); on
/// suspend it reads Suspended.
fn workers_learn_why_they_stop(env: &Env, ns: &str) {
    let script = r#"trap 'echo "stop-notice $(cat "$ELASTICJOB_STOP_REASON_FILE")"; exit 143' TERM; echo "worker up: world size $WORLD_SIZE"; while true; do sleep 0.1; done"#;
    let mut job = job_doc(
        "why",
        &json!({"minReplicas": 1, "maxReplicas": 2, "replicas": 2, "nprocPerNode": 1,
            "template": {"spec": {"terminationGracePeriodSeconds": 5}}}),
        &[],
    );
    *job.pointer_mut("/spec/template/spec/containers/0/command")
        .expect("the trainer's command") = json!(["bash", "-c", script]);
    set_gpus(&mut job, None);
    apply_all(env, ns, &[example().configmap, job]);
    wait_running(env, ns, "why", 2);
    wait_log(env, ns, "why", "worker up: world size 2", T_RUN);

    // The kubelet removes a deleted pod's log: follow each pod's while it goes.
    let removed = FollowedLog::start(env, ns, "why-worker-1");
    env.kubectl
        .ok(&["scale", "ej/why", "--replicas=1", "-n", ns]);
    let notice = removed.wait_for("stop-notice");
    assert!(
        notice.contains(r#""reason":"ScaleDown","message":"the job is scaled down to 1 pods""#)
            && notice.contains(r#""graceSeconds":2.0"#),
        "{notice}"
    );
    wait_log(env, ns, "why", r#""reason":"PeerLost""#, T_RUN);

    let staying = FollowedLog::start(env, ns, "why-worker-0");
    patch_job(
        env,
        ns,
        "why",
        &json!({"spec": {"runPolicy": {"suspend": true}}}),
    );
    let notice = staying.wait_for(r#""reason":"Suspended""#);
    assert!(notice.contains("the job is suspended"), "{notice}");
}

/// `kubectl logs -f` of a pod's trainer into a scratch file, so its log outlives the pod.
struct FollowedLog {
    child: std::process::Child,
    path: std::path::PathBuf,
}

impl FollowedLog {
    fn start(env: &Env, ns: &str, pod: &str) -> FollowedLog {
        let dir = std::env::temp_dir().join(format!("elasticjob-e2e-{ns}"));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let path = dir.join(format!("{pod}.log"));
        let child = std::process::Command::new(&env.kubectl.bin)
            .arg("--kubeconfig")
            .arg(&env.kubectl.kubeconfig)
            .args(["logs", "-f", pod, "-c", "trainer", "-n", ns])
            .stdout(std::fs::File::create(&path).expect("the followed log's file"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl logs -f");
        FollowedLog { child, path }
    }

    /// Waits until the log has `needle`; returns the log.
    fn wait_for(self, needle: &str) -> String {
        let read = || std::fs::read_to_string(&self.path).unwrap_or_default();
        wait_until(
            &format!("{needle:?} in the followed log {}", self.path.display()),
            T_RUN,
            Duration::from_secs(1),
            || {
                let log = read();
                log.contains(needle).then_some(log)
            },
            || tail(&read(), 30),
        )
    }
}

impl Drop for FollowedLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scenario 15: A node is lost under a running job (its machine is gone: kubelet, processes and
/// network at once, nothing reported). The node turns NotReady, the taint manager evicts the pods
/// on it (failurePolicy.nodeLostTimeoutSeconds 2: the operator's tolerations of `unreachable` and
/// `not-ready`, instead of Kubernetes' 300 s), they
/// stay Terminating (no kubelet to confirm), and the operator deletes them forcefully after
/// failurePolicy.podTerminationTimeoutSeconds and recreates them on the nodes left. The job
/// re-forms and succeeds; status counts an infrastructure restart and names the pod and the node.
///
/// The victim is a node that holds a non-zero pod and neither the operator nor pod 0 (the store
/// host): 3 pods that prefer distinct nodes (soft anti-affinity, so replacements still fit on the
/// nodes left), so on 3 nodes (local cluster; kind's 3 workers) such a node exists whenever the
/// scheduler spread them; were they not spread, a node of the job's without the operator is lost,
/// pod 0's if need be.
/// The nodes a pod's operator-made avoiding term names (failurePolicy.avoidFailedNodes: a
/// preferred node-affinity term of weight 100, `metadata.name NotIn` each node).
fn avoided_by(pod: &Value) -> Vec<String> {
    pod["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["weight"] == 100)
        .flat_map(|t| {
            t["preference"]["matchFields"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|r| r["key"] == "metadata.name" && r["operator"] == "NotIn")
        .flat_map(|r| r["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// Whether the node is Ready without a not-ready or unreachable taint (schedulable again).
fn node_is_back(env: &Env, node: &str) -> bool {
    let Some(n) = env.kubectl.json(&["get", "node", node]) else {
        return false;
    };
    let ready = n["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let tainted = n["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| {
            matches!(
                t["key"].as_str(),
                Some("node.kubernetes.io/not-ready" | "node.kubernetes.io/unreachable")
            )
        });
    ready && !tainted
}

/// Restores a lost node when dropped, unless already restored: later scenarios need every node.
struct RestoreNode<'a> {
    env: &'a Env,
    node: String,
    done: bool,
}

impl RestoreNode<'_> {
    fn now(&mut self) {
        self.done = true;
        self.env
            .faults
            .restore_node(&self.node)
            .unwrap_or_else(|e| panic!("restore node {}: {e}", self.node));
    }
}

impl Drop for RestoreNode<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.env.faults.restore_node(&self.node)
        {
            eprintln!("e2e: restoring node {}: {e}", self.node);
        }
    }
}

/// Scenario 19: a job that lost a pod with its node avoids that node for its new pods
/// (failurePolicy.avoidFailedNodes, on by default): the replacement carries a preferred
/// `NotIn` of the node and runs elsewhere; once the node is back and schedulable, a scale-up's
/// new pod still goes elsewhere; the template's own affinity is kept; with the field off, new
/// pods carry no such term.
fn replacement_avoids_failed_node(env: &Env, ns: &str) {
    let operator_node = env.operator_node().expect("the operator pod's node");
    // The job stays off the operator's node (losing it would lose the operator) through the
    // template's own required node affinity, which the operator's term must keep.
    let job = idle_job_doc(
        "avoid",
        &json!({"minReplicas": 1, "maxReplicas": 3, "replicas": 1,
            "failurePolicy": {"podTerminationTimeoutSeconds": 2, "nodeLostTimeoutSeconds": 1,
                "backoff": {"initialSeconds": 1}},
            "template": {"spec": {"terminationGracePeriodSeconds": 2,
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name",
                        "operator": "NotIn", "values": [operator_node]}]}]}}}}}}),
    );
    apply_all(env, ns, &[idle_configmap(), job]);
    let first = wait_running(env, ns, "avoid", 1).remove(0);
    assert!(
        avoided_by(&first).is_empty(),
        "a job without node failures avoids no node: {:#}",
        first["spec"]["affinity"]
    );
    let node = first["spec"]["nodeName"].as_str().unwrap().to_string();
    let old_uid = first["metadata"]["uid"].as_str().unwrap().to_string();
    assert_ne!(
        node, operator_node,
        "the template keeps the job off the operator's node"
    );

    eprintln!("e2e: losing node {node} with avoid-worker-0; the operator is on {operator_node}");
    env.faults
        .lose_node(&node)
        .unwrap_or_else(|e| panic!("lose node {node}: {e}"));
    let mut restore = RestoreNode {
        env,
        node: node.clone(),
        done: false,
    };
    let t = Instant::now();
    let job = env.wait_job(
        ns,
        "avoid",
        "the node loss in status.recentFailures",
        T_RUN,
        |j| {
            failures(&j["status"])
                .iter()
                .any(|f| f["podUID"] == old_uid.as_str())
        },
    );
    let f = failures(&job["status"])
        .into_iter()
        .find(|f| f["podUID"] == old_uid.as_str())
        .unwrap();
    assert_eq!(
        (f["reason"].as_str(), f["node"].as_str()),
        (Some("NodeLost"), Some(node.as_str())),
        "{f:#}"
    );
    eprintln!(
        "e2e: failure recorded {:.1}s after the loss; restoring {node}",
        t.elapsed().as_secs_f64()
    );
    restore.now();

    // The replacement: avoids the lost node, keeps the template's affinity, runs elsewhere.
    let pods = env.wait_pods(
        ns,
        "avoid",
        "the replacement of pod 0 running",
        T_RUN,
        |pods| {
            pods.iter().any(|p| {
                p["metadata"]["uid"] != old_uid.as_str() && phase(p) == "Running" && !is_deleting(p)
            })
        },
    );
    let replacement = pods
        .iter()
        .find(|p| p["metadata"]["uid"] != old_uid.as_str() && phase(p) == "Running")
        .unwrap();
    assert_eq!(
        avoided_by(replacement),
        [node.as_str()],
        "{:#}",
        replacement["spec"]["affinity"]
    );
    assert_eq!(
        replacement["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0],
        operator_node.as_str(),
        "the template's own affinity is kept: {:#}",
        replacement["spec"]["affinity"]
    );
    let other = replacement["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(other, node, "the replacement runs on another node");
    assert!(
        env.events(ns, "avoid")
            .iter()
            .any(|(_, reason, note)| reason == "AvoidingNodes" && note.contains(&node)),
        "an AvoidingNodes event names {node}: {:?}",
        env.events(ns, "avoid")
    );

    // Once the node is back and schedulable, a new pod (scale-up) still prefers another node.
    wait_until(
        &format!("node {node} Ready and untainted"),
        T_RUN,
        Duration::from_millis(500),
        || node_is_back(env, &node).then_some(()),
        || {
            format!(
                "{:#}",
                env.kubectl
                    .json(&["get", "node", &node])
                    .unwrap_or_default()
            )
        },
    );
    eprintln!(
        "e2e: node {node} back {:.1}s after the loss",
        t.elapsed().as_secs_f64()
    );
    env.kubectl
        .ok(&["scale", "ej/avoid", "--replicas=2", "-n", ns]);
    let pods = env.wait_pods(ns, "avoid", "pod 1 scheduled", T_RUN, |pods| {
        pods.iter()
            .any(|p| p["metadata"]["name"] == "avoid-worker-1" && p["spec"]["nodeName"].is_string())
    });
    let pod1 = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "avoid-worker-1")
        .unwrap();
    assert_eq!(
        avoided_by(pod1),
        [node.as_str()],
        "{:#}",
        pod1["spec"]["affinity"]
    );
    assert_eq!(
        pod1["spec"]["nodeName"].as_str(),
        Some(other.as_str()),
        "with {node} schedulable again, the new pod still prefers {other}"
    );

    // Off: new pods carry no avoiding term.
    patch_job(
        env,
        ns,
        "avoid",
        &json!({"spec": {"failurePolicy": {"avoidFailedNodes": {"enabled": false}}, "replicas": 3}}),
    );
    let pods = env.wait_pods(ns, "avoid", "pod 2 created", T_RUN, |pods| {
        pods.iter()
            .any(|p| p["metadata"]["name"] == "avoid-worker-2")
    });
    let pod2 = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "avoid-worker-2")
        .unwrap();
    assert!(
        avoided_by(pod2).is_empty(),
        "avoidFailedNodes off: {:#}",
        pod2["spec"]["affinity"]
    );
    eprintln!(
        "e2e: pod 2 (avoidance off) on {}",
        pod2["spec"]["nodeName"]
            .as_str()
            .unwrap_or("(not yet scheduled)")
    );
}

fn node_loss(env: &Env, ns: &str) {
    let ex = example();
    let job = torch_job(
        "lost",
        3,
        json!({"maxRestarts": 3,
            "failurePolicy": {"podTerminationTimeoutSeconds": 5, "nodeLostTimeoutSeconds": 2},
            "template": {"spec": {
                "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {JOB_LABEL: "lost"}}}}]}}}}}),
        &[("STEPS", "60"), ("STEP_SLEEP", "0.25")],
    );
    apply_all(env, ns, &[ex.configmap, job]);
    let pods = wait_running(env, ns, "lost", 3);
    wait_log(env, ns, "lost", "[train] step  ", T_JOB);
    for p in &pods {
        let tolerations = p["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            tolerations
                .iter()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable"
                    && t["effect"] == "NoExecute"
                    && t["tolerationSeconds"] == 2),
            "the operator set the node-lost tolerations from nodeLostTimeoutSeconds: {tolerations:?}"
        );
    }

    let operator_node = env.operator_node().expect("the operator pod's node");
    let node_of = |p: &Value| p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
    let index_of = |p: &Value| {
        p["metadata"]["name"]
            .as_str()
            .and_then(|n| n.rsplit('-').next())
            .and_then(|i| i.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    };
    let pod0_node = pods
        .iter()
        .find(|p| index_of(p) == 0)
        .map(node_of)
        .expect("pod 0");
    // The nodes of the job's pods but not of the operator: one with a non-zero pod and without
    // pod 0 first (on 3 nodes with the pods spread there always is one), then one with a
    // non-zero pod and pod 0, then pod 0's alone (the pods did not spread: the scenario then
    // loses the store host with its node).
    let mut candidates: Vec<(bool, bool, String)> = pods
        .iter()
        .map(node_of)
        .filter(|n| *n != operator_node)
        .map(|n| {
            let only_pod0 = pods.iter().all(|p| node_of(p) != n || index_of(p) == 0);
            (only_pod0, n == pod0_node, n)
        })
        .collect();
    candidates.sort();
    candidates.dedup();
    let Some((_, _, node)) = candidates.first().cloned() else {
        panic!(
            "every pod of the job is on the operator's node {operator_node}:\n{}",
            pod_summary(&pods)
        );
    };
    let on_node: Vec<&Value> = pods.iter().filter(|p| node_of(p) == node).collect();
    // The lowest non-zero pod on the node, else pod 0.
    let victim = on_node
        .iter()
        .min_by_key(|p| (index_of(p) == 0, index_of(p)))
        .unwrap();
    let victim_name = victim["metadata"]["name"].as_str().unwrap().to_string();
    let victim_uid = victim["metadata"]["uid"].as_str().unwrap().to_string();
    let lost: Vec<(String, String)> = on_node
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["metadata"]["uid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    if pod0_node == node {
        eprintln!(
            "e2e: the pods did not spread: no node holds a non-zero pod without pod 0 or the operator; losing pod 0 too"
        );
    }
    eprintln!(
        "e2e: losing node {node} with {lost:?}; the operator is on {operator_node}, pod 0 on {pod0_node}"
    );
    env.faults
        .lose_node(&node)
        .unwrap_or_else(|e| panic!("lose node {node}: {e}"));
    let t = Instant::now();

    wait_until(
        &format!("node {node} NotReady"),
        T_RUN,
        Duration::from_millis(500),
        || {
            let n = env.kubectl.json(&["get", "node", &node])?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (ready["status"] != "True").then_some(())
        },
        || {
            format!(
                "{:#}",
                env.kubectl
                    .json(&["get", "node", &node])
                    .unwrap_or_default()
            )
        },
    );
    eprintln!(
        "e2e: node {node} NotReady {:.1}s after the loss",
        t.elapsed().as_secs_f64()
    );

    let job = env.wait_job(
        ns,
        "lost",
        &format!("a failure of {victim_name} in status.recentFailures"),
        T_RUN,
        |j| {
            failures(&j["status"])
                .iter()
                .any(|f| f["podUID"] == victim_uid.as_str())
        },
    );
    eprintln!(
        "e2e: failure of {victim_name} recorded {:.1}s after the loss",
        t.elapsed().as_secs_f64()
    );
    let st = &job["status"];
    let f = failures(st)
        .into_iter()
        .find(|f| f["podUID"] == victim_uid.as_str())
        .unwrap();
    assert_eq!(f["pod"], victim_name.as_str(), "{f:#}");
    assert_eq!(
        f["node"],
        node.as_str(),
        "the failure names the lost node: {f:#}"
    );
    assert_eq!(f["category"], "Infrastructure", "{f:#}");
    assert_eq!(f["reason"], "NodeLost", "{f:#}");
    assert_eq!(f["permanent"], false, "{f:#}");
    assert!(int(&st["infrastructureRestarts"]) >= 1, "{st:#}");

    // Every pod of the lost node comes back, under its name, on a node that is still there.
    let replaced = env.wait_pods(
        ns,
        "lost",
        &format!("new {lost:?} running on other nodes"),
        T_RUN,
        |pods| {
            lost.iter().all(|(name, uid)| {
                pods.iter().any(|p| {
                    p["metadata"]["name"] == name.as_str()
                        && p["metadata"]["uid"] != uid.as_str()
                        && phase(p) == "Running"
                        && !is_deleting(p)
                        && node_of(p) != node
                })
            })
        },
    );
    eprintln!(
        "e2e: {lost:?} replaced {:.1}s after the loss:\n{}",
        t.elapsed().as_secs_f64(),
        pod_summary(&replaced)
    );
    let event = wait_until(
        "a Warning event ForceDeletingPod about the job",
        Duration::from_secs(20),
        Duration::from_secs(1),
        || {
            let ev = env.events(ns, "lost");
            ev.iter()
                .find(|(t, r, m)| t == "Warning" && r == "ForceDeletingPod" && m.contains(&node))
                .cloned()
        },
        || format!("{:#?}", env.events(ns, "lost")),
    );
    eprintln!("e2e: {event:?}");

    let job = env.wait_state(ns, "lost", "Succeeded", T_JOB);
    eprintln!(
        "e2e: lost Succeeded {:.1}s after the loss",
        t.elapsed().as_secs_f64()
    );
    let st = &job["status"];
    assert!(int(&st["infrastructureRestarts"]) >= 1, "{st:#}");
    assert!(int(&st["restartCount"]) >= 1, "{st:#}");
    assert!(
        failures(st)
            .iter()
            .any(|f| f["podUID"] == victim_uid.as_str()
                && f["node"] == node.as_str()
                && f["reason"] == "NodeLost"),
        "the failure is still listed: {st:#}"
    );
    let logs = env.all_job_logs(ns, "lost");
    assert!(logs.contains("after 60 steps on 3 workers"), "{logs}");
}

/// Scenario 18: `nprocPerNode` counts every vendor's accelerators, not only NVIDIA's. The local
/// cluster's nodes also advertise fake `amd.com/gpu` and `habana.ai/gaudi` (the device plugin
/// hands containers what AMD's and Habana's plugins do: /dev/kfd and /dev/dri/renderD<N>;
/// /dev/accel/accel<N> and HABANA_VISIBLE_DEVICES). Three one-pod jobs at once:
/// - `amd.com/gpu: 2`, `auto`: the operator sizes the pod from the resource (2 workers);
/// - `amd.com/gpu: 2`, `gpu`: the launcher finds the 2 AMD GPUs itself (torch.cuda on ROCm);
/// - `habana.ai/gaudi: 2`, `auto`: 2 workers, with the Gaudi devices.
///
/// Each worker prints the devices it sees.
fn every_accelerator_sizes_the_workers(env: &Env, ns: &str) {
    let nodes = env.kubectl.json(&["get", "nodes"]).unwrap();
    let advertised = |resource: &str| {
        nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["status"]["allocatable"][resource].is_string())
    };
    if !advertised("amd.com/gpu") || !advertised("habana.ai/gaudi") {
        eprintln!("e2e: no node advertises amd.com/gpu and habana.ai/gaudi: nothing to test here");
        return;
    }
    let show = "import os\n\
        ls = lambda p: sorted(os.listdir(p)) if os.path.isdir(p) else []\n\
        print(f\"[dev] local_rank={os.environ['LOCAL_RANK']} of {os.environ['LOCAL_WORLD_SIZE']} \
        kfd={os.path.exists('/dev/kfd')} \
        render={len([d for d in ls('/dev/dri') if d.startswith('renderD')])} \
        accel={len([d for d in ls('/dev/accel') if d.startswith('accel') and d[5:].isdigit()])} \
        habana={os.environ.get('HABANA_VISIBLE_DEVICES')}\", flush=True)\n";
    let cases = [
        ("amd-auto", "amd.com/gpu", "auto", "2"),
        ("amd-gpu", "amd.com/gpu", "gpu", "gpu"),
        ("gaudi-auto", "habana.ai/gaudi", "auto", "2"),
    ];
    let mut docs = vec![idle_configmap()];
    for (name, resource, nproc, _) in cases {
        let mut job = idle_job_doc(
            name,
            &json!({"minReplicas": 1, "maxReplicas": 1, "replicas": 1, "nprocPerNode": nproc}),
        );
        let c = job.pointer_mut("/spec/template/spec/containers/0").unwrap();
        c["command"] = json!(["python", "-c", show]);
        c["resources"] = json!({"limits": {resource: 2}});
        docs.push(job);
    }
    let t = Instant::now();
    apply_all(env, ns, &docs);
    for (name, resource, _, pet) in cases {
        let pods = env.wait_pods(ns, name, "a pod", T_RUN, |pods| pods.len() == 1);
        let trainer = &pods[0]["spec"]["containers"][0];
        let got = trainer["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "PET_NPROC_PER_NODE")
            .map(|e| e["value"].clone());
        assert_eq!(got, Some(json!(pet)), "{name}: {trainer:#}");
        let job = env.wait_state(ns, name, "Succeeded", T_RUN);
        assert_no_failures(&job["status"], name);
        let logs = env.all_job_logs(ns, name);
        let (kfd, render, accel, habana) = if resource == "amd.com/gpu" {
            ("True", 2, 0, "None")
        } else {
            ("False", 0, 2, "")
        };
        for rank in 0..2 {
            let line = format!(
                "[dev] local_rank={rank} of 2 kfd={kfd} render={render} accel={accel} habana={habana}"
            );
            assert!(logs.contains(&line), "{name}: {line}\n{logs}");
        }
        assert!(!logs.contains("local_rank=2"), "{name}: 2 workers\n{logs}");
        if resource == "habana.ai/gaudi" {
            // Two indices, e.g. habana=1,3.
            assert!(
                logs.lines()
                    .any(|l| l.split("habana=").nth(1).is_some_and(|v| v
                        .trim()
                        .split(',')
                        .count()
                        == 2)),
                "{logs}"
            );
        }
        if pet == "gpu" {
            assert!(
                logs.contains("cuda (AMD GPU, ROCm)"),
                "the launcher found the AMD GPUs: {logs}"
            );
        }
    }
    eprintln!(
        "e2e: every accelerator: 3 jobs Succeeded {:.1}s after apply",
        t.elapsed().as_secs_f64()
    );
}

/// Scenario 20 (issue 16: the short version of bench/operator_scale.sh's steady state): running
/// jobs in which nothing happens cost the apiserver almost nothing. Two jobs of 2 pods whose
/// workers sleep, once running with their launchers read, are watched for about 75 s (so that
/// each job's once-a-minute goodput sample falls inside) through the operator's own request
/// counters (`elasticjob_operator_api_requests_total{verb,resource}`): no LIST and no other
/// read (everything it reads comes from its watches), and per running job at most one write
/// per started minute of the window plus one (a window can hold two samples); no more
/// reconciles than that either. The leader Lease's renewals (a GET and a write every 10 s) are
/// the only requests left out. Counts, not times: a slow machine only lowers them.
fn quiet_jobs_cost_almost_nothing(env: &Env, ns: &str) {
    const WINDOW: Duration = Duration::from_secs(75);
    const JOBS: [&str; 2] = ["quiet-a", "quiet-b"];
    let mut docs = vec![idle_configmap()];
    for name in JOBS {
        docs.push(idle_job_doc(
            name,
            &json!({"minReplicas": 2, "maxReplicas": 2, "replicas": 2,
                "template": {"spec": {"terminationGracePeriodSeconds": 5}}}),
        ));
    }
    apply_all(env, ns, &docs);
    for name in JOBS {
        wait_running(env, ns, name, 2);
        env.wait_job(ns, name, "both launchers running, training", T_RUN, |j| {
            let st = &j["status"];
            let launchers = st["launchers"].as_array().cloned().unwrap_or_default();
            st["state"] == "Running"
                && launchers.len() == 2
                && launchers.iter().all(|l| l["state"] == "Running")
                && st["goodput"]["training"] == true
        });
    }
    // The namespaces of the scenarios before are deleted in the background: the namespace
    // controller deletes their jobs and pods, and the operator hears of it. Not quiet.
    let k = &env.kubectl;
    wait_until(
        "no namespace terminating",
        Duration::from_secs(180),
        Duration::from_secs(1),
        || {
            let list = k.json(&["get", "namespaces"])?;
            (!list["items"]
                .as_array()?
                .iter()
                .any(|n| n["status"]["phase"] == "Terminating"))
            .then_some(())
        },
        || k.ok(&["get", "namespaces"]),
    );
    // A failed scenario keeps its namespace and its jobs: those that still run cost what these
    // do, so every unfinished job in the cluster counts in the budget.
    let active: Vec<String> = k.json_ok(&["get", "elasticjobs", "--all-namespaces"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|j| !matches!(j["status"]["state"].as_str(), Some("Succeeded" | "Failed")))
        .map(|j| {
            let m = &j["metadata"];
            format!(
                "{}/{}",
                m["namespace"].as_str().unwrap_or("?"),
                m["name"].as_str().unwrap_or("?")
            )
        })
        .collect();

    let metrics = || {
        env.operator_get("/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics on the operator: {e}"))
    };
    let (start, started) = (metrics(), Instant::now());
    std::thread::sleep(WINDOW);
    let (end, seconds) = (metrics(), started.elapsed().as_secs_f64());

    // By verb and resource, the leader Lease's renewals left out.
    let requests = grown_by(
        &start,
        &end,
        "elasticjob_operator_api_requests_total",
        |l| {
            let get = |k: &str| l.get(k).map(String::as_str).unwrap_or_default();
            (get("resource") != "leases").then(|| format!("{} {}", get("verb"), get("resource")))
        },
    );
    let count = |pick: &dyn Fn(&str) -> bool| -> f64 {
        requests
            .iter()
            .filter(|(what, _)| pick(what.split(' ').next().unwrap_or_default()))
            .map(|(_, n)| n)
            .sum()
    };
    let reads = count(&|verb| verb == "GET" || verb == "LIST");
    let writes = count(&|verb| !matches!(verb, "GET" | "LIST" | "WATCH"));
    let reconciles: f64 = grown_by(
        &start,
        &end,
        "elasticjob_reconcile_duration_seconds_count",
        |l| l.get("outcome").cloned(),
    )
    .values()
    .sum();
    let triggers = grown_by(
        &start,
        &end,
        "elasticjob_operator_reconcile_triggers_total",
        |l| l.get("source").cloned(),
    );
    let moved: Vec<String> = requests
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(what, n)| format!("{what} {n:.0}"))
        .collect();

    // One goodput sample a minute per running job is a status write, and a reconcile: per
    // started minute one, plus one because a window can hold two.
    let jobs = active.len() as f64;
    let per_job = (seconds / 60.0).ceil() + 1.0;
    let budget = jobs * per_job;
    let per_minute = |n: f64| n / jobs / (seconds / 60.0);
    let report = format!(
        "{} unfinished jobs ({}) over {seconds:.0} s: the operator's requests besides its \
         Lease's [{}]: {reads:.0} reads, {writes:.0} writes ({:.2} per job per minute); \
         {reconciles:.0} reconciles ({:.2} per job per minute; triggers {triggers:?}); budget \
         {budget:.0} ({per_job:.0} per job)",
        active.len(),
        active.join(", "),
        moved.join(", "),
        per_minute(writes),
        per_minute(reconciles),
    );
    eprintln!("e2e: {report}");
    let mut wrong = Vec::new();
    if reads > 0.0 {
        wrong.push(format!(
            "{reads:.0} reads (a LIST or a GET): none expected, the caches are fed by watches"
        ));
    }
    if writes > budget {
        wrong.push(format!(
            "{writes:.0} writes, over the budget of {budget:.0}"
        ));
    }
    if reconciles > budget {
        wrong.push(format!(
            "{reconciles:.0} reconciles, over the budget of {budget:.0}"
        ));
    }
    assert!(
        wrong.is_empty(),
        "quiet jobs cost the apiserver too much: {}\n{report}",
        wrong.join("; ")
    );
    for name in JOBS {
        k.ok(&["delete", "elasticjob", name, "-n", ns, "--wait=false"]);
    }
}
