//! Helpers shared by the end-to-end tests: provisioning, kubectl (`local_cluster::kubectl`),
//! waiting, process and network-object checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use local_cluster::kubectl::{Kubectl, stderr, stdout};
use local_cluster::processes_mentioning;
use serde_json::json;

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

pub fn pod_doc(name: &str, policy: &str, script: &str, gpus: u32) -> serde_json::Value {
    let env = |n: &str, f: &str| json!({"name": n, "valueFrom": {"fieldRef": {"fieldPath": f}}});
    let mut c = json!({"name": "main", "image": "local/none", "command": ["/bin/sh", "-c", script],
        "workingDir": "/tmp",
        "env": [env("POD_NAME", "metadata.name"), env("POD_NAMESPACE", "metadata.namespace"),
                env("POD_UID", "metadata.uid"), env("NODE_NAME", "spec.nodeName"),
                env("POD_IP", "status.podIP"), env("HOST_IP", "status.hostIP")]});
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
