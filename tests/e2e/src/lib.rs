//! The ElasticJob operator's end-to-end harness: one [`Env`] (a cluster with the CRD and a
//! running operator) that scenarios drive with real `kubectl`, as a user would.
//!
//! Either way the operator runs in the cluster, as the chart installs it (a Deployment, its
//! ServiceAccount and least-privilege RBAC), and the harness finds its pods by namespace and
//! label selector ([`Operator::InCluster`]): its log is `kubectl logs`, its health and metrics
//! endpoints are reached through the apiserver's pod proxy ([`Env::operator_get`]), and a restart
//! deletes its pods and waits until the Deployment's new pod is ready and holds the leader Lease.
//!
//! Two targets, chosen by the environment:
//! - **an existing cluster**: `ELASTICJOB_E2E_KUBECONFIG` names its kubeconfig. The CRD and the
//!   operator must be installed already (e.g. by Helm on kind: tests/kind/run.sh); `kubectl`
//!   comes from PATH (`ELASTICJOB_E2E_KUBECTL` overrides). The operator is found by
//!   `ELASTICJOB_E2E_OPERATOR_NAMESPACE` (default `elasticjob-system`) and
//!   `ELASTICJOB_E2E_OPERATOR_SELECTOR` (default `app.kubernetes.io/name=elasticjob-operator`).
//!   `ELASTICJOB_E2E_TRAINER_IMAGE` replaces the trainer image of every job (default: the one in
//!   examples/elasticjob.yaml).
//! - **the local cluster** (default): [`local_cluster::Cluster`] (Kubernetes 1.34, 3 real nodes
//!   with containerd and runc, 4 fake GPUs each) in a temp dir, its nodes loaded with the images
//!   `tests/cluster/images.sh` builds: the chart's operator and launcher images and the trainer
//!   image, under their real names. The harness installs charts/elasticjob-operator with the
//!   real helm (`ELASTICJOB_HELM`, else the provisioned one, else PATH), as a user would, with
//!   helm's defaults (server-side apply): release `elasticjob-operator` in `elasticjob-system`,
//!   the CRD from the chart (templates/crd.yaml), values in [`chart_values`]. The operator pod
//!   may land on any node. Every scenario's namespace enforces Pod Security `restricted`.
//!
//! Faults go through [`Faults`]: in-process on the local cluster; on an external one through
//! the script `ELASTICJOB_E2E_FAULTS` names (tests/kind/faults.sh on kind), else refused with a
//! clear error (see [`EXTERNAL_FAULTS`]).
//!
//! Other knobs: `ELASTICJOB_E2E_KEEP=1` keeps the local cluster's temp dir (pod logs, the
//! operator's included, under `e2e/pods/<node>/<uid>/`); `ELASTICJOB_E2E_OPERATOR_LOG` is the
//! chart's `logLevel` on the local cluster (the operator's RUST_LOG filter, default info);
//! `ELASTICJOB_E2E_LAUNCHER_LOG` becomes the trainers' RUST_LOG (the launcher's log filter);
//! `ELASTICJOB_E2E_SKIP_OPERATOR=1` installs the chart on the local cluster with
//! `replicaCount=0` (the CRD and RBAC, no operator pod: to work on the harness itself).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub use nix::sys::signal::Signal;

// Kueue and the coscheduling scheduler (install_kueue, apply_kueue_queues, install_coscheduling).
mod addons;
pub use addons::*;

// ---- constants -------------------------------------------------------------------------------

/// The chart's operator image repository (values.yaml `image.repository`).
pub const OPERATOR_REPOSITORY: &str = "ghcr.io/elasticjob/elasticjob-operator";
/// The chart's launcher image repository (values.yaml `launcherImage.repository`).
pub const LAUNCHER_REPOSITORY: &str = "ghcr.io/elasticjob/elastic-launch";
/// The operator image the chart installs on the local cluster (tagged with the workspace
/// version, the chart's appVersion), built by tests/cluster/images.sh.
pub const OPERATOR_IMAGE: &str = concat!(
    "ghcr.io/elasticjob/elasticjob-operator:",
    env!("CARGO_PKG_VERSION")
);
/// The launcher image the operator injects (the chart's `--launcher-image`), built by
/// tests/cluster/images.sh.
pub const LAUNCHER_IMAGE: &str = concat!(
    "ghcr.io/elasticjob/elastic-launch:",
    env!("CARGO_PKG_VERSION")
);
/// The chart's release the harness installs on the local cluster (the same name as
/// tests/kind/run.sh's, so the release's full name is `elasticjob-operator` on both).
pub const OPERATOR_RELEASE: &str = "elasticjob-operator";
/// The operator's namespace: the release namespace (default of
/// `ELASTICJOB_E2E_OPERATOR_NAMESPACE`).
pub const OPERATOR_NAMESPACE: &str = "elasticjob-system";
/// The operator pods' labels (default of `ELASTICJOB_E2E_OPERATOR_SELECTOR`).
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=elasticjob-operator";
/// The local release's operator pods: the chart's selector labels.
pub const LOCAL_OPERATOR_SELECTOR: &str =
    "app.kubernetes.io/name=elasticjob-operator,app.kubernetes.io/instance=elasticjob-operator";
/// The trainer image of examples/elasticjob.yaml (images/pytorch.Dockerfile).
pub const TRAINER_IMAGE: &str = "ghcr.io/elasticjob/pytorch:2.15.0";
/// What fault injection says on a cluster the harness did not start, without a fault script.
pub const EXTERNAL_FAULTS: &str = "fault injection on an external cluster (ELASTICJOB_E2E_KUBECONFIG) needs a fault script: set ELASTICJOB_E2E_FAULTS=tests/kind/faults.sh on kind (tests/kind/run.sh does), or run this scenario on the local cluster (unset ELASTICJOB_E2E_KUBECONFIG)";
/// The CRD's name.
pub const CRD: &str = "elasticjobs.elasticjob.dev";
/// The pods' job label.
pub const JOB_LABEL: &str = "elasticjob.dev/job-name";

pub use local_cluster::testing::repo_root;

// ---- small utilities -------------------------------------------------------------------------

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// RFC 7386 JSON merge patch: objects merge, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A short suffix that differs between runs (namespaces on a shared cluster).
pub fn run_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:04x}", (nanos ^ std::process::id()) & 0xffff)
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp as the apiserver writes them
/// (`2024-05-01T12:34:56Z`, optionally with fractional seconds).
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // days from civil (Howard Hinnant)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + hh * 3600 + mm * 60) as f64 + ss)
}

// ---- kubectl ---------------------------------------------------------------------------------

// Real kubectl against one kubeconfig: the local cluster's runner.
pub use local_cluster::kubectl::{Kubectl, stderr, stdout};
pub use local_cluster::testing::{images, provision};

/// Polls `probe` every `every` until it returns Some or `timeout` passes; then panics with
/// `what` and the last value `describe` gives.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}; last seen:\n{}",
                describe()
            );
        }
        std::thread::sleep(every);
    }
}

// ---- faults ----------------------------------------------------------------------------------

/// What a test does to pods and nodes behind Kubernetes' back.
pub trait Faults: Send + Sync {
    /// Signals every process of the pod's running containers (SIGKILL: as a crash or OOM kill).
    fn kill_pod(&self, namespace: &str, pod: &str, signal: Signal) -> Result<(), String>;
    /// Cuts (`up: false`) or restores the pod's network.
    fn set_pod_network(&self, namespace: &str, pod: &str, up: bool) -> Result<(), String>;
    /// The node's machine is gone.
    fn lose_node(&self, node: &str) -> Result<(), String>;
    /// A lost node's machine comes back (its daemons start again on their kept state, as a
    /// rebooted machine's would).
    fn restore_node(&self, node: &str) -> Result<(), String>;
}

/// The text of a kubelet's container log file (CRI format: `<time> <stream> <P|F> <text>` per
/// line, `P` for a partial line continued by the next).
pub fn cri_log_text(file: &str) -> String {
    let mut out = String::new();
    for line in file.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag, text) = (parts.next(), parts.next(), parts.next(), parts.next());
        out += text.unwrap_or("");
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

/// The local cluster's in-process fault injection (its real nodes).
pub struct LocalFaults(pub std::sync::Arc<local_cluster::nodes::RealNodes>);

impl Faults for LocalFaults {
    fn kill_pod(&self, namespace: &str, pod: &str, signal: Signal) -> Result<(), String> {
        self.0.kill_pod(namespace, pod, signal).map(|_| ())
    }
    fn set_pod_network(&self, namespace: &str, pod: &str, up: bool) -> Result<(), String> {
        self.0.set_pod_network(namespace, pod, up)
    }
    fn lose_node(&self, node: &str) -> Result<(), String> {
        self.0.lose_node(node).map(|_| ())
    }
    fn restore_node(&self, node: &str) -> Result<(), String> {
        self.0.restore_node(node)
    }
}

/// Fault injection through a script with the verbs of `cluster fault` (tests/kind/faults.sh):
/// `kill-pod NS/POD --signal SIG`, `cut-net NS/POD`, `restore-net NS/POD`, `lose-node NODE`,
/// run with the cluster's KUBECONFIG; exit 0 when done, a message on stderr when not.
pub struct ScriptFaults {
    pub script: PathBuf,
    pub kubeconfig: PathBuf,
}

impl ScriptFaults {
    fn run(&self, args: &[&str]) -> Result<(), String> {
        let o = Command::new(&self.script)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", self.script.display()))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {} failed ({}): {}",
                self.script.display(),
                args.join(" "),
                o.status,
                stderr(&o)
            ))
        }
    }
}

impl Faults for ScriptFaults {
    fn kill_pod(&self, namespace: &str, pod: &str, signal: Signal) -> Result<(), String> {
        let sig = signal.as_str().trim_start_matches("SIG");
        self.run(&["kill-pod", &format!("{namespace}/{pod}"), "--signal", sig])
    }
    fn set_pod_network(&self, namespace: &str, pod: &str, up: bool) -> Result<(), String> {
        let verb = if up { "restore-net" } else { "cut-net" };
        self.run(&[verb, &format!("{namespace}/{pod}")])
    }
    fn lose_node(&self, node: &str) -> Result<(), String> {
        self.run(&["lose-node", node])
    }
    fn restore_node(&self, node: &str) -> Result<(), String> {
        self.run(&["restore-node", node])
    }
}

/// A cluster the harness did not start and no fault script: every fault is refused, clearly.
pub struct ExternalFaults;

impl Faults for ExternalFaults {
    fn kill_pod(&self, _: &str, _: &str, _: Signal) -> Result<(), String> {
        Err(EXTERNAL_FAULTS.into())
    }
    fn set_pod_network(&self, _: &str, _: &str, _: bool) -> Result<(), String> {
        Err(EXTERNAL_FAULTS.into())
    }
    fn lose_node(&self, _: &str) -> Result<(), String> {
        Err(EXTERNAL_FAULTS.into())
    }
    fn restore_node(&self, _: &str) -> Result<(), String> {
        Err(EXTERNAL_FAULTS.into())
    }
}

// ---- the operator ----------------------------------------------------------------------------

/// Where the operator runs: the pods of an installed Deployment (the chart's), found by
/// namespace and label selector.
pub enum Operator {
    /// Not installed (the environment is being set up, or `ELASTICJOB_E2E_SKIP_OPERATOR`).
    NotStarted,
    /// Pods of an installed Deployment, found by namespace and selector.
    InCluster { namespace: String, selector: String },
}

// ---- the environment -------------------------------------------------------------------------

/// The local cluster the harness started.
pub struct Local {
    pub runtime: tokio::runtime::Runtime,
    pub cluster: Option<local_cluster::Cluster>,
    /// The cluster's state dir (`<tmp>/cluster`): logs under `pods/<node>/<uid>/`.
    pub dir: PathBuf,
    pub tmp: tempfile::TempDir,
}

/// A cluster with the CRD and a running operator.
pub struct Env {
    pub kubectl: Kubectl,
    pub operator: Mutex<Operator>,
    pub faults: Box<dyn Faults>,
    pub local: Option<Local>,
    /// Whether any node advertises `nvidia.com/gpu` (else GPU limits are dropped from jobs).
    pub gpus: bool,
    /// Replaces the trainer image of every job (external clusters).
    pub trainer_image: Option<String>,
}

/// The values the harness installs the chart with on the local cluster (a values file: JSON is
/// YAML, and a RUST_LOG filter may hold commas, which `--set` would split): the images built for
/// the nodes (tests/cluster/images.sh), `logLevel` from `ELASTICJOB_E2E_OPERATOR_LOG` (default
/// info), text logs (read in
/// failure diagnostics), no operator pod when `skip_operator`.
pub fn chart_values(log_level: &str, skip_operator: bool) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    let mut v = json!({
        "image": {"repository": OPERATOR_REPOSITORY, "tag": version},
        "launcherImage": {"repository": LAUNCHER_REPOSITORY, "tag": version},
        "logLevel": log_level,
        "logFormat": "text",
    });
    if skip_operator {
        v["replicaCount"] = json!(0);
    }
    v
}

/// The helm binary: `ELASTICJOB_HELM`, else the provisioned one in `bin` (provision.sh installs
/// helm v4 there), else `helm` on PATH.
pub fn helm_bin(bin: &Path) -> PathBuf {
    if let Some(h) = std::env::var_os("ELASTICJOB_HELM").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let provisioned = bin.join("helm");
    if provisioned.is_file() {
        provisioned
    } else {
        "helm".into()
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

impl Env {
    /// The environment the process's variables ask for (see the crate docs).
    pub fn start() -> Env {
        match std::env::var_os("ELASTICJOB_E2E_KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(kc) => Env::external(PathBuf::from(kc)),
            None => Env::local(),
        }
    }

    /// An existing cluster with the CRD and the operator installed.
    pub fn external(kubeconfig: PathBuf) -> Env {
        let kubectl = Kubectl {
            bin: std::env::var_os("ELASTICJOB_E2E_KUBECTL")
                .map(PathBuf::from)
                .unwrap_or_else(|| "kubectl".into()),
            kubeconfig,
        };
        let crd = kubectl.run(&["get", "crd", CRD], None);
        assert!(
            crd.status.success(),
            "the cluster of ELASTICJOB_E2E_KUBECONFIG has no {CRD}: install the CRD and the operator first (e.g. helm install elasticjob-operator charts/elasticjob-operator): {}",
            stderr(&crd)
        );
        let namespace = std::env::var("ELASTICJOB_E2E_OPERATOR_NAMESPACE")
            .unwrap_or_else(|_| OPERATOR_NAMESPACE.into());
        let selector = std::env::var("ELASTICJOB_E2E_OPERATOR_SELECTOR")
            .unwrap_or_else(|_| OPERATOR_SELECTOR.into());
        let env = Env {
            gpus: nodes_have_gpus(&kubectl),
            operator: Mutex::new(Operator::InCluster {
                namespace,
                selector,
            }),
            faults: match std::env::var_os("ELASTICJOB_E2E_FAULTS").filter(|v| !v.is_empty()) {
                Some(script) => Box::new(ScriptFaults {
                    script: PathBuf::from(script),
                    kubeconfig: kubectl.kubeconfig.clone(),
                }),
                None => Box::new(ExternalFaults),
            },
            local: None,
            trainer_image: std::env::var("ELASTICJOB_E2E_TRAINER_IMAGE").ok(),
            kubectl,
        };
        env.wait_operator_ready();
        env
    }

    /// Starts the local cluster and installs the chart with helm (CRD, RBAC, the operator's
    /// Deployment).
    pub fn local() -> Env {
        let t0 = Instant::now();
        let bin = provision();
        let images = images();
        let tmp = tempfile::Builder::new()
            .prefix("elasticjob-e2e-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().join("e2e");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut attempt = 0;
        let cluster = loop {
            attempt += 1;
            let mut cfg =
                local_cluster::ClusterConfig::new(&dir, &bin).expect("local cluster config");
            cfg.nodes.count = 3;
            cfg.nodes.gpus_per_node = 4;
            cfg.nodes.images = images.clone();
            match runtime.block_on(local_cluster::Cluster::start(cfg)) {
                Ok(c) => break c,
                Err(e) if e.is_port_clash() && attempt < 3 => continue,
                Err(e) => panic!("starting the local cluster in {}: {e}", dir.display()),
            }
        };
        let kubectl = Kubectl {
            bin: bin.join("kubectl"),
            kubeconfig: cluster.kubeconfig(),
        };
        let faults = cluster.nodes().expect("the local cluster has nodes");
        eprintln!(
            "e2e: local cluster up in {:.1}s: KUBECONFIG={} (pod logs under {}/nodes/*/fs/var_log_pods)",
            t0.elapsed().as_secs_f64(),
            kubectl.kubeconfig.display(),
            dir.display()
        );
        let scratch = tmp.path().to_path_buf();
        let env = Env {
            gpus: true,
            // Set below, once the chart is installed; a panic before then drops the Env, which
            // stops the cluster.
            operator: Mutex::new(Operator::NotStarted),
            faults: Box::new(LocalFaults(faults)),
            local: Some(Local {
                runtime,
                cluster: Some(cluster),
                dir,
                tmp,
            }),
            trainer_image: None,
            kubectl,
        };
        env.wait_service_account("default");

        let skip = std::env::var_os("ELASTICJOB_E2E_SKIP_OPERATOR").is_some();
        let level = std::env::var("ELASTICJOB_E2E_OPERATOR_LOG")
            .ok()
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "info".into());
        let values = scratch.join("chart-values.yaml");
        std::fs::write(&values, format!("{:#}\n", chart_values(&level, skip)))
            .expect("writing the chart values");
        let chart = repo_root().join("charts/elasticjob-operator");
        // helm's defaults, server-side apply included, as a user installs it.
        let args = [
            "install",
            OPERATOR_RELEASE,
            chart.to_str().unwrap(),
            "-n",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "-f",
            values.to_str().unwrap(),
            "--wait",
            "--timeout=180s",
        ];
        let helm = helm_bin(&bin);
        let o = Command::new(&helm)
            .args(args)
            .env("KUBECONFIG", &env.kubectl.kubeconfig)
            .env("HELM_CACHE_HOME", scratch.join("helm/cache"))
            .env("HELM_CONFIG_HOME", scratch.join("helm/config"))
            .env("HELM_DATA_HOME", scratch.join("helm/data"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", helm.display()));
        if !o.status.success() {
            let pods = env.kubectl.run(
                &["get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide"],
                None,
            );
            panic!(
                "helm {} failed ({}):\n{}{}\noperator pods:\n{}{}",
                args.join(" "),
                o.status,
                stdout(&o),
                stderr(&o),
                stdout(&pods),
                stderr(&pods)
            );
        }
        // The CRD is one of the chart's templates (applied first of all, and covered by
        // --wait); polled anyway (`kubectl wait` fails at once while the CRD has no status yet).
        wait_until(
            "the CRD to be established",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                let crd = env.kubectl.json(&["get", "crd", CRD])?;
                crd["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
                    .then_some(())
            },
            || format!("{:?}", env.kubectl.json(&["get", "crd", CRD])),
        );
        if skip {
            eprintln!(
                "e2e: ELASTICJOB_E2E_SKIP_OPERATOR: chart installed with replicaCount=0, no operator"
            );
            return env;
        }
        *env.operator.lock().unwrap() = Operator::InCluster {
            namespace: OPERATOR_NAMESPACE.into(),
            selector: LOCAL_OPERATOR_SELECTOR.into(),
        };
        env.wait_operator_ready();
        eprintln!(
            "e2e: operator installed with helm (release {OPERATOR_RELEASE} in {OPERATOR_NAMESPACE}, pod {} on {}), {:.1}s after start",
            env.operator_pod().unwrap_or_default(),
            env.operator_node().unwrap_or_default(),
            t0.elapsed().as_secs_f64()
        );
        env
    }

    /// Stops the local cluster (and checks nothing of it is left); the operator goes with it.
    pub fn shutdown(mut self) {
        if let Some(mut local) = self.local.take() {
            if let Some(cluster) = local.cluster.take()
                && let Err(e) = local.runtime.block_on(cluster.shutdown())
            {
                eprintln!("e2e: cluster shutdown: {e}");
            }
            if std::env::var_os("ELASTICJOB_E2E_KEEP").is_some() {
                let kept = local.tmp.keep();
                eprintln!("e2e: kept {} (ELASTICJOB_E2E_KEEP)", kept.display());
            }
        }
    }

    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    // ---- the operator ----

    /// The operator's namespace and selector; panics when it was never installed.
    fn operator_where(&self) -> (String, String) {
        match &*self.operator.lock().unwrap_or_else(|e| e.into_inner()) {
            Operator::InCluster {
                namespace,
                selector,
            } => (namespace.clone(), selector.clone()),
            Operator::NotStarted => panic!("the operator was never started"),
        }
    }

    /// The operator's pods (those being deleted included).
    pub fn operator_pods(&self) -> Vec<Value> {
        let (ns, sel) = self.operator_where();
        self.kubectl
            .json(&["get", "pods", "-n", &ns, "-l", &sel])
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The holders of the Leases in the operator's namespace (the leader Lease, when leader
    /// election is on).
    fn lease_holders(&self) -> Vec<String> {
        let (ns, _) = self.operator_where();
        self.kubectl
            .json(&["get", "leases", "-n", &ns])
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
            .filter(|h| !h.is_empty())
            .collect()
    }

    /// The operator pod in charge: a ready pod, not being deleted, that holds the leader Lease
    /// (when the namespace has a Lease with a holder: leader election). None when there is none.
    pub fn operator_pod(&self) -> Option<String> {
        let live: Vec<String> = self
            .operator_pods()
            .iter()
            .filter(|p| is_ready(p) && !is_deleting(p))
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        let holders = self.lease_holders();
        if holders.is_empty() {
            return live.into_iter().next();
        }
        live.into_iter().find(|p| holders.contains(p))
    }

    /// The node of the operator pod in charge.
    pub fn operator_node(&self) -> Option<String> {
        let (ns, _) = self.operator_where();
        let pod = self.operator_pod()?;
        self.kubectl
            .json(&["get", "pod", &pod, "-n", &ns])?
            .pointer("/spec/nodeName")?
            .as_str()
            .map(str::to_string)
    }

    /// `GET <path>` on the operator pod in charge, through the apiserver's pod proxy
    /// (`/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy<path>`, the pod's `metrics` port): the
    /// body, or why not. Works wherever the apiserver reaches pod IPs (kind; the local cluster,
    /// whose apiserver listens on the pod bridge).
    pub fn operator_get(&self, path: &str) -> Result<String, String> {
        let (ns, _) = self.operator_where();
        let pod = self
            .operator_pod()
            .ok_or("no ready operator pod holding the leader Lease")?;
        let p = self
            .kubectl
            .json(&["get", "pod", &pod, "-n", &ns])
            .ok_or_else(|| format!("operator pod {ns}/{pod} not found"))?;
        let ports: Vec<&Value> = p["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .collect();
        let port = ports
            .iter()
            .find(|p| p["name"] == "metrics")
            .or(ports.first())
            .and_then(|p| p["containerPort"].as_i64())
            .ok_or_else(|| format!("operator pod {ns}/{pod} declares no port"))?;
        let url = format!("/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy{path}");
        let o = self.kubectl.run(&["get", "--raw", &url], None);
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(format!("kubectl get --raw {url}: {}", stderr(&o)))
        }
    }

    /// Waits until the operator is in charge: a ready pod of its Deployment, not being deleted,
    /// holding the leader Lease (when there is one), whose /readyz answers through the pod proxy.
    pub fn wait_operator_ready(&self) {
        let (ns, _) = self.operator_where();
        let last = std::cell::RefCell::new(String::new());
        wait_until(
            "a ready operator pod in charge",
            Duration::from_secs(180),
            Duration::from_millis(500),
            || match self.operator_pod() {
                None => {
                    *last.borrow_mut() = format!("leases held by {:?}", self.lease_holders());
                    None
                }
                Some(pod) => match self.operator_get("/readyz") {
                    Ok(_) => Some(()),
                    Err(e) => {
                        *last.borrow_mut() = format!("{pod}: {e}");
                        None
                    }
                },
            },
            || {
                let o = self
                    .kubectl
                    .run(&["get", "pods", "-n", &ns, "-o", "wide"], None);
                format!(
                    "{}\n{}{}\n{}",
                    last.borrow(),
                    stdout(&o),
                    stderr(&o),
                    self.operator_log(30)
                )
            },
        );
    }

    /// Restarts the operator: deletes its pods (graceful: SIGTERM, as `kubectl delete pod`
    /// does), waits `pause`, and waits until a new pod of the Deployment is in charge.
    pub fn restart_operator(&self, pause: Duration) {
        let (ns, sel) = self.operator_where();
        let old: Vec<String> = self
            .operator_pods()
            .iter()
            .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        self.kubectl.ok(&["delete", "pod", "-n", &ns, "-l", &sel]);
        eprintln!("e2e: operator pods deleted ({} of them)", old.len());
        std::thread::sleep(pause);
        wait_until(
            "the old operator pods gone",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                (!self
                    .operator_pods()
                    .iter()
                    .any(|p| old.iter().any(|u| p["metadata"]["uid"] == u.as_str())))
                .then_some(())
            },
            || pod_summary(&self.operator_pods()),
        );
        self.wait_operator_ready();
        eprintln!(
            "e2e: operator restarted: {} on {}",
            self.operator_pod().unwrap_or_default(),
            self.operator_node().unwrap_or_default()
        );
    }

    /// The last `n` lines of the operator's log (`kubectl logs` of its pods, each line prefixed
    /// with the pod).
    pub fn operator_log(&self, n: usize) -> String {
        let (ns, sel) = match &*self.operator.lock().unwrap_or_else(|e| e.into_inner()) {
            Operator::InCluster {
                namespace,
                selector,
            } => (namespace.clone(), selector.clone()),
            Operator::NotStarted => return "(the operator was never started)".into(),
        };
        let o = self.kubectl.run(
            &[
                "logs",
                "-n",
                &ns,
                "-l",
                &sel,
                "--prefix",
                &format!("--tail={n}"),
            ],
            None,
        );
        format!("{}{}", stdout(&o), stderr(&o))
    }

    // ---- namespaces ----

    /// Waits until `ns` has its default ServiceAccount (until then the ServiceAccount admission
    /// refuses pods).
    pub fn wait_service_account(&self, ns: &str) {
        let k = &self.kubectl;
        wait_until(
            &format!("the default ServiceAccount of {ns}"),
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                k.json(&["get", "serviceaccount", "default", "-n", ns])
                    .map(|_| ())
            },
            || format!("{:?}", k.json(&["get", "serviceaccount", "-n", ns])),
        );
    }

    /// Creates a namespace and waits until it can take pods: one that enforces the `restricted` Pod Security Standard, as a careful platform
    /// team's would: the jobs' pods, the operator's init container included, must pass it.
    pub fn create_namespace(&self, ns: &str) {
        self.kubectl.ok(&["create", "namespace", ns]);
        self.kubectl.ok(&[
            "label",
            "namespace",
            ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ]);
        self.wait_service_account(ns);
    }

    pub fn delete_namespace(&self, ns: &str) {
        let _ = self.kubectl.run(
            &[
                "delete",
                "namespace",
                ns,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }

    // ---- jobs and pods ----

    /// Adapts a job to this cluster: no GPU limits where no node has GPUs; the trainer image
    /// override; `ELASTICJOB_E2E_LAUNCHER_LOG` as the trainer's RUST_LOG (the launcher's log
    /// filter, for diagnosis).
    pub fn adapt(&self, job: &mut Value) {
        let Some(containers) = job
            .pointer_mut("/spec/template/spec/containers")
            .and_then(Value::as_array_mut)
        else {
            return;
        };
        for c in containers {
            if !self.gpus
                && let Some(limits) = c
                    .pointer_mut("/resources/limits")
                    .and_then(Value::as_object_mut)
            {
                limits.remove("nvidia.com/gpu");
            }
            if let Some(img) = &self.trainer_image
                && c["image"] == TRAINER_IMAGE
            {
                c["image"] = json!(img);
            }
            if let Ok(filter) = std::env::var("ELASTICJOB_E2E_LAUNCHER_LOG") {
                let env = c["env"].as_array_mut();
                let entry = json!({"name": "RUST_LOG", "value": filter});
                match env {
                    Some(list) => list.push(entry),
                    None => c["env"] = json!([entry]),
                }
            }
        }
    }

    /// The job, or None when it does not exist.
    pub fn job(&self, ns: &str, name: &str) -> Option<Value> {
        self.kubectl.json(&["get", "elasticjob", name, "-n", ns])
    }

    /// The job's status (Null before the operator wrote one).
    pub fn status(&self, ns: &str, name: &str) -> Value {
        self.job(ns, name)
            .map(|j| j["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// The job's pods, by name.
    pub fn pods(&self, ns: &str, job: &str) -> Vec<Value> {
        let mut v = self
            .kubectl
            .json(&["get", "pods", "-n", ns, "-l", &format!("{JOB_LABEL}={job}")])
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default();
        v.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string());
        v
    }

    /// Waits until the job's status satisfies `pred`; returns the job. Panics early, with the
    /// status, when the job finishes while `pred` does not hold.
    pub fn wait_job(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let job = self.job(ns, name);
            if let Some(j) = &job {
                if pred(j) {
                    return j.clone();
                }
                let state = j["status"]["state"].as_str().unwrap_or("");
                if state == "Succeeded" || state == "Failed" {
                    panic!(
                        "waiting for {what}: job {ns}/{name} finished as {state} instead; status:\n{:#}",
                        j["status"]
                    );
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what} of job {ns}/{name}; status:\n{:#}",
                    job.map(|j| j["status"].clone()).unwrap_or(Value::Null)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until the job's `status.state` is `state`; returns the job.
    pub fn wait_state(&self, ns: &str, name: &str, state: &str, timeout: Duration) -> Value {
        self.wait_job(ns, name, &format!("state {state}"), timeout, |j| {
            j["status"]["state"] == state
        })
    }

    /// Waits until the job's pods satisfy `pred`; returns them.
    pub fn wait_pods(
        &self,
        ns: &str,
        job: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let last = std::cell::RefCell::new(Vec::new());
        wait_until(
            &format!("{what} (pods of {ns}/{job})"),
            timeout,
            Duration::from_millis(500),
            || {
                let pods = self.pods(ns, job);
                let ok = pred(&pods);
                *last.borrow_mut() = pods.clone();
                ok.then_some(pods)
            },
            || pod_summary(&last.borrow()),
        )
    }

    /// A pod's trainer log: `kubectl logs`, else (local cluster, e.g. its node is lost) the
    /// kubelet's file of the container's last run on the node.
    pub fn logs(&self, ns: &str, pod: &str) -> Result<String, String> {
        self.container_logs(ns, pod, "trainer")
    }

    pub fn container_logs(&self, ns: &str, pod: &str, container: &str) -> Result<String, String> {
        let o = self
            .kubectl
            .run(&["logs", "-n", ns, pod, "-c", container], None);
        if o.status.success() {
            return Ok(String::from_utf8_lossy(&o.stdout).into_owned());
        }
        let kubectl_err = stderr(&o);
        let Some(local) = &self.local else {
            return Err(format!("kubectl logs {ns}/{pod}: {kubectl_err}"));
        };
        let p = self
            .kubectl
            .json(&["get", "pod", pod, "-n", ns])
            .ok_or_else(|| format!("pod {ns}/{pod} not found (kubectl logs: {kubectl_err})"))?;
        let node = p["spec"]["nodeName"].as_str().unwrap_or_default();
        let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
        let dir = local
            .dir
            .join("nodes")
            .join(node)
            .join("fs/var_log_pods")
            .join(format!("{ns}_{pod}_{uid}"))
            .join(container);
        let last = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e} (kubectl logs: {kubectl_err})", dir.display()))?
            .flatten()
            .filter_map(|e| {
                let n = e
                    .file_name()
                    .to_str()?
                    .strip_suffix(".log")?
                    .parse::<u32>()
                    .ok()?;
                Some((n, e.path()))
            })
            .max()
            .ok_or_else(|| format!("no log in {} (kubectl logs: {kubectl_err})", dir.display()))?;
        let text = std::fs::read_to_string(&last.1).map_err(|e| e.to_string())?;
        Ok(cri_log_text(&text))
    }
    /// The trainer logs of all the job's current pods, each under a `== pod ==` header.
    pub fn job_logs(&self, ns: &str, job: &str) -> String {
        let mut out = String::new();
        for p in self.pods(ns, job) {
            let name = p["metadata"]["name"].as_str().unwrap_or("?");
            let _ = writeln!(out, "== {name} ==");
            out += &self
                .logs(ns, name)
                .unwrap_or_else(|e| format!("(no log: {e})\n"));
        }
        out
    }

    /// The trainer logs of the job's current pods and, on the local cluster, of its pods that
    /// are gone (deleted by cleanPodPolicy, replaced after a failure), found by the pod's name
    /// in its `hosts` file under `<dir>/pods/<node>/<uid>/`. Each under a `== pod ==` header.
    pub fn all_job_logs(&self, ns: &str, job: &str) -> String {
        let mut out = self.job_logs(ns, job);
        let Some(local) = &self.local else {
            return out;
        };
        let current: Vec<String> = self
            .pods(ns, job)
            .iter()
            .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        let fqdn = format!(".{job}.{ns}.svc.");
        let mut past: Vec<(std::time::SystemTime, String, PathBuf)> = Vec::new();
        for node in std::fs::read_dir(local.dir.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for pod in std::fs::read_dir(node.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let uid = pod.file_name().to_string_lossy().into_owned();
                if current.contains(&uid) {
                    continue;
                }
                let hosts = std::fs::read_to_string(pod.path().join("hosts")).unwrap_or_default();
                let Some(name) = hosts.split_whitespace().find_map(|w| {
                    let (name, rest) = w.split_once('.')?;
                    (format!(".{rest}").starts_with(&fqdn)
                        && name.starts_with(&format!("{job}-worker-")))
                    .then(|| name.to_string())
                }) else {
                    continue;
                };
                let log = pod.path().join("trainer.log");
                let modified = std::fs::metadata(&log)
                    .and_then(|m| m.modified())
                    .unwrap_or(UNIX_EPOCH);
                past.push((modified, format!("{name} (gone, uid {uid})"), log));
            }
        }
        past.sort();
        for (_, title, log) in past {
            let _ = writeln!(out, "== {title} ==");
            out += &std::fs::read_to_string(&log).unwrap_or_default();
        }
        out
    }

    /// Everything useful when a scenario fails in `ns`.
    pub fn diagnostics(&self, ns: &str) -> String {
        let k = &self.kubectl;
        let mut s = String::new();
        let run = |args: &[&str]| {
            let o = k.run(args, None);
            format!("{}{}", stdout(&o), stderr(&o))
        };
        let _ = writeln!(
            s,
            "---- kubectl get elasticjobs,pods,services -n {ns} -o wide"
        );
        let _ = writeln!(
            s,
            "{}",
            run(&["get", "elasticjobs,pods,services", "-n", ns, "-o", "wide"])
        );
        if let Some(list) = k.json(&["get", "elasticjobs", "-n", ns]) {
            for j in list["items"].as_array().into_iter().flatten() {
                let name = j["metadata"]["name"].as_str().unwrap_or("?");
                let _ = writeln!(s, "---- status of elasticjob {name}\n{:#}", j["status"]);
                let _ = writeln!(
                    s,
                    "---- pods of {name}\n{}",
                    pod_summary(&self.pods(ns, name))
                );
                let _ = writeln!(s, "---- trainer logs of {name} (tails)");
                for p in self.pods(ns, name) {
                    let pod = p["metadata"]["name"].as_str().unwrap_or("?");
                    let log = self.logs(ns, pod).unwrap_or_else(|e| e);
                    let _ = writeln!(s, "== {pod} ==\n{}", tail(&log, 25));
                }
            }
        }
        let _ = writeln!(s, "---- events in {ns}");
        let _ = writeln!(
            s,
            "{}",
            tail(
                &run(&["get", "events", "-n", ns, "--sort-by=.lastTimestamp"]),
                40
            )
        );
        let _ = writeln!(s, "---- operator log (tail)\n{}", self.operator_log(80));
        s
    }

    /// Events about `object` in `ns`: (type, reason, message).
    pub fn events(&self, ns: &str, object: &str) -> Vec<(String, String, String)> {
        self.kubectl
            .json(&[
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                &format!("involvedObject.name={object}"),
            ])
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (s("type"), s("reason"), s("message"))
            })
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.local.is_some() {
            eprintln!("e2e: Env dropped without shutdown(); stopping the local cluster");
            if let Some(mut local) = self.local.take() {
                if let Some(cluster) = local.cluster.take() {
                    let _ = local.runtime.block_on(cluster.shutdown());
                }
                if std::env::var_os("ELASTICJOB_E2E_KEEP").is_some() {
                    let kept = local.tmp.keep();
                    eprintln!("e2e: kept {} (ELASTICJOB_E2E_KEEP)", kept.display());
                }
            }
        }
    }
}

/// Whether any node advertises `nvidia.com/gpu`.
pub fn nodes_have_gpus(k: &Kubectl) -> bool {
    k.json(&["get", "nodes"])
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|n| {
            n["status"]["allocatable"]["nvidia.com/gpu"]
                .as_str()
                .is_some_and(|g| g != "0")
        })
}

/// One line per pod: name, uid, phase, node, deleting, container states.
pub fn pod_summary(pods: &[Value]) -> String {
    let mut s = String::new();
    for p in pods {
        let m = &p["metadata"];
        let _ = write!(
            s,
            "{} uid={} phase={} node={}{}",
            m["name"].as_str().unwrap_or("?"),
            m["uid"].as_str().unwrap_or("?"),
            p["status"]["phase"].as_str().unwrap_or("?"),
            p["spec"]["nodeName"].as_str().unwrap_or("-"),
            if m["deletionTimestamp"].is_string() {
                " (deleting)"
            } else {
                ""
            }
        );
        for key in ["initContainerStatuses", "containerStatuses"] {
            for c in p["status"][key].as_array().into_iter().flatten() {
                let _ = write!(
                    s,
                    " [{}: {}]",
                    c["name"].as_str().unwrap_or("?"),
                    c["state"]
                );
            }
        }
        s.push('\n');
    }
    if s.is_empty() {
        s = "(no pods)\n".into();
    }
    s
}

/// Names → UIDs of pods.
pub fn uids(pods: &[Value]) -> BTreeMap<String, String> {
    pods.iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

pub fn is_deleting(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_string()
}

/// The condition of `type_` in a status.
pub fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// `(status, reason, message)` of a condition.
pub fn condition_srm(status: &Value, type_: &str) -> Option<(String, String, String)> {
    let c = condition(status, type_)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((s("status"), s("reason"), s("message")))
}

pub fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

// ---- helpers shared by the suites (e2e, soak) -----------------------------------------------

/// The message of a caught panic.
pub fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Applies `docs` in `ns`, each ElasticJob adapted to the cluster ([`Env::adapt`]).
pub fn apply_all(env: &Env, ns: &str, docs: &[Value]) {
    for d in docs {
        let mut d = d.clone();
        if d["kind"] == "ElasticJob" {
            env.adapt(&mut d);
        }
        env.kubectl.apply_in(ns, &d);
    }
}

/// Pods recreated, by budget: (applicationRestarts, infrastructureRestarts). Checks that
/// restartCount is their sum plus workerRestarts (restarts inside pods, which a peer's removal
/// can cause: its workers' collectives fail).
pub fn counters(status: &Value) -> (i64, i64) {
    let (app, infra) = (
        int(&status["applicationRestarts"]),
        int(&status["infrastructureRestarts"]),
    );
    assert_eq!(
        int(&status["restartCount"]),
        app + infra + int(&status["workerRestarts"]),
        "restartCount = application + infrastructure + worker restarts: {status:#}"
    );
    (app, infra)
}

/// `status.recentFailures`.
pub fn failures(status: &Value) -> Vec<Value> {
    status["recentFailures"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `kubectl patch elasticjob <job> --type merge -p <patch>`.
pub fn patch_job(env: &Env, ns: &str, job: &str, patch: &Value) {
    env.kubectl.ok(&[
        "patch",
        "elasticjob",
        job,
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        &patch.to_string(),
    ]);
}

// ---- metrics ---------------------------------------------------------------------------------

/// The labels of a metric sample.
pub type Labels = BTreeMap<String, String>;

/// The samples of metric `name` in a Prometheus text exposition: labels and value.
pub fn samples(text: &str, name: &str) -> Vec<(Labels, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            let labels = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k.to_string(), v.trim_end_matches('"').to_string()))
                })
                .collect();
            Some((labels, value))
        })
        .collect()
}

/// The samples of counter `name` summed by `key` (None: left out), and how much each sum grew
/// from `before` to `after`.
pub fn grown_by(
    before: &str,
    after: &str,
    name: &str,
    key: impl Fn(&Labels) -> Option<String>,
) -> BTreeMap<String, f64> {
    let sums = |text: &str| {
        let mut sums = BTreeMap::new();
        for (l, v) in samples(text, name) {
            if let Some(k) = key(&l) {
                *sums.entry(k).or_insert(0.0) += v;
            }
        }
        sums
    };
    let before = sums(before);
    let mut grown = sums(after);
    for (k, v) in &mut grown {
        *v -= before.get(k).copied().unwrap_or(0.0);
    }
    grown
}

// ---- job documents ---------------------------------------------------------------------------

/// examples/elasticjob.yaml: its ConfigMap and its ElasticJob.
pub struct Example {
    pub configmap: Value,
    pub job: Value,
}

pub fn example_path() -> PathBuf {
    repo_root().join("examples/elasticjob.yaml")
}

/// Parses examples/elasticjob.yaml.
pub fn example() -> Example {
    let text = std::fs::read_to_string(example_path()).expect("examples/elasticjob.yaml");
    parse_example(&text)
}

pub fn parse_example(text: &str) -> Example {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).expect("examples/elasticjob.yaml parses");
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("examples/elasticjob.yaml has no {kind}"))
            .clone()
    };
    Example {
        configmap: find("ConfigMap"),
        job: find("ElasticJob"),
    }
}

/// A job built on the example's: its name, its spec merged with `spec_patch` (RFC 7386), its
/// trainer's env set from `env` (added or replaced).
pub fn job_doc(name: &str, spec_patch: &Value, env: &[(&str, &str)]) -> Value {
    let mut job = example().job;
    job["metadata"] = json!({"name": name});
    merge(&mut job["spec"], spec_patch);
    set_env(&mut job, env);
    job
}

/// Sets env variables of the trainer container (the first).
pub fn set_env(job: &mut Value, env: &[(&str, &str)]) {
    let c = job
        .pointer_mut("/spec/template/spec/containers/0")
        .expect("a trainer container");
    if !c["env"].is_array() {
        c["env"] = json!([]);
    }
    let list = c["env"].as_array_mut().unwrap();
    for (k, v) in env {
        list.retain(|e| e["name"] != *k);
        list.push(json!({"name": k, "value": v}));
    }
}

/// Sets the trainer container's `nvidia.com/gpu` limit (None: removes it).
pub fn set_gpus(job: &mut Value, gpus: Option<u32>) {
    let c = job
        .pointer_mut("/spec/template/spec/containers/0")
        .expect("a trainer container");
    match gpus {
        Some(n) => c["resources"] = json!({"limits": {"nvidia.com/gpu": n}}),
        None => {
            if let Some(r) = c.as_object_mut() {
                r.remove("resources");
            }
        }
    }
}

/// The ConfigMap `idle-script` with `idle.py`: a plain-Python worker that prints its rank and
/// sleeps (`SLEEP` seconds, default 3600). No torch: for scenarios about pods, not training.
pub fn idle_configmap() -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "idle-script"},
        "data": {"idle.py": "import os, time\nprint(f\"[idle] rank {os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')} on {os.environ.get('HOSTNAME')}\", flush=True)\ntime.sleep(float(os.environ.get('SLEEP', '3600')))\nprint('[idle] done', flush=True)\n"}})
}

/// A job running `idle.py` from [`idle_configmap`] (the example's job otherwise, no GPUs).
pub fn idle_job_doc(name: &str, spec_patch: &Value) -> Value {
    let mut job = job_doc(name, &json!({"nprocPerNode": 1}), &[]);
    set_gpus(&mut job, None);
    let spec = job.pointer_mut("/spec/template/spec").unwrap();
    spec["containers"][0]["command"] = json!(["python", "/workspace/idle.py"]);
    spec["volumes"] = json!([{"name": "script", "configMap": {"name": "idle-script"}}]);
    merge(&mut job["spec"], spec_patch);
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines_lose_their_prefix_and_partial_lines_join() {
        let file = "2026-12-02T17:00:00.1Z stdout F [train] step 0\n\
                    2026-12-02T17:00:00.2Z stderr P half \n\
                    2026-12-02T17:00:00.3Z stderr F line\n";
        assert_eq!(cri_log_text(file), "[train] step 0\nhalf line\n");
    }

    #[test]
    fn the_example_parses_and_uses_the_trainer_image() {
        let ex = example();
        assert_eq!(ex.job["kind"], "ElasticJob");
        assert_eq!(ex.configmap["metadata"]["name"], "train-script");
        assert_eq!(
            ex.job["spec"]["template"]["spec"]["containers"][0]["image"],
            TRAINER_IMAGE
        );
        let script = ex.configmap["data"]["train.py"].as_str().unwrap();
        for knob in [
            "STEPS",
            "STEP_SLEEP",
            "FAIL_AT_STEP",
            "FAIL_RANK",
            "FAIL_EXIT_CODE",
            "FAIL_ATTEMPTS",
        ] {
            assert!(script.contains(knob), "train.py lacks the knob {knob}");
        }
    }

    #[test]
    fn job_doc_merges_the_spec_and_sets_env() {
        let j = job_doc(
            "x",
            &json!({"minReplicas": 2, "runPolicy": {"ttlSecondsAfterFinished": null}}),
            &[("STEPS", "5"), ("FAIL_AT_STEP", "2")],
        );
        assert_eq!(j["metadata"], json!({"name": "x"}));
        assert_eq!(j["spec"]["minReplicas"], 2);
        assert_eq!(j["spec"]["maxReplicas"], 3);
        assert!(
            j["spec"]["runPolicy"]
                .get("ttlSecondsAfterFinished")
                .is_none()
        );
        assert_eq!(j["spec"]["runPolicy"]["cleanPodPolicy"], "Running");
        let env = j["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        assert_eq!(env.iter().filter(|e| e["name"] == "STEPS").count(), 1);
        assert!(env.contains(&json!({"name": "STEPS", "value": "5"})));
        assert!(env.contains(&json!({"name": "FAIL_AT_STEP", "value": "2"})));
    }

    #[test]
    fn idle_job_runs_plain_python_without_gpus() {
        let j = idle_job_doc("idle", &json!({"minReplicas": 1, "maxReplicas": 1}));
        let c = &j["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["command"], json!(["python", "/workspace/idle.py"]));
        assert!(c.get("resources").is_none());
        assert_eq!(
            j["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
            "idle-script"
        );
    }

    #[test]
    fn counters_grow_by_label() {
        let before = "# HELP x_total X\n# TYPE x_total counter\n\
                      x_total{verb=\"GET\",code=\"2xx\"} 3\n\
                      x_total{verb=\"PATCH\",code=\"2xx\"} 1\n\
                      x_total_other{verb=\"GET\"} 100\n";
        let after = "x_total{verb=\"GET\",code=\"2xx\"} 5\n\
                     x_total{verb=\"GET\",code=\"4xx\"} 1\n\
                     x_total{verb=\"PATCH\",code=\"2xx\"} 1\n\
                     x_total{verb=\"WATCH\",code=\"2xx\"} 2.5e+00\n\
                     y_count 7\n# EOF\n";
        assert_eq!(
            samples(after, "x_total")[1],
            (
                Labels::from([("verb".into(), "GET".into()), ("code".into(), "4xx".into())]),
                1.0
            )
        );
        let grown = grown_by(before, after, "x_total", |l| l.get("verb").cloned());
        assert_eq!(
            grown.into_iter().collect::<Vec<_>>(),
            [
                ("GET".to_string(), 3.0),
                ("PATCH".to_string(), 0.0),
                ("WATCH".to_string(), 2.5)
            ]
        );
        assert_eq!(samples(after, "y_count"), [(Labels::new(), 7.0)]);
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1970-01-01T00:00:10Z"), Some(10.0));
        assert_eq!(parse_time("2024-03-01T00:00:00Z"), Some(1709251200.0));
        assert_eq!(parse_time("2024-03-01T00:00:00.5Z"), Some(1709251200.5));
        assert_eq!(parse_time("nope"), None);
    }

    #[test]
    fn merge_patch() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }
}
