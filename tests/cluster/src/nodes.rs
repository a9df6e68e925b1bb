//! Real nodes: each node is a real kubelet with its own containerd and runc, isolated the way
//! kind's node containers are, so several nodes share this machine without seeing each other's
//! containers, device-plugin sockets or state:
//!
//! - its own network namespace on the cluster bridge (an address of the bridge's /24), with a
//!   CNI bridge (`cni0`, Debian's `containernetworking-plugins`) for its pod CIDR and routes to
//!   the other nodes' pod CIDRs;
//! - its own mount namespace, in which per-node directories are bind-mounted on the paths the
//!   kubelet and containerd hard-code (`/var/lib/kubelet`, `/run/containerd`, `/var/log/pods`,
//!   `/run/netns`, ...), and its own UTS namespace (its host name);
//! - its own cgroup subtree (`/elasticjob/<cluster>/<node>` in every cgroup v1 hierarchy): the
//!   kubelet's `cgroupRoot`, with the node's daemons in `system/`, so losing the node is
//!   killing everything in that subtree (containerd's shims included).
//!
//! A "holder" process (`sleep infinity` after the mounts) owns the namespaces; every daemon
//! enters them with `nsenter`. Besides the kubelet and containerd, each node runs kube-proxy
//! (iptables mode, so ClusterIP Services work) and the fake GPU device plugin. CoreDNS runs on
//! the host, on the bridge address, behind the `kube-dns` Service (10.96.0.10).
//!
//! The rendering of every config file is a pure function over [`NodeLayout`]; the IO (ip,
//! mounts, cgroups, processes) is in [`RealNodes`].

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracing::{info, warn};

use crate::api::Api;
use crate::kubeconfig::{self, Credential};
use crate::podnet::{ClusterNetwork, NodeNet};
use crate::{ClusterConfig, TokenFile};

/// How many nodes, and what each has.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodesConfig {
    /// `node-0` … `node-<count-1>` (0: no nodes, a control plane alone).
    pub count: u32,
    /// Fake `nvidia.com/gpu` devices per node (the device plugin's `--count`).
    pub gpus_per_node: u32,
    /// OCI archives (`buildah push IMAGE oci-archive:FILE`) loaded into every node besides the
    /// pause image; pods use them by name, nothing is pulled.
    pub images: Vec<PathBuf>,
}

impl Default for NodesConfig {
    fn default() -> Self {
        NodesConfig {
            count: 3,
            gpus_per_node: 4,
            images: Vec::new(),
        }
    }
}

impl NodesConfig {
    pub fn names(&self) -> Vec<String> {
        (0..self.count).map(|i| format!("node-{i}")).collect()
    }
}

/// How often a kubelet renews its node Lease and posts its status: the controller-manager's
/// grace period is three of these, so a lost node is NotReady in about 12 s, not 40.
pub const HEARTBEAT: Duration = Duration::from_secs(4);
/// CoreDNS's user (static token), allowed to list and watch what the kubernetes plugin reads.
pub const COREDNS_USER: &str = "local-cluster:dns";
/// The sandbox image every node has (built by components/build.sh into the bin dir).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The cluster DNS Service's address (kubeadm's choice in the default service range).
pub const DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The user kube-proxy runs as: bound to `system:node-proxier` by Kubernetes' bootstrap RBAC.
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";
const COREDNS_HEALTH_PORT: u16 = 8080;
/// Archives above this size (the PyTorch image: gigabytes) are not imported into every node: they
/// are loaded once into a cached containerd root that each node gets as hard links (see
/// [`preloaded_root`]); smaller ones (the operator, the launcher) are imported at every start.
const LARGE_IMAGE: u64 = 256 << 20;
/// containerd's databases in its root: written in place, so each node needs its own copy.
const CONTAINERD_DBS: [&str; 2] = [
    "io.containerd.metadata.v1.bolt/meta.db",
    "io.containerd.snapshotter.v1.overlayfs/metadata.db",
];
/// cgroup v1 hierarchies the kubelet needs its `cgroupRoot` in.
const HIERARCHIES: [&str; 9] = [
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
];
/// Where the node's cgroups can end up: [`HIERARCHIES`], and on a hybrid host the cgroup v2
/// `unified` tree, in which runc and the kubelet make the same paths (removed at shutdown).
const CLEANUP_HIERARCHIES: [&str; 10] = [
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
    "unified",
];
/// Paths the kubelet, containerd and the CNI plugins hard-code, each bind-mounted from a
/// per-node directory (named after the path) inside the node's mount namespace.
const PRIVATE_PATHS: [&str; 8] = [
    "/run/containerd",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/cni",
    "/etc/cni/net.d",
    "/run/netns",
];

/// Where one node lives: names, addresses and paths (pure data, computed up front).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLayout {
    pub name: String,
    pub index: u32,
    /// The node's address on the cluster bridge (its InternalIP).
    pub ip: Ipv4Addr,
    /// The bridge's host address: the apiserver and CoreDNS listen there.
    pub host_ip: Ipv4Addr,
    /// `10.<pods>.<index>.0/24`.
    pub pod_cidr: String,
    /// `10.<pods>.0.0/16`: every node's pod CIDR.
    pub cluster_cidr: String,
    pub dir: PathBuf,
    /// `/elasticjob/<cluster id>/<node>`, the same in every hierarchy.
    pub cgroup: String,
    pub gpus: u32,
}

impl NodeLayout {
    pub fn new(
        cluster_id: &str,
        state_dir: &Path,
        index: u32,
        pods_octet: u8,
        net: &NodeNet,
        gpus: u32,
    ) -> NodeLayout {
        let name = format!("node-{index}");
        NodeLayout {
            dir: state_dir.join("nodes").join(&name),
            cgroup: format!("/elasticjob/{cluster_id}/{name}"),
            pod_cidr: format!("10.{pods_octet}.{index}.0/24"),
            cluster_cidr: format!("10.{pods_octet}.0.0/16"),
            ip: net.ip,
            host_ip: net.host_ip,
            name,
            index,
            gpus,
        }
    }

    /// The per-node directory behind one of [`PRIVATE_PATHS`].
    pub fn private_dir(&self, path: &str) -> PathBuf {
        self.dir
            .join("fs")
            .join(path.trim_start_matches('/').replace('/', "_"))
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn log(&self, daemon: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{daemon}.log"))
    }
    /// The directory of the node's daemons in hierarchy `h`.
    pub fn system_cgroup(&self, h: &str) -> PathBuf {
        PathBuf::from(format!("/sys/fs/cgroup/{h}{}/system", self.cgroup))
    }
}

/// containerd's config: its own root, state and socket (behind the node's private mounts),
/// the local pause image, CNI from Debian's plugins. `restrict_oom_score_adj`: processes here
/// may not lower their OOM score (no CAP_SYS_RESOURCE), which the pause sandbox asks for.
pub fn containerd_config() -> String {
    format!(
        r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
"#
    )
}

/// The node's CNI network: a bridge with the node as gateway for its pod CIDR, no masquerade
/// (pod addresses are routed between nodes as they are), hairpin for Services that pick a pod
/// on the same node.
pub fn cni_config(n: &NodeLayout) -> String {
    json!({
        "cniVersion": "0.4.0",
        "name": "elasticjob",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
             "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": n.pod_cidr}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// The kubelet's config. Heartbeats every 4 s (node lease 16 s) so the controller-manager's
/// short grace period turns a lost node NotReady in seconds; no disk-pressure eviction and no
/// image garbage collection (the images are loaded once, never pulled); cgroup v1 (what these
/// machines use) with the cgroupfs driver under the node's own subtree.
pub fn kubelet_config(n: &NodeLayout, ca: &Path, cluster_domain: &str) -> String {
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {"anonymous": {"enabled": false}, "webhook": {"enabled": true},
                           "x509": {"clientCAFile": ca.display().to_string()}},
        "authorization": {"mode": "Webhook"},
        "address": n.ip.to_string(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": n.cgroup,
        "failCgroupV1": false,
        "clusterDNS": [DNS_SERVICE_IP.to_string()],
        "clusterDomain": cluster_domain,
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "failSwapOn": false,
        "nodeStatusUpdateFrequency": format!("{}s", HEARTBEAT.as_secs()),
        // The Lease is renewed every quarter of its duration.
        "nodeLeaseDurationSeconds": HEARTBEAT.as_secs() * 4,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": false,
        "resolvConf": "/etc/resolv.conf",
        "podCIDR": n.pod_cidr,
    })
    .to_string()
}

/// kube-proxy in iptables mode, in the node's network namespace. conntrack limits stay as the
/// kernel has them (a namespace may not change them).
pub fn kube_proxy_config(n: &NodeLayout, kubeconfig: &Path) -> String {
    json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig.display().to_string()},
        "mode": "iptables",
        "hostnameOverride": n.name,
        "bindAddress": n.ip.to_string(),
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": n.cluster_cidr,
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "iptables": {"syncPeriod": "30s", "minSyncPeriod": "0s"},
    })
    .to_string()
}

/// The shell run by the holder inside its fresh mount and UTS namespaces: the private bind
/// mounts, the host name, then `sleep infinity` (it owns the namespaces).
pub fn holder_script(n: &NodeLayout) -> String {
    let mut s = String::from("set -e\nmount --make-rprivate /\n");
    for p in PRIVATE_PATHS {
        s += &format!("mount --bind '{}' '{p}'\n", n.private_dir(p).display());
    }
    s += &format!("hostname '{}'\nexec sleep infinity\n", n.name);
    s
}

/// CoreDNS's Corefile: the kubernetes plugin for the cluster domain (short TTL and cache, so a
/// recreated pod's new address is seen in seconds), nothing forwarded (no upstream here).
/// Health on port 8080 of the same address.
pub fn corefile(bind: Ipv4Addr, domain: &str, kubeconfig: &Path) -> String {
    format!(
        ".:53 {{\n    bind {bind}\n    errors\n    health {bind}:{COREDNS_HEALTH_PORT}\n    \
         kubernetes {domain} in-addr.arpa {{\n        kubeconfig {}\n        pods insecure\n        \
         ttl 5\n    }}\n    cache 5\n}}\n",
        kubeconfig.display()
    )
}

/// A daemon of a node (or CoreDNS), with its log.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

struct Node {
    layout: NodeLayout,
    net: NodeNet,
    holder: Child,
    daemons: Vec<Daemon>,
    /// Lost on purpose (a fault): its daemons' exits are expected.
    lost: bool,
}

/// A thread that lives as long as its node and starts its processes. `PR_SET_PDEATHSIG` fires
/// when the *thread* that forked a child ends, so the daemons must not be spawned from tokio's
/// blocking pool, whose idle threads end after seconds.
struct Spawner {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Spawner {
    fn new(name: &str) -> Result<Spawner, String> {
        let (jobs, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name(format!("spawner-{name}"))
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(io("spawning a thread"))?;
        Ok(Spawner { jobs })
    }

    /// Starts `f` on the thread at once; the receiver gets its result.
    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .expect("spawner thread alive");
        rx
    }
}

/// The real nodes of a cluster and CoreDNS.
pub struct RealNodes {
    spawners: Vec<Spawner>,
    admin: Api,
    /// What [`start_node`] needs besides the layout, to start a lost node again.
    restart: RestartParams,
    nodes: Mutex<Vec<Node>>,
    coredns: Mutex<Option<Daemon>>,
    net: Arc<ClusterNetwork>,
    cluster_id: String,
}

#[derive(Clone)]
struct RestartParams {
    bin: PathBuf,
    ca: PathBuf,
    domain: String,
    /// Small archives, imported into each node at start.
    images: Vec<PathBuf>,
    /// A containerd root holding the large images, hard-linked into each node at start.
    preloaded: Option<PathBuf>,
    routes: Vec<(String, Ipv4Addr)>,
}

/// What the nodes need from the cluster.
pub struct NodesSpec<'a> {
    pub cfg: &'a ClusterConfig,
    pub tokens: &'a TokenFile,
    pub admin: Api,
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(io(format!("running {cmd:?}")))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl RealNodes {
    /// Starts CoreDNS and `cfg.nodes.count` nodes and waits until every node is Ready.
    pub async fn start(spec: NodesSpec<'_>, net: Arc<ClusterNetwork>) -> Result<RealNodes, String> {
        let cfg = spec.cfg;
        let t0 = Instant::now();
        let pods_octet = net.free_pod_octet()?;
        let ca = cfg.layout().ca_cert();
        let mut archives = vec![cfg.bin_dir.join("pause.tar")];
        archives.extend(cfg.nodes.images.iter().cloned());
        let mut images = Vec::new();
        let mut large = Vec::new();
        for a in archives {
            let size = fs::metadata(&a)
                .map_err(io(format!("image archive {}", a.display())))?
                .len();
            if size > LARGE_IMAGE {
                large.push(a);
            } else {
                images.push(a);
            }
        }
        let preloaded = if large.is_empty() {
            None
        } else {
            let cache = crate::cache_dir().join("node-images");
            let t = Instant::now();
            let root = tokio::task::spawn_blocking(move || preloaded_root(&cache, &large))
                .await
                .map_err(|e| e.to_string())??;
            info!(root = %root.display(), elapsed = ?t.elapsed(), "large images ready to link into the nodes");
            Some(root)
        };
        let mut this = RealNodes {
            spawners: Vec::new(),
            admin: spec.admin.clone(),
            restart: RestartParams {
                bin: cfg.bin_dir.clone(),
                ca: ca.clone(),
                domain: cfg.cluster_domain.clone(),
                images: images.clone(),
                preloaded,
                routes: Vec::new(),
            },
            nodes: Mutex::new(Vec::new()),
            coredns: Mutex::new(None),
            cluster_id: net.id.clone(),
            net: net.clone(),
        };
        this.start_coredns(&spec).await?;
        let mut layouts = Vec::new();
        for i in 0..cfg.nodes.count {
            let pn = net.add_node()?;
            let l = NodeLayout::new(
                &this.cluster_id,
                &cfg.dir,
                i,
                pods_octet,
                &pn,
                cfg.nodes.gpus_per_node,
            );
            layouts.push((l, pn));
        }
        // Every node routes the others' pod CIDRs to them; the host routes all of them.
        let routes: Vec<(String, Ipv4Addr)> = layouts
            .iter()
            .map(|(l, _)| (l.pod_cidr.clone(), l.ip))
            .collect();
        this.restart.routes = routes.clone();
        let mut starting = Vec::new();
        for (l, pn) in layouts {
            let token = spec
                .tokens
                .token_of(&crate::node_user(&l.name))
                .ok_or_else(|| format!("no token for {}", l.name))?
                .to_string();
            let proxy_token = spec
                .tokens
                .token_of(KUBE_PROXY_USER)
                .ok_or("no kube-proxy token")?
                .to_string();
            fs::create_dir_all(l.dir.join("logs")).map_err(io("node dir"))?;
            kubeconfig::write(
                &l.file("kubelet.kubeconfig"),
                cfg,
                &crate::node_user(&l.name),
                &Credential::Token(token),
            )
            .map_err(|e| e.to_string())?;
            kubeconfig::write(
                &l.file("kube-proxy.kubeconfig"),
                cfg,
                KUBE_PROXY_USER,
                &Credential::Token(proxy_token),
            )
            .map_err(|e| e.to_string())?;
            let params = this.restart.clone();
            let spawner = Spawner::new(&l.name)?;
            starting.push(spawner.submit(move || start_node(l, pn, &params)));
            this.spawners.push(spawner);
        }
        for started in starting {
            let node = started.await.map_err(|e| e.to_string())??;
            this.nodes.lock().unwrap().push(node);
        }
        for (cidr, ip) in &routes {
            run(Command::new("ip").args(["route", "replace", cidr, "via", &ip.to_string()]))?;
        }
        info!(elapsed = ?t0.elapsed(), nodes = routes.len(), "nodes started; waiting for Ready");
        this.wait_ready(&spec.admin, cfg.nodes.gpus_per_node, cfg.ready_timeout)
            .await?;
        info!(elapsed = ?t0.elapsed(), "nodes Ready");
        Ok(this)
    }

    async fn start_coredns(&self, spec: &NodesSpec<'_>) -> Result<(), String> {
        let cfg = spec.cfg;
        let dir = cfg.dir.join("coredns");
        fs::create_dir_all(&dir).map_err(io("coredns dir"))?;
        grant_coredns(&spec.admin).await?;
        let token = spec
            .tokens
            .token_of(COREDNS_USER)
            .ok_or("no DNS token")?
            .to_string();
        let kc = dir.join("kubeconfig");
        kubeconfig::write(&kc, cfg, COREDNS_USER, &Credential::Token(token))
            .map_err(|e| e.to_string())?;
        let conf = dir.join("Corefile");
        fs::write(
            &conf,
            corefile(self.net.host_ip(), &cfg.cluster_domain, &kc),
        )
        .map_err(io("Corefile"))?;
        let log = cfg.layout().logs().join("coredns.log");
        let mut c = Command::new(cfg.bin_dir.join("coredns"));
        c.arg("-conf").arg(&conf);
        let child = spawn(c, &log, &[])?;
        *self.coredns.lock().unwrap() = Some(Daemon {
            name: "coredns".into(),
            child,
            log: log.clone(),
        });
        for (path, body) in dns_service_objects(self.net.host_ip()) {
            match spec.admin.post(path, body).await {
                Err(e) if !e.contains(" 409 ") => return Err(format!("cluster DNS Service: {e}")),
                _ => {}
            }
        }
        let t = Instant::now();
        while crate::probe::get(
            (self.net.host_ip(), COREDNS_HEALTH_PORT).into(),
            "/health",
            None,
            None,
        )
        .map(|(s, _)| s != 200)
        .unwrap_or(true)
        {
            if t.elapsed() > cfg.ready_timeout {
                return Err(format!(
                    "CoreDNS not healthy after {:?}; see {}",
                    t.elapsed(),
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn wait_ready(&self, admin: &Api, gpus: u32, timeout: Duration) -> Result<(), String> {
        let want: Vec<String> = self.names();
        let t = Instant::now();
        loop {
            let nodes = admin
                .get("/api/v1/nodes".into())
                .await
                .unwrap_or(Value::Null);
            let ready = ready_nodes(&nodes, gpus);
            if want.iter().all(|n| ready.contains(n)) {
                return Ok(());
            }
            if let Some(e) = self.exited() {
                return Err(e);
            }
            if t.elapsed() > timeout {
                return Err(format!(
                    "nodes not Ready after {:?}: ready {ready:?} of {want:?}; logs under {}",
                    t.elapsed(),
                    self.nodes.lock().unwrap()[0]
                        .layout
                        .dir
                        .join("logs")
                        .display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn names(&self) -> Vec<String> {
        let nodes = self.nodes.lock().unwrap();
        nodes.iter().map(|n| n.layout.name.clone()).collect()
    }

    /// A daemon that exited although its node was not lost on purpose: what and why.
    pub fn exited(&self) -> Option<String> {
        let mut nodes = self.nodes.lock().unwrap();
        for n in nodes.iter_mut().filter(|n| !n.lost) {
            for d in &mut n.daemons {
                if let Ok(Some(st)) = d.child.try_wait() {
                    return Some(format!(
                        "{} of {} exited ({st}); last lines of {}:\n{}",
                        d.name,
                        n.layout.name,
                        d.log.display(),
                        crate::supervise::tail(&d.log, 15)
                    ));
                }
            }
        }
        let mut dns = self.coredns.lock().unwrap();
        if let Some(d) = dns.as_mut()
            && let Ok(Some(st)) = d.child.try_wait()
        {
            return Some(format!(
                "CoreDNS exited ({st}); last lines of {}:\n{}",
                d.log.display(),
                crate::supervise::tail(&d.log, 15)
            ));
        }
        None
    }

    /// Stops every node and CoreDNS, and removes what they made (namespaces, cgroups, mounts
    /// go with their last process).
    pub fn shutdown(&self) {
        let mut nodes = self.nodes.lock().unwrap();
        for n in nodes.iter_mut() {
            kill_node(n);
        }
        for n in nodes.drain(..) {
            remove_cgroups(&n.layout);
            self.net.remove_node(&n.net);
        }
        // The cluster's own level, and the shared one if no other cluster uses it.
        for h in CLEANUP_HIERARCHIES {
            let _ = fs::remove_dir(format!("/sys/fs/cgroup/{h}/elasticjob/{}", self.cluster_id));
            let _ = fs::remove_dir(format!("/sys/fs/cgroup/{h}/elasticjob"));
        }
        if let Some(mut d) = self.coredns.lock().unwrap().take() {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }
}

/// Faults on real nodes (what `cluster fault` does through the control socket).
impl RealNodes {
    fn pod(&self, namespace: &str, name: &str) -> Result<Value, String> {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
        let (status, body) = crate::probe::get(
            self.admin.addr,
            &path,
            Some(&self.admin.tls),
            Some(&self.admin.token),
        )?;
        if status != 200 {
            return Err(format!("GET {path}: {status}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}"))
    }

    fn layout_of(&self, node: &str) -> Result<NodeLayout, String> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .find(|n| n.layout.name == node)
            .map(|n| n.layout.clone())
            .ok_or_else(|| format!("no node {node} (nodes: {:?})", self.names()))
    }

    /// The pids of the pod's running containers (not its sandbox), found by container id in
    /// the pod's node's cgroup subtree.
    fn container_pids(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(NodeLayout, Vec<i32>), String> {
        let pod = self.pod(namespace, name)?;
        let node = pod["spec"]["nodeName"]
            .as_str()
            .ok_or_else(|| format!("pod {namespace}/{name} is not on a node"))?;
        let l = self.layout_of(node)?;
        let ids = running_container_ids(&pod);
        if ids.is_empty() {
            return Err(format!("pod {namespace}/{name} has no running container"));
        }
        let mut pids = Vec::new();
        for id in &ids {
            pids.extend(cgroup_pids_named(&l, id));
        }
        Ok((l, pids))
    }

    /// Sends `signal` to every process of the pod's running containers, as a crash or an OOM
    /// kill would; the kubelet then sees them exit.
    pub fn kill_pod(
        &self,
        namespace: &str,
        name: &str,
        signal: nix::sys::signal::Signal,
    ) -> Result<usize, String> {
        let (_, pids) = self.container_pids(namespace, name)?;
        for pid in &pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), signal);
        }
        info!(pod = %name, ?signal, processes = pids.len(), "fault: killed pod processes");
        Ok(pids.len())
    }

    /// Takes the node side of the pod's veth down (or up): nothing reaches the pod and it
    /// reaches nothing, silently (no RST, no ICMP), while everything in it keeps running.
    pub fn set_pod_network(&self, namespace: &str, name: &str, up: bool) -> Result<(), String> {
        let (l, pids) = self.container_pids(namespace, name)?;
        let pid = pids.first().ok_or("no process in the pod")?;
        let link = run(Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(["ip", "-o", "link", "show", "eth0"]))?;
        let peer = peer_ifindex(&link).ok_or_else(|| format!("no veth peer in {link:?}"))?;
        let netns = self.netns_of(&l.name)?;
        let links = run(Command::new("ip").args(["-n", &netns, "-o", "link"]))?;
        let veth = link_name_by_index(&links, peer)
            .ok_or_else(|| format!("no link {peer} on {}", l.name))?;
        run(Command::new("ip").args([
            "-n",
            &netns,
            "link",
            "set",
            &veth,
            if up { "up" } else { "down" },
        ]))?;
        if up {
            // The bridge port forwards again only after a moment: wait instead of assuming.
            let forwarding = || {
                run(Command::new("ip").args(["-n", &netns, "-d", "link", "show", &veth]))
                    .map(|s| s.contains("state forwarding"))
                    .unwrap_or(false)
            };
            wait_for(Duration::from_secs(10), forwarding)
                .map_err(|_| format!("{veth} on {} did not forward again", l.name))?;
        }
        info!(pod = %name, up, "fault: pod network");
        Ok(())
    }

    fn netns_of(&self, node: &str) -> Result<String, String> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .find(|n| n.layout.name == node)
            .map(|n| n.net.netns.clone())
            .ok_or_else(|| format!("no node {node}"))
    }

    /// The node's machine is gone: the kubelet, containerd, the shims and every container die
    /// at once and its address goes silent. Returns how many processes died.
    pub fn lose_node(&self, node: &str) -> Result<usize, String> {
        let mut nodes = self.nodes.lock().unwrap();
        let n = nodes
            .iter_mut()
            .find(|n| n.layout.name == node)
            .ok_or_else(|| format!("no node {node}"))?;
        let killed = node_pids(&n.layout).len();
        podnet_link(&n.net.veth, false)?;
        kill_node(n);
        // Its cgroups go with the machine (a rebooted one starts without them): a kubelet
        // started again on stale container cgroups spends ~25 s retrying each one (cAdvisor,
        // "task ... not found") before it reports Ready.
        remove_cgroups(&n.layout);
        info!(node, killed, "fault: node lost");
        Ok(killed)
    }

    /// Cuts (or heals) the node's network: everything of it keeps running, nothing reaches it
    /// and it reaches nothing (the apiserver included), silently.
    pub fn partition_node(&self, node: &str, cut: bool) -> Result<(), String> {
        let nodes = self.nodes.lock().unwrap();
        let n = nodes
            .iter()
            .find(|n| n.layout.name == node)
            .ok_or_else(|| format!("no node {node}"))?;
        podnet_link(&n.net.veth, !cut)?;
        info!(node, cut, "fault: node partition");
        Ok(())
    }

    /// Brings a lost or partitioned node back: its network up and, if it was lost, its
    /// daemons started again on its kept state (as a rebooted machine would).
    pub fn restore_node(&self, node: &str) -> Result<(), String> {
        let (idx, lost, l, net) = {
            let nodes = self.nodes.lock().unwrap();
            let (i, n) = nodes
                .iter()
                .enumerate()
                .find(|(_, n)| n.layout.name == node)
                .ok_or_else(|| format!("no node {node}"))?;
            (i, n.lost, n.layout.clone(), n.net.clone())
        };
        podnet_link(&net.veth, true)?;
        if lost {
            let params = self.restart.clone();
            let started = self.spawners[idx]
                .submit(move || start_node(l, net, &params))
                .blocking_recv()
                .map_err(|e| e.to_string())??;
            self.nodes.lock().unwrap()[idx] = started;
        }
        info!(node, lost, "fault: node restored");
        Ok(())
    }
}

fn podnet_link(veth: &str, up: bool) -> Result<(), String> {
    crate::podnet::set_link(veth, up)
}

/// The ids of a pod's running containers (`containerd://<id>` in its status).
pub fn running_container_ids(pod: &Value) -> Vec<String> {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|k| pod["status"][k].as_array().cloned().unwrap_or_default())
        .filter(|c| c["state"]["running"].is_object())
        .filter_map(|c| {
            let id = c["containerID"].as_str()?;
            Some(id.split_once("://").map_or(id, |(_, i)| i).to_string())
        })
        .collect()
}

/// `eth0@if12` in `ip -o link show eth0`: the peer's ifindex.
pub fn peer_ifindex(link: &str) -> Option<u32> {
    let name = link.split(':').nth(1)?.trim();
    name.split_once("@if")?.1.parse().ok()
}

/// The name of link `index` in `ip -o link` output.
pub fn link_name_by_index(links: &str, index: u32) -> Option<String> {
    links.lines().find_map(|l| {
        let mut parts = l.split(':');
        let i: u32 = parts.next()?.trim().parse().ok()?;
        let name = parts.next()?.trim();
        (i == index).then(|| name.split('@').next().unwrap_or(name).to_string())
    })
}

/// Pids in the node's cgroup directories named `name` (a container id).
fn cgroup_pids_named(l: &NodeLayout, name: &str) -> Vec<i32> {
    let root = PathBuf::from(format!("/sys/fs/cgroup/pids{}", l.cgroup));
    let mut pids = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        if d.file_name().is_some_and(|f| f == name) {
            if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(s.lines().filter_map(|p| p.parse::<i32>().ok()));
            }
            continue;
        }
        if let Ok(rd) = fs::read_dir(&d) {
            stack.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    pids
}

impl Drop for RealNodes {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The `kube-dns` Service (10.96.0.10, as kubeadm makes it) and an EndpointSlice that points
/// it at CoreDNS on the host's bridge address.
fn dns_service_objects(host: Ipv4Addr) -> Vec<(String, Value)> {
    let ports = |target: bool| {
        let p = |name: &str, proto: &str| {
            if target {
                json!({"name": name, "port": 53, "protocol": proto, "targetPort": 53})
            } else {
                json!({"name": name, "port": 53, "protocol": proto})
            }
        };
        json!([p("dns", "UDP"), p("dns-tcp", "TCP")])
    };
    vec![
        (
            "/api/v1/namespaces/kube-system/services".into(),
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system",
                             "labels": {"k8s-app": "kube-dns"}},
                "spec": {"clusterIP": DNS_SERVICE_IP.to_string(), "ports": ports(true)}}),
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices".into(),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "kube-dns-host", "namespace": "kube-system",
                             "labels": {"kubernetes.io/service-name": "kube-dns"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [host.to_string()]}],
                "ports": ports(false)}),
        ),
    ]
}

/// CoreDNS reads Services, EndpointSlices, Pods and Namespaces (as kubeadm's `system:coredns`).
async fn grant_coredns(admin: &Api) -> Result<(), String> {
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "local-cluster:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
             "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
             "verbs": ["list", "watch"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding", "metadata": {"name": "local-cluster:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "local-cluster:coredns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
            "name": COREDNS_USER}]});
    for (path, body) in [
        ("/apis/rbac.authorization.k8s.io/v1/clusterroles", role),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            binding,
        ),
    ] {
        match admin.post(path.into(), body).await {
            Err(e) if !e.contains(" 409 ") => return Err(format!("CoreDNS RBAC: {e}")),
            _ => {}
        }
    }
    Ok(())
}

/// Names of the nodes whose Ready condition is True and that advertise `gpus` allocatable
/// `nvidia.com/gpu` (the device plugin registers a moment after the kubelet is Ready; a job
/// created in between would be unschedulable for a while).
pub fn ready_nodes(list: &Value, gpus: u32) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter(|n| {
            gpus == 0 || n["status"]["allocatable"]["nvidia.com/gpu"] == gpus.to_string().as_str()
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Spawns `c` with its output in `log`, in its own process group, killed with its parent, and
/// first moved into the cgroup directories `cgroups` (so everything it forks stays there).
fn spawn(mut c: Command, log: &Path, cgroups: &[PathBuf]) -> Result<Child, String> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(log.display()))?;
    let err = out.try_clone().map_err(io("dup"))?;
    let procs: Vec<std::ffi::CString> = cgroups
        .iter()
        .map(|d| {
            std::ffi::CString::new(d.join("cgroup.procs").display().to_string()).expect("no NUL")
        })
        .collect();
    c.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    // SAFETY: only async-signal-safe calls (open, write, close, prctl) between fork and exec.
    unsafe {
        c.pre_exec(move || {
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.spawn().map_err(io(format!("starting {c:?}")))
}

/// A command that runs `program` inside the node's namespaces (those of its holder).
fn in_node(holder: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg("-t")
        .arg(holder.to_string())
        .args(["-m", "-u", "-n", "--"])
        .arg(program);
    c
}

/// A containerd root with `archives` imported, cached under `cache/<key>` where the key hashes
/// the archives' names, sizes and times, so each set is imported once per machine (minutes for
/// the PyTorch image) and every node of every cluster starts with it in a second: the content
/// blobs and unpacked layers are read-only for containerd (containers write into their own
/// upper directories), so nodes share them as hard links; only its databases are copied.
/// Other keys' roots are removed.
pub fn preloaded_root(cache: &Path, archives: &[PathBuf]) -> Result<PathBuf, String> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for a in archives {
        let m = fs::metadata(a).map_err(io(a.display()))?;
        (a, m.len(), m.modified().ok()).hash(&mut h);
    }
    let key = format!("{:016x}", h.finish());
    let dir = cache.join(&key);
    let root = dir.join("root");
    if dir.join(".done").exists() {
        return Ok(root);
    }
    fs::create_dir_all(cache).map_err(io(cache.display()))?;
    let lock = fs::File::create(cache.join(".lock")).map_err(io("lock"))?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("locking {}: {e}", cache.display()))
        .and_then(|_guard| {
            if dir.join(".done").exists() {
                return Ok(());
            }
            for e in fs::read_dir(cache).map_err(io(cache.display()))?.flatten() {
                if e.path().is_dir() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
            import_archives(&dir, archives)?;
            fs::write(dir.join(".done"), "").map_err(io("marker"))
        })?;
    Ok(root)
}

/// Runs a containerd of its own on `dir/root` just long enough to import `archives`.
fn import_archives(dir: &Path, archives: &[PathBuf]) -> Result<(), String> {
    // The state dir holds the socket: keep its path short.
    let state = PathBuf::from(format!("/run/ej-images-{}", std::process::id()));
    let sock = state.join("c.sock");
    fs::create_dir_all(dir.join("root")).map_err(io(dir.display()))?;
    let conf = dir.join("containerd.toml");
    fs::write(&conf, containerd_config()).map_err(io("config"))?;
    let mut c = Command::new("containerd");
    c.arg("--config")
        .arg(&conf)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(&state)
        .arg("--address")
        .arg(&sock);
    let mut child = spawn(c, &dir.join("containerd.log"), &[])?;
    let result = wait_for(Duration::from_secs(20), || sock.exists())
        .map_err(|_| format!("containerd for {} did not start", dir.display()))
        .and_then(|_| {
            for a in archives {
                info!(archive = %a.display(), "importing (once per machine)");
                run(Command::new("ctr")
                    .arg("--address")
                    .arg(&sock)
                    .args(["-n", "k8s.io", "images", "import"])
                    .arg(a))
                .map_err(|e| format!("importing {}: {e}", a.display()))?;
            }
            Ok(())
        });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let _ = fs::remove_dir_all(&state);
    result
}

/// `cp -al from/. to/`, then real copies of containerd's databases.
fn link_tree(from: &Path, to: &Path) -> Result<(), String> {
    fs::create_dir_all(to).map_err(io(to.display()))?;
    run(Command::new("cp")
        .arg("-al")
        .arg(format!("{}/.", from.display()))
        .arg(to))?;
    for db in CONTAINERD_DBS {
        let (src, dst) = (from.join(db), to.join(db));
        if src.exists() {
            let _ = fs::remove_file(&dst);
            fs::copy(&src, &dst).map_err(io(dst.display()))?;
        }
    }
    Ok(())
}

fn start_node(l: NodeLayout, net: NodeNet, p: &RestartParams) -> Result<Node, String> {
    let (bin, ca, domain, images, routes) = (&p.bin, &p.ca, &p.domain, &p.images, &p.routes);
    let t0 = Instant::now();
    for p in PRIVATE_PATHS {
        // What a machine keeps in tmpfs starts empty (a node started again is a reboot): a
        // stale containerd socket would look like a listening containerd.
        if p.starts_with("/run/") {
            let _ = fs::remove_dir_all(l.private_dir(p));
        }
        fs::create_dir_all(l.private_dir(p)).map_err(io(l.private_dir(p).display()))?;
        // The mount point must exist on the host too.
        fs::create_dir_all(p).map_err(io(p))?;
    }
    fs::write(
        l.private_dir("/etc/cni/net.d")
            .join("10-elasticjob.conflist"),
        cni_config(&l),
    )
    .map_err(io("CNI config"))?;
    make_cgroups(&l)?;
    let ns = |args: &[&str]| run(Command::new("ip").args(["-n", &net.netns]).args(args));
    for (cidr, via) in routes.iter().filter(|(c, _)| *c != l.pod_cidr) {
        ns(&["route", "replace", cidr, "via", &via.to_string()])?;
    }
    let sysctl = |k: &str| {
        run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", net.netns))
            .args(["sysctl", "-qw", k]))
    };
    sysctl("net.ipv4.ip_forward=1")?;
    // Pod-to-Service traffic answered by a pod on the same bridge must pass iptables to be
    // un-NATed (kube-proxy's requirement; kind sets the same).
    sysctl("net.bridge.bridge-nf-call-iptables=1")?;

    let script = l.file("holder.sh");
    fs::write(&script, holder_script(&l)).map_err(io("holder script"))?;
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", net.netns))
        .args([
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "sh",
        ])
        .arg(&script);
    let sys: Vec<PathBuf> = HIERARCHIES.iter().map(|h| l.system_cgroup(h)).collect();
    let holder = spawn(c, &l.log("holder"), &sys)?;
    let hpid = holder.id();
    let mut node = Node {
        layout: l.clone(),
        net,
        holder,
        daemons: Vec::new(),
        lost: false,
    };
    // The holder is ready when its host name is set (the last step before `sleep`).
    wait_for(Duration::from_secs(10), || {
        fs::read_link(format!("/proc/{hpid}/exe"))
            .map(|e| e.ends_with("sleep"))
            .unwrap_or(false)
    })
    .map_err(|_| {
        format!(
            "{}: node namespaces not ready; see {}",
            l.name,
            l.log("holder").display()
        )
    })?;

    let containerd_root = l.private_dir("/var/lib/containerd");
    if let Some(pre) = &p.preloaded
        && !containerd_root.join(CONTAINERD_DBS[0]).exists()
    {
        link_tree(pre, &containerd_root)?;
    }
    let conf = l.file("containerd.toml");
    fs::write(&conf, containerd_config()).map_err(io("containerd config"))?;
    let mut c = in_node(hpid, "containerd");
    c.arg("--config").arg(&conf);
    node.daemons.push(Daemon {
        name: "containerd".into(),
        child: spawn(c, &l.log("containerd"), &sys)?,
        log: l.log("containerd"),
    });
    let sock = l.private_dir("/run/containerd").join("containerd.sock");
    wait_for(Duration::from_secs(20), || sock.exists()).map_err(|_| {
        format!(
            "{}: containerd did not listen; see {}",
            l.name,
            l.log("containerd").display()
        )
    })?;
    for image in images {
        let mut c = in_node(hpid, "ctr");
        c.args(["-n", "k8s.io", "images", "import"]).arg(image);
        run(&mut c).map_err(|e| format!("{}: loading {}: {e}", l.name, image.display()))?;
    }

    let kubelet_conf = l.file("kubelet.yaml");
    fs::write(&kubelet_conf, kubelet_config(&l, ca, domain)).map_err(io("kubelet config"))?;
    let mut c = in_node(hpid, bin.join("kubelet"));
    c.arg("--config")
        .arg(&kubelet_conf)
        .arg("--kubeconfig")
        .arg(l.file("kubelet.kubeconfig"))
        .args([
            "--hostname-override",
            &l.name,
            "--node-ip",
            &l.ip.to_string(),
        ])
        .arg("--cert-dir")
        .arg(l.file("kubelet-pki"))
        .arg("--v=1");
    node.daemons.push(Daemon {
        name: "kubelet".into(),
        child: spawn(c, &l.log("kubelet"), &sys)?,
        log: l.log("kubelet"),
    });

    let proxy_conf = l.file("kube-proxy.yaml");
    fs::write(
        &proxy_conf,
        kube_proxy_config(&l, &l.file("kube-proxy.kubeconfig")),
    )
    .map_err(io("kube-proxy config"))?;
    let mut c = in_node(hpid, bin.join("kube-proxy"));
    c.arg("--config").arg(&proxy_conf);
    node.daemons.push(Daemon {
        name: "kube-proxy".into(),
        child: spawn(c, &l.log("kube-proxy"), &sys)?,
        log: l.log("kube-proxy"),
    });

    let mut c = in_node(hpid, bin.join("fake-gpu-plugin"));
    c.args(["--count", &l.gpus.to_string(), "--node", &l.name]);
    node.daemons.push(Daemon {
        name: "fake-gpu-plugin".into(),
        child: spawn(c, &l.log("fake-gpu-plugin"), &sys)?,
        log: l.log("fake-gpu-plugin"),
    });
    info!(node = %l.name, ip = %l.ip, pod_cidr = %l.pod_cidr, elapsed = ?t0.elapsed(), "node started");
    Ok(node)
}

fn wait_for(timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<(), ()> {
    let t = Instant::now();
    while !ok() {
        if t.elapsed() > timeout {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The node's subtree in every hierarchy, with `system/` for its daemons. cpuset needs its
/// cpus and mems set before anything may join.
fn make_cgroups(l: &NodeLayout) -> Result<(), String> {
    for h in HIERARCHIES {
        let leaf = l.system_cgroup(h);
        fs::create_dir_all(&leaf).map_err(io(leaf.display()))?;
        if h == "cpuset" {
            let root = PathBuf::from("/sys/fs/cgroup/cpuset");
            let mut dir = root.clone();
            for part in leaf.strip_prefix(&root).expect("under root").components() {
                let parent = dir.clone();
                dir.push(part);
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = fs::read_to_string(parent.join(f)).map_err(io(f))?;
                    fs::write(dir.join(f), v.trim()).map_err(io(dir.join(f).display()))?;
                }
            }
        }
    }
    Ok(())
}

/// Every process in the node's subtree (its daemons, shims and containers).
fn node_pids(l: &NodeLayout) -> Vec<i32> {
    let root = PathBuf::from(format!("/sys/fs/cgroup/pids{}", l.cgroup));
    let mut pids = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(s.lines().filter_map(|p| p.parse::<i32>().ok()));
        }
        if let Ok(rd) = fs::read_dir(&d) {
            stack.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    pids
}

/// Kills everything of the node at once: frozen first, so nothing forks or reacts meanwhile.
fn kill_node(n: &mut Node) {
    let freezer = PathBuf::from(format!("/sys/fs/cgroup/freezer{}", n.layout.cgroup));
    let _ = fs::write(freezer.join("freezer.state"), "FROZEN");
    for _ in 0..3 {
        for pid in node_pids(&n.layout) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = fs::write(freezer.join("freezer.state"), "THAWED");
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in &mut n.daemons {
        let _ = d.child.kill();
        let _ = d.child.wait();
    }
    let _ = n.holder.kill();
    let _ = n.holder.wait();
    let t = Instant::now();
    while !node_pids(&n.layout).is_empty() && t.elapsed() < Duration::from_secs(5) {
        for pid in node_pids(&n.layout) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    n.lost = true;
}

/// Removes the node's cgroup directories, deepest first (they must be empty of processes).
fn remove_cgroups(l: &NodeLayout) {
    for h in CLEANUP_HIERARCHIES {
        let root = PathBuf::from(format!("/sys/fs/cgroup/{h}{}", l.cgroup));
        let mut dirs = Vec::new();
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = fs::read_dir(&d) {
                stack.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            if let Err(e) = fs::remove_dir(d)
                && d.exists()
            {
                warn!(dir = %d.display(), "cannot remove cgroup: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> NodeLayout {
        NodeLayout {
            name: "node-1".into(),
            index: 1,
            ip: Ipv4Addr::new(10, 7, 8, 3),
            host_ip: Ipv4Addr::new(10, 7, 8, 1),
            pod_cidr: "10.201.1.0/24".into(),
            cluster_cidr: "10.201.0.0/16".into(),
            dir: "/s/nodes/node-1".into(),
            cgroup: "/elasticjob/abc123/node-1".into(),
            gpus: 4,
        }
    }

    #[test]
    fn kubelet_config_points_at_the_node_and_its_cgroup_root() {
        let v: Value = serde_json::from_str(&kubelet_config(
            &layout(),
            Path::new("/s/ca.crt"),
            "cluster.local",
        ))
        .unwrap();
        assert_eq!(v["address"], "10.7.8.3");
        assert_eq!(v["cgroupRoot"], "/elasticjob/abc123/node-1");
        assert_eq!(v["clusterDNS"][0], "10.96.0.10");
        assert_eq!(v["failCgroupV1"], false);
        assert_eq!(v["authentication"]["x509"]["clientCAFile"], "/s/ca.crt");
        assert_eq!(v["authentication"]["anonymous"]["enabled"], false);
    }

    #[test]
    fn cni_config_is_the_node_pod_cidr_without_masquerade() {
        let v: Value = serde_json::from_str(&cni_config(&layout())).unwrap();
        let b = &v["plugins"][0];
        assert_eq!(b["ipam"]["ranges"][0][0]["subnet"], "10.201.1.0/24");
        assert_eq!(b["ipMasq"], false);
        assert_eq!(b["isGateway"], true);
    }

    #[test]
    fn holder_mounts_every_private_path_from_the_node_dir() {
        let s = holder_script(&layout());
        for p in PRIVATE_PATHS {
            let want = format!(
                "mount --bind '/s/nodes/node-1/fs/{}' '{p}'",
                p[1..].replace('/', "_")
            );
            assert!(s.contains(&want), "{want} in\n{s}");
        }
        assert!(s.starts_with("set -e\nmount --make-rprivate /\n"));
        assert!(s.ends_with("hostname 'node-1'\nexec sleep infinity\n"));
    }

    #[test]
    fn containerd_uses_the_local_pause_image_and_may_not_lower_oom_scores() {
        let c = containerd_config();
        assert!(c.contains(&format!("sandbox_image = \"{PAUSE_IMAGE}\"")));
        assert!(c.contains("restrict_oom_score_adj = true"));
    }

    #[test]
    fn running_container_ids_skip_finished_and_waiting_ones() {
        let pod = json!({"status": {
            "initContainerStatuses": [{"containerID": "containerd://aaa", "state": {"terminated": {}}}],
            "containerStatuses": [
                {"containerID": "containerd://bbb", "state": {"running": {}}},
                {"state": {"waiting": {}}}]}});
        assert_eq!(running_container_ids(&pod), vec!["bbb".to_string()]);
    }

    #[test]
    fn veth_peer_from_ip_link_output() {
        let pod_side = "3: eth0@if12: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue";
        assert_eq!(peer_ifindex(pod_side), Some(12));
        let node_side =
            "1: lo: <LOOPBACK,UP> mtu 65536\n12: veth9a8b7c6d@if3: <BROADCAST> mtu 1500\n";
        assert_eq!(
            link_name_by_index(node_side, 12).as_deref(),
            Some("veth9a8b7c6d")
        );
        assert_eq!(link_name_by_index(node_side, 7), None);
    }

    #[test]
    fn ready_nodes_reads_the_ready_condition() {
        let ready = json!([{"type": "Ready", "status": "True"}]);
        let list = json!({"items": [
            {"metadata": {"name": "a"}, "status": {"conditions": ready,
                "allocatable": {"nvidia.com/gpu": "4"}}},
            {"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            {"metadata": {"name": "c"}, "status": {}},
            {"metadata": {"name": "d"}, "status": {"conditions": ready}}]});
        assert_eq!(ready_nodes(&list, 4), vec!["a".to_string()]);
        assert_eq!(
            ready_nodes(&list, 0),
            vec!["a".to_string(), "d".to_string()]
        );
    }

    #[test]
    fn corefile_binds_the_host_and_serves_the_cluster_domain() {
        let c = corefile(Ipv4Addr::new(10, 7, 8, 1), "cluster.local", Path::new("/k"));
        assert!(c.contains("bind 10.7.8.1"));
        assert!(c.contains("kubernetes cluster.local in-addr.arpa"));
        assert!(c.contains("kubeconfig /k"));
        assert!(c.contains("health 10.7.8.1:8080"));
    }
}
