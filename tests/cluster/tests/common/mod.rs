//! Helpers shared by the end-to-end tests: provisioning, the test image, clusters on real nodes,
//! kubectl (`local_cluster::kubectl`), waiting, and the checks that a cluster left nothing
//! behind (processes, network objects, mounts, cgroups).
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use local_cluster::kubectl::{Kubectl, stderr, stdout};
use local_cluster::{Cluster, ClusterConfig, processes_mentioning};
use serde_json::{Value, json};

/// The test image: Debian's static busybox, `FROM scratch` (sh, nc, nslookup, httpd, ...).
pub const BUSYBOX: &str = "localhost/elasticjob/busybox:test";
/// What the image is built from; a change rebuilds the cached archive.
const BUSYBOX_CONTAINERFILE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// Runs provision.sh once per test binary (idempotent, cached; the script serialises concurrent
/// runs itself) and returns the bin dir.
pub fn bin_dir() -> PathBuf {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let t = Instant::now();
        let bin = local_cluster::testing::provision();
        eprintln!("provisioned in {:?}: {}", t.elapsed(), bin.display());
        bin
    })
    .clone()
}

pub fn assert_nothing_left(dir: &Path, pids: &[(local_cluster::Component, i32)]) {
    let left = processes_mentioning(dir);
    assert!(
        left.is_empty(),
        "processes of {} still alive: {left:?}",
        dir.display()
    );
    for (c, pid) in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{c} (pid {pid}) still exists"
        );
    }
}

/// Creates `doc` with kubectl, retrying while the `default` ServiceAccount does not exist yet
/// (the ServiceAccount admission plugin refuses pods until then).
pub fn create_retrying(k: &Kubectl, doc: &serde_json::Value) {
    let start = Instant::now();
    loop {
        let o = k.run(&["create", "-f", "-"], Some(&doc.to_string()));
        if o.status.success() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "create: {}\n{doc:#}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A pod of the test image running `script`, with the downward API in its env (POD_NAME,
/// POD_NAMESPACE, POD_UID, NODE_NAME, POD_IP, HOST_IP) and `gpus` fake GPUs.
pub fn pod_doc(name: &str, policy: &str, script: &str, gpus: u32) -> serde_json::Value {
    let env = |n: &str, f: &str| json!({"name": n, "valueFrom": {"fieldRef": {"fieldPath": f}}});
    let mut c = busybox("main", script);
    c["env"] = json!([
        env("POD_NAME", "metadata.name"),
        env("POD_NAMESPACE", "metadata.namespace"),
        env("POD_UID", "metadata.uid"),
        env("NODE_NAME", "spec.nodeName"),
        env("POD_IP", "status.podIP"),
        env("HOST_IP", "status.hostIP")
    ]);
    if gpus > 0 {
        c["resources"] = json!({"limits": {"nvidia.com/gpu": gpus.to_string()}});
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {"automountServiceAccountToken": false, "restartPolicy": policy,
                 "terminationGracePeriodSeconds": 2, "containers": [c]}})
}

pub fn jsonpath(k: &Kubectl, pod: &str, path: &str) -> String {
    k.ok(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

pub fn wait_phase(k: &Kubectl, pod: &str, phase: &str) {
    k.eventually(
        &format!("pod {pod} {phase}"),
        Duration::from_secs(60),
        &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
        |o| stdout(o) == phase,
    );
}

/// Pids of live processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Interface names and netns names on this machine that contain `needle`.
pub fn net_objects_with(needle: &str) -> Vec<String> {
    let run = |args: &[&str]| {
        String::from_utf8_lossy(&Command::new("ip").args(args).output().unwrap().stdout)
            .into_owned()
    };
    let mut v: Vec<String> = run(&["-o", "link"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .chain(
            run(&["netns", "list"])
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string),
        )
        .filter(|n| n.contains(needle))
        .collect();
    v.sort();
    v
}

/// The test image as an OCI archive (`cfg.nodes.images`), built once per machine with buildah
/// and cached as `<cache>/images/test-busybox.tar` (seconds cold; installs Debian's
/// `busybox-static` if it is missing). Concurrent test binaries serialise on a lock file.
pub fn busybox_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(build_busybox_image).clone()
}

fn build_busybox_image() -> PathBuf {
    let out = local_cluster::cache_dir().join("images");
    std::fs::create_dir_all(&out).unwrap();
    let archive = out.join("test-busybox.tar");
    let key_file = out.join("test-busybox.key");
    let lock = std::fs::File::create(out.join("test-busybox.lock")).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking {}: {e}", out.display()));
    let busybox = Path::new("/bin/busybox");
    let installed = || {
        Command::new("dpkg")
            .args(["-s", "busybox-static"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !installed() {
        let o = Command::new("apt-get")
            .args(["install", "-y", "busybox-static"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("running apt-get");
        assert!(
            o.status.success() && installed(),
            "apt-get install -y busybox-static: {}",
            stderr(&o)
        );
    }
    let meta = std::fs::metadata(busybox).unwrap();
    let key = format!(
        "{BUSYBOX_CONTAINERFILE}{} {:?}",
        meta.len(),
        meta.modified().ok()
    );
    if archive.exists() && std::fs::read_to_string(&key_file).ok().as_deref() == Some(&key) {
        return archive;
    }
    let t = Instant::now();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(busybox, ctx.path().join("busybox")).unwrap();
    std::fs::write(ctx.path().join("Containerfile"), BUSYBOX_CONTAINERFILE).unwrap();
    let buildah = |args: &[&str]| {
        let o = Command::new("buildah")
            .arg("--root")
            .arg(out.join("storage"))
            .arg("--runroot")
            .arg(out.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("running buildah (apt-get install -y buildah)");
        assert!(
            o.status.success(),
            "buildah {}: {}",
            args.join(" "),
            stderr(&o)
        );
    };
    let ctx_dir = ctx.path().display().to_string();
    buildah(&[
        "bud",
        "-q",
        "--isolation",
        "chroot",
        "-f",
        &format!("{ctx_dir}/Containerfile"),
        "-t",
        BUSYBOX,
        &ctx_dir,
    ]);
    let tmp = out.join("test-busybox.tar.tmp");
    let _ = std::fs::remove_file(&tmp);
    buildah(&[
        "push",
        "-q",
        "--disable-compression",
        BUSYBOX,
        &format!("oci-archive:{}:{BUSYBOX}", tmp.display()),
    ]);
    std::fs::rename(&tmp, &archive).unwrap();
    std::fs::write(&key_file, key).unwrap();
    // The archive is what counts (as in images.sh): vfs storage keeps full copies.
    let _ = Command::new("buildah")
        .arg("--root")
        .arg(out.join("storage"))
        .arg("--runroot")
        .arg(out.join("run"))
        .args(["--storage-driver", "vfs", "rmi", "-f", BUSYBOX])
        .output();
    eprintln!("built {} in {:?}", archive.display(), t.elapsed());
    archive
}

/// A cluster of `nodes` real nodes (kubelet + containerd) with the test image loaded, once the
/// `default` ServiceAccount exists (pods are refused until then).
pub async fn start_real(dir: &Path, nodes: u32) -> (Cluster, Kubectl) {
    let bin = bin_dir();
    let mut cfg = ClusterConfig::new(dir, &bin).unwrap();
    cfg.nodes.count = nodes;
    cfg.nodes.images = vec![busybox_image()];
    let t = Instant::now();
    let cluster = Cluster::start(cfg)
        .await
        .unwrap_or_else(|e| panic!("cluster start: {e}"));
    eprintln!("{nodes} real nodes Ready {:?} after start", t.elapsed());
    let k = Kubectl {
        bin: bin.join("kubectl"),
        kubeconfig: cluster.kubeconfig(),
    };
    k.eventually(
        "the default ServiceAccount",
        Duration::from_secs(30),
        &["get", "serviceaccount", "default"],
        |o| o.status.success(),
    );
    (cluster, k)
}

/// A container of the test image running `script` with `sh -c`.
pub fn busybox(name: &str, script: &str) -> Value {
    json!({"name": name, "image": BUSYBOX, "imagePullPolicy": "Never",
           "command": ["sh", "-c", script]})
}

/// The cluster's id (`<id>` in `ejbr<id>`, `ej-<id>-<n>`, `/elasticjob/<id>/` cgroups).
pub fn cluster_id(cluster: &Cluster) -> String {
    let (bridge, _, _) = cluster.network().expect("pod network");
    bridge.trim_start_matches("ejbr").to_string()
}

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    start: u64,
}

fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of stat, starttime field 22.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl Proc {
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Every process in the cgroup directories under `/sys/fs/cgroup/pids<path>` (recursively).
pub fn cgroup_procs(path: &str) -> Vec<Proc> {
    let mut procs = Vec::new();
    let mut stack = vec![PathBuf::from(format!("/sys/fs/cgroup/pids{path}"))];
    while let Some(d) = stack.pop() {
        if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
            for pid in s.lines().filter_map(|p| p.parse::<i32>().ok()) {
                if let Some(start) = start_time(pid) {
                    procs.push(Proc { pid, start });
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    procs
}

/// Every process of the cluster's nodes: daemons, containerd shims, sandboxes, containers.
pub fn node_procs(id: &str, node: Option<&str>) -> Vec<Proc> {
    cgroup_procs(&format!("/elasticjob/{id}/{}", node.unwrap_or("")))
}

/// The processes of one pod (its `pod<uid>` cgroup, on whichever node).
pub fn pod_procs(id: &str, uid: &str) -> Vec<Proc> {
    let want = format!("pod{uid}");
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from(format!(
        "/sys/fs/cgroup/pids/elasticjob/{id}"
    ))];
    while let Some(d) = stack.pop() {
        if d.file_name()
            .is_some_and(|f| f.to_str() == Some(want.as_str()))
        {
            let rel = d.strip_prefix("/sys/fs/cgroup/pids").unwrap();
            found.extend(cgroup_procs(&format!("/{}", rel.display())));
            continue;
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    found
}

/// Waits until none of `procs` is alive.
pub fn wait_dead(what: &str, procs: &[Proc], timeout: Duration) {
    let t = Instant::now();
    loop {
        let alive: Vec<i32> = procs.iter().filter(|p| p.alive()).map(|p| p.pid).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            t.elapsed() < timeout,
            "{what}: still alive after {timeout:?}: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// cgroup directories of the cluster left in any hierarchy.
pub fn cgroups_of(id: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join("elasticjob").join(id))
        .filter(|d| d.exists())
        .collect()
}

/// Mounts of this machine (host mount namespace) whose line mentions `needle`.
pub fn mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Shuts a cluster with real nodes down and checks that nothing of it is left: no process
/// (the components, and everything that ran in its nodes' cgroups: daemons, shims, pods), no
/// netns, veth or bridge, no mount, no cgroup directory.
pub async fn stop_and_check(cluster: Cluster, dir: &Path) {
    let pids = cluster.pids();
    let id = cluster_id(&cluster);
    let procs = node_procs(&id, None);
    assert!(!procs.is_empty(), "no process in the nodes' cgroups");
    let t = Instant::now();
    cluster
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("shutdown: {e}"));
    eprintln!("shutdown in {:?}", t.elapsed());
    assert_nothing_left(dir, &pids);
    let alive: Vec<i32> = procs.iter().filter(|p| p.alive()).map(|p| p.pid).collect();
    assert_eq!(alive, Vec::<i32>::new(), "processes of the nodes left");
    assert_eq!(
        net_objects_with(&id),
        Vec::<String>::new(),
        "netns/links left"
    );
    assert_eq!(
        mounts_with(&dir.display().to_string()),
        Vec::<String>::new(),
        "mounts left"
    );
    assert_eq!(cgroups_of(&id), Vec::<PathBuf>::new(), "cgroups left");
}

/// The pod CIDR the host routes to a node (`ip route`: `<cidr> via <node InternalIP>`).
pub fn pod_cidr_of(node_ip: &str) -> (Ipv4Addr, u32) {
    let out = Command::new("ip").args(["-4", "route"]).output().unwrap();
    let routes = String::from_utf8_lossy(&out.stdout).into_owned();
    let cidr = routes
        .lines()
        .find(|l| l.split_whitespace().collect::<Vec<_>>()[1..].starts_with(&["via", node_ip]))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no route via {node_ip}:\n{routes}"));
    let (net, len) = cidr.split_once('/').unwrap();
    (net.parse().unwrap(), len.parse().unwrap())
}

pub fn in_cidr(ip: &str, (net, len): (Ipv4Addr, u32)) -> bool {
    let ip: Ipv4Addr = ip.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// `GET path` over HTTP/1.0 from this machine: the body, or None if nothing answered within
/// `timeout` (connect or read).
pub fn http_get(ip: &str, port: u16, path: &str, timeout: Duration) -> Option<String> {
    use std::io::{Read, Write};
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    Some(resp.split_once("\r\n\r\n")?.1.to_string())
}

/// The node's Ready condition status (`True`, `False`, `Unknown`).
pub fn node_ready(k: &Kubectl, node: &str) -> String {
    k.ok(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])
}

/// Waits until the node's Ready condition is (`want`) or is not (`!want`) True; how long it took.
pub fn wait_node_ready(k: &Kubectl, node: &str, want: bool, timeout: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let s = node_ready(k, node);
        if (s == "True") == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < timeout,
            "node {node}: Ready={s} after {timeout:?}, want ready={want}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A TokenReview of `token` (which must authenticate): the reviewed user (`status.user`).
pub fn token_review(k: &Kubectl, token: &str) -> serde_json::Value {
    let review = serde_json::json!({"apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview", "spec": {"token": token}});
    let o = k.run(
        &["create", "-o", "json", "-f", "-"],
        Some(&review.to_string()),
    );
    assert!(
        o.status.success(),
        "TokenReview: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let review: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    review["status"]["user"].clone()
}
