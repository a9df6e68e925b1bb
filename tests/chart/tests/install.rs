//! The chart on the local cluster (feature `chart-tests`; root, the provisioned cluster and the
//! images of tests/cluster/images.sh): one cluster for the whole story, on real nodes (kubelet
//! v1.34, containerd, runc) loaded with the operator, launcher and PyTorch images. Every
//! namespace a pod runs in enforces the `restricted` Pod Security Standard: the operator's pod,
//! and the example job's pods with the operator's injected init container, must pass it.
//!
//! 1. `helm install` with helm's defaults (server-side apply; the 1.34 apiserver types the CRD's
//!    x-kubernetes-validations) into a namespace created beforehand → the operator Deployment is
//!    ready, its pod runs as the chart's ServiceAccount with its projected token (in-cluster
//!    config) → `examples/elasticjob.yaml` reaches Succeeded.
//! 2. RBAC is enough (the job ran with nothing but the chart's permissions) and not more: a table
//!    of `kubectl auth can-i --as <the ServiceAccount>`, allowed and refused, and one real request
//!    with a token of the ServiceAccount (`kubectl create token`): `GET /api/v1/secrets` is 403.
//! 3. `helm upgrade --set logLevel=debug` rolls the Deployment; the new pod is ready and takes
//!    the leader Lease over.
//! 4. `helm upgrade --set watchNamespace=team-a`: RBAC becomes a Role in team-a (other
//!    namespaces refused) and the operator still runs a job there.
//! 5. `helm uninstall` leaves nothing of the release; the CRD (the release's, so upgrades reach
//!    it, but `helm.sh/resource-policy: keep`) and the jobs stay.
#![cfg(feature = "chart-tests")]

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use elasticjob_chart_tests::*;
use local_cluster::kubectl::Kubectl;
use local_cluster::testing::{images, provision};
use local_cluster::{Cluster, ClusterConfig};
use serde_json::Value;

const OPERATOR_IMAGE: &str = "ghcr.io/elasticjob/elasticjob-operator";
const SELECTOR: &str = "app.kubernetes.io/instance=ej";
const WATCHED: &str = "team-a";
/// The label that makes a namespace enforce the `restricted` Pod Security Standard.
const RESTRICTED: &str = "pod-security.kubernetes.io/enforce=restricted";
/// The operator's init container that installs elastic-launch into every pod of a job.
const INSTALL_CONTAINER: &str = "elastic-launch-install";
/// How long a job of examples/elasticjob.yaml may take (about 40 s here on two real nodes).
const JOB_TIMEOUT: Duration = Duration::from_secs(150);

/// kubectl, helm and curl against the test's cluster.
struct Env {
    kubectl: Kubectl,
    helm: PathBuf,
    api_url: String,
    /// Helm's cache/config/data dirs and files the test writes.
    scratch: PathBuf,
    start: Instant,
}

impl Env {
    fn step(&self, what: &str) {
        eprintln!("[{:6.1}s] {what}", self.start.elapsed().as_secs_f64());
    }

    /// helm that must succeed: stdout and stderr.
    fn helm(&self, args: &[&str]) -> String {
        let o = Command::new(&self.helm)
            .args(args)
            .env("KUBECONFIG", &self.kubectl.kubeconfig)
            .env("HELM_CACHE_HOME", self.scratch.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.scratch.join("helm/config"))
            .env("HELM_DATA_HOME", self.scratch.join("helm/data"))
            .stdin(Stdio::null())
            .output()
            .expect("running helm");
        let out = text(&o.stdout) + &text(&o.stderr);
        assert!(o.status.success(), "helm {args:?} failed:\n{out}");
        out
    }

    /// Polls `f` every 250 ms until it returns Some, or panics after `timeout` with the last
    /// thing it said.
    fn eventually<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Result<T, String>,
    ) -> T {
        let t = Instant::now();
        loop {
            match f() {
                Ok(v) => return v,
                Err(last) => assert!(
                    t.elapsed() < timeout,
                    "timed out after {timeout:?} waiting for {what}; last: {last}"
                ),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `ns` has its `default` ServiceAccount (the ServiceAccount controller creates
    /// it), without which the ServiceAccount admission refuses pods there.
    fn wait_default_service_account(&self, ns: &str) {
        self.eventually(
            &format!("the default ServiceAccount of {ns}"),
            Duration::from_secs(30),
            || {
                let o = self
                    .kubectl
                    .run(&["get", "serviceaccount", "default", "-n", ns], None);
                if o.status.success() {
                    Ok(())
                } else {
                    Err(text(&o.stderr))
                }
            },
        );
    }

    /// Labels `ns` to enforce the `restricted` Pod Security Standard, and checks that the
    /// apiserver's PodSecurity admission now refuses there a pod that does not meet it.
    fn enforce_restricted(&self, ns: &str) {
        self.kubectl
            .ok(&["label", "namespace", ns, "--overwrite", RESTRICTED]);
        let image = format!("{OPERATOR_IMAGE}:{}", env!("CARGO_PKG_VERSION"));
        let o = self.kubectl.run(
            &[
                "run",
                "pod-security-probe",
                "-n",
                ns,
                "--image",
                &image,
                "--restart=Never",
                "--dry-run=server",
            ],
            None,
        );
        let err = text(&o.stderr);
        assert!(
            !o.status.success() && err.contains("violates PodSecurity \"restricted:latest\""),
            "{ns} refuses a pod without a securityContext: {}{err}",
            text(&o.stdout)
        );
    }

    /// Creates `ns`, enforcing `restricted`, and waits until it can take pods.
    fn create_restricted_namespace(&self, ns: &str) {
        self.kubectl.ok(&["create", "namespace", ns]);
        self.wait_default_service_account(ns);
        self.enforce_restricted(ns);
    }

    /// Waits until the Deployment is rolled out: one pod, ready, of the current template, and
    /// no other pod of the release left. Returns that pod.
    fn wait_rolled_out(&self) -> Value {
        self.kubectl.ok(&[
            "rollout",
            "status",
            "-n",
            NAMESPACE,
            &format!("deployment/{FULLNAME}"),
            "--timeout=60s",
        ]);
        self.eventually(
            "exactly one ready operator pod",
            Duration::from_secs(30),
            || {
                let all = self
                    .kubectl
                    .json_ok(&["get", "pods", "-n", NAMESPACE, "-l", SELECTOR]);
                let pods = all["items"].as_array().unwrap();
                let ready = |p: &Value| {
                    p["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                };
                match pods.as_slice() {
                    [p] if ready(p) && p["metadata"]["deletionTimestamp"].is_null() => {
                        Ok(p.clone())
                    }
                    _ => Err(format!(
                        "pods: {:?}",
                        pods.iter()
                            .map(|p| (str_at(p, "/metadata/name"), ready(p)))
                            .collect::<Vec<_>>()
                    )),
                }
            },
        )
    }

    /// Waits until the leader Lease is held by `pod`.
    fn wait_leader(&self, pod: &str) {
        self.eventually(
            &format!("{pod} holding the leader Lease"),
            Duration::from_secs(45),
            || {
                let o = self.kubectl.run(
                    &[
                        "get",
                        "lease",
                        FULLNAME,
                        "-n",
                        NAMESPACE,
                        "-o",
                        "jsonpath={.spec.holderIdentity}",
                    ],
                    None,
                );
                let holder = text(&o.stdout);
                if holder == pod {
                    Ok(())
                } else {
                    Err(format!("holder {holder:?} {}", text(&o.stderr)))
                }
            },
        );
    }

    /// Applies examples/elasticjob.yaml in `ns` and waits until the job is Succeeded.
    fn run_example_job(&self, ns: &str) {
        let example = repo_root().join("examples/elasticjob.yaml");
        self.kubectl
            .ok(&["apply", "-n", ns, "-f", example.to_str().unwrap()]);
        self.wait_job_succeeded(ns);
    }

    fn wait_job_succeeded(&self, ns: &str) {
        self.eventually(
            &format!("ElasticJob {ns}/train Succeeded"),
            JOB_TIMEOUT,
            || {
                let o = self.kubectl.run(
                    &[
                        "get",
                        "ej",
                        "train",
                        "-n",
                        ns,
                        "-o",
                        "jsonpath={.status.state}",
                    ],
                    None,
                );
                let state = text(&o.stdout);
                assert_ne!(
                    state,
                    "Failed",
                    "ElasticJob {ns}/train failed: {}",
                    self.kubectl
                        .ok(&["get", "ej", "train", "-n", ns, "-o", "yaml"])
                );
                if state == "Succeeded" {
                    Ok(())
                } else {
                    Err(format!("state {state:?} {}", text(&o.stderr)))
                }
            },
        );
    }

    /// The job's pods in `ns` (a namespace that enforces `restricted`) ran, the operator's
    /// injected init container first, and one at least to completion: the PodSecurity admission
    /// let them in.
    fn assert_job_pods_ran_restricted(&self, ns: &str) {
        let labels = self.kubectl.json_ok(&["get", "namespace", ns]);
        assert_eq!(
            labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
            "{labels}"
        );
        let pods = self.kubectl.json_ok(&[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            "elasticjob.dev/job-name=train",
        ]);
        let pods = pods["items"].as_array().unwrap();
        assert!(!pods.is_empty(), "no pod of the job left in {ns}");
        for p in pods {
            let name = str_at(p, "/metadata/name");
            assert_eq!(
                p["spec"]["initContainers"][0]["name"], INSTALL_CONTAINER,
                "{name}"
            );
            let install = &p["status"]["initContainerStatuses"][0];
            assert_eq!(
                install["state"]["terminated"]["exitCode"], 0,
                "{name}: {install}"
            );
        }
        assert!(
            pods.iter().any(|p| p["status"]["phase"] == "Succeeded"),
            "no Succeeded pod in {ns}: {:?}",
            pods.iter()
                .map(|p| &p["status"]["phase"])
                .collect::<Vec<_>>()
        );
    }

    /// `kubectl auth can-i` as the chart's ServiceAccount, for each `(args, allowed)`; all
    /// mismatches in one panic. Retried for a few seconds (the authorizer's caches follow RBAC
    /// changes asynchronously).
    fn assert_can_i(&self, table: &[(&str, bool)]) {
        let sa = format!("system:serviceaccount:{NAMESPACE}:{FULLNAME}");
        let check = || {
            let wrong: Vec<String> = table
                .iter()
                .filter_map(|(args, want)| {
                    let mut a = vec!["auth", "can-i"];
                    a.extend(args.split_whitespace());
                    a.extend(["--as", &sa]);
                    let o = self.kubectl.run(&a, None);
                    let got = text(&o.stdout).trim() == "yes";
                    (got != *want).then(|| {
                        format!(
                            "can-i {args}: {} (want {}) {}",
                            if got { "yes" } else { "no" },
                            if *want { "yes" } else { "no" },
                            text(&o.stderr).trim()
                        )
                    })
                })
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(format!("as {sa}:\n{}", wrong.join("\n")))
            }
        };
        self.eventually(
            "the ServiceAccount's permissions",
            Duration::from_secs(10),
            check,
        );
    }

    /// `GET path` with `token`, trusting the CA file `ca`: (status code, body).
    fn get_with_token(&self, token: &str, ca: &Path, path: &str) -> (u16, String) {
        let header = self.scratch.join("auth-header");
        std::fs::write(&header, format!("Authorization: Bearer {token}\n")).unwrap();
        let body = self.scratch.join("body");
        let o = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(ca)
            .arg("-H")
            .arg(format!("@{}", header.display()))
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .arg(format!("{}{path}", self.api_url))
            .output()
            .expect("running curl");
        assert!(o.status.success(), "curl {path}: {}", text(&o.stderr));
        let code = text(&o.stdout).trim().parse().expect("an HTTP status");
        (code, std::fs::read_to_string(&body).unwrap_or_default())
    }

    /// What helps to understand a failure: the operator's pods and log, the jobs, the events.
    fn diagnostics(&self) {
        for args in [
            &[
                "get",
                "deploy,rs,pods,sa,svc,lease",
                "-n",
                NAMESPACE,
                "-o",
                "wide",
            ][..],
            &["get", "ej,pods", "-A", "-o", "wide"],
            &[
                "logs",
                "-n",
                NAMESPACE,
                "-l",
                SELECTOR,
                "--tail=60",
                "--prefix",
            ],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"],
        ] {
            let o = self.kubectl.run(args, None);
            eprintln!(
                "--- kubectl {}\n{}{}",
                args.join(" "),
                text(&o.stdout),
                text(&o.stderr)
            );
        }
    }
}

/// Permissions in both modes: the leader Lease only in the release namespace, nodes read-only,
/// no secrets, no workloads other than pods, no writes to the user's spec.
const COMMON_RBAC: [(&str, bool); 11] = [
    ("watch nodes -A", true),
    (
        "update leases.coordination.k8s.io -n elasticjob-system",
        true,
    ),
    (
        "create leases.coordination.k8s.io -n elasticjob-system",
        true,
    ),
    ("update leases.coordination.k8s.io -n default", false),
    ("get secrets -n elasticjob-system", false),
    ("list secrets -A", false),
    ("delete nodes -A", false),
    ("patch nodes -A", false),
    ("create deployments.apps -n default", false),
    ("create events -n default", false),
    ("escalate clusterroles.rbac.authorization.k8s.io -A", false),
];

fn scenario(env: &Env) {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    // The example job runs in default, which enforces `restricted` as the release namespace does.
    env.wait_default_service_account("default");
    env.enforce_restricted("default");

    // ---- 1. install: the Deployment is ready, its pod runs as the chart's ServiceAccount.
    env.step("helm install");
    env.create_restricted_namespace(NAMESPACE);
    let out = env.helm(&[
        "install",
        RELEASE,
        chart,
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout=180s",
    ]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        !out.contains("PodSecurity"),
        "the operator's pod meets `restricted` without a warning: {out}"
    );
    let pod = env.wait_rolled_out();
    let first = str_at(&pod, "/metadata/name").to_string();
    assert_eq!(
        pod["spec"]["serviceAccountName"], FULLNAME,
        "the operator runs as the chart's ServiceAccount"
    );
    // Its in-cluster config: the projected `kube-api-access-*` volume (a bound token of the
    // ServiceAccount, the cluster CA from `kube-root-ca.crt`, the namespace), mounted at the
    // path client libraries read.
    let volumes = &pod["spec"]["volumes"];
    let token_volume = volumes
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| {
            v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| !s["serviceAccountToken"].is_null())
        })
        .unwrap_or_else(|| panic!("no projected service-account token volume: {volumes}"));
    let name = str_at(token_volume, "/name");
    assert!(name.starts_with("kube-api-access-"), "{token_volume}");
    let sources = token_volume["projected"]["sources"].as_array().unwrap();
    assert!(
        sources
            .iter()
            .any(|s| s["serviceAccountToken"]["path"] == "token")
            && sources
                .iter()
                .any(|s| s["configMap"]["name"] == "kube-root-ca.crt"),
        "the token and the cluster CA: {token_volume}"
    );
    assert!(
        pod["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == name
                && m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"),
        "the token volume is mounted where in-cluster config reads it: {}",
        pod["spec"]["containers"][0]["volumeMounts"]
    );
    assert_eq!(
        str_at(&pod, "/spec/containers/0/image"),
        format!("{OPERATOR_IMAGE}:{}", env!("CARGO_PKG_VERSION"))
    );
    env.wait_leader(&first);

    // ---- 2. a job through the installed operator, and its permissions meanwhile.
    env.step("examples/elasticjob.yaml in default; RBAC checks");
    let example = repo_root().join("examples/elasticjob.yaml");
    env.kubectl
        .ok(&["apply", "-n", "default", "-f", example.to_str().unwrap()]);
    let mut table = vec![
        ("create pods -n default", true),
        ("delete pods -n kube-system", true),
        ("list pods -A", true),
        ("create services -n default", true),
        (
            "patch elasticjobs.elasticjob.dev --subresource status -n default",
            true,
        ),
        ("delete elasticjobs.elasticjob.dev -n default", true),
        ("update elasticjobs.elasticjob.dev -n default", false),
        ("create events.events.k8s.io -n default", true),
        ("update pods -n default", false),
        ("delete services -n default", false),
    ];
    table.extend(COMMON_RBAC);
    env.assert_can_i(&table);

    // One real request with a token of the ServiceAccount (the TokenRequest API, as the
    // kubelet gets the pod's) and the cluster CA that pods get in `kube-root-ca.crt`.
    let token = env.kubectl.ok(&[
        "create",
        "token",
        FULLNAME,
        "-n",
        NAMESPACE,
        "--duration=10m",
    ]);
    let token = token.trim();
    let ca = env.scratch.join("sa-ca.crt");
    std::fs::write(
        &ca,
        env.kubectl.ok(&[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ]),
    )
    .unwrap();
    let (code, body) = env.get_with_token(token, &ca, "/api/v1/secrets");
    assert_eq!(
        code, 403,
        "GET /api/v1/secrets with the operator's token: {body}"
    );
    let status: Value = serde_json::from_str(&body).expect("a Status object");
    assert_eq!(status["reason"], "Forbidden", "{body}");
    assert!(
        str_at(&status, "/message").contains(&format!(
            "User \"system:serviceaccount:{NAMESPACE}:{FULLNAME}\" cannot list resource \"secrets\""
        )),
        "{body}"
    );
    // The same token does get what the chart grants (so the 403 is RBAC, not a bad token).
    for path in ["/apis/elasticjob.dev/v1alpha1/elasticjobs", "/api/v1/nodes"] {
        let (code, body) = env.get_with_token(token, &ca, path);
        assert_eq!(code, 200, "GET {path} with the operator's token: {body}");
    }

    env.wait_job_succeeded("default");
    env.step("job Succeeded");
    env.assert_job_pods_ran_restricted("default");
    // Its events went through events.k8s.io as the operator.
    let events = env
        .kubectl
        .json_ok(&["get", "events.events.k8s.io", "-n", "default"]);
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reportingController"] == "elasticjob-operator"),
        "no event of the operator in default: {events}"
    );

    // ---- 3. upgrade: a new pod of the new template, ready, and it takes the Lease over.
    env.step("helm upgrade --set logLevel=debug");
    env.helm(&[
        "upgrade",
        RELEASE,
        chart,
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "logLevel=debug",
        "--wait",
        "--timeout=120s",
    ]);
    let pod = env.wait_rolled_out();
    let second = str_at(&pod, "/metadata/name").to_string();
    assert_ne!(second, first, "the Deployment rolled to a new pod");
    let rust_log = pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "RUST_LOG")
        .cloned();
    assert_eq!(rust_log.unwrap()["value"], "debug");
    env.wait_leader(&second);
    env.step("upgraded; the new pod leads");

    // ---- 4. watchNamespace: a Role in team-a only; the operator runs a job there.
    env.create_restricted_namespace(WATCHED);
    env.step("helm upgrade --set watchNamespace=team-a");
    env.helm(&[
        "upgrade",
        RELEASE,
        chart,
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        &format!("watchNamespace={WATCHED}"),
        "--wait",
        "--timeout=120s",
    ]);
    let pod = env.wait_rolled_out();
    let third = str_at(&pod, "/metadata/name").to_string();
    let args = pod["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--namespace=team-a"), "{args}");
    let mut table = vec![
        ("create pods -n team-a", true),
        ("list pods -n team-a", true),
        (
            "patch elasticjobs.elasticjob.dev --subresource status -n team-a",
            true,
        ),
        ("create events.events.k8s.io -n team-a", true),
        ("list pods -n default", false),
        ("list pods -A", false),
        ("create pods -n default", false),
        (
            "patch elasticjobs.elasticjob.dev --subresource status -n default",
            false,
        ),
        ("get secrets -n team-a", false),
    ];
    table.extend(COMMON_RBAC);
    env.assert_can_i(&table);
    env.wait_leader(&third);
    env.run_example_job(WATCHED);
    env.step("job in team-a Succeeded");
    env.assert_job_pods_ran_restricted(WATCHED);

    // The CRD is one of the release's objects (a template, not crds/), so `helm upgrade` to a
    // newer chart upgrades it; it is marked to survive `helm uninstall`.
    let crd = env
        .kubectl
        .json_ok(&["get", "crd", "elasticjobs.elasticjob.dev"]);
    let annotations = &crd["metadata"]["annotations"];
    assert_eq!(
        annotations["meta.helm.sh/release-name"], RELEASE,
        "{annotations}"
    );
    assert_eq!(annotations["meta.helm.sh/release-namespace"], NAMESPACE);
    assert_eq!(annotations["helm.sh/resource-policy"], "keep");

    // ---- 5. uninstall: nothing of the release is left; the CRD and the jobs stay.
    env.helm(&["uninstall", RELEASE, "-n", NAMESPACE, "--wait"]);
    env.eventually(
        "nothing left of the release",
        Duration::from_secs(60),
        || {
            let mut left = Vec::new();
            for (kinds, scope) in [
                (
                    "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings",
                    "-A",
                ),
                ("clusterroles,clusterrolebindings", ""),
            ] {
                let mut a = vec!["get", kinds, "-l", SELECTOR, "-o", "name"];
                if !scope.is_empty() {
                    a.push(scope);
                }
                left.extend(env.kubectl.ok(&a).lines().map(str::to_string));
            }
            // Objects of the release without its labels: Helm's release records (and any
            // Secret named after the release).
            left.extend(
                env.kubectl
                    .ok(&["get", "secrets", "-n", NAMESPACE, "-o", "name"])
                    .lines()
                    .filter(|s| s.contains(FULLNAME) || s.contains("sh.helm.release"))
                    .map(str::to_string),
            );
            left.extend(
                env.kubectl
                    .ok(&["get", "clusterroles,clusterrolebindings", "-o", "name"])
                    .lines()
                    .filter(|s| s.contains(FULLNAME))
                    .map(str::to_string),
            );
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    assert_eq!(env.helm(&["list", "-n", NAMESPACE, "-q"]).trim(), "");
    // The CRD is the release's (so upgrades reach it) but marked helm.sh/resource-policy: keep,
    // so uninstall leaves it, and the users' jobs with it. (The leader Lease is the operator's
    // own object, not the release's: it stays, as controller-runtime's do.)
    env.kubectl
        .ok(&["get", "crd", "elasticjobs.elasticjob.dev"]);
    let jobs = env.kubectl.ok(&["get", "ej", "-A", "-o", "name"]);
    assert_eq!(jobs.lines().count(), 2, "both jobs are still there: {jobs}");
    env.step("uninstalled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_installs_runs_jobs_upgrades_and_uninstalls_with_least_privilege_rbac() {
    let start = Instant::now();
    let bin = provision();
    // The operator, launcher and PyTorch images, loaded into every node (built on first use).
    let images = images();

    let tmp = tempfile::Builder::new()
        .prefix("elasticjob-chart-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("chart");
    // Two real nodes (kubelet, containerd, runc), 4 fake GPUs each: a job of the example (2 pods
    // of 2 GPUs) fits on one, the operator anywhere. Each node reports this machine's CPUs and
    // memory; nothing here requests more than a fraction of a core.
    eprintln!(
        "[{:6.1}s] provisioned; images ready",
        start.elapsed().as_secs_f64()
    );
    let mut attempt = 0;
    let cluster = loop {
        attempt += 1;
        let mut cfg = ClusterConfig::new(&dir, &bin).unwrap();
        cfg.nodes.count = 2;
        cfg.nodes.images = images.clone();
        match Cluster::start(cfg).await {
            Ok(c) => break c,
            // Other clusters on this machine may take a port between picking and binding.
            Err(e) if e.is_port_clash() && attempt < 3 => continue,
            Err(e) => panic!("cluster start: {e}"),
        }
    };
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let env = Env {
        kubectl: Kubectl::new(bin.join("kubectl"), cluster.kubeconfig()),
        helm: bin.join("helm"),
        api_url: cluster.api_url(),
        scratch,
        start,
    };
    env.step("cluster up");

    let result = std::panic::catch_unwind(AssertUnwindSafe(|| scenario(&env)));
    if result.is_err() {
        env.diagnostics();
    }
    cluster
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("cluster shutdown: {e}"));
    env.step("cluster down");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
