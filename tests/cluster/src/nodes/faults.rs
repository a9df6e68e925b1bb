//! Faults on real nodes, behind Kubernetes' back: kill a pod's containers, cut and restore its
//! network, lose, partition and restore a node.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tracing::info;

use super::*;
use crate::podnet::set_link;

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

    /// A node's index, layout and network, by name.
    fn node(&self, node: &str) -> Result<(usize, NodeLayout, NodeNet), String> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.layout.name == node)
            .map(|(i, n)| (i, n.layout.clone(), n.net.clone()))
            .ok_or_else(|| format!("no node {node} (nodes: {:?})", self.names()))
    }

    /// The pids of the pod's running containers (not its sandbox), found by container id in
    /// the pod's node's cgroup subtree.
    fn container_pids(&self, namespace: &str, name: &str) -> Result<(NodeNet, Vec<i32>), String> {
        let pod = self.pod(namespace, name)?;
        let node = pod["spec"]["nodeName"]
            .as_str()
            .ok_or_else(|| format!("pod {namespace}/{name} is not on a node"))?;
        let (_, l, net) = self.node(node)?;
        let ids = running_container_ids(&pod);
        if ids.is_empty() {
            return Err(format!("pod {namespace}/{name} has no running container"));
        }
        let pids = cgroup_dirs(&l, "pids")
            .iter()
            .filter(|d| {
                d.file_name()
                    .is_some_and(|f| ids.iter().any(|id| f == id.as_str()))
            })
            .flat_map(|d| cgroup_procs(d))
            .collect();
        Ok((net, pids))
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
        if pids.is_empty() {
            return Err(format!("pod {namespace}/{name} has no process to signal"));
        }
        for pid in &pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), signal);
        }
        info!(pod = %name, ?signal, processes = pids.len(), "fault: killed pod processes");
        Ok(pids.len())
    }

    /// Takes the node side of the pod's veth down (or up): nothing reaches the pod and it
    /// reaches nothing, silently (no RST, no ICMP), while everything in it keeps running.
    pub fn set_pod_network(&self, namespace: &str, name: &str, up: bool) -> Result<(), String> {
        let (net, pids) = self.container_pids(namespace, name)?;
        let netns = net.netns;
        let pid = pids.first().ok_or("no process in the pod")?;
        let link = run(Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(["ip", "-o", "link", "show", "eth0"]))?;
        let peer = peer_ifindex(&link).ok_or_else(|| format!("no veth peer in {link:?}"))?;
        let links = run(Command::new("ip").args(["-n", &netns, "-o", "link"]))?;
        let veth =
            link_name_by_index(&links, peer).ok_or_else(|| format!("no link {peer} in {netns}"))?;
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
                .map_err(|_| format!("{veth} in {netns} did not forward again"))?;
        }
        info!(pod = %name, up, "fault: pod network");
        Ok(())
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
        set_link(&n.net.veth, false)?;
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
        let (_, _, net) = self.node(node)?;
        set_link(&net.veth, !cut)?;
        info!(node, cut, "fault: node partition");
        Ok(())
    }

    /// Brings a lost or partitioned node back: its network up and, if it was lost, its
    /// daemons started again on its kept state (as a rebooted machine would).
    pub fn restore_node(&self, node: &str) -> Result<(), String> {
        let (idx, l, net) = self.node(node)?;
        let lost = self.nodes.lock().unwrap()[idx].lost;
        set_link(&net.veth, true)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
