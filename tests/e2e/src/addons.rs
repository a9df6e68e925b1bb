//! Queueing and gang scheduling on the cluster, installed as their users install them: Kueue
//! from its own Helm chart ([`Env::install_kueue`]) with the queues of
//! `examples/kueue-queues.yaml` ([`Env::apply_kueue_queues`]), and the coscheduling scheduler of
//! kubernetes-sigs/scheduler-plugins as a second scheduler from its `as-a-second-scheduler`
//! chart, with the PodGroup controller and CRD ([`Env::install_coscheduling`]).
//!
//! On the local cluster the charts, CRDs and images come from `tests/cluster/components/addons.sh`
//! (built from the pinned Go modules; `tests/cluster/images.sh` loads the images into the nodes,
//! so the pods run them with `IfNotPresent`). On an external cluster the charts come from the
//! same script (it needs Go and buildah) and the images must be pullable there, or
//! `ELASTICJOB_E2E_ADDONS` names a directory laid out as that script's output.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Env, helm_bin, provision, repo_root, stderr, stdout, wait_until};

/// Kueue's release and namespace (the names of Kueue's installation guide).
pub const KUEUE_RELEASE: &str = "kueue";
pub const KUEUE_NAMESPACE: &str = "kueue-system";
/// Kueue's image, as the released chart names it (built by addons.sh).
pub const KUEUE_IMAGE_REPOSITORY: &str = "registry.k8s.io/kueue/kueue";
pub const KUEUE_VERSION: &str = "v0.17.0";
/// Kueue's controller Deployment (the chart's `<fullname>-controller-manager`).
pub const KUEUE_DEPLOYMENT: &str = "kueue-controller-manager";
/// Kueue's alpha feature gates the harness turns on, for an elastic job integration: Workload
/// slices (scale up without requeueing). `PartialAdmission` (podSets' `minCount`) is beta and on
/// by default in v0.17.
pub const KUEUE_FEATURE_GATES: &[&str] = &["ElasticJobsViaWorkloadSlices"];
/// The queue label a job carries.
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";

/// The coscheduling scheduler's release and namespace (scheduler-plugins' install guide).
pub const COSCHEDULING_RELEASE: &str = "scheduler-plugins";
pub const COSCHEDULING_NAMESPACE: &str = "scheduler-plugins";
/// The second scheduler's name: pods that want gang scheduling set `schedulerName` to it.
pub const COSCHEDULER_NAME: &str = "scheduler-plugins-scheduler";
/// The PodGroup controller's Deployment (the chart's `controller.name`).
pub const PODGROUP_CONTROLLER: &str = "scheduler-plugins-controller";
/// The label that puts a pod in a PodGroup (coscheduling's `scheduling.x-k8s.io/pod-group`).
pub const POD_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";
pub const SCHEDULER_PLUGINS_VERSION: &str = "v0.32.7";

/// The directory `tests/cluster/components/addons.sh` prints (charts/, crds/, the image
/// archives), or `ELASTICJOB_E2E_ADDONS`.
pub fn addons_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ELASTICJOB_E2E_ADDONS").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(local_cluster::testing::last_line_of("components/addons.sh"))
}

/// Quota of a ClusterQueue (its one flavor): CPU and memory as quantities, whole GPUs.
#[derive(Clone, Debug)]
pub struct QueueQuota {
    pub cpu: String,
    pub memory: String,
    pub gpus: u32,
}

impl QueueQuota {
    pub fn new(cpu: &str, memory: &str, gpus: u32) -> QueueQuota {
        QueueQuota {
            cpu: cpu.into(),
            memory: memory.into(),
            gpus,
        }
    }
}

/// The queues [`Env::apply_kueue_queues`] made: the ClusterQueue (cluster-scoped) and the
/// LocalQueue in the namespace (the value of a job's `kueue.x-k8s.io/queue-name`).
#[derive(Clone, Debug)]
pub struct KueueQueues {
    pub flavor: String,
    pub cluster_queue: String,
    pub local_queue: String,
}

/// The documents of `examples/kueue-queues.yaml` for namespace `ns`: the ClusterQueue named
/// `cluster_queue` with `quota`, the LocalQueue (same name as the example's) in `ns` pointing to
/// it; the ResourceFlavor as it is.
pub fn kueue_queue_docs(ns: &str, cluster_queue: &str, quota: &QueueQuota) -> Vec<Value> {
    let path = repo_root().join("examples/kueue-queues.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    for d in &mut docs {
        match d["kind"].as_str() {
            Some("ClusterQueue") => {
                d["metadata"]["name"] = json!(cluster_queue);
                for rg in d["spec"]["resourceGroups"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    for f in rg["flavors"].as_array_mut().into_iter().flatten() {
                        for r in f["resources"].as_array_mut().into_iter().flatten() {
                            let q = match r["name"].as_str() {
                                Some("cpu") => json!(quota.cpu),
                                Some("memory") => json!(quota.memory),
                                Some("nvidia.com/gpu") => json!(quota.gpus.to_string()),
                                _ => continue,
                            };
                            r["nominalQuota"] = q;
                        }
                    }
                }
            }
            Some("LocalQueue") => {
                d["metadata"]["namespace"] = json!(ns);
                d["spec"]["clusterQueue"] = json!(cluster_queue);
            }
            _ => {}
        }
    }
    docs
}

/// The values Kueue's chart is installed with: the image built for the nodes (IfNotPresent: it
/// is preloaded) and the feature gates of [`KUEUE_FEATURE_GATES`]; the chart's own manager
/// configuration otherwise. Not `integrations.externalFrameworks` with the ElasticJob: with it,
/// Kueue's pod webhook looks up the owner of every pod the operator creates, which needs read
/// access to ElasticJobs that Kueue's role lacks (each pod creation then times out after
/// 10 s); a job's pods do not carry the queue label, so Kueue leaves them alone without it.
pub fn kueue_values() -> Value {
    json!({
        "controllerManager": {
            "featureGates": KUEUE_FEATURE_GATES
                .iter()
                .map(|g| json!({"name": g, "enabled": true}))
                .collect::<Vec<_>>(),
            "manager": {
                "image": {
                    "repository": KUEUE_IMAGE_REPOSITORY,
                    "tag": KUEUE_VERSION,
                    "pullPolicy": "IfNotPresent",
                },
            },
        },
    })
}

/// The values of scheduler-plugins' as-a-second-scheduler chart: the images built for the nodes
/// and one plugin, Coscheduling (the chart's other defaults need CRDs and node agents that have
/// nothing to do here); PrioritySort off, as the chart has it (Coscheduling sorts the queue).
pub fn coscheduling_values() -> Value {
    json!({
        "scheduler": {
            "name": COSCHEDULER_NAME,
            "image": format!("registry.k8s.io/scheduler-plugins/kube-scheduler:{SCHEDULER_PLUGINS_VERSION}"),
        },
        "controller": {
            "name": PODGROUP_CONTROLLER,
            "image": format!("registry.k8s.io/scheduler-plugins/controller:{SCHEDULER_PLUGINS_VERSION}"),
        },
        "plugins": {"enabled": ["Coscheduling"], "disabled": ["PrioritySort"]},
        "pluginConfig": [{"name": "Coscheduling", "args": {"permitWaitingTimeSeconds": 10}}],
    })
}

impl Env {
    /// `helm upgrade --install RELEASE CHART -n NS --create-namespace -f <values> --wait`, with
    /// the provisioned helm and a scratch helm home.
    fn helm_install(&self, release: &str, chart: &Path, ns: &str, values: &Value) {
        let scratch = tempfile::Builder::new()
            .prefix("elasticjob-helm-")
            .tempdir()
            .expect("temp dir");
        let values_file = scratch.path().join("values.yaml");
        std::fs::write(&values_file, format!("{values:#}\n")).expect("writing helm values");
        let helm = helm_bin(&if self.is_local() {
            provision()
        } else {
            PathBuf::new()
        });
        let args = [
            "upgrade",
            "--install",
            release,
            chart.to_str().unwrap(),
            "-n",
            ns,
            "--create-namespace",
            "-f",
            values_file.to_str().unwrap(),
            "--wait",
            "--timeout=300s",
        ];
        let o = Command::new(&helm)
            .args(args)
            .env("KUBECONFIG", &self.kubectl.kubeconfig)
            .env("HELM_CACHE_HOME", scratch.path().join("cache"))
            .env("HELM_CONFIG_HOME", scratch.path().join("config"))
            .env("HELM_DATA_HOME", scratch.path().join("data"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", helm.display()));
        if !o.status.success() {
            let pods = self
                .kubectl
                .run(&["get", "pods", "-n", ns, "-o", "wide"], None);
            let events = self.kubectl.run(
                &["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
                None,
            );
            panic!(
                "helm {} failed ({}):\n{}{}\npods:\n{}\nevents:\n{}",
                args.join(" "),
                o.status,
                stdout(&o),
                stderr(&o),
                stdout(&pods),
                stdout(&events)
            );
        }
    }

    /// Installs Kueue (idempotent: `helm upgrade --install`) from its chart with
    /// [`kueue_values`], and waits until its webhooks answer: a server-side dry run of a
    /// LocalQueue goes through Kueue's validating webhook and its CRD conversion.
    pub fn install_kueue(&self) {
        let chart = addons_dir().join("charts/kueue");
        if !self.kueue_answers() {
            self.helm_install(KUEUE_RELEASE, &chart, KUEUE_NAMESPACE, &kueue_values());
        }
        wait_until(
            "Kueue's webhooks to answer",
            Duration::from_secs(180),
            Duration::from_secs(1),
            || self.kueue_answers().then_some(()),
            || {
                let o = self.kubectl.run(
                    &["apply", "--dry-run=server", "-f", "-"],
                    Some(&probe_queue().to_string()),
                );
                format!(
                    "{}{}\n{}",
                    stdout(&o),
                    stderr(&o),
                    stdout(
                        &self
                            .kubectl
                            .run(&["get", "pods", "-n", KUEUE_NAMESPACE, "-o", "wide"], None)
                    )
                )
            },
        );
    }

    /// Whether Kueue is installed and its webhooks answer.
    pub fn kueue_answers(&self) -> bool {
        let o = self.kubectl.run(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&probe_queue().to_string()),
        );
        o.status.success()
    }

    /// Applies the queues of `examples/kueue-queues.yaml` for namespace `ns` (the ClusterQueue
    /// named after `ns`, so each scenario has its own quota; the LocalQueue `training` in `ns`)
    /// with `quota`, and waits until both are Active.
    pub fn apply_kueue_queues(&self, ns: &str, quota: &QueueQuota) -> KueueQueues {
        let docs = kueue_queue_docs(ns, ns, quota);
        let mut queues = KueueQueues {
            flavor: String::new(),
            cluster_queue: ns.into(),
            local_queue: String::new(),
        };
        for d in &docs {
            match d["kind"].as_str() {
                Some("ResourceFlavor") => {
                    queues.flavor = d["metadata"]["name"].as_str().unwrap().into()
                }
                Some("LocalQueue") => {
                    queues.local_queue = d["metadata"]["name"].as_str().unwrap().into()
                }
                _ => {}
            }
            let o = self
                .kubectl
                .run(&["apply", "--server-side", "-f", "-"], Some(&d.to_string()));
            assert!(o.status.success(), "applying {d}: {}", stderr(&o));
        }
        for (what, args) in [
            ("ClusterQueue", vec!["get", "clusterqueue", ns]),
            (
                "LocalQueue",
                vec!["get", "localqueue", "-n", ns, &queues.local_queue],
            ),
        ] {
            wait_until(
                &format!("the {what} to be Active"),
                Duration::from_secs(60),
                Duration::from_millis(500),
                || {
                    let q = self.kubectl.json(&args)?;
                    crate::condition(&q["status"], "Active")
                        .filter(|c| c["status"] == "True")
                        .map(|_| ())
                },
                || format!("{:#}", self.kubectl.json(&args).unwrap_or_default()),
            );
        }
        queues
    }

    /// Deletes what [`Env::apply_kueue_queues`] made for `ns` (the LocalQueue goes with the
    /// namespace; the ClusterQueue is cluster-scoped).
    pub fn delete_kueue_queues(&self, ns: &str) {
        self.kubectl.run(
            &[
                "delete",
                "clusterqueue",
                ns,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }

    /// Installs the coscheduling scheduler as a second scheduler ([`COSCHEDULER_NAME`]) and the
    /// PodGroup controller (idempotent): the PodGroup and ElasticQuota CRDs, then
    /// scheduler-plugins' as-a-second-scheduler chart with [`coscheduling_values`]; waits until
    /// both Deployments are available.
    pub fn install_coscheduling(&self) {
        let addons = addons_dir();
        for crd in [
            "scheduling.x-k8s.io_podgroups.yaml",
            "scheduling.x-k8s.io_elasticquotas.yaml",
        ] {
            let path = addons.join("crds").join(crd);
            self.kubectl
                .ok(&["apply", "--server-side", "-f", path.to_str().unwrap()]);
        }
        self.kubectl.ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/podgroups.scheduling.x-k8s.io",
        ]);
        self.helm_install(
            COSCHEDULING_RELEASE,
            &addons.join("charts/scheduler-plugins"),
            COSCHEDULING_NAMESPACE,
            &coscheduling_values(),
        );
        // The v0.32 chart's role lacks VolumeAttachments, which a 1.32 scheduler watches: its
        // informers never sync and it schedules nothing until it may read them.
        for doc in scheduler_volume_attachments_rbac() {
            self.kubectl.apply_in(COSCHEDULING_NAMESPACE, &doc);
        }
    }
}

/// Read access to VolumeAttachments for the second scheduler's ServiceAccount.
fn scheduler_volume_attachments_rbac() -> [Value; 2] {
    let name = "scheduler-plugins-scheduler-volumeattachments";
    [
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["storage.k8s.io"], "resources": ["volumeattachments"],
                       "verbs": ["get", "list", "watch"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": COSCHEDULER_NAME,
                          "namespace": COSCHEDULING_NAMESPACE}],
        }),
    ]
}

/// A LocalQueue that a server-side dry run sends through Kueue's webhooks.
fn probe_queue() -> Value {
    json!({
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {"name": "webhook-probe", "namespace": "default"},
        "spec": {"clusterQueue": "webhook-probe"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_docs_take_the_namespace_and_quota() {
        let docs = kueue_queue_docs("team-a", "team-a-cq", &QueueQuota::new("3", "6Gi", 2));
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ResourceFlavor", "ClusterQueue", "LocalQueue"]);
        let cq = &docs[1];
        assert_eq!(cq["metadata"]["name"], "team-a-cq");
        assert_eq!(
            cq["spec"]["preemption"]["withinClusterQueue"],
            "LowerPriority"
        );
        let res = &cq["spec"]["resourceGroups"][0]["flavors"][0]["resources"];
        assert_eq!(res[0], json!({"name": "cpu", "nominalQuota": "3"}));
        assert_eq!(res[1], json!({"name": "memory", "nominalQuota": "6Gi"}));
        assert_eq!(
            res[2],
            json!({"name": "nvidia.com/gpu", "nominalQuota": "2"})
        );
        assert_eq!(docs[2]["metadata"]["namespace"], "team-a");
        assert_eq!(docs[2]["spec"]["clusterQueue"], "team-a-cq");
    }
}
