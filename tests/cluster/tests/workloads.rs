//! End-to-end: real workloads on the local cluster with plain kubectl (a Deployment behind a
//! headless Service, ConfigMaps, Secrets, service-account tokens, cluster DNS, readiness), and
//! fault injection (kill a pod, cut its network, lose a node), through the library and the
//! `cluster fault` CLI; `kubectl logs` through the kubelet stand-in's log API. Behind the
//! `control-plane-tests` feature, like control_plane.rs.
#![cfg(feature = "control-plane-tests")]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use local_cluster::{Cluster, ClusterConfig};
use nix::sys::signal::Signal;
use serde_json::json;

mod common;
use common::*;

/// Mounts of this machine (host mount namespace) whose path mentions `needle`.
fn mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

async fn start(dir: &Path, nodes: u32) -> (Cluster, Kubectl) {
    let bin = bin_dir();
    let mut cfg = ClusterConfig::new(dir, &bin).unwrap();
    cfg.kubelet.nodes = nodes;
    let cluster = Cluster::start(cfg)
        .await
        .unwrap_or_else(|e| panic!("cluster start: {e}"));
    let k = Kubectl {
        bin: bin.join("kubectl"),
        kubeconfig: cluster.kubeconfig(),
    };
    k.eventually(
        "the default ServiceAccount and its token",
        Duration::from_secs(30),
        &["get", "secrets", "-o", "name"],
        |o| stdout(o).contains("default-token-"),
    );
    (cluster, k)
}

async fn stop_and_check(cluster: Cluster, dir: &Path) {
    let pids = cluster.pids();
    let (bridge, _, _) = cluster.network().expect("pod network");
    let id = bridge.trim_start_matches("ejbr").to_string();
    cluster
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("shutdown: {e}"));
    assert_nothing_left(dir, &pids);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_behind_headless_service_with_dns_configmaps_secrets_and_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("e2e-workloads");
    let (cluster, k) = start(&dir, 3).await;

    // --- a Deployment of 3 HTTP servers: content from a ConfigMap volume, env from a ConfigMap
    // key and a Secret key, ready when its readiness probe answers; a headless Service.
    k.apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-content"},
            "data": {"index.html": "hello from a configmap\n", "GREETING": "hi"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-secret"},
            "stringData": {"token": "s3cret"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 8080}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                        "name": "http", "image": "python:3.11-slim",
                        "command": ["python3", "-m", "http.server", "--directory", "/srv", "8080"],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "env": [
                            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "web-content", "key": "GREETING"}}},
                            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "token"}}}],
                        "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"},
                            "periodSeconds": 1},
                        "volumeMounts": [{"name": "content", "mountPath": "/srv"}]}],
                    "volumes": [{"name": "content", "configMap": {"name": "web-content"}}]}}}},
        // Pods with stable names through a headless Service, as the operator makes them.
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "train"},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true,
                "selector": {"job": "train"}, "ports": [{"port": 8080}]}},
    ]}));
    for i in 0..2 {
        k.apply(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("train-worker-{i}"), "labels": {"job": "train"}},
            "spec": {"hostname": format!("train-worker-{i}"), "subdomain": "train",
                "terminationGracePeriodSeconds": 2, "containers": [{"name": "main",
                "image": "python:3.11-slim", "command": ["/bin/sh", "-c",
                    "mkdir -p /www && hostname > /www/id && exec python3 -m http.server --directory /www 8080"]}]}}));
    }
    k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let ips = k.eventually(
        "3 ready endpoints of web",
        Duration::from_secs(30),
        &[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[0].addresses[*].ip}",
        ],
        |o| stdout(o).split_whitespace().count() == 3,
    );
    assert!(stdout(&ips).starts_with("10."), "{}", stdout(&ips));
    // The scheduler spread them by resources: they run on more than one node.
    let nodes = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    assert!(
        nodes
            .split_whitespace()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1,
        "{nodes}"
    );

    // --- a client pod: DNS names (short, via the search path, and full), HTTP to the others,
    // env from the ConfigMap and Secret of another pod is not its business; its own token
    // authenticates it as its ServiceAccount; names outside the cluster are refused.
    let script = r#"
sa=/var/run/secrets/kubernetes.io/serviceaccount
{
echo "web=$(getent ahostsv4 web | awk '{print $1}' | sort -u | wc -l)"
echo "page=$(curl -sf http://web:8080/index.html)"
echo "w1=$(curl -sf http://train-worker-1.train:8080/id)"
echo "w0=$(curl -sf http://train-worker-0.train.default.svc.cluster.local:8080/id)"
echo "ns=$(cat $sa/namespace)"
echo "whoami=$(curl -s --cacert $sa/ca.crt -H "Authorization: Bearer $(cat $sa/token)" https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/default/pods | grep -o 'system:serviceaccount:default:default' | head -1)"
echo "outside=$(getent hosts pypi.org >/dev/null && echo resolved || echo not-resolved)"
touch /client-was-here && echo "rootfs=writable"
} > /dev/termination-log
"#;
    k.apply(
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main",
            "image": "curlimages/curl", "command": ["/bin/sh", "-c", script]}]}}),
    );
    wait_phase(&k, "client", "Succeeded");
    let msg = jsonpath(
        &k,
        "client",
        "{.status.containerStatuses[0].state.terminated.message}",
    );
    for want in [
        "web=3\n",
        "page=hello from a configmap\n",
        "w1=train-worker-1\n",
        "w0=train-worker-0\n",
        "ns=default\n",
        "whoami=system:serviceaccount:default:default\n",
        "outside=not-resolved\n",
        "rootfs=writable\n",
    ] {
        assert!(
            msg.contains(want),
            "client pod reported:\n{msg}\nmissing {want:?}"
        );
    }
    assert!(!Path::new("/client-was-here").exists(), "host / untouched");

    // --- the web pods' env came from the ConfigMap and the Secret (a pod reports it via exec
    // probe-free means: a one-off pod with the same env).
    k.apply(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "envcheck"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox",
            "command": ["/bin/sh", "-c", "echo $GREETING $TOKEN $PREFIX_GREETING > /dev/termination-log"],
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "token"}}},
                {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "web-content", "key": "GREETING"}}}],
            "envFrom": [{"configMapRef": {"name": "web-content"}, "prefix": "PREFIX_"}]}]}}));
    wait_phase(&k, "envcheck", "Succeeded");
    assert_eq!(
        jsonpath(
            &k,
            "envcheck",
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        "hi s3cret hi\n"
    );

    // --- a pod waiting for a missing ConfigMap says so, and starts once it exists
    k.apply(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "waits"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox",
            "command": ["/bin/sh", "-c", "echo $LATE > /dev/termination-log"],
            "env": [{"name": "LATE", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "v"}}}]}]}}));
    k.eventually(
        "CreateContainerConfigError",
        Duration::from_secs(30),
        &["get", "pod", "waits", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}"],
        |o| stdout(o).starts_with("CreateContainerConfigError: configmap \"late\" not found"),
    );
    k.apply(
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"},
        "data": {"v": "arrived"}}),
    );
    wait_phase(&k, "waits", "Succeeded");
    assert_eq!(
        jsonpath(
            &k,
            "waits",
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        "arrived\n"
    );

    // --- deleting the Deployment removes its ReplicaSet, pods (garbage collection) and processes
    assert_eq!(processes_with("http.server\0--directory\0/srv").len(), 3);
    k.ok(&["delete", "deployment", "web"]);
    k.eventually(
        "web pods gone",
        Duration::from_secs(60),
        &["get", "pods", "-l", "app=web", "-o", "name"],
        |o| o.status.success() && stdout(o).is_empty(),
    );
    let t = Instant::now();
    while !processes_with("http.server\0--directory\0/srv").is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "web processes left");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_and_check(cluster, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_through_the_kubelet_log_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("e2e-logs");
    let (cluster, k) = start(&dir, 2).await;
    let port = k.ok(&[
        "get",
        "node",
        "node-0",
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "port {port:?}");
    let c = |name: &str, script: &str| json!({"name": name, "image": "busybox", "command": ["/bin/sh", "-c", script]});
    let pod = |name: &str, policy: &str, containers: Vec<serde_json::Value>| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": policy, "terminationGracePeriodSeconds": 1,
                "automountServiceAccountToken": false, "containers": containers}})
    };
    // Two containers that print and finish; one that fails once (its first run's log is the
    // previous one, and its termination message falls back to it); one that ticks every 0.2 s.
    create_retrying(
        &k,
        &pod(
            "two",
            "Never",
            vec![
                c("a", "for i in 1 2 3 4 5; do echo a$i; done"),
                c("b", "echo from b; echo to stderr >&2"),
            ],
        ),
    );
    let mut again = pod(
        "again",
        "OnFailure",
        vec![c(
            "main",
            "if [ -f /data/ran ]; then echo second run; exit 0; fi; \
             touch /data/ran; echo first run; exit 3",
        )],
    );
    again["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    again["spec"]["containers"][0]["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    again["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    k.apply(&again);
    k.apply(&pod(
        "ticker",
        "Never",
        vec![c(
            "main",
            "i=0; while [ $i -lt 15 ]; do i=$((i+1)); echo tick $i; sleep 0.2; done",
        )],
    ));

    // -f on a running pod: lines arrive as they are printed; kubectl ends with the container.
    wait_phase(&k, "ticker", "Running");
    let t0 = Instant::now();
    let mut f = Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args(["logs", "-f", "ticker"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = vec![];
    for line in std::io::BufRead::lines(std::io::BufReader::new(f.stdout.take().unwrap())) {
        lines.push((line.unwrap(), t0.elapsed()));
    }
    let status = f.wait().unwrap();
    assert!(status.success(), "kubectl logs -f: {status}");
    let texts: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
    let want: Vec<String> = (1..=15).map(|i| format!("tick {i}")).collect();
    assert_eq!(texts, want);
    let spread = lines.last().unwrap().1 - lines[0].1;
    assert!(
        spread > Duration::from_millis(1000),
        "not streamed: all lines within {spread:?}"
    );
    eprintln!(
        "kubectl logs -f: 15 lines over {spread:?}, ended after {:?}",
        t0.elapsed()
    );
    assert_eq!(jsonpath(&k, "ticker", "{.status.phase}"), "Succeeded");

    // A finished pod; -c on a two-container pod; --tail; stdout and stderr both.
    wait_phase(&k, "two", "Succeeded");
    assert_eq!(k.ok(&["logs", "two", "-c", "a"]), "a1\na2\na3\na4\na5\n");
    assert_eq!(k.ok(&["logs", "two", "-c", "a", "--tail", "2"]), "a4\na5\n");
    assert_eq!(k.ok(&["logs", "two", "-c", "b"]), "from b\nto stderr\n");
    assert_eq!(
        k.ok(&["logs", "pod/two", "-c", "a", "--limit-bytes", "5"]),
        "a1\na2"
    );
    // An unknown container: the apiserver refuses it; asked of the kubelet directly (through
    // the node proxy), its 404.
    let bad = k.run(&["logs", "two", "-c", "nope"], None);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("container nope is not valid for pod two"),
        "{}",
        stderr(&bad)
    );
    let node = jsonpath(&k, "two", "{.spec.nodeName}");
    let raw = k.run(
        &[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{node}/proxy/containerLogs/default/two/nope"),
        ],
        None,
    );
    assert!(!raw.status.success());
    assert!(stderr(&raw).contains("NotFound"), "{}", stderr(&raw));

    // --previous after a restart (OnFailure), the termination message from the failed run's log.
    wait_phase(&k, "again", "Succeeded");
    assert_eq!(
        jsonpath(&k, "again", "{.status.containerStatuses[0].restartCount}"),
        "1"
    );
    assert_eq!(k.ok(&["logs", "again"]), "second run\n");
    assert_eq!(k.ok(&["logs", "again", "--previous"]), "first run\n");
    assert_eq!(
        jsonpath(
            &k,
            "again",
            "{.status.containerStatuses[0].lastState.terminated.message}"
        ),
        "first run\n"
    );
    let none = k.run(&["logs", "two", "-c", "a", "--previous"], None);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("previous terminated container \"a\" in pod \"two\" not found"),
        "{}",
        stderr(&none)
    );
    stop_and_check(cluster, &dir).await;
}

fn reachable(ip: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_millis(700)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_kills_pods_cuts_networks_and_loses_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("e2e-faults");
    let (cluster, k) = start(&dir, 2).await;
    let faults = cluster.faults().expect("kubelet stand-in");
    let _control = local_cluster::control::serve(
        &dir,
        local_cluster::control::Target::StandIn(faults.clone()),
    )
    .unwrap();
    let pod = |name: &str, node: &str, script: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "nodeName": node, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "busybox",
                    "command": ["/bin/sh", "-c", script]}]}})
    };
    let marker = format!("fault-marker-{}", std::process::id());
    for (name, node) in [
        ("victim", "node-0"),
        ("cli-victim", "node-0"),
        ("doomed", "node-1"),
    ] {
        k.apply(&pod(
            name,
            node,
            &format!("while :; do sleep 1; done # {marker}-{name}"),
        ));
    }
    k.apply(&pod(
        "srv",
        "node-0",
        "exec python3 -m http.server --bind 0.0.0.0 8080",
    ));
    for p in ["victim", "cli-victim", "doomed", "srv"] {
        wait_phase(&k, p, "Running");
    }

    // --- kill a pod's processes (library): Failed with the signal's exit code
    assert_eq!(faults.kill_pod("default", "victim", Signal::SIGKILL), Ok(1));
    wait_phase(&k, "victim", "Failed");
    let term = "{.status.containerStatuses[0].state.terminated";
    assert_eq!(
        jsonpath(&k, "victim", &format!("{term}.exitCode}} {term}.signal}}")),
        "137 9"
    );
    // ... and through the CLI and the control socket
    let cli = Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args(["fault", "--dir"])
        .arg(&dir)
        .args(["kill-pod", "default/cli-victim", "--signal", "TERM"])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", stderr(&cli));
    assert!(stdout(&cli).contains("sent SIGTERM to 1 container(s) of default/cli-victim"));
    wait_phase(&k, "cli-victim", "Failed");
    assert_eq!(
        jsonpath(&k, "cli-victim", &format!("{term}.exitCode}}")),
        "143"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args(["fault", "--dir"])
        .arg(&dir)
        .args(["kill-pod", "default/nope"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("pod default/nope is not running on any node"),
        "{}",
        stderr(&bad)
    );

    // --- cut a pod's network: unreachable, its process keeps running; restored: reachable
    let ip = jsonpath(&k, "srv", "{.status.podIP}");
    let t = Instant::now();
    while !reachable(&ip, 8080) {
        assert!(t.elapsed() < Duration::from_secs(20), "srv never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    faults.set_pod_network("default", "srv", false).unwrap();
    assert!(!reachable(&ip, 8080), "cut network still reachable");
    assert_eq!(jsonpath(&k, "srv", "{.status.phase}"), "Running");
    faults.set_pod_network("default", "srv", true).unwrap();
    let t = Instant::now();
    while !reachable(&ip, 8080) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "restored network unreachable"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // --- lose a node: its pods' processes die at once, its log API is gone, the node goes
    // NotReady (Unknown)
    assert_eq!(processes_with(&format!("{marker}-doomed")).len(), 1);
    k.ok(&["logs", "doomed"]);
    assert_eq!(faults.lose_node("node-1"), Ok(1));
    assert!(processes_with(&format!("{marker}-doomed")).is_empty());
    let gone = k.run(&["logs", "doomed"], None);
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("connection refused"),
        "{}",
        stderr(&gone)
    );
    let t = Instant::now();
    k.eventually(
        "node-1 NotReady",
        Duration::from_secs(60),
        &[
            "get",
            "node",
            "node-1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        |o| stdout(o) == "Unknown",
    );
    eprintln!("node-1 NotReady {:?} after it was lost", t.elapsed());
    assert_eq!(
        k.ok(&[
            "get",
            "node",
            "node-0",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"
        ]),
        "True"
    );
    stop_and_check(cluster, &dir).await;
}
