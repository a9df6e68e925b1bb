//! What a node is made of, as plain data: its [`NodeLayout`] (names, addresses, paths, cgroup)
//! and every file its daemons read (containerd, CNI, kubelet, kube-proxy, the holder's mounts,
//! CoreDNS), rendered by pure functions.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

/// The kubelet's root dir (its default `--root-dir`).
const KUBELET_ROOT: &str = "/var/lib/kubelet";

/// Paths the kubelet, containerd and the CNI plugins hard-code, each bind-mounted from a
/// per-node directory (named after the path) inside the node's mount namespace.
pub(super) const PRIVATE_PATHS: [&str; 8] = [
    "/run/containerd",
    "/var/lib/containerd",
    KUBELET_ROOT,
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

    /// The per-node directory behind one of `PRIVATE_PATHS`.
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
///
/// The kubelet's root dir is made a shared mount here, as a real node's (systemd mounts / shared)
/// and kind's (its entrypoint) are. On a private one the kubelet bind-mounts the dir over itself
/// to make it shared, while its pod-resources server is creating its socket there (a temporary
/// file renamed into place): a rename across the new mount fails with EXDEV ("invalid
/// cross-device link") and the kubelet exits, at random, one start in a few.
pub fn holder_script(n: &NodeLayout) -> String {
    let mut s = String::from("set -e\nmount --make-rprivate /\n");
    for p in PRIVATE_PATHS {
        s += &format!("mount --bind '{}' '{p}'\n", n.private_dir(p).display());
    }
    s += &format!("mount --make-rshared '{KUBELET_ROOT}'\n");
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
        assert!(s.ends_with(
            "mount --make-rshared '/var/lib/kubelet'\nhostname 'node-1'\nexec sleep infinity\n"
        ));
    }

    #[test]
    fn containerd_uses_the_local_pause_image_and_may_not_lower_oom_scores() {
        let c = containerd_config();
        assert!(c.contains(&format!("sandbox_image = \"{PAUSE_IMAGE}\"")));
        assert!(c.contains("restrict_oom_score_adj = true"));
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
