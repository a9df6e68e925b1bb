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
//! The parts: `config` renders every file a node's daemons read as pure functions over its
//! [`NodeLayout`]; `process` spawns daemons into a node's namespaces and cgroup and kills
//! everything of a node; `images` loads images; `faults` does what `cluster fault` asks;
//! this module starts, watches and stops the nodes and CoreDNS ([`RealNodes`]).

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracing::info;

use crate::api::Api;
use crate::kubeconfig::{self, Credential};
use crate::podnet::{ClusterNetwork, NodeNet};
use crate::{ClusterConfig, TokenFile};

mod config;
mod faults;
mod images;
mod process;

pub use config::*;
pub use faults::{link_name_by_index, peer_ifindex, running_container_ids};
pub use images::preloaded_root;
use images::*;
use process::*;

/// How many nodes, and what each has.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodesConfig {
    /// `node-0` … `node-<count-1>` (0: no nodes, a control plane alone).
    pub count: u32,
    /// Fake `nvidia.com/gpu` devices per node (the device plugin's `--count`), and as many of
    /// each other [`FAKE_ACCELERATORS`].
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
        let t = Instant::now();
        let (images, preloaded) = tokio::task::spawn_blocking(move || prepare_images(archives))
            .await
            .map_err(|e| e.to_string())??;
        info!(elapsed = ?t.elapsed(), ?preloaded, "images ready for the nodes");
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

/// The accelerators every node advertises, `gpus_per_node` of each, and the name of the fake
/// device plugin's process (and log) for each. The other vendors' devices let the e2e suite test
/// `nprocPerNode: auto` for them; jobs asking for `nvidia.com/gpu` are unaffected by them.
pub const FAKE_ACCELERATORS: [(&str, &str); 3] = [
    ("nvidia.com/gpu", "fake-gpu-plugin"),
    ("amd.com/gpu", "fake-amd-gpu-plugin"),
    ("habana.ai/gaudi", "fake-gaudi-plugin"),
];

/// Names of the nodes whose Ready condition is True and that advertise `gpus` allocatable of
/// each of [`FAKE_ACCELERATORS`] (the device plugins register a moment after the kubelet is
/// Ready; a job created in between would be unschedulable for a while).
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
            gpus == 0
                || FAKE_ACCELERATORS.iter().all(|(resource, _)| {
                    n["status"]["allocatable"][resource] == gpus.to_string().as_str()
                })
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect()
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

    for (resource, daemon) in FAKE_ACCELERATORS {
        let mut c = in_node(hpid, bin.join("fake-gpu-plugin"));
        c.args(["--count", &l.gpus.to_string(), "--node", &l.name])
            .args(["--resource", resource]);
        node.daemons.push(Daemon {
            name: daemon.into(),
            child: spawn(c, &l.log(daemon), &sys)?,
            log: l.log(daemon),
        });
    }
    info!(node = %l.name, ip = %l.ip, pod_cidr = %l.pod_cidr, elapsed = ?t0.elapsed(), "node started");
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_nodes_reads_the_ready_condition() {
        let ready = json!([{"type": "Ready", "status": "True"}]);
        let list = json!({"items": [
            {"metadata": {"name": "a"}, "status": {"conditions": ready,
                "allocatable": {"nvidia.com/gpu": "4", "amd.com/gpu": "4", "habana.ai/gaudi": "4"}}},
            {"metadata": {"name": "a2"}, "status": {"conditions": ready,
                "allocatable": {"nvidia.com/gpu": "4"}}},
            {"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            {"metadata": {"name": "c"}, "status": {}},
            {"metadata": {"name": "d"}, "status": {"conditions": ready}}]});
        assert_eq!(ready_nodes(&list, 4), vec!["a".to_string()]);
        assert_eq!(
            ready_nodes(&list, 0),
            vec!["a".to_string(), "a2".to_string(), "d".to_string()]
        );
    }
}
