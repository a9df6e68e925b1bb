//! A real Kubernetes cluster on one machine, without Docker.
//!
//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler from the binaries that
//! `tests/cluster/provision.sh` builds from their Go modules (`components/`), each a supervised
//! child process on ports picked per cluster, with a CA and certs generated here (rcgen), a
//! static token file, RBAC + Node authorization and service-account keys; then CoreDNS and real
//! nodes ([`nodes`]: a kubelet with its own containerd and runc per node, in its own namespaces).
//!
//! The parts, each usable on its own:
//! - [`ClusterConfig`] + [`Layout`] → [`commands`]: the command line of every component as plain
//!   data ([`ComponentCommand`]), so tests can check flags without starting anything;
//! - [`pki`]: the CA, serving and client certs, service-account keys;
//! - [`kubeconfig`] and [`TokenFile`]: credentials for the admin, the components, the nodes,
//!   test users;
//! - [`Cluster`]: starts the components and the nodes in order, waits for readiness, stops them
//!   (SIGTERM, grace, SIGKILL to the whole process group), and [`down`] for a cluster started
//!   elsewhere; [`control`]: faults (`cluster fault`);
//! - [`kubectl`]: a kubectl runner for tests and tools; [`testing`]: the provisioned binaries
//!   and the images, for the cluster-backed tests of every crate.

mod api;
pub mod control;
pub mod kubeconfig;
pub mod kubectl;
pub mod nodes;
pub mod pki;
pub mod podnet;
mod probe;
mod supervise;
pub mod testing;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use supervise::{Cluster, StateFile, down, processes_mentioning};

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation failed ({what}): {source}")]
    Cert {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("binary {path} not found or not executable: run tests/cluster/provision.sh first")]
    MissingBinary { path: PathBuf },
    #[error("{component} exited during startup ({status}); last lines of {log}:\n{tail}")]
    ComponentExited {
        component: Component,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{component} not ready after {waited:?} ({last}); last lines of {log}:\n{tail}")]
    NotReady {
        component: Component,
        waited: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "a cluster is already running from {dir} (pid {pid}); stop it with `cluster down --dir {dir}`"
    )]
    AlreadyRunning { dir: PathBuf, pid: i32 },
    #[error("no cluster state in {0} (was `cluster up` run with this --dir?)")]
    NoState(PathBuf),
    #[error("invalid config: {0}")]
    Config(String),
    #[error("nodes: {0}")]
    Nodes(String),
    #[error("processes still alive after shutdown: {0:?}")]
    Leftover(Vec<i32>),
}

impl ClusterError {
    /// A component could not bind its port (taken between picking and binding).
    pub fn is_port_clash(&self) -> bool {
        match self {
            ClusterError::ComponentExited { tail, .. } | ClusterError::NotReady { tail, .. } => {
                tail.contains("address already in use")
            }
            _ => false,
        }
    }
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// The processes of a cluster, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::Etcd,
        Component::KubeApiserver,
        Component::KubeControllerManager,
        Component::KubeScheduler,
    ];

    /// Binary name in the bin dir, also the log file stem.
    pub fn binary(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.binary())
    }
}

/// Loopback ports of one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub controller_manager: u16,
    pub scheduler: u16,
}

impl Ports {
    /// Picks free loopback ports (distinct: all listeners are held until every port is chosen).
    /// There is a window between closing them and the components binding; a component that
    /// loses the race fails to start with "address already in use" and `Cluster::start` says so.
    pub fn pick() -> Result<Ports> {
        let listeners = (0..5)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(io_err("binding 127.0.0.1:0 to pick free ports"))?;
        let p = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(io_err("reading picked port"))?;
        Ok(Ports {
            etcd_client: p[0],
            etcd_peer: p[1],
            apiserver: p[2],
            controller_manager: p[3],
            scheduler: p[4],
        })
    }
}

/// What a cluster is: where it lives, which binaries, which ports and ranges.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Short name, used for the kubeconfig context and etcd member name.
    pub name: String,
    /// State dir: certs, tokens, kubeconfigs, etcd data, logs. One per cluster.
    pub dir: PathBuf,
    /// Where provision.sh put etcd, kube-apiserver, ... (`<cache>/cluster/bin`).
    pub bin_dir: PathBuf,
    pub ports: Ports,
    /// The address the apiserver binds and advertises: 127.0.0.1, or with a pod network the
    /// bridge's address (set by [`Cluster::start`]), which pods reach as
    /// `KUBERNETES_SERVICE_HOST` and the host reaches as one of its own addresses.
    pub api_host: Ipv4Addr,
    /// Service cluster IP range (virtual: nothing routes it in phase 1).
    pub service_cidr: String,
    pub cluster_domain: String,
    /// SIGTERM → SIGKILL grace per component at shutdown.
    pub grace: Duration,
    /// How long to wait for each component to become ready.
    pub ready_timeout: Duration,
    /// klog `--v` of the Kubernetes components.
    pub verbosity: u8,
    /// The nodes (`count: 0`: a control plane alone).
    pub nodes: nodes::NodesConfig,
}

impl ClusterConfig {
    /// Defaults with freshly picked ports.
    pub fn new(dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .unwrap_or("local")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        Ok(ClusterConfig {
            name,
            dir,
            bin_dir: bin_dir.into(),
            ports: Ports::pick()?,
            api_host: Ipv4Addr::LOCALHOST,
            service_cidr: "10.96.0.0/16".into(),
            cluster_domain: "cluster.local".into(),
            grace: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(60),
            verbosity: 1,
            nodes: nodes::NodesConfig::default(),
        })
    }

    pub fn layout(&self) -> Layout {
        Layout::new(&self.dir)
    }

    pub fn api_url(&self) -> String {
        format!("https://{}:{}", self.api_host, self.ports.apiserver)
    }

    /// How long after its last heartbeat a node is marked NotReady: three heartbeats.
    pub fn node_grace_period(&self) -> Duration {
        nodes::HEARTBEAT * 3
    }

    pub fn api_addr(&self) -> std::net::SocketAddr {
        (self.api_host, self.ports.apiserver).into()
    }

    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.etcd_client)
    }

    pub fn service_account_issuer(&self) -> String {
        format!("https://kubernetes.default.svc.{}", self.cluster_domain)
    }

    /// First address of the service range: the `kubernetes` service's cluster IP, which must be
    /// in the apiserver's serving cert.
    pub fn kubernetes_service_ip(&self) -> Result<Ipv4Addr> {
        let (net, prefix) = self.service_cidr.split_once('/').ok_or_else(|| {
            ClusterError::Config(format!(
                "service CIDR {:?} has no /prefix",
                self.service_cidr
            ))
        })?;
        let net: Ipv4Addr = net.parse().map_err(|_| {
            ClusterError::Config(format!(
                "service CIDR {:?}: bad IPv4 address",
                self.service_cidr
            ))
        })?;
        let prefix: u32 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=30).contains(p))
            .ok_or_else(|| {
                ClusterError::Config(format!(
                    "service CIDR {:?}: prefix must be 1..=30",
                    self.service_cidr
                ))
            })?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Ipv4Addr::from((u32::from(net) & mask) + 1))
    }
}

/// Every file of a cluster's state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        Layout {
            dir: dir.to_path_buf(),
        }
    }
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.pki().join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.pki().join("ca.key")
    }
    /// `<pki>/<name>.crt`, `<pki>/<name>.key`.
    pub fn cert_pair(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.pki().join(format!("{name}.crt")),
            self.pki().join(format!("{name}.key")),
        )
    }
    pub fn sa_key(&self) -> PathBuf {
        self.pki().join("sa.key")
    }
    pub fn sa_pub(&self) -> PathBuf {
        self.pki().join("sa.pub")
    }
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("tokens.csv")
    }
    /// The admin kubeconfig (`export KUBECONFIG=...`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    pub fn component_kubeconfig(&self, c: Component) -> PathBuf {
        self.dir.join(format!("{}.kubeconfig", c.binary()))
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn log(&self, c: Component) -> PathBuf {
        self.logs().join(format!("{}.log", c.binary()))
    }
    /// Scratch dir of a component (`--cert-dir` for its self-signed serving cert).
    pub fn run_dir(&self, c: Component) -> PathBuf {
        self.dir.join("run").join(c.binary())
    }
    /// Written by `cluster up` once ready: pids and ports, read by `cluster down`.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("cluster.json")
    }
}

/// One user of the static token file (`--token-auth-file`: `token,user,uid,"group1,group2"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUser {
    pub token: String,
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// The static tokens of a cluster: `admin` (system:masters), `e2e-unprivileged` (no RBAC binding
/// at all: requests it makes are refused with 403), CoreDNS's and kube-proxy's users, and a
/// `system:node:<node>` user in `system:nodes` per node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFile {
    pub users: Vec<TokenUser>,
}

pub const ADMIN_USER: &str = "admin";
pub const UNPRIVILEGED_USER: &str = "e2e-unprivileged";

impl TokenFile {
    /// Fresh random tokens for the standard users.
    pub fn generate() -> Result<Self> {
        Ok(TokenFile {
            users: vec![
                TokenUser {
                    token: random_token()?,
                    user: ADMIN_USER.into(),
                    uid: "uid-admin".into(),
                    groups: vec!["system:masters".into()],
                },
                TokenUser {
                    token: random_token()?,
                    user: UNPRIVILEGED_USER.into(),
                    uid: "uid-e2e-unprivileged".into(),
                    groups: vec![],
                },
                TokenUser {
                    token: random_token()?,
                    user: nodes::COREDNS_USER.into(),
                    uid: "uid-local-cluster-dns".into(),
                    groups: vec![],
                },
                TokenUser {
                    token: random_token()?,
                    user: nodes::KUBE_PROXY_USER.into(),
                    uid: "uid-kube-proxy".into(),
                    groups: vec![],
                },
            ],
        })
    }

    /// Adds a `system:node:<name>` user in `system:nodes` per node (the Node authorizer and
    /// NodeRestriction then limit it to its own Node, Lease and pods).
    pub fn add_nodes(&mut self, nodes: &[String]) -> Result<()> {
        for n in nodes {
            self.users.push(TokenUser {
                token: random_token()?,
                user: node_user(n),
                uid: format!("uid-node-{n}"),
                groups: vec!["system:nodes".into()],
            });
        }
        Ok(())
    }

    pub fn token_of(&self, user: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|u| u.user == user)
            .map(|u| u.token.as_str())
    }

    /// The CSV the apiserver reads.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for u in &self.users {
            s.push_str(&format!("{},{},{}", u.token, u.user, u.uid));
            if !u.groups.is_empty() {
                s.push_str(&format!(",\"{}\"", u.groups.join(",")));
            }
            s.push('\n');
        }
        s
    }

    /// Reads back a file written by [`TokenFile::render`].
    pub fn parse(text: &str) -> Result<Self> {
        let mut users = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.splitn(4, ',');
            let (Some(token), Some(user), Some(uid)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(ClusterError::Config(format!(
                    "bad token file line {line:?}"
                )));
            };
            let groups = parts
                .next()
                .map(|g| g.trim_matches('"').split(',').map(str::to_string).collect())
                .unwrap_or_default();
            users.push(TokenUser {
                token: token.into(),
                user: user.into(),
                uid: uid.into(),
                groups,
            });
        }
        Ok(TokenFile { users })
    }
}

/// The user name of a node's kubelet.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

fn random_token() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A component's command line, as plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentCommand {
    pub component: Component,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// stdout and stderr go here.
    pub log: PathBuf,
}

impl ComponentCommand {
    /// The value of `--flag=value`, if present.
    pub fn flag(&self, name: &str) -> Option<&str> {
        let prefix = format!("--{name}=");
        self.args
            .iter()
            .find_map(|a| a.strip_prefix(prefix.as_str()))
    }
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob`: where everything slow to make is kept.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        })
        .join("elasticjob")
}

/// The command lines of all components, in start order.
pub mod commands {
    use super::*;

    fn arg(k: &str, v: impl std::fmt::Display) -> String {
        format!("--{k}={v}")
    }
    fn path(p: PathBuf) -> String {
        p.display().to_string()
    }

    pub fn etcd(cfg: &ClusterConfig) -> ComponentCommand {
        let l = cfg.layout();
        let peer = format!("http://127.0.0.1:{}", cfg.ports.etcd_peer);
        ComponentCommand {
            component: Component::Etcd,
            program: cfg.bin_dir.join("etcd"),
            args: vec![
                arg("name", &cfg.name),
                arg("data-dir", path(l.etcd_data())),
                arg("listen-client-urls", cfg.etcd_url()),
                arg("advertise-client-urls", cfg.etcd_url()),
                arg("listen-peer-urls", &peer),
                arg("initial-advertise-peer-urls", &peer),
                arg("initial-cluster", format!("{}={peer}", cfg.name)),
                arg("initial-cluster-state", "new"),
                arg("initial-cluster-token", format!("elasticjob-{}", cfg.name)),
                // Test cluster: no metrics listener, small quota, fast snapshots.
                arg("quota-backend-bytes", 1u64 << 30),
                arg("snapshot-count", 10000),
                arg("logger", "zap"),
                arg("log-level", "warn"),
            ],
            log: l.log(Component::Etcd),
        }
    }

    pub fn apiserver(cfg: &ClusterConfig) -> ComponentCommand {
        let l = cfg.layout();
        let (crt, key) = l.cert_pair("apiserver");
        let (kcrt, kkey) = l.cert_pair("apiserver-kubelet-client");
        let (pcrt, pkey) = l.cert_pair("front-proxy-client");
        ComponentCommand {
            component: Component::KubeApiserver,
            program: cfg.bin_dir.join("kube-apiserver"),
            args: vec![
                arg("etcd-servers", cfg.etcd_url()),
                arg("bind-address", cfg.api_host),
                arg("advertise-address", cfg.api_host),
                arg("secure-port", cfg.ports.apiserver),
                arg("tls-cert-file", path(crt)),
                arg("tls-private-key-file", path(key)),
                arg("client-ca-file", path(l.ca_cert())),
                arg("token-auth-file", path(l.token_file())),
                arg("authorization-mode", "Node,RBAC"),
                arg("enable-admission-plugins", "NodeRestriction"),
                arg("service-account-issuer", cfg.service_account_issuer()),
                arg("service-account-key-file", path(l.sa_pub())),
                arg("service-account-signing-key-file", path(l.sa_key())),
                arg("service-cluster-ip-range", &cfg.service_cidr),
                arg("allow-privileged", true),
                // The apiserver's client cert for the kubelets (`kubectl logs`, `exec`). Without
                // --kubelet-certificate-authority it does not verify a kubelet's self-signed
                // serving cert. Nodes report their bridge address as InternalIP and the
                // hostname `node-<i>`, which resolves nowhere: InternalIP first (the default
                // order starts with Hostname).
                arg("kubelet-client-certificate", path(kcrt)),
                arg("kubelet-client-key", path(kkey)),
                arg("kubelet-preferred-address-types", "InternalIP,Hostname"),
                arg("requestheader-client-ca-file", path(l.ca_cert())),
                arg("requestheader-allowed-names", "front-proxy-client"),
                arg("requestheader-username-headers", "X-Remote-User"),
                arg("requestheader-group-headers", "X-Remote-Group"),
                arg("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
                arg("proxy-client-cert-file", path(pcrt)),
                arg("proxy-client-key-file", path(pkey)),
                // Webhooks and aggregated APIs (Kueue's) are called at their endpoints' pod IPs,
                // which this host routes, not at Service ClusterIPs: kube-proxy runs in the
                // nodes' network namespaces, not beside the apiserver.
                arg("enable-aggregator-routing", true),
                arg("cert-dir", path(l.run_dir(Component::KubeApiserver))),
                // The `kubernetes` Endpoints may not hold a loopback address (validation refuses
                // 127.0.0.0/8): without a pod network the apiserver does not manage it.
                arg(
                    "endpoint-reconciler-type",
                    if cfg.api_host.is_loopback() {
                        "none"
                    } else {
                        "lease"
                    },
                ),
                arg("profiling", false),
                arg("v", cfg.verbosity),
            ],
            log: l.log(Component::KubeApiserver),
        }
    }

    pub fn controller_manager(cfg: &ClusterConfig) -> ComponentCommand {
        let l = cfg.layout();
        let kc = path(l.component_kubeconfig(Component::KubeControllerManager));
        ComponentCommand {
            component: Component::KubeControllerManager,
            program: cfg.bin_dir.join("kube-controller-manager"),
            args: vec![
                arg("kubeconfig", &kc),
                arg("authentication-kubeconfig", &kc),
                arg("authorization-kubeconfig", &kc),
                arg("bind-address", "127.0.0.1"),
                arg("secure-port", cfg.ports.controller_manager),
                arg(
                    "cert-dir",
                    path(l.run_dir(Component::KubeControllerManager)),
                ),
                arg("leader-elect", false),
                // All default controllers: garbagecollector, serviceaccount-token, ...
                arg("controllers", "*"),
                arg("enable-garbage-collector", true),
                arg("use-service-account-credentials", true),
                arg("service-account-private-key-file", path(l.sa_key())),
                arg("root-ca-file", path(l.ca_cert())),
                arg("cluster-signing-cert-file", path(l.ca_cert())),
                arg("cluster-signing-key-file", path(l.ca_key())),
                arg("cluster-name", &cfg.name),
                // A lost node turns NotReady within seconds, not 40 s (the kubelets renew their
                // Lease every `nodes::HEARTBEAT`).
                arg("node-monitor-period", "2s"),
                arg(
                    "node-monitor-grace-period",
                    cfg.node_grace_period().as_secs().to_string() + "s",
                ),
                arg("service-cluster-ip-range", &cfg.service_cidr),
                arg("profiling", false),
                arg("v", cfg.verbosity),
            ],
            log: l.log(Component::KubeControllerManager),
        }
    }

    pub fn scheduler(cfg: &ClusterConfig) -> ComponentCommand {
        let l = cfg.layout();
        let kc = path(l.component_kubeconfig(Component::KubeScheduler));
        ComponentCommand {
            component: Component::KubeScheduler,
            program: cfg.bin_dir.join("kube-scheduler"),
            args: vec![
                arg("kubeconfig", &kc),
                arg("authentication-kubeconfig", &kc),
                arg("authorization-kubeconfig", &kc),
                arg("bind-address", "127.0.0.1"),
                arg("secure-port", cfg.ports.scheduler),
                arg("cert-dir", path(l.run_dir(Component::KubeScheduler))),
                arg("leader-elect", false),
                arg("profiling", false),
                arg("v", cfg.verbosity),
            ],
            log: l.log(Component::KubeScheduler),
        }
    }

    /// All four, in start order.
    pub fn all(cfg: &ClusterConfig) -> Vec<ComponentCommand> {
        vec![
            etcd(cfg),
            apiserver(cfg),
            controller_manager(cfg),
            scheduler(cfg),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ClusterConfig {
        let mut c = ClusterConfig::new("/tmp/x/My_Cluster", "/opt/bin").unwrap();
        c.ports = Ports {
            etcd_client: 1001,
            etcd_peer: 1002,
            apiserver: 1003,
            controller_manager: 1004,
            scheduler: 1005,
        };
        c
    }

    #[test]
    fn name_from_dir_is_dns_safe() {
        assert_eq!(cfg().name, "my-cluster");
    }

    #[test]
    fn picked_ports_are_distinct_and_nonzero() {
        let p = Ports::pick().unwrap();
        let mut v = vec![
            p.etcd_client,
            p.etcd_peer,
            p.apiserver,
            p.controller_manager,
            p.scheduler,
        ];
        assert!(v.iter().all(|&x| x != 0));
        v.sort();
        v.dedup();
        assert_eq!(v.len(), 5);
    }

    #[test]
    fn kubernetes_service_ip_is_first_of_range() {
        let mut c = cfg();
        assert_eq!(
            c.kubernetes_service_ip().unwrap(),
            Ipv4Addr::new(10, 96, 0, 1)
        );
        c.service_cidr = "10.20.30.40/24".into();
        assert_eq!(
            c.kubernetes_service_ip().unwrap(),
            Ipv4Addr::new(10, 20, 30, 1)
        );
        c.service_cidr = "10.0.0.0".into();
        assert!(matches!(
            c.kubernetes_service_ip(),
            Err(ClusterError::Config(_))
        ));
    }

    #[test]
    fn etcd_listens_on_loopback_ports_of_the_config() {
        let e = commands::etcd(&cfg());
        assert_eq!(e.program, PathBuf::from("/opt/bin/etcd"));
        assert_eq!(e.flag("listen-client-urls"), Some("http://127.0.0.1:1001"));
        assert_eq!(e.flag("listen-peer-urls"), Some("http://127.0.0.1:1002"));
        assert_eq!(
            e.flag("initial-cluster"),
            Some("my-cluster=http://127.0.0.1:1002")
        );
        assert_eq!(e.flag("data-dir"), Some("/tmp/x/My_Cluster/etcd"));
    }

    #[test]
    fn apiserver_is_tls_token_rbac_node_on_loopback() {
        let a = commands::apiserver(&cfg());
        assert_eq!(a.flag("secure-port"), Some("1003"));
        // Kubernetes ≥ 1.24 has no insecure port (nor its flag) to turn off.
        assert_eq!(a.flag("insecure-port"), None);
        assert_eq!(a.flag("bind-address"), Some("127.0.0.1"));
        assert_eq!(a.flag("advertise-address"), Some("127.0.0.1"));
        assert_eq!(a.flag("etcd-servers"), Some("http://127.0.0.1:1001"));
        assert_eq!(a.flag("authorization-mode"), Some("Node,RBAC"));
        assert_eq!(
            a.flag("token-auth-file"),
            Some("/tmp/x/My_Cluster/tokens.csv")
        );
        assert_eq!(
            a.flag("client-ca-file"),
            Some("/tmp/x/My_Cluster/pki/ca.crt")
        );
        assert_eq!(
            a.flag("service-account-issuer"),
            Some("https://kubernetes.default.svc.cluster.local")
        );
        assert_eq!(
            a.flag("service-account-signing-key-file"),
            Some("/tmp/x/My_Cluster/pki/sa.key")
        );
        assert_eq!(a.flag("service-cluster-ip-range"), Some("10.96.0.0/16"));
        assert_eq!(
            a.flag("kubelet-preferred-address-types"),
            Some("InternalIP,Hostname")
        );
        assert_eq!(
            a.flag("kubelet-client-certificate"),
            Some("/tmp/x/My_Cluster/pki/apiserver-kubelet-client.crt")
        );
    }

    #[test]
    fn controller_manager_and_scheduler_bind_loopback_without_insecure_ports() {
        let c = cfg();
        let cm = commands::controller_manager(&c);
        assert_eq!(cm.flag("secure-port"), Some("1004"));
        // Kubernetes ≥ 1.24 has no insecure port (nor its flag) to turn off.
        assert_eq!(cm.flag("port"), None);
        assert_eq!(cm.flag("bind-address"), Some("127.0.0.1"));
        assert_eq!(cm.flag("enable-garbage-collector"), Some("true"));
        assert_eq!(
            cm.flag("service-account-private-key-file"),
            Some("/tmp/x/My_Cluster/pki/sa.key")
        );
        assert_eq!(
            cm.flag("root-ca-file"),
            Some("/tmp/x/My_Cluster/pki/ca.crt")
        );
        assert_eq!(
            cm.flag("kubeconfig"),
            Some("/tmp/x/My_Cluster/kube-controller-manager.kubeconfig")
        );
        let s = commands::scheduler(&c);
        assert_eq!(s.flag("secure-port"), Some("1005"));
        assert_eq!(s.flag("port"), None);
        assert_eq!(s.flag("bind-address"), Some("127.0.0.1"));
        assert_eq!(
            s.flag("kubeconfig"),
            Some("/tmp/x/My_Cluster/kube-scheduler.kubeconfig")
        );
        let all = commands::all(&c);
        assert_eq!(
            all.iter().map(|c| c.component).collect::<Vec<_>>(),
            Component::ALL.to_vec()
        );
    }

    #[test]
    fn no_component_listens_beyond_loopback() {
        for c in commands::all(&cfg()) {
            for a in &c.args {
                assert!(!a.contains("0.0.0.0"), "{}: {a}", c.component);
                if a.contains("://") {
                    assert!(
                        a.contains("://127.0.0.1:") || a.contains("kubernetes.default.svc"),
                        "{}: {a}",
                        c.component
                    );
                }
            }
        }
    }

    #[test]
    fn port_clash_is_recognised_from_the_log_tail() {
        let e = |tail: &str| ClusterError::ComponentExited {
            component: Component::Etcd,
            status: "exit status: 1".into(),
            log: "/x".into(),
            tail: tail.into(),
        };
        assert!(e("listen tcp 127.0.0.1:4001: bind: address already in use").is_port_clash());
        assert!(!e("some other failure").is_port_clash());
        assert!(!ClusterError::NoState("/x".into()).is_port_clash());
    }

    #[test]
    fn token_file_round_trips_and_has_admin_and_unprivileged() {
        let t = TokenFile::generate().unwrap();
        let text = t.render();
        assert!(
            text.contains(",admin,uid-admin,\"system:masters\"\n"),
            "{text}"
        );
        assert_eq!(TokenFile::parse(&text).unwrap(), t);
        assert_eq!(t.token_of(ADMIN_USER).unwrap().len(), 48);
        assert_ne!(t.token_of(ADMIN_USER), t.token_of(UNPRIVILEGED_USER));
    }
}
