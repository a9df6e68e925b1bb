//! The cluster's network: one Linux bridge per cluster (`ejbr<id>`, forward delay 0, host
//! address `10.<a>.<b>.1/24`, where the apiserver and CoreDNS listen) and one named network
//! namespace per node on it (`ip netns add ej-<id>-<n>`: cleanup by name prefix is exact), each
//! with a veth pair (`ejv<id>x<n>` on the bridge, `eth0` inside, `10.<a>.<b>.<n>`, the node's
//! InternalIP). The nodes' pods live behind them, in the pod CIDRs of [`crate::nodes`].
//!
//! `<id>` is 6 hex digits from a hash of the state dir; the /24 is chosen from the same hash,
//! skipping any 10.x.y.0/24 already on an interface or route of this machine (and 10.96/16, the
//! service range), under a machine-wide lock so clusters starting together do not collide.

use std::collections::BTreeSet;
use std::fs;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const LOCK: &str = "/run/elasticjob-cluster-net.lock";

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sets a link up or down.
pub fn set_link(name: &str, up: bool) -> Result<(), String> {
    ip(&["link", "set", name, if up { "up" } else { "down" }]).map(|_| ())
}

/// The /24s (as (a, b) of 10.a.b.0/24) in use on this machine's interfaces and routes.
fn used_subnets() -> BTreeSet<(u8, u8)> {
    let mut used = BTreeSet::new();
    let text = [
        ip(&["-4", "-o", "addr"]).unwrap_or_default(),
        ip(&["-4", "route"]).unwrap_or_default(),
    ]
    .join("\n");
    for w in text.split_whitespace() {
        let a = w.split('/').next().unwrap_or("");
        if let Ok(addr) = a.parse::<Ipv4Addr>() {
            let o = addr.octets();
            if o[0] == 10 {
                used.insert((o[1], o[2]));
            }
        }
    }
    used
}

/// The cluster's network: a bridge and a /24.
pub struct ClusterNetwork {
    pub id: String,
    pub bridge: String,
    /// 10.a.b
    prefix: (u8, u8),
    free: Mutex<BTreeSet<u8>>,
}

/// One node's netns and address on the bridge.
#[derive(Debug, Clone)]
pub struct NodeNet {
    pub netns: String,
    pub veth: String,
    pub ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    index: u8,
}

impl NodeNet {
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }
}

impl ClusterNetwork {
    /// Creates the bridge with its host address (removing leftovers of the same id first).
    pub fn create(state_dir: &Path) -> Result<ClusterNetwork, String> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        state_dir.hash(&mut h);
        let hash = h.finish();
        let id = format!("{:06x}", hash & 0xff_ffff);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .map_err(|e| format!("{LOCK}: {e}"))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("flock {LOCK}: {e}"))?;
        let net = ClusterNetwork {
            bridge: format!("ejbr{id}"),
            prefix: (0, 0),
            free: Mutex::new((2..=254).collect()),
            id,
        };
        net.remove_all();
        let used = used_subnets();
        let start = (hash >> 24) as u32 % (250 * 256);
        let prefix = (0..250 * 256)
            .map(|i| (start + i) % (250 * 256))
            .map(|n| ((n / 256) as u8 + 1, (n % 256) as u8))
            .find(|p| p.0 != 96 && !used.contains(p))
            .ok_or("no free 10.x.y.0/24 for the cluster network")?;
        let net = ClusterNetwork { prefix, ..net };
        let host = net.host_ip();
        ip(&[
            "link",
            "add",
            "name",
            &net.bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        ip(&["addr", "add", &format!("{host}/24"), "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        drop(lock);
        Ok(net)
    }

    /// A second octet `p` such that no address or route of this machine is in `10.p.0.0/16`
    /// (nor this bridge's): the real nodes' pod CIDRs are `10.p.<node>.0/24`.
    pub fn free_pod_octet(&self) -> Result<u8, String> {
        let used: BTreeSet<u8> = used_subnets().into_iter().map(|(a, _)| a).collect();
        // Start where this bridge's own /24 points, so clusters side by side differ.
        let start = self.prefix.1 % 51;
        (0..51)
            .map(|i| 200 + (start + i) % 51)
            .find(|p| *p != self.prefix.0 && !used.contains(p))
            .ok_or_else(|| "no free 10.p.0.0/16 (p in 200..=250) for pod CIDRs".to_string())
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.prefix.0, self.prefix.1, 1)
    }

    pub fn cidr(&self) -> String {
        format!("10.{}.{}.0/24", self.prefix.0, self.prefix.1)
    }

    /// A netns and veth for a new node; its path to the host works when this returns.
    pub fn add_node(&self) -> Result<NodeNet, String> {
        let index = {
            let mut f = self.free.lock().unwrap();
            let i = *f.iter().next().ok_or("cluster network full (253 nodes)")?;
            f.remove(&i);
            i
        };
        let p = NodeNet {
            netns: format!("ej-{}-{index}", self.id),
            veth: format!("ejv{}x{index}", self.id),
            ip: Ipv4Addr::new(10, self.prefix.0, self.prefix.1, index),
            host_ip: self.host_ip(),
            index,
        };
        if let Err(e) = self.setup(&p) {
            self.remove_node(&p);
            return Err(e);
        }
        Ok(p)
    }

    fn setup(&self, p: &NodeNet) -> Result<(), String> {
        let peer = format!("ejp{}x{}", self.id, p.index);
        ip(&["netns", "add", &p.netns])?;
        ip(&[
            "link", "add", &p.veth, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["link", "set", &p.veth, "master", &self.bridge, "up"])?;
        ip(&["link", "set", &peer, "netns", &p.netns])?;
        let ns = |args: &[&str]| {
            let mut a = vec!["-n", p.netns.as_str()];
            a.extend_from_slice(args);
            ip(&a)
        };
        ns(&["link", "set", &peer, "name", "eth0"])?;
        ns(&["addr", "add", &format!("{}/24", p.ip), "dev", "eth0"])?;
        ns(&["link", "set", "lo", "up"])?;
        ns(&["link", "set", "eth0", "up"])?;
        // No default route: the node reaches its /24 (other nodes, the host's bridge address with
        // the apiserver and CoreDNS) and, through the routes `nodes` adds, the other nodes'
        // pods; anything else fails at once with "network unreachable" instead of timing out.
        // Wait until the bridge forwards on the new port (state 3) instead of assuming it.
        let state = format!("/sys/class/net/{}/brport/state", p.veth);
        let t = Instant::now();
        while fs::read_to_string(&state).ok().as_deref().map(str::trim) != Some("3") {
            if t.elapsed() > Duration::from_secs(10) {
                return Err(format!("{} did not reach forwarding state", p.veth));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn remove_node(&self, p: &NodeNet) {
        if self.free.lock().unwrap().contains(&p.index) {
            return; // already removed
        }
        let _ = ip(&["link", "del", &p.veth]);
        let _ = ip(&["netns", "del", &p.netns]);
        self.free.lock().unwrap().insert(p.index);
    }

    /// Every netns, veth and the bridge of this cluster (also leftovers of an earlier run).
    pub fn remove_all(&self) {
        let prefix = format!("ej-{}-", self.id);
        for line in ip(&["netns", "list"]).unwrap_or_default().lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(&prefix) {
                let _ = ip(&["netns", "del", name]);
            }
        }
        let veth = format!("ejv{}x", self.id);
        for line in ip(&["-o", "link"]).unwrap_or_default().lines() {
            let name = line
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .split('@')
                .next()
                .unwrap_or("");
            if name.starts_with(&veth) {
                let _ = ip(&["link", "del", name]);
            }
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
