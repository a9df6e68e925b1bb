//! The kubelet stand-in, v1 (issue 4): an in-process task of [`crate::Cluster`].
//!
//! - Registers one Node per configured node (`node-0`, `node-1`, ...) with cpu, memory, pods and
//!   `nvidia.com/gpu` capacity and a Ready condition, and keeps it Ready: a status heartbeat and a
//!   Lease in `kube-node-lease` (1.20's node lifecycle controller reads both).
//! - Polls the pods bound to each node (as `system:node:<name>`, so the Node authorizer and
//!   NodeRestriction check it like a real kubelet) and runs their containers as host processes:
//!   no image pull; with `pod_network` (the default) each pod has its own network namespace and
//!   IP on the cluster's bridge, each container its own mount and UTS namespace (see
//!   [`crate::podnet`]); without it every pod's IP is 127.0.0.1 (v0).
//! - Writes pod phase and container statuses, applies restartPolicy, handles graceful deletion.
//! - Serves the kubelet's read-only log API (`kubectl logs`) over mutual TLS, one port per node
//!   (see [`api`], in `kubelet_api.rs`).
//!
//! The pure parts (env construction, `$(VAR)` expansion, GPU allocation, phase) are plain
//! functions with unit tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::podnet::{self, PodNet, PodNetwork};
use crate::probe;
use crate::readiness;
use crate::rootfs::{self, Isolation, Mount};
use crate::volumes::{self, Kind, Refs};

/// The log API (`/containerLogs/...`) the apiserver proxies `kubectl logs` to.
#[path = "kubelet_api.rs"]
pub mod api;

/// The extended resource the scheduler counts for fake GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Env var with the host path of the container's termination message file (also bind-mounted
/// at `terminationMessagePath` when the pod has its own namespaces).
pub const TERMINATION_MESSAGE_ENV: &str = "ELASTICJOB_TERMINATION_MESSAGE_PATH";
/// The pod IP and host IP of every pod without a pod network (`pod_network: false`).
pub const POD_IP: &str = "127.0.0.1";
const MAX_MESSAGE: usize = 4096;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the kubelet stand-in provides.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KubeletConfig {
    /// Number of Node objects (0: no kubelet at all).
    pub nodes: u32,
    /// Who runs the nodes: this stand-in, or real kubelets with containerd ([`crate::nodes`]).
    pub runtime: NodeRuntime,
    pub gpus_per_node: u32,
    /// Capacity = allocatable, as Kubernetes quantities.
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    /// Image name → local binary, for containers without `command` (their `args` follow it).
    pub image_map: BTreeMap<String, PathBuf>,
    /// Real nodes: OCI archives (`buildah push ... oci-archive:FILE`) loaded into every node.
    pub images: Vec<PathBuf>,
    /// Pod list poll interval.
    pub poll: Duration,
    /// Node status + Lease renew interval.
    pub heartbeat: Duration,
    /// One network, mount and UTS namespace per pod on a per-cluster bridge (needs root and
    /// `ip`); false: every pod runs on the host's namespaces with IP 127.0.0.1 (v0).
    pub pod_network: bool,
    /// For the pods' `/etc/hosts` names.
    pub cluster_domain: String,
}

/// What runs a cluster's nodes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRuntime {
    /// The in-process kubelet stand-in: pods are host processes, images map to host paths.
    StandIn,
    /// Real kubelets, each with its own containerd and runc, in node namespaces.
    Containerd,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            nodes: 3,
            runtime: NodeRuntime::StandIn,
            gpus_per_node: 4,
            cpu: "8".into(),
            memory: "32Gi".into(),
            max_pods: 110,
            image_map: BTreeMap::new(),
            images: Vec::new(),
            poll: Duration::from_millis(250),
            heartbeat: Duration::from_secs(4),
            pod_network: true,
            cluster_domain: "cluster.local".into(),
        }
    }
}

impl KubeletConfig {
    pub fn node_names(&self) -> Vec<String> {
        (0..self.nodes).map(|i| format!("node-{i}")).collect()
    }

    /// Parses `image=path,image2=path2` (the `ELASTICJOB_CLUSTER_IMAGE_MAP` / `--image-map`
    /// format) into the map.
    pub fn parse_image_map(s: &str) -> Result<BTreeMap<String, PathBuf>, String> {
        s.split(',')
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                e.split_once('=')
                    .map(|(i, p)| (i.trim().to_string(), PathBuf::from(p.trim())))
                    .ok_or_else(|| format!("image map entry {e:?} is not IMAGE=PATH"))
            })
            .collect()
    }
}

// ---------------------------------------------------------------- pure parts

/// Fake GPUs of one node: device `i` is owned by at most one pod (by UID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuAllocator {
    owner: Vec<Option<String>>,
}

impl GpuAllocator {
    pub fn new(total: u32) -> Self {
        GpuAllocator {
            owner: vec![None; total as usize],
        }
    }
    pub fn free(&self) -> u32 {
        self.owner.iter().filter(|o| o.is_none()).count() as u32
    }
    /// The `n` lowest free device indices, now owned by `pod`; None (nothing taken) if fewer free.
    pub fn allocate(&mut self, pod: &str, n: u32) -> Option<Vec<u32>> {
        let free: Vec<usize> = (0..self.owner.len())
            .filter(|&i| self.owner[i].is_none())
            .take(n as usize)
            .collect();
        if free.len() < n as usize {
            return None;
        }
        for &i in &free {
            self.owner[i] = Some(pod.to_string());
        }
        Some(free.into_iter().map(|i| i as u32).collect())
    }
    pub fn release(&mut self, pod: &str) {
        for o in &mut self.owner {
            if o.as_deref() == Some(pod) {
                *o = None;
            }
        }
    }
}

/// The container's `nvidia.com/gpu` limit (extended resources: request == limit), 0 if none.
pub fn container_gpus(c: &Value) -> u32 {
    let q = &c["resources"]["limits"][GPU_RESOURCE];
    q.as_u64()
        .map(|n| n as u32)
        .or_else(|| q.as_str().and_then(|s| s.trim().parse().ok()))
        .unwrap_or(0)
}

/// `$(VAR)` expansion as the kubelet does it: defined names are replaced, undefined ones are
/// left as written, `$$` is a literal `$`.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a downward-API `fieldRef.fieldPath`.
pub fn field_ref(pod: &Value, node: &str, path: &str) -> Result<String, String> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let md = &pod["metadata"];
    let keyed = |prefix: &str, map: &Value| -> Option<String> {
        let k = path
            .strip_prefix(prefix)?
            .strip_suffix("']")
            .and_then(|k| k.strip_prefix("['"))?;
        Some(s(&map[k]))
    };
    Ok(match path {
        "metadata.name" => s(&md["name"]),
        "metadata.namespace" => s(&md["namespace"]),
        "metadata.uid" => s(&md["uid"]),
        "spec.nodeName" => node.to_string(),
        "spec.serviceAccountName" => s(&pod["spec"]["serviceAccountName"]),
        "status.podIP" | "status.podIPs" => pod["status"]["podIP"]
            .as_str()
            .unwrap_or(POD_IP)
            .to_string(),
        "status.hostIP" => pod["status"]["hostIP"]
            .as_str()
            .unwrap_or(POD_IP)
            .to_string(),
        _ => {
            if let Some(v) = keyed("metadata.labels", &md["labels"]) {
                v
            } else if let Some(v) = keyed("metadata.annotations", &md["annotations"]) {
                v
            } else {
                return Err(format!("fieldRef {path:?} is not supported"));
            }
        }
    })
}

fn set_env(env: &mut Vec<(String, String)>, k: &str, v: String) {
    match env.iter_mut().find(|(n, _)| n == k) {
        Some(e) => e.1 = v,
        None => env.push((k.to_string(), v)),
    }
}

/// Why a container could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepError {
    /// A ConfigMap, Secret or key it needs is missing: it waits (`CreateContainerConfigError`)
    /// and is tried again, as the kubelet does.
    Config(String),
    /// It cannot run as specified (an unsupported field, an unmapped image): `StartError`.
    Start(String),
}

/// What a container's environment is built from, besides the pod and the container.
pub struct EnvContext<'a> {
    pub node: &'a str,
    pub gpus: &'a [u32],
    /// The host path of the termination message file, given to containers that share the
    /// host's filesystem (no pod network) as `ELASTICJOB_TERMINATION_MESSAGE_PATH`; None for
    /// isolated containers, which find it at `terminationMessagePath`.
    pub termination_file: Option<&'a Path>,
    pub refs: &'a Refs,
    /// The apiserver as pods reach it (`KUBERNETES_SERVICE_HOST/PORT`); None without a pod
    /// network.
    pub apiserver: Option<std::net::SocketAddr>,
    /// The image map's directory for the container's image, first on PATH.
    pub image_path: Option<&'a Path>,
}

/// The environment of a container process: a clean env (PATH, HOSTNAME), the apiserver's
/// address, the fake GPUs, the termination message path, then `envFrom` and the container's
/// `env` in order (values with `$(VAR)` expansion, `valueFrom` from the downward API,
/// ConfigMaps and Secrets).
pub fn container_env(
    pod: &Value,
    c: &Value,
    ctx: &EnvContext,
) -> Result<Vec<(String, String)>, PrepError> {
    let path = match ctx.image_path {
        Some(dir) => format!("{}:{DEFAULT_PATH}", dir.display()),
        None => DEFAULT_PATH.to_string(),
    };
    let mut env = vec![("PATH".to_string(), path)];
    let hostname = pod["spec"]["hostname"]
        .as_str()
        .or(pod["metadata"]["name"].as_str())
        .unwrap_or("");
    set_env(&mut env, "HOSTNAME", hostname.to_string());
    if let Some(a) = ctx.apiserver {
        set_env(&mut env, "KUBERNETES_SERVICE_HOST", a.ip().to_string());
        set_env(&mut env, "KUBERNETES_SERVICE_PORT", a.port().to_string());
        set_env(
            &mut env,
            "KUBERNETES_SERVICE_PORT_HTTPS",
            a.port().to_string(),
        );
        set_env(&mut env, "KUBERNETES_PORT", format!("tcp://{a}"));
    }
    if !ctx.gpus.is_empty() {
        let list = ctx
            .gpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        set_env(&mut env, "CUDA_VISIBLE_DEVICES", list.clone());
        set_env(&mut env, "NVIDIA_VISIBLE_DEVICES", list);
    }
    if let Some(f) = ctx.termination_file {
        set_env(&mut env, TERMINATION_MESSAGE_ENV, f.display().to_string());
    }
    for e in c["envFrom"].as_array().into_iter().flatten() {
        for (k, v) in ctx.refs.env_from(e).map_err(PrepError::Config)? {
            set_env(&mut env, &k, v);
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default();
        let from = &e["valueFrom"];
        let value = if let Some(v) = e["value"].as_str() {
            Some(expand(v, &env))
        } else if let Some(p) = from["fieldRef"]["fieldPath"].as_str() {
            Some(field_ref(pod, ctx.node, p).map_err(PrepError::Start)?)
        } else if from["configMapKeyRef"].is_object() {
            ctx.refs
                .key_ref(Kind::ConfigMap, &from["configMapKeyRef"])
                .map_err(PrepError::Config)?
        } else if from["secretKeyRef"].is_object() {
            ctx.refs
                .key_ref(Kind::Secret, &from["secretKeyRef"])
                .map_err(PrepError::Config)?
        } else if from.is_object() {
            return Err(PrepError::Start(format!(
                "env {name}: valueFrom.resourceFieldRef is not supported by the local cluster"
            )));
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            set_env(&mut env, name, v);
        }
    }
    Ok(env)
}

/// argv of a container: `command` + `args` with `$(VAR)` expansion, or the image map's binary
/// + `args` when `command` is empty.
pub fn container_argv(
    c: &Value,
    env: &[(String, String)],
    image_map: &BTreeMap<String, PathBuf>,
) -> Result<Vec<String>, String> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str())
            .map(|x| expand(x, env))
            .collect()
    };
    let mut argv = list(&c["command"]);
    if argv.is_empty() {
        let image = c["image"].as_str().unwrap_or("");
        let bin = image_map
            .get(image)
            .filter(|p| !p.is_dir())
            .ok_or_else(|| {
                format!(
                    "container has no command and image {image:?} is not mapped to a binary \
                     (ELASTICJOB_CLUSTER_IMAGE_MAP=IMAGE=PATH or `cluster up --image-map`)"
                )
            })?;
        argv.push(bin.display().to_string());
    }
    argv.extend(list(&c["args"]));
    Ok(argv)
}

/// One container as the kubelet tracks it.
#[derive(Debug, Clone, Default)]
pub struct ContainerState {
    pub name: String,
    pub image: String,
    pub restart_count: u32,
    pub pid: Option<i32>,
    pub started_at: Option<String>,
    /// Last termination: (exit code, signal, reason, message, startedAt, finishedAt).
    pub terminated: Option<Terminated>,
    pub last_terminated: Option<Terminated>,
    pub waiting: Option<(String, String)>,
    /// No more restarts: its `terminated` is final.
    pub done: bool,
    /// The readiness probe's verdict (None: no probe, ready while running).
    pub probe_ready: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: String,
    pub started_at: String,
    pub finished_at: String,
}

impl Terminated {
    fn to_json(&self, id: &str) -> Value {
        let mut t = json!({"exitCode": self.exit_code, "reason": self.reason,
            "startedAt": self.started_at, "finishedAt": self.finished_at, "containerID": id});
        if let Some(s) = self.signal {
            t["signal"] = json!(s);
        }
        if !self.message.is_empty() {
            t["message"] = json!(self.message);
        }
        t
    }
}

impl ContainerState {
    pub fn running(&self) -> bool {
        self.pid.is_some() && self.terminated.is_none()
    }
    pub fn ready(&self) -> bool {
        self.running() && self.probe_ready.unwrap_or(true)
    }
    pub fn to_json(&self) -> Value {
        let id = self
            .pid
            .map(|p| format!("process://{p}"))
            .unwrap_or_default();
        let state = if let Some(t) = &self.terminated {
            json!({"terminated": t.to_json(&id)})
        } else if self.running() {
            json!({"running": {"startedAt": self.started_at}})
        } else {
            let (r, m) = self
                .waiting
                .clone()
                .unwrap_or(("ContainerCreating".into(), String::new()));
            json!({"waiting": {"reason": r, "message": m}})
        };
        let last = self
            .last_terminated
            .as_ref()
            .map(|t| json!({"terminated": t.to_json("")}))
            .unwrap_or(json!({}));
        json!({"name": self.name, "image": self.image, "imageID": "", "containerID": id,
            "ready": self.ready(), "started": self.running(),
            "restartCount": self.restart_count, "state": state, "lastState": last})
    }
}

/// Pod phase from its containers (init containers first).
pub fn pod_phase(init: &[ContainerState], main: &[ContainerState]) -> &'static str {
    let failed =
        |c: &ContainerState| c.done && c.terminated.as_ref().is_some_and(|t| t.exit_code != 0);
    if init.iter().any(failed) {
        return "Failed";
    }
    if !init.iter().all(|c| c.done) {
        return "Pending";
    }
    if !main.is_empty() && main.iter().all(|c| c.done) {
        return if main.iter().any(failed) {
            "Failed"
        } else {
            "Succeeded"
        };
    }
    // Started once (running, or in back-off before a restart): the pod is Running.
    if main.iter().any(|c| c.started_at.is_some()) {
        "Running"
    } else {
        "Pending"
    }
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn now_micro() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

// ---------------------------------------------------------------- API client

/// The apiserver as one user (a bearer token), over the crate's small HTTP client.
#[derive(Clone)]
pub struct Api {
    pub addr: std::net::SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
    pub token: String,
}

impl Api {
    async fn call(
        &self,
        method: &'static str,
        path: String,
        ct: Option<&'static str>,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let this = self.clone();
        let p = path.clone();
        let (status, text) = tokio::task::spawn_blocking(move || {
            let b = body.map(|b| b.to_string());
            probe::request(
                this.addr,
                method,
                &p,
                Some(&this.tls),
                Some(&this.token),
                b.as_deref()
                    .map(|b| (ct.unwrap_or("application/json"), b.as_bytes())),
            )
        })
        .await
        .map_err(|e| e.to_string())??;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(format!(
                "{method} {path}: {status} {}",
                v["message"].as_str().unwrap_or(&text)
            ))
        }
    }
    pub(crate) async fn get(&self, path: String) -> Result<Value, String> {
        self.call("GET", path, None, None).await
    }
    pub(crate) async fn post(&self, path: String, body: Value) -> Result<Value, String> {
        self.call("POST", path, None, Some(body)).await
    }
    async fn merge_patch(&self, path: String, body: Value) -> Result<Value, String> {
        self.call(
            "PATCH",
            path,
            Some("application/merge-patch+json"),
            Some(body),
        )
        .await
    }
    async fn delete(&self, path: String, body: Value) -> Result<Value, String> {
        self.call("DELETE", path, None, Some(body)).await
    }
}

// ---------------------------------------------------------------- nodes

struct Node {
    name: String,
    api: Api,
    cfg: Arc<KubeletConfig>,
    gpus: Mutex<GpuAllocator>,
    pods_dir: PathBuf,
    /// Process groups of every running container of the cluster (for shutdown / drop).
    pgids: Arc<Mutex<HashSet<i32>>>,
    /// Set by [`Kubelet::shutdown`]: no container starts or restarts any more.
    shutting_down: Arc<AtomicBool>,
    /// The conditions' lastTransitionTime (they never change in v0).
    registered_at: String,
    /// The cluster's pod network (shared by all nodes), if `pod_network`.
    net: Option<Arc<PodNetwork>>,
    /// Set by [`Faults::lose_node`]: the node is gone (no heartbeat, no pod loop, no status
    /// writes, no restarts; its pods' processes are dead).
    lost: AtomicBool,
    /// Every running pod of the cluster by `<namespace>/<name>` (for fault injection and the
    /// log API).
    pods: Arc<Mutex<HashMap<String, Arc<PodRun>>>>,
    /// The port of its log API on 127.0.0.1 (`daemonEndpoints.kubeletEndpoint.Port`).
    log_port: u16,
    /// Its log API's accept loop, stopped when the node is lost.
    log_server: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Node {
    fn gone(&self) -> bool {
        self.lost.load(Ordering::SeqCst) || self.shutting_down.load(Ordering::SeqCst)
    }
}

impl Node {
    fn status(&self) -> Value {
        let c = &self.cfg;
        let res = json!({"cpu": c.cpu, "memory": c.memory, "pods": c.max_pods.to_string(),
            GPU_RESOURCE: c.gpus_per_node.to_string()});
        let t = now();
        let cond = |ty: &str, st: &str, reason: &str| {
            json!({"type": ty, "status": st, "reason": reason, "message": "kubelet stand-in",
                "lastHeartbeatTime": t, "lastTransitionTime": self.registered_at})
        };
        json!({
            "capacity": res, "allocatable": res,
            "conditions": [cond("Ready", "True", "KubeletReady"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID")],
            "addresses": [{"type": "InternalIP", "address": POD_IP},
                {"type": "Hostname", "address": self.name}],
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                "osImage": "elasticjob local cluster", "containerRuntimeVersion": "process://v0",
                "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
                "operatingSystem": "linux", "architecture": std::env::consts::ARCH},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port}},
        })
    }

    async fn register(&self) -> Result<(), String> {
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name,
                "kubernetes.io/os": "linux", "kubernetes.io/arch": std::env::consts::ARCH,
                "elasticjob.io/local-cluster": "true"}},
            "spec": {}, "status": self.status()});
        match self.api.post("/api/v1/nodes".into(), node).await {
            Ok(_) => {}
            Err(e) if e.contains(" 409 ") => {}
            Err(e) => return Err(e),
        }
        self.heartbeat().await
    }

    async fn heartbeat(&self) -> Result<(), String> {
        self.api
            .merge_patch(
                format!("/api/v1/nodes/{}/status", self.name),
                json!({"status": self.status()}),
            )
            .await?;
        let lease_path = format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}",
            self.name
        );
        let spec = json!({"holderIdentity": self.name, "leaseDurationSeconds": 40,
            "renewTime": now_micro()});
        if self
            .api
            .merge_patch(lease_path, json!({"spec": spec}))
            .await
            .is_err()
        {
            self.api
                .post(
                    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases".into(),
                    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                        "spec": spec}),
                )
                .await?;
        }
        Ok(())
    }
}

struct PodEntry {
    /// Some(grace seconds): terminate the pod and delete it.
    stop: watch::Sender<Option<i64>>,
    task: JoinHandle<()>,
}

/// The running kubelet stand-in: one heartbeat task and one pod loop per node.
pub struct Kubelet {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pgids: Arc<Mutex<HashSet<i32>>>,
    shutting_down: Arc<AtomicBool>,
    faults: Faults,
}

/// Fault injection into a running cluster: what tests (and `cluster fault`) do to pods and
/// nodes behind Kubernetes' back. Cheap to clone.
#[derive(Clone)]
pub struct Faults {
    nodes: Vec<Arc<Node>>,
    pods: Arc<Mutex<HashMap<String, Arc<PodRun>>>>,
}

impl Faults {
    fn pod(&self, namespace: &str, name: &str) -> Result<Arc<PodRun>, String> {
        self.pods
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{name}"))
            .cloned()
            .ok_or_else(|| format!("pod {namespace}/{name} is not running on any node"))
    }

    /// Sends `signal` to every process of the pod's running containers (as an OOM kill or a
    /// crash would); the kubelet then sees them exit and applies the restart policy.
    pub fn kill_pod(&self, namespace: &str, name: &str, signal: Signal) -> Result<usize, String> {
        let run = self.pod(namespace, name)?;
        let pids: Vec<i32> = [&run.init, &run.main]
            .iter()
            .flat_map(|l| {
                l.lock()
                    .unwrap()
                    .iter()
                    .filter(|c| c.running())
                    .filter_map(|c| c.pid)
                    .collect::<Vec<_>>()
            })
            .collect();
        for pid in &pids {
            let _ = killpg(Pid::from_raw(*pid), signal);
        }
        info!(pod = %name, ?signal, containers = pids.len(), "fault: killed pod processes");
        Ok(pids.len())
    }

    /// Cuts (`up: false`) or restores the pod's network: its veth on the bridge goes down, so
    /// nothing reaches it and it reaches nothing (its processes keep running).
    pub fn set_pod_network(&self, namespace: &str, name: &str, up: bool) -> Result<(), String> {
        let run = self.pod(namespace, name)?;
        let net = run.net.as_ref().ok_or("the cluster has no pod network")?;
        podnet::set_link(&net.veth, up)?;
        info!(pod = %name, up, "fault: pod network");
        Ok(())
    }

    /// The node is gone, as if its machine lost power: its heartbeats stop (the node lifecycle
    /// controller marks it NotReady after its grace period), its pods' processes are killed
    /// and their network removed, and it writes no more pod status.
    pub fn lose_node(&self, node: &str) -> Result<usize, String> {
        let n = self
            .nodes
            .iter()
            .find(|n| n.name == node)
            .ok_or_else(|| format!("no node {node:?}"))?;
        n.lost.store(true, Ordering::SeqCst);
        if let Some(h) = n.log_server.lock().unwrap().take() {
            h.abort();
        }
        let runs: Vec<Arc<PodRun>> = self
            .pods
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.node.name == node)
            .cloned()
            .collect();
        for r in &runs {
            for l in [&r.init, &r.main] {
                for pid in l.lock().unwrap().iter().filter_map(|c| c.pid) {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            if let (Some(net), Some(p)) = (&n.net, &r.net) {
                net.remove_pod(p);
            }
        }
        info!(node, pods = runs.len(), "fault: node lost");
        Ok(runs.len())
    }
}

impl Kubelet {
    /// Registers the nodes (waits until each exists and is Ready) and starts their loops.
    /// `tokens`: the bearer token of `system:node:<name>` for each node.
    /// `net`: the cluster's pod network, if `pod_network` (made by [`crate::Cluster`] before
    /// the apiserver, which listens on its bridge address).
    pub(crate) async fn start(
        cfg: KubeletConfig,
        api_addr: std::net::SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        tokens: &HashMap<String, String>,
        state_dir: &Path,
        net: Option<Arc<PodNetwork>>,
    ) -> Result<Kubelet, String> {
        let cfg = Arc::new(cfg);
        let (stop, _) = watch::channel(false);
        let pgids = Arc::new(Mutex::new(HashSet::new()));
        let shutting_down = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let pods = Arc::new(Mutex::new(HashMap::new()));
        let mut nodes = Vec::new();
        let log_tls = api::server_tls(&crate::Layout::new(state_dir))?;
        for name in cfg.node_names() {
            let token = tokens
                .get(&name)
                .ok_or_else(|| format!("no token for node {name}"))?;
            let (listener, log_port) = api::bind()
                .await
                .map_err(|e| format!("log API of {name}: {e}"))?;
            let node = Arc::new(Node {
                name: name.clone(),
                api: Api {
                    addr: api_addr,
                    tls: tls.clone(),
                    token: token.clone(),
                },
                cfg: cfg.clone(),
                gpus: Mutex::new(GpuAllocator::new(cfg.gpus_per_node)),
                pods_dir: state_dir.join("pods").join(&name),
                pgids: pgids.clone(),
                shutting_down: shutting_down.clone(),
                registered_at: now(),
                net: net.clone(),
                lost: AtomicBool::new(false),
                pods: pods.clone(),
                log_port,
                log_server: Mutex::new(None),
            });
            nodes.push(node.clone());
            fs::create_dir_all(&node.pods_dir).map_err(|e| e.to_string())?;
            node.register()
                .await
                .map_err(|e| format!("registering node {name}: {e}"))?;
            let server = tokio::spawn(api::serve(listener, log_tls.clone(), node.clone()));
            *node.log_server.lock().unwrap() = Some(server.abort_handle());
            tasks.push(server);
            info!(node = %name, "registered");
            let (n, mut s) = (node.clone(), stop.subscribe());
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(n.cfg.heartbeat) => {}
                        _ = s.changed() => return,
                    }
                    if n.lost.load(Ordering::SeqCst) {
                        continue;
                    }
                    if let Err(e) = n.heartbeat().await {
                        warn!(node = %n.name, "heartbeat: {e}");
                    }
                }
            }));
            tasks.push(tokio::spawn(pod_loop(node, stop.subscribe())));
        }
        Ok(Kubelet {
            stop,
            tasks,
            pgids,
            shutting_down,
            faults: Faults { nodes, pods },
        })
    }

    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Stops the loops and the pods: SIGTERM to every container, `grace`, SIGKILL.
    pub async fn shutdown(self, grace: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        let groups: Vec<i32> = self.pgids.lock().unwrap().iter().copied().collect();
        for g in &groups {
            let _ = killpg(Pid::from_raw(*g), Signal::SIGTERM);
        }
        let start = std::time::Instant::now();
        while start.elapsed() < grace && groups.iter().any(|g| group_alive(*g)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill_all();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(2) && groups.iter().any(|g| group_alive(*g)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill_all(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for g in self.pgids.lock().unwrap().iter() {
            let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.kill_all();
    }
}

fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

async fn pod_loop(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut pods: HashMap<String, PodEntry> = HashMap::new();
    let path = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}", node.name);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(node.cfg.poll) => {}
            _ = stop.changed() => return,
        }
        if node.lost.load(Ordering::SeqCst) {
            return;
        }
        let list = match node.api.get(path.clone()).await {
            Ok(l) => l,
            Err(e) => {
                warn!(node = %node.name, "listing pods: {e}");
                continue;
            }
        };
        let mut seen = HashSet::new();
        for pod in list["items"].as_array().into_iter().flatten() {
            let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
            seen.insert(uid.clone());
            let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
            let grace = pod["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30);
            match pods.get(&uid) {
                Some(e) => {
                    if deleting && e.stop.borrow().is_none() {
                        // send_replace: also recorded when the pod task has ended.
                        e.stop.send_replace(Some(grace));
                        if e.task.is_finished() {
                            // Finished before the delete: just remove the object.
                            delete_pod(&node, pod).await;
                        }
                    }
                }
                None => {
                    let phase = pod["status"]["phase"].as_str().unwrap_or("");
                    if deleting {
                        delete_pod(&node, pod).await;
                        continue;
                    }
                    if phase == "Succeeded" || phase == "Failed" {
                        continue;
                    }
                    let (tx, rx) = watch::channel(None);
                    let task = tokio::spawn(run_pod(node.clone(), pod.clone(), rx));
                    pods.insert(uid, PodEntry { stop: tx, task });
                }
            }
        }
        // Gone from the API (force-deleted): kill at once.
        pods.retain(|uid, e| {
            if seen.contains(uid) {
                return true;
            }
            if !e.task.is_finished() {
                let _ = e.stop.send(Some(0));
            }
            false
        });
    }
}

async fn delete_pod(node: &Node, pod: &Value) {
    let md = &pod["metadata"];
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}",
        md["namespace"].as_str().unwrap_or(""),
        md["name"].as_str().unwrap_or("")
    );
    let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
        "preconditions": {"uid": md["uid"]}});
    match node.api.delete(path, body).await {
        Ok(_) => info!(node = %node.name, pod = %md["name"], "pod deleted"),
        Err(e) if e.contains(" 404 ") || e.contains(" 409 ") => {}
        Err(e) => warn!(node = %node.name, "deleting pod: {e}"),
    }
}

/// Shared between a pod's task and its container tasks.
struct PodRun {
    node: Arc<Node>,
    pod: Value,
    dir: PathBuf,
    gpus: Vec<u32>,
    init: Mutex<Vec<ContainerState>>,
    main: Mutex<Vec<ContainerState>>,
    changed: Notify,
    start_time: String,
    /// Pod condition type → (status, lastTransitionTime).
    transitions: Mutex<HashMap<String, (String, String)>>,
    /// Its netns and IP (None: host network, 127.0.0.1).
    net: Option<PodNet>,
}

impl PodRun {
    fn status(&self) -> Value {
        let init = self.init.lock().unwrap().clone();
        let main = self.main.lock().unwrap().clone();
        let phase = pod_phase(&init, &main);
        let ready = !main.is_empty() && main.iter().all(ContainerState::ready);
        let mut seen = self.transitions.lock().unwrap();
        let mut cond = |ty: &str, ok: bool| {
            let st = if ok { "True" } else { "False" };
            let e = seen
                .entry(ty.to_string())
                .or_insert_with(|| (st.to_string(), now()));
            if e.0 != st {
                *e = (st.to_string(), now());
            }
            json!({"type": ty, "status": st, "lastProbeTime": null, "lastTransitionTime": e.1})
        };
        let ip = self.pod["status"]["podIP"].as_str().unwrap_or(POD_IP);
        let host_ip = self.pod["status"]["hostIP"].as_str().unwrap_or(POD_IP);
        json!({"phase": phase, "hostIP": host_ip, "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": self.start_time, "qosClass": self.pod["status"]["qosClass"],
            "conditions": [cond("PodScheduled", true), cond("Initialized", init.iter().all(|c| c.done)),
                cond("ContainersReady", ready), cond("Ready", ready)],
            "initContainerStatuses": init.iter().map(ContainerState::to_json).collect::<Vec<_>>(),
            "containerStatuses": main.iter().map(ContainerState::to_json).collect::<Vec<_>>()})
    }

    /// Changes one container's state and wakes the status writer.
    fn update_container(&self, init: bool, idx: usize, f: impl FnOnce(&mut ContainerState)) {
        let list = if init { &self.init } else { &self.main };
        f(&mut list.lock().unwrap()[idx]);
        self.changed.notify_one();
    }

    async fn write_status(&self) {
        if self.node.lost.load(Ordering::SeqCst) {
            return;
        }
        let md = &self.pod["metadata"];
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/status",
            md["namespace"].as_str().unwrap_or(""),
            md["name"].as_str().unwrap_or("")
        );
        if let Err(e) = self
            .node
            .api
            .merge_patch(path, json!({"status": self.status()}))
            .await
        {
            warn!(node = %self.node.name, pod = %md["name"], "status update: {e}");
        }
    }
}

fn states(list: &Value) -> Vec<ContainerState> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|c| ContainerState {
            name: c["name"].as_str().unwrap_or("").into(),
            image: c["image"].as_str().unwrap_or("").into(),
            ..Default::default()
        })
        .collect()
}

async fn run_pod(node: Arc<Node>, pod: Value, mut stop: watch::Receiver<Option<i64>>) {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let spec = &pod["spec"].clone();
    // Init containers run one at a time, so the pod needs the max of them and the sum of the rest.
    let want = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(container_gpus)
        .sum::<u32>()
        .max(
            spec["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(container_gpus)
                .max()
                .unwrap_or(0),
        );
    let gpus = node.gpus.lock().unwrap().allocate(&uid, want);
    let mut pod = pod;
    let mut pod_net = None;
    if let (Some(net), Some(_)) = (&node.net, &gpus) {
        let n = net.clone();
        let added = tokio::task::spawn_blocking(move || n.add_pod())
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match added {
            Ok(p) => {
                pod["status"]["podIP"] = json!(p.ip.to_string());
                pod["status"]["hostIP"] = json!(p.host_ip.to_string());
                pod_net = Some(p);
            }
            Err(e) => {
                warn!(node = %node.name, pod = %name, "pod network: {e}");
                node.gpus.lock().unwrap().release(&uid);
                fail_pod(&node, &pod, "NetworkSetupError", &e).await;
                return;
            }
        }
    }
    let run = Arc::new(PodRun {
        node: node.clone(),
        pod: pod.clone(),
        dir: node.pods_dir.join(&uid),
        gpus: gpus.clone().unwrap_or_default(),
        init: Mutex::new(states(&spec["initContainers"])),
        main: Mutex::new(states(&spec["containers"])),
        changed: Notify::new(),
        start_time: now(),
        transitions: Mutex::new(HashMap::new()),
        net: pod_net,
    });
    if gpus.is_none() {
        let message = format!(
            "{want} {GPU_RESOURCE} requested, not enough free on {}",
            node.name
        );
        fail_pod(&node, &pod, "UnexpectedAdmissionError", &message).await;
        return;
    }
    let key = format!(
        "{}/{name}",
        pod["metadata"]["namespace"].as_str().unwrap_or("default")
    );
    node.pods.lock().unwrap().insert(key.clone(), run.clone());
    run_pod_containers(&node, &run, &pod, &mut stop).await;
    let mut pods = node.pods.lock().unwrap();
    // A pod of the same name may have replaced it (on this node or another one).
    if pods.get(&key).is_some_and(|r| Arc::ptr_eq(r, &run)) {
        pods.remove(&key);
    }
}

async fn run_pod_containers(
    node: &Arc<Node>,
    run: &Arc<PodRun>,
    pod: &Value,
    stop: &mut watch::Receiver<Option<i64>>,
) {
    let spec = &pod["spec"];
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    info!(node = %node.name, pod = %name, gpus = ?run.gpus, "starting pod");
    let _ = fs::create_dir_all(&run.dir);
    if let Some(p) = &run.net {
        let domain = &node.cfg.cluster_domain;
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let _ = fs::write(run.dir.join("hosts"), podnet::etc_hosts(pod, p.ip, domain));
        let _ = fs::write(
            run.dir.join("resolv.conf"),
            podnet::resolv_conf(ns, domain, p.host_ip),
        );
    }
    run.write_status().await;
    let policy = spec["restartPolicy"]
        .as_str()
        .unwrap_or("Always")
        .to_string();
    let inits = spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut stopped = false;
    for (i, c) in inits.iter().enumerate() {
        run_container(
            run.clone(),
            true,
            i,
            c.clone(),
            policy.clone(),
            stop.clone(),
        )
        .await;
        run.write_status().await;
        let ok = {
            let init = run.init.lock().unwrap();
            init[i]
                .terminated
                .as_ref()
                .is_some_and(|t| t.exit_code == 0)
        };
        if !ok || stop.borrow().is_some() {
            stopped = true;
            break;
        }
    }
    if !stopped {
        let mut handles = Vec::new();
        for (i, c) in spec["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            handles.push(tokio::spawn(run_container(
                run.clone(),
                false,
                i,
                c,
                policy.clone(),
                stop.clone(),
            )));
        }
        let all_done = async {
            for h in handles {
                let _ = h.await;
            }
        };
        tokio::pin!(all_done);
        loop {
            tokio::select! {
                _ = &mut all_done => break,
                _ = run.changed.notified() => {
                    if stop.borrow().is_none() {
                        run.write_status().await;
                    }
                }
            }
        }
    }
    node.gpus.lock().unwrap().release(uid);
    if node.lost.load(Ordering::SeqCst) {
        // A lost node does nothing more (its pods' network went with it).
        return;
    }
    if stop.borrow().is_some() {
        remove_pod_net(node, run).await;
        delete_pod(node, pod).await;
    } else {
        run.write_status().await;
        info!(node = %node.name, pod = %name, phase = pod_phase(&run.init.lock().unwrap(), &run.main.lock().unwrap()), "pod finished");
        // Wait for a deletion request so the pod loop can remove the object.
        let _ = stop.changed().await;
        remove_pod_net(node, run).await;
    }
}

/// Marks a pod Failed before any of its containers started (admission or setup failed).
async fn fail_pod(node: &Node, pod: &Value, reason: &str, message: &str) {
    let md = &pod["metadata"];
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}/status",
        md["namespace"].as_str().unwrap_or(""),
        md["name"].as_str().unwrap_or("")
    );
    let status = json!({"status": {"phase": "Failed", "reason": reason, "message": message}});
    if let Err(e) = node.api.merge_patch(path, status).await {
        warn!(node = %node.name, reason, error = %e, "cannot mark the pod failed");
    }
}

async fn remove_pod_net(node: &Node, run: &PodRun) {
    if let (Some(net), Some(p)) = (&node.net, &run.net) {
        let (net, p) = (net.clone(), p.clone());
        let _ = tokio::task::spawn_blocking(move || net.remove_pod(&p)).await;
    }
}

/// The ConfigMaps and Secrets the pod refers to, as they are now (a missing one is absent).
async fn fetch_refs(run: &PodRun) -> Result<Refs, PrepError> {
    let ns = run.pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let mut refs = Refs::default();
    for (kind, name) in volumes::referenced(&run.pod) {
        let path = format!("/api/v1/namespaces/{ns}/{}/{name}", kind.resource());
        match run.node.api.get(path).await {
            Ok(obj) => refs.insert(kind, name, volumes::data_of(kind, &obj)),
            Err(e) if e.contains(" 404 ") => {}
            Err(e) => return Err(PrepError::Config(e)),
        }
    }
    Ok(refs)
}

/// The host directory of a pod volume: emptyDir, configMap or secret (written once per pod,
/// atomically, so the pod's containers share it).
fn volume_dir(run: &PodRun, vol: &Value, refs: &Refs) -> Result<PathBuf, PrepError> {
    let name = vol["name"].as_str().unwrap_or("");
    let dir = run.dir.join("volumes").join(name);
    if vol["emptyDir"].is_object() {
        fs::create_dir_all(&dir)
            .map_err(|e| PrepError::Start(format!("{}: {e}", dir.display())))?;
        return Ok(dir);
    }
    let files = refs.volume_files(vol).map_err(PrepError::Config)?.ok_or_else(|| {
        PrepError::Start(format!(
            "volume {name:?}: only emptyDir, configMap and secret volumes are supported by the local cluster"
        ))
    })?;
    if dir.exists() {
        return Ok(dir);
    }
    let tmp = run
        .dir
        .join("volumes")
        .join(format!(".{name}.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        for (rel, data, mode) in &files {
            let f = tmp.join(rel);
            if let Some(parent) = f.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&f, data)?;
            fs::set_permissions(&f, fs::Permissions::from_mode(*mode))?;
        }
        match fs::rename(&tmp, &dir) {
            // Another container of the pod was first: use its copy.
            Err(_) if dir.exists() => fs::remove_dir_all(&tmp),
            r => r,
        }
    };
    write().map_err(|e| PrepError::Start(format!("volume {name:?}: {e}")))?;
    Ok(dir)
}

/// The namespaces and root filesystem a container process enters (see [`crate::rootfs`]): the
/// pod's netns; its own mount namespace with an overlay of the host's `/`, the pod's `/dev`,
/// `/etc/hosts`, `/etc/resolv.conf`, the termination message file at `terminationMessagePath`
/// and the volumes at their mount paths; its own UTS namespace with the pod's hostname.
fn isolation(
    run: &PodRun,
    c: &Value,
    term_file: &Path,
    refs: &Refs,
) -> Result<Option<Isolation>, PrepError> {
    let Some(p) = &run.net else {
        return Ok(None);
    };
    let start = |e: String| PrepError::Start(e);
    let (mut pre_binds, dev) =
        rootfs::pod_dev(&run.dir).map_err(|e| start(format!("pod /dev: {e}")))?;
    let mut mounts = vec![Mount::new("/proc", "/proc"), Mount::new("/sys", "/sys")];
    let tpath = c["terminationMessagePath"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("/dev/termination-log");
    if let Some(rest) = tpath.strip_prefix("/dev/") {
        // Inside the pod's own /dev (placeholder file bound before /dev goes in).
        let placeholder = dev.join(rest);
        if let Some(parent) = placeholder.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let _ = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&placeholder);
        pre_binds.push((term_file.to_path_buf(), placeholder));
        mounts.push(Mount::new(&dev, "/dev"));
    } else {
        mounts.push(Mount::new(&dev, "/dev"));
        mounts.push(Mount::new(term_file, tpath));
    }
    mounts.push(Mount::new(run.dir.join("hosts"), "/etc/hosts"));
    mounts.push(Mount::new(run.dir.join("resolv.conf"), "/etc/resolv.conf"));
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let vname = m["name"].as_str().unwrap_or("");
        let target = m["mountPath"].as_str().unwrap_or("");
        let vol = run.pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"].as_str() == Some(vname))
            .ok_or_else(|| start(format!("volumeMount {vname:?}: no such volume in the pod")))?;
        let mut src = volume_dir(run, vol, refs)?;
        if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
            src = src.join(sub);
            if !src.exists() {
                fs::create_dir_all(&src).map_err(|e| start(format!("{}: {e}", src.display())))?;
            }
        }
        mounts.push(Mount::new(src, target));
    }
    let hostname = run.pod["spec"]["hostname"]
        .as_str()
        .or(run.pod["metadata"]["name"].as_str())
        .unwrap_or("pod");
    let cwd = c["workingDir"]
        .as_str()
        .filter(|w| !w.is_empty())
        .unwrap_or("/");
    let cname = c["name"].as_str().unwrap_or("c");
    Isolation::new(
        &p.netns_path(),
        &run.dir.join("containers").join(cname),
        &pre_binds,
        &mounts,
        hostname,
        cwd,
    )
    .map(Some)
    .map_err(start)
}

/// Whether a container that exited with `code` is started again.
pub fn policy_restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

fn read_message(file: &Path, log: &Path, fallback: bool, code: i32) -> String {
    let mut m = fs::read(file).unwrap_or_default();
    if m.is_empty() && fallback && code != 0 {
        let l = fs::read(log).unwrap_or_default();
        let lines: Vec<&[u8]> = l.split(|b| *b == b'\n').collect();
        m = lines[lines.len().saturating_sub(81)..].join(&b'\n');
        if m.len() > 2048 {
            m = m[m.len() - 2048..].to_vec();
        }
    }
    m.truncate(MAX_MESSAGE);
    String::from_utf8_lossy(&m).into_owned()
}

async fn run_container(
    run: Arc<PodRun>,
    init: bool,
    idx: usize,
    c: Value,
    policy: String,
    mut stop: watch::Receiver<Option<i64>>,
) {
    let cname = c["name"].as_str().unwrap_or("c").to_string();
    let update = |f: &dyn Fn(&mut ContainerState)| run.update_container(init, idx, f);
    let probe = readiness::parse(&c);
    if let Err(e) = &probe {
        warn!(container = %cname, "readiness probe: {e}; the container never becomes ready");
    }
    let term_file = run.dir.join(format!("{cname}.termination-log"));
    let log_file = run.dir.join(format!("{cname}.log"));
    let fallback = c["terminationMessagePolicy"].as_str() == Some("FallbackToLogsOnError");
    let mut backoff = Duration::from_secs(1);
    loop {
        if run.node.gone() {
            return;
        }
        let _ = fs::write(&term_file, b"");
        let started = now();
        let child = match fetch_refs(&run).await {
            Err(e) => Err(e),
            Ok(refs) => {
                let ctx = EnvContext {
                    node: &run.node.name,
                    gpus: &run.gpus,
                    termination_file: run.net.is_none().then_some(term_file.as_path()),
                    refs: &refs,
                    apiserver: run.net.as_ref().map(|_| run.node.api.addr),
                    image_path: c["image"]
                        .as_str()
                        .and_then(|i| run.node.cfg.image_map.get(i))
                        .filter(|p| p.is_dir())
                        .map(PathBuf::as_path),
                };
                container_env(&run.pod, &c, &ctx).and_then(|env| {
                    let argv = container_argv(&c, &env, &run.node.cfg.image_map)
                        .map_err(PrepError::Start)?;
                    let iso = isolation(&run, &c, &term_file, &refs)?;
                    spawn_process(&argv, &env, c["workingDir"].as_str(), &log_file, iso)
                        .map_err(|e| PrepError::Start(format!("starting {argv:?}: {e}")))
                })
            }
        };
        let (code, signal, reason, message) = match child {
            Err(PrepError::Config(e)) => {
                // Not a run of the container: wait for the missing object and try again.
                warn!(node = %run.node.name, container = %cname, "{e}");
                update(&|s| s.waiting = Some(("CreateContainerConfigError".into(), e.clone())));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = wait_stop(&mut stop) => {}
                }
                if stop.borrow().is_some() {
                    return;
                }
                continue;
            }
            Err(PrepError::Start(e)) => {
                warn!(node = %run.node.name, container = %cname, "{e}");
                (128, None, "StartError".to_string(), e)
            }
            Ok(mut child) => {
                let pid = child.id().map(|p| p as i32).unwrap_or(-1);
                run.node.pgids.lock().unwrap().insert(pid);
                update(&|s| {
                    s.pid = Some(pid);
                    s.started_at = Some(started.clone());
                    s.terminated = None;
                    s.waiting = None;
                    s.probe_ready = probe
                        .as_ref()
                        .map_or(Some(false), |p| p.as_ref().map(|_| false));
                });
                let prober = match &probe {
                    Ok(Some(p)) => {
                        let target = readiness::Target {
                            ip: run.pod["status"]["podIP"]
                                .as_str()
                                .and_then(|ip| ip.parse().ok())
                                .unwrap_or(std::net::Ipv4Addr::LOCALHOST),
                            pid,
                            container_dir: run.dir.join("containers").join(&cname),
                        };
                        Some(tokio::spawn(probe_loop(
                            run.clone(),
                            init,
                            idx,
                            p.clone(),
                            target,
                        )))
                    }
                    _ => None,
                };
                let status = tokio::select! {
                    s = child.wait() => s.ok(),
                    _ = wait_stop(&mut stop) => {
                        let grace = stop.borrow().unwrap_or(0).max(0) as u64;
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
                        match tokio::time::timeout(Duration::from_secs(grace), child.wait()).await {
                            Ok(s) => s.ok(),
                            Err(_) => {
                                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                                child.wait().await.ok()
                            }
                        }
                    }
                };
                if let Some(p) = prober {
                    p.abort();
                }
                // Whatever the container left in its group goes with it.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                run.node.pgids.lock().unwrap().remove(&pid);
                use std::os::unix::process::ExitStatusExt;
                let (code, signal) = match status {
                    Some(s) => match (s.code(), s.signal()) {
                        (Some(c), _) => (c, None),
                        (None, Some(sig)) => (128 + sig, Some(sig)),
                        _ => (255, None),
                    },
                    None => (255, None),
                };
                let reason = if code == 0 { "Completed" } else { "Error" };
                let msg = read_message(&term_file, &log_file, fallback, code);
                (code, signal, reason.to_string(), msg)
            }
        };
        let stopping = stop.borrow().is_some() || run.node.gone();
        let restart = !stopping && policy_restarts(&policy, code) && !(init && code == 0);
        let t = Terminated {
            exit_code: code,
            signal,
            reason,
            message,
            started_at: started.clone(),
            finished_at: now(),
        };
        debug!(container = %cname, ?t, restart, "container exited");
        if !restart {
            update(&|s| {
                s.terminated = Some(t.clone());
                s.done = true;
            });
            return;
        }
        // Waiting in back-off, the last run in lastState (as `kubectl get` shows it); its log
        // becomes the previous one (`kubectl logs --previous`), under the same lock the log API
        // reads the state with.
        update(&|s| {
            api::rotate_log(&log_file);
            s.last_terminated = Some(t.clone());
            s.terminated = None;
            s.pid = None;
            s.waiting = Some((
                "CrashLoopBackOff".into(),
                format!("back-off {backoff:?} restarting failed container"),
            ));
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = wait_stop(&mut stop) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
        if stop.borrow().is_some() {
            update(&|s| {
                s.terminated = s.last_terminated.clone();
                s.done = true;
            });
            return;
        }
        update(&|s| s.restart_count += 1);
    }
}

/// Runs a container's readiness probe until aborted (when the container exits).
async fn probe_loop(
    run: Arc<PodRun>,
    init: bool,
    idx: usize,
    p: readiness::Probe,
    t: readiness::Target,
) {
    tokio::time::sleep(p.initial_delay).await;
    let (mut ready, mut streak) = (false, (false, 0));
    loop {
        let ok = readiness::check(&p, &t).await;
        let now = readiness::next_ready(&p, ready, ok, &mut streak);
        if now != ready {
            ready = now;
            debug!(pod = %run.pod["metadata"]["name"], idx, ready, "readiness changed");
            run.update_container(init, idx, |s| s.probe_ready = Some(ready));
        }
        tokio::time::sleep(p.period).await;
    }
}

async fn wait_stop(stop: &mut watch::Receiver<Option<i64>>) {
    while stop.borrow().is_none() {
        if stop.changed().await.is_err() {
            // Sender gone (kubelet shutting down): stop now.
            std::future::pending::<()>().await;
        }
    }
}

fn spawn_process(
    argv: &[String],
    env: &[(String, String)],
    workdir: Option<&str>,
    log: &Path,
    iso: Option<Isolation>,
) -> std::io::Result<tokio::process::Child> {
    let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(workdir.filter(|w| !w.is_empty()).unwrap_or("/"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(iso) = &iso {
                iso.enter()?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                "labels": {"app": "x"}, "annotations": {"a/b": "c"}},
            "spec": {"serviceAccountName": "sa", "hostname": "h0"}})
    }

    #[test]
    fn env_has_downward_api_gpus_and_expansion() {
        let c = json!({"env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "ANN", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['a/b']"}}},
            {"name": "GREETING", "value": "hi $(POD_NAME) on $(NODE), $(NOPE) $$(POD_NAME)"}]});
        let refs = Refs::default();
        let ctx = |node, gpus, file| EnvContext {
            node,
            gpus,
            termination_file: Some(Path::new(file)),
            refs: &refs,
            apiserver: None,
            image_path: None,
        };
        let env = container_env(&pod(), &c, &ctx("node-1", &[2, 3], "/t/log")).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("POD_NAME"), Some("p"));
        assert_eq!(get("NS"), Some("ns"));
        assert_eq!(get("UID"), Some("u-1"));
        assert_eq!(get("NODE"), Some("node-1"));
        assert_eq!(get("IP"), Some("127.0.0.1"));
        assert_eq!(get("HOST_IP"), Some("127.0.0.1"));
        assert_eq!(get("APP"), Some("x"));
        assert_eq!(get("ANN"), Some("c"));
        assert_eq!(get("HOSTNAME"), Some("h0"));
        assert_eq!(get("CUDA_VISIBLE_DEVICES"), Some("2,3"));
        assert_eq!(get("NVIDIA_VISIBLE_DEVICES"), Some("2,3"));
        assert_eq!(get(TERMINATION_MESSAGE_ENV), Some("/t/log"));
        assert_eq!(get("GREETING"), Some("hi p on node-1, $(NOPE) $(POD_NAME)"));
        assert!(get("PATH").is_some());
        // No GPUs: no device variables; unsupported sources are an error.
        let env = container_env(&pod(), &json!({}), &ctx("n", &[], "/t")).unwrap();
        assert!(!env.iter().any(|(k, _)| k == "CUDA_VISIBLE_DEVICES"));
        assert!(!env.iter().any(|(k, _)| k == "KUBERNETES_SERVICE_HOST"));
        // A missing Secret: wait for it (Config); an unsupported field: StartError.
        let bad = json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]});
        assert!(matches!(
            container_env(&pod(), &bad, &ctx("n", &[], "/t")),
            Err(PrepError::Config(e)) if e.contains("secret \"s\" not found")
        ));
        let bad =
            json!({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}]});
        assert!(matches!(
            container_env(&pod(), &bad, &ctx("n", &[], "/t")),
            Err(PrepError::Start(_))
        ));
    }

    #[test]
    fn env_from_config_maps_secrets_and_the_apiserver() {
        let mut refs = Refs::default();
        refs.insert(
            Kind::ConfigMap,
            "cm".into(),
            [
                ("LR".to_string(), b"0.1".to_vec()),
                ("X".to_string(), b"from-cm".to_vec()),
            ]
            .into(),
        );
        refs.insert(
            Kind::Secret,
            "s".into(),
            [("token".to_string(), b"t0k".to_vec())].into(),
        );
        let ctx = EnvContext {
            node: "n",
            gpus: &[],
            termination_file: None,
            refs: &refs,
            apiserver: Some("10.1.2.1:6443".parse().unwrap()),
            image_path: Some(Path::new("/opt/venv/bin")),
        };
        let c = json!({"envFrom": [{"configMapRef": {"name": "cm"}}],
            "env": [{"name": "X", "value": "own"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}}]});
        let env = container_env(&pod(), &c, &ctx).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("LR"), Some("0.1"));
        assert_eq!(get("X"), Some("own"), "env wins over envFrom");
        assert_eq!(get("TOKEN"), Some("t0k"));
        assert_eq!(get("OPT"), None);
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.1.2.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("6443"));
        assert!(
            get("PATH")
                .unwrap()
                .starts_with("/opt/venv/bin:/usr/local/sbin:")
        );
    }

    #[test]
    fn argv_from_command_or_image_map() {
        let env = vec![("N".to_string(), "3".to_string())];
        let map = KubeletConfig::parse_image_map("img:1=/bin/echo, other=/x").unwrap();
        let c = json!({"command": ["/bin/sh", "-c"], "args": ["exit $(N)"], "image": "img:1"});
        assert_eq!(
            container_argv(&c, &env, &map).unwrap(),
            ["/bin/sh", "-c", "exit 3"]
        );
        let c = json!({"args": ["a"], "image": "img:1"});
        assert_eq!(container_argv(&c, &env, &map).unwrap(), ["/bin/echo", "a"]);
        let c = json!({"args": ["a"], "image": "unknown"});
        assert!(container_argv(&c, &env, &map).is_err());
        assert!(KubeletConfig::parse_image_map("noequals").is_err());
    }

    #[test]
    fn gpu_allocation_takes_lowest_free_and_releases() {
        let mut g = GpuAllocator::new(4);
        assert_eq!(g.allocate("a", 2), Some(vec![0, 1]));
        assert_eq!(g.allocate("b", 1), Some(vec![2]));
        assert_eq!(g.allocate("c", 2), None);
        assert_eq!(g.free(), 1);
        g.release("a");
        assert_eq!(g.allocate("c", 2), Some(vec![0, 1]));
        assert_eq!(g.allocate("d", 0), Some(vec![]));
        assert_eq!(g.free(), 1);
        assert_eq!(
            container_gpus(&json!({"resources": {"limits": {"nvidia.com/gpu": "4"}}})),
            4
        );
        assert_eq!(container_gpus(&json!({"resources": {}})), 0);
    }

    #[test]
    fn phase_follows_containers_and_restart_policy() {
        let done = |code| ContainerState {
            pid: Some(1),
            done: true,
            terminated: Some(Terminated {
                exit_code: code,
                signal: None,
                reason: String::new(),
                message: String::new(),
                started_at: String::new(),
                finished_at: String::new(),
            }),
            ..Default::default()
        };
        let running = ContainerState {
            pid: Some(1),
            started_at: Some("t".into()),
            ..Default::default()
        };
        let waiting = ContainerState::default();
        let one = std::slice::from_ref;
        assert_eq!(pod_phase(&[], one(&waiting)), "Pending");
        assert_eq!(pod_phase(one(&waiting), one(&waiting)), "Pending");
        assert_eq!(pod_phase(&[done(1)], one(&waiting)), "Failed");
        assert_eq!(pod_phase(&[done(0)], one(&running)), "Running");
        assert_eq!(pod_phase(&[], &[done(0), running]), "Running");
        assert_eq!(pod_phase(&[], &[done(0), done(0)]), "Succeeded");
        assert_eq!(pod_phase(&[], &[done(0), done(3)]), "Failed");
        assert!(!policy_restarts("Never", 1));
        assert!(policy_restarts("OnFailure", 1));
        assert!(!policy_restarts("OnFailure", 0));
        assert!(policy_restarts("Always", 0));
        let j = done(3).to_json();
        assert_eq!(j["state"]["terminated"]["exitCode"], 3);
    }
}
