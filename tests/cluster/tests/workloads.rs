//! End-to-end: real workloads on real nodes (kubelet + containerd + runc, kube-proxy, CoreDNS)
//! with plain kubectl: a Deployment behind a ClusterIP and a headless Service, pods with stable
//! names, ConfigMaps and Secrets as env and volumes, the service-account token, `kubectl logs`
//! and `exec`, garbage collection; then faults through the library and the `cluster fault` CLI
//! (kill a pod, cut and restore its network, lose, partition and restore nodes), and a shutdown
//! that leaves nothing behind. One cluster, reused by every check. Behind the
//! `control-plane-tests` feature, like control_plane.rs.
#![cfg(feature = "control-plane-tests")]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use local_cluster::control;
use nix::sys::signal::Signal;
use serde_json::json;

mod common;
use common::*;

/// `cluster fault --dir DIR ARGS...`.
fn fault(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args(["fault", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn fault_ok(dir: &Path, args: &[&str]) -> String {
    let o = fault(dir, args);
    assert!(
        o.status.success(),
        "cluster fault {}: {}",
        args.join(" "),
        stderr(&o)
    );
    stdout(&o)
}

/// `key=value` lines of `text`: the value of `key`.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{text}"))
        .trim()
        .to_string()
}

/// Waits until `GET path` at ip:port answers (each try times out after 1 s).
fn wait_answer(ip: &str, port: u16, path: &str, timeout: Duration) -> (String, Duration) {
    let t = Instant::now();
    loop {
        if let Some(body) = http_get(ip, port, path, Duration::from_secs(1)) {
            return (body, t.elapsed());
        }
        assert!(
            t.elapsed() < timeout,
            "{ip}:{port}{path}: no answer within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const WEB_SCRIPT: &str = r#"echo x >> /data/runs
echo "run $(wc -l < /data/runs) of $(hostname)"
mkdir -p /www && cp /srv/index.html /www/ && hostname > /www/id
echo "$GREETING $TOKEN $CM_GREETING $(cat /etc/web-secret/token)" > /www/env
exec httpd -f -p 8080 -h /www"#;

const CLIENT_SCRIPT: &str = r#"get() { printf 'GET /%s HTTP/1.0\r\n\r\n' "$3" | nc -w 2 "$1" "$2" | tail -n 1; }
echo "page=$(get web 80 index.html)"
echo "full=$(get web.default.svc.cluster.local 80 index.html)"
echo "env=$(get web-hl 8080 env)"
echo "w0=$(get train-worker-0.train 8080 id)"
echo "w1=$(get train-worker-1.train.default.svc.cluster.local 8080 id)"
echo "headless=$(nslookup web-hl.default.svc.cluster.local | sed -n 's/^Address: //p' | sort | tr '\n' ' ')"
echo "api=$(echo | nc -w 2 kubernetes.default.svc.cluster.local 443 >/dev/null && echo reachable)"
echo "ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_dns_config_logs_gc_and_faults_on_real_nodes() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("e2e-workloads");
    let (cluster, k) = start_real(&dir, 3).await;
    let id = cluster_id(&cluster);
    let nodes = cluster.nodes().expect("real nodes");
    let _control = control::serve(&dir, nodes.clone()).unwrap();

    // --- the workload: a Deployment of 3 busybox httpd servers (content from a ConfigMap
    // volume, env from ConfigMap and Secret keys and a prefixed ConfigMap, a Secret volume, a
    // run counter in an emptyDir, a readiness probe) behind a ClusterIP Service and a headless
    // one; two pods with stable names behind a headless Service; a client; a pod of two
    // containers for `kubectl logs`; a pod that waits for a ConfigMap that does not exist yet.
    let mut http = busybox("http", WEB_SCRIPT);
    http["ports"] = json!([{"name": "http", "containerPort": 8080}]);
    http["env"] = json!([
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "web-content", "key": "GREETING"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "token"}}}]);
    http["envFrom"] = json!([{"configMapRef": {"name": "web-content"}, "prefix": "CM_"}]);
    http["readinessProbe"] =
        json!({"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1});
    http["volumeMounts"] = json!([{"name": "content", "mountPath": "/srv"},
        {"name": "secret", "mountPath": "/etc/web-secret"},
        {"name": "data", "mountPath": "/data"}]);
    let worker = |i: u32| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("train-worker-{i}"), "labels": {"job": "train"}},
            "spec": {"hostname": format!("train-worker-{i}"), "subdomain": "train",
                "terminationGracePeriodSeconds": 1, "containers": [busybox("main",
                    "mkdir -p /www && hostname > /www/id && exec httpd -f -p 8080 -h /www")]}})
    };
    let mut waits = busybox("main", "echo $LATE > /dev/termination-log");
    waits["env"] =
        json!([{"name": "LATE", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "v"}}}]);
    k.apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-content"},
            "data": {"index.html": "hello from a configmap\n", "GREETING": "hi"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-secret"},
            "stringData": {"token": "s3cret"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-hl"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 8080}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 2, "containers": [http],
                        "volumes": [{"name": "content", "configMap": {"name": "web-content"}},
                            {"name": "secret", "secret": {"secretName": "web-secret"}},
                            {"name": "data", "emptyDir": {}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "train"},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true,
                "selector": {"job": "train"}, "ports": [{"port": 8080}]}},
        worker(0),
        worker(1),
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
            "spec": {"terminationGracePeriodSeconds": 1,
                "containers": [busybox("main", "exec sleep 3600")]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "two"},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
                "containers": [busybox("a", "for i in 1 2 3 4 5; do echo a$i; done"),
                    busybox("b", "echo from b; echo to stderr >&2")]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "waits"},
            "spec": {"restartPolicy": "Never", "containers": [waits]}},
    ]}));
    k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/train-worker-0",
        "pod/train-worker-1",
        "pod/client",
        "--timeout=60s",
    ]);
    eprintln!("workload ready {:?} after start", t0.elapsed());
    let web_pods: Vec<String> = k
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(web_pods.len(), 3, "{web_pods:?}");
    let on_nodes: BTreeSet<String> = web_pods
        .iter()
        .map(|p| jsonpath(&k, p, "{.spec.nodeName}"))
        .collect();
    assert!(on_nodes.len() > 1, "all web pods on {on_nodes:?}");

    // --- a missing ConfigMap: the container waits with the kubelet's message
    k.eventually(
        "CreateContainerConfigError",
        Duration::from_secs(30),
        &["get", "pod", "waits", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}"],
        |o| stdout(o) == "CreateContainerConfigError: configmap \"late\" not found",
    );
    k.ok(&["create", "configmap", "late", "--from-literal=v=arrived"]);

    // --- from a pod (kubectl exec): the ClusterIP Service by its short and full name
    // (kube-proxy, CoreDNS), the headless Service's addresses, stable pod names, the env the
    // servers got from the ConfigMap and the Secret, the kubernetes Service
    let out = k.ok(&["exec", "client", "--", "sh", "-c", CLIENT_SCRIPT]);
    assert_eq!(field(&out, "page"), "hello from a configmap", "{out}");
    assert_eq!(field(&out, "full"), "hello from a configmap", "{out}");
    assert_eq!(field(&out, "env"), "hi s3cret hi s3cret", "{out}");
    assert_eq!(field(&out, "w0"), "train-worker-0", "{out}");
    assert_eq!(field(&out, "w1"), "train-worker-1", "{out}");
    assert_eq!(field(&out, "api"), "reachable", "{out}");
    assert_eq!(field(&out, "ns"), "default", "{out}");
    let mut web_ips: Vec<String> = web_pods
        .iter()
        .map(|p| jsonpath(&k, p, "{.status.podIP}"))
        .collect();
    web_ips.sort();
    let mut headless: Vec<String> = field(&out, "headless")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    headless.sort();
    assert_eq!(headless, web_ips, "{out}");

    // --- the pod's service-account token authenticates it (TokenReview), and the cluster's
    // CA is mounted next to it
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let token = k.ok(&["exec", "client", "--", "cat", &format!("{sa}/token")]);
    let user = token_review(&k, token.trim());
    assert_eq!(
        user["username"], "system:serviceaccount:default:default",
        "{user}"
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"][0], "client",
        "a token bound to the pod: {user}"
    );
    assert_eq!(
        k.ok(&["exec", "client", "--", "cat", &format!("{sa}/ca.crt")]),
        std::fs::read_to_string(cluster.layout().ca_cert()).unwrap()
    );

    // --- kubectl logs: -c, stdout and stderr, --tail, --limit-bytes, an unknown container
    wait_phase(&k, "two", "Succeeded");
    assert_eq!(k.ok(&["logs", "two", "-c", "a"]), "a1\na2\na3\na4\na5\n");
    assert_eq!(k.ok(&["logs", "two", "-c", "a", "--tail", "2"]), "a4\na5\n");
    assert_eq!(
        k.ok(&["logs", "pod/two", "-c", "a", "--limit-bytes", "5"]),
        "a1\na2"
    );
    let b = k.ok(&["logs", "two", "-c", "b"]);
    assert!(b.contains("from b\n") && b.contains("to stderr\n"), "{b:?}");
    let bad = k.run(&["logs", "two", "-c", "nope"], None);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("container nope is not valid for pod two"),
        "{}",
        stderr(&bad)
    );

    // --- kill a pod's processes (library): the container restarts; `logs --previous` is the
    // killed run's
    let victim = &web_pods[0];
    assert_eq!(
        k.ok(&["logs", victim]),
        format!("run 1 of {victim}\n"),
        "{victim}"
    );
    let n = nodes
        .kill_pod("default", victim, Signal::SIGKILL)
        .expect("kill_pod");
    assert!(n >= 1, "{n} processes");
    k.eventually(
        "the killed container restarted",
        Duration::from_secs(30),
        &[
            "get",
            "pod",
            victim,
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.exitCode} {.status.containerStatuses[0].state.running.startedAt}",
        ],
        |o| {
            let s = stdout(o);
            s.starts_with("1 137 ") && s.len() > "1 137 ".len()
        },
    );
    assert_eq!(
        k.ok(&["logs", victim, "--previous"]),
        format!("run 1 of {victim}\n")
    );
    k.eventually(
        "the second run's log",
        Duration::from_secs(10),
        &["logs", victim],
        |o| stdout(o) == format!("run 2 of {victim}"),
    );
    // An unknown pod: the CLI says so.
    let bad = fault(&dir, &["kill-pod", "default/nope"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("nope"), "{}", stderr(&bad));

    // --- cut a pod's network (CLI): nothing answers at its IP, it keeps running; restored, it
    // answers again
    let cut = &web_pods[1];
    let ip = jsonpath(&k, cut, "{.status.podIP}");
    let (body, _) = wait_answer(&ip, 8080, "/id", Duration::from_secs(10));
    assert_eq!(body.trim(), cut.as_str());
    let procs = pod_procs(&id, &jsonpath(&k, cut, "{.metadata.uid}"));
    fault_ok(&dir, &["cut-net", cut]);
    assert_eq!(
        http_get(&ip, 8080, "/id", Duration::from_secs(2)),
        None,
        "{cut} answered with its network cut"
    );
    assert!(procs.iter().all(|p| p.alive()), "the pod kept running");
    assert_eq!(jsonpath(&k, cut, "{.status.phase}"), "Running");
    fault_ok(&dir, &["restore-net", cut]);
    let (body, took) = wait_answer(&ip, 8080, "/id", Duration::from_secs(5));
    assert_eq!(body.trim(), cut.as_str());
    eprintln!("{cut} answered {took:?} after its network was restored");

    // --- garbage collection: deleting the Deployment removes its ReplicaSet and pods, and
    // their processes end
    let web_procs: Vec<Proc> = web_pods
        .iter()
        .flat_map(|p| pod_procs(&id, &jsonpath(&k, p, "{.metadata.uid}")))
        .collect();
    assert!(web_procs.len() >= 6, "pause + httpd per pod: {web_procs:?}");
    k.ok(&["delete", "deployment", "web"]);
    k.eventually(
        "web's ReplicaSet and pods gone",
        Duration::from_secs(60),
        &["get", "replicasets,pods", "-l", "app=web", "-o", "name"],
        |o| o.status.success() && stdout(o).is_empty(),
    );
    wait_dead("web pods' processes", &web_procs, Duration::from_secs(10));

    // --- the pod that waited for its ConfigMap ran once it existed
    wait_phase(&k, "waits", "Succeeded");
    assert_eq!(
        jsonpath(
            &k,
            "waits",
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        "arrived\n"
    );

    // --- lose a node (its machine is gone: everything of it dies at once) and partition
    // another (all keeps running, nothing reaches it): both turn NotReady; restored, Ready
    let lost = jsonpath(&k, "train-worker-0", "{.spec.nodeName}");
    let parted = ["node-0", "node-1", "node-2"]
        .into_iter()
        .find(|n| *n != lost)
        .unwrap()
        .to_string();
    let lost_procs = node_procs(&id, Some(&lost));
    let parted_procs = node_procs(&id, Some(&parted));
    assert!(!lost_procs.is_empty() && !parted_procs.is_empty());
    let t = Instant::now();
    fault_ok(&dir, &["lose-node", &lost]);
    fault_ok(&dir, &["partition-node", &parted]);
    wait_dead(
        "the lost node's processes",
        &lost_procs,
        Duration::from_secs(5),
    );
    for n in [&lost, &parted] {
        wait_node_ready(&k, n, false, Duration::from_secs(30));
        eprintln!("{n} NotReady {:?} after the faults", t.elapsed());
    }
    // The controller-manager's grace period (3 heartbeats), its 2 s monitor period, a heartbeat
    // that may just have been sent: 13-17 s here.
    let bound = cluster.config().node_grace_period() + Duration::from_secs(10);
    assert!(t.elapsed() < bound, "{:?} > {bound:?}", t.elapsed());
    assert_eq!(node_ready(&k, &lost), "Unknown");
    assert_eq!(node_ready(&k, &parted), "Unknown");
    assert!(
        parted_procs.iter().all(|p| p.alive()),
        "a partitioned node keeps running"
    );
    let t = Instant::now();
    fault_ok(&dir, &["restore-node", &lost]);
    fault_ok(&dir, &["restore-node", &parted]);
    for n in [&lost, &parted] {
        wait_node_ready(&k, n, true, Duration::from_secs(30));
    }
    eprintln!("{lost} and {parted} Ready {:?} after restore", t.elapsed());
    // The lost node's kubelet starts its pod again.
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/train-worker-0",
        "--timeout=60s",
    ]);
    let ip = jsonpath(&k, "train-worker-0", "{.status.podIP}");
    let (body, _) = wait_answer(&ip, 8080, "/id", Duration::from_secs(10));
    assert_eq!(body.trim(), "train-worker-0");
    eprintln!("train-worker-0 back {:?} after restore", t.elapsed());

    stop_and_check(cluster, &dir).await;
    eprintln!("workloads test: {:?}", t0.elapsed());
}
