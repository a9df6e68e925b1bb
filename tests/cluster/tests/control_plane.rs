//! End-to-end tests of the local control plane with the real binaries (Kubernetes 1.34) and the
//! real kubectl: the control plane alone, two clusters side by side through the `cluster`
//! binary, and real nodes (kubelet + containerd + runc) running pods of the test image.
//!
//! Behind the cargo feature `control-plane-tests` (off by default, so `cargo test --workspace`
//! does not compile or run them): `make cluster-test` provisions and runs them. With the feature
//! on, nothing is skipped: a failed provision fails the test.
#![cfg(feature = "control-plane-tests")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use local_cluster::{Cluster, ClusterConfig, UNPRIVILEGED_USER};
use serde_json::json;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_serves_crds_gc_serviceaccounts_and_rbac() {
    let bin = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("e2e-main");
    let mut cfg = ClusterConfig::new(&dir, &bin).unwrap();
    // No nodes here: the scheduler check below wants a pod that cannot be placed at all.
    cfg.nodes.count = 0;
    // A port taken between picking and binding: start retries with fresh ports.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    cfg.ports.apiserver = taken;
    let t = Instant::now();
    let cluster = Cluster::start(cfg)
        .await
        .unwrap_or_else(|e| panic!("cluster start: {e}"));
    assert_ne!(cluster.config().ports.apiserver, taken);
    drop(squatter);
    eprintln!(
        "control plane ready in {:?} at {}",
        t.elapsed(),
        cluster.api_url()
    );
    let pids = cluster.pids();
    assert_eq!(pids.len(), 4);
    let k = Kubectl {
        bin: bin.join("kubectl"),
        kubeconfig: cluster.kubeconfig(),
    };
    let ca = cluster.layout().ca_cert().display().to_string();
    let server = cluster.api_url();

    // --- health and version
    assert_eq!(k.ok(&["get", "--raw", "/healthz"]).trim(), "ok");
    assert_eq!(k.ok(&["get", "--raw", "/readyz"]).trim(), "ok");
    let version: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/version"])).unwrap();
    let binary = Command::new(bin.join("kube-apiserver"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&binary),
        format!("Kubernetes {}", version["gitVersion"].as_str().unwrap()),
        "{version}"
    );
    assert!(
        version["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.34.")),
        "{version}"
    );

    // --- namespace
    k.ok(&["create", "namespace", "e2e"]);
    assert_eq!(
        k.ok(&["get", "ns", "e2e", "-o", "jsonpath={.status.phase}"]),
        "Active"
    );

    // --- CRD with status and scale subresources, a custom resource, schema validation, scale
    k.apply(&json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.e2e.elasticjob.dev"},
        "spec": {
            "group": "e2e.elasticjob.dev",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 0}}},
                        "status": {"type": "object", "properties": {
                            "replicas": {"type": "integer"}, "selector": {"type": "string"}}}
                    }
                }},
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector"
                    }
                }
            }]
        }
    }));
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.e2e.elasticjob.dev",
        "--timeout=60s",
    ]);
    let widget = |replicas: i64| {
        json!({"apiVersion": "e2e.elasticjob.dev/v1", "kind": "Widget",
               "metadata": {"name": "w1", "namespace": "e2e"}, "spec": {"replicas": replicas}})
    };
    // Discovery of a fresh CRD can lag a moment behind Established.
    k.eventually(
        "the Widget kind in discovery",
        Duration::from_secs(30),
        &["api-resources", "--api-group=e2e.elasticjob.dev"],
        |o| stdout(o).contains("widgets"),
    );
    let bad = k.run(&["apply", "-f", "-"], Some(&widget(-1).to_string()));
    assert!(
        !bad.status.success(),
        "a widget with replicas -1 was accepted"
    );
    assert!(
        stderr(&bad).contains("spec.replicas"),
        "validation error does not name the field: {}",
        stderr(&bad)
    );
    k.apply(&widget(1));
    k.ok(&["scale", "-n", "e2e", "widget/w1", "--replicas=3"]);
    assert_eq!(
        k.ok(&[
            "get",
            "-n",
            "e2e",
            "widget/w1",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "3"
    );
    let scale: serde_json::Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        "/apis/e2e.elasticjob.dev/v1/namespaces/e2e/widgets/w1/scale",
    ]))
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    // The status subresource: a status write through the main resource is ignored...
    let o = k.run(
        &[
            "patch",
            "-n",
            "e2e",
            "widget/w1",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":7}}"#,
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        k.ok(&[
            "get",
            "-n",
            "e2e",
            "widget/w1",
            "-o",
            "jsonpath={.status.replicas}"
        ]),
        ""
    );
    // ...and goes through /status.
    let raw_status = json!({"apiVersion": "e2e.elasticjob.dev/v1", "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "e2e",
                     "resourceVersion": k.ok(&["get", "-n", "e2e", "widget/w1", "-o", "jsonpath={.metadata.resourceVersion}"])},
        "spec": {"replicas": 3}, "status": {"replicas": 3, "selector": "app=w1"}});
    let o = k.run(
        &[
            "replace",
            "--raw",
            "/apis/e2e.elasticjob.dev/v1/namespaces/e2e/widgets/w1/status",
            "-f",
            "-",
        ],
        Some(&raw_status.to_string()),
    );
    assert!(o.status.success(), "status update: {}", stderr(&o));
    assert_eq!(
        k.ok(&[
            "get",
            "-n",
            "e2e",
            "widget/w1",
            "-o",
            "jsonpath={.status.replicas}"
        ]),
        "3"
    );

    // --- garbage collection (controller-manager): a dependent of a deleted owner goes away
    k.ok(&[
        "create",
        "configmap",
        "-n",
        "e2e",
        "owner",
        "--from-literal=a=b",
    ]);
    let uid = k.ok(&[
        "get",
        "configmap",
        "-n",
        "e2e",
        "owner",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert!(!uid.is_empty());
    k.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dependent", "namespace": "e2e", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]},
        "data": {"c": "d"}}));
    k.ok(&["delete", "configmap", "-n", "e2e", "owner", "--wait=true"]);
    k.eventually(
        "GC of the dependent configmap",
        Duration::from_secs(60),
        &["get", "configmap", "-n", "e2e", "dependent"],
        |o| !o.status.success() && stderr(o).contains("NotFound"),
    );

    // --- scheduler: with no nodes, a pod is marked Unschedulable by the scheduler
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "e2e"},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "c", "image": "local/none", "command": ["true"]}]}});
    create_retrying(&k, &pod);
    k.eventually(
        "the scheduler to mark p1 unschedulable",
        Duration::from_secs(60),
        &[
            "get",
            "pod",
            "-n",
            "e2e",
            "p1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        ],
        |o| stdout(o) == "Unschedulable",
    );

    // --- ServiceAccounts: no token Secret is made for them any more (1.24+); a TokenRequest
    // (`kubectl create token`) gives a bound token that authenticates as the SA (TokenReview);
    // RBAC refuses it (403) until a binding grants it something.
    k.ok(&["create", "serviceaccount", "-n", "e2e", "robot"]);
    let sa_token = k
        .ok(&["create", "token", "-n", "e2e", "robot", "--duration=10m"])
        .trim()
        .to_string();
    assert!(sa_token.starts_with("ey"), "not a JWT: {sa_token:?}");
    assert_eq!(
        k.ok(&[
            "get",
            "sa",
            "-n",
            "e2e",
            "robot",
            "-o",
            "jsonpath={.secrets}"
        ]),
        "",
        "a legacy token Secret was made"
    );
    let user = token_review(&k, &sa_token);
    assert_eq!(
        user["username"], "system:serviceaccount:e2e:robot",
        "{user}"
    );
    assert!(
        user["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("system:serviceaccounts:e2e")),
        "{user}"
    );
    let as_token = |token: &str, args: &[&str]| {
        let mut c = Command::new(bin.join("kubectl"));
        // An empty kubeconfig so nothing of the admin's leaks in.
        c.env("KUBECONFIG", "/dev/null")
            .args([
                "--server",
                &server,
                "--certificate-authority",
                &ca,
                "--token",
                token,
            ])
            .args(args);
        c.output().unwrap()
    };
    // Both kinds of token are the ServiceAccount's to the apiserver.
    let assert_is_robot = |token: &str| {
        let o = as_token(
            token,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        );
        assert_eq!(
            stdout(&o),
            "system:serviceaccount:e2e:robot",
            "{}",
            stderr(&o)
        );
    };
    assert_is_robot(&sa_token);
    // A token Secret made by hand is still filled in by the token controller.
    k.apply(
        &json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "robot-token", "namespace": "e2e",
                     "annotations": {"kubernetes.io/service-account.name": "robot"}}}),
    );
    k.eventually(
        "the token controller to fill in robot-token",
        Duration::from_secs(30),
        &[
            "get",
            "secret",
            "-n",
            "e2e",
            "robot-token",
            "-o",
            "jsonpath={.data.token}",
        ],
        |o| !stdout(o).is_empty(),
    );
    let legacy = k.ok(&[
        "get",
        "secret",
        "-n",
        "e2e",
        "robot-token",
        "-o",
        "go-template={{.data.token | base64decode}}",
    ]);
    assert_is_robot(&legacy);
    let o = as_token(&sa_token, &["get", "secrets", "-n", "kube-system"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Forbidden")
            && stderr(&o).contains("system:serviceaccount:e2e:robot")
            && stderr(&o).contains("cannot list resource \"secrets\""),
        "expected a 403 for the SA: {}",
        stderr(&o)
    );
    let o = as_token(
        &sa_token,
        &["get", "--raw", "/api/v1/namespaces/kube-system/secrets"],
    );
    assert!(
        stderr(&o).contains("(Forbidden)") || stderr(&o).contains("403"),
        "{}",
        stderr(&o)
    );
    // Granting RBAC makes the same token work.
    k.ok(&[
        "create",
        "rolebinding",
        "-n",
        "e2e",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=e2e:robot",
    ]);
    let start = Instant::now();
    loop {
        let o = as_token(&sa_token, &["get", "configmaps", "-n", "e2e"]);
        if o.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "SA with view role: {}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The static unprivileged user: authenticated, but no permission at all.
    let unpriv = cluster
        .tokens()
        .token_of(UNPRIVILEGED_USER)
        .unwrap()
        .to_string();
    let o = as_token(&unpriv, &["get", "namespaces"]);
    assert!(
        stderr(&o).contains("Forbidden") && stderr(&o).contains(UNPRIVILEGED_USER),
        "{}",
        stderr(&o)
    );
    // An unknown token is not authenticated at all (401).
    let o = as_token("not-a-token", &["get", "namespaces"]);
    assert!(stderr(&o).contains("Unauthorized"), "{}", stderr(&o));

    // --- stop: nothing left
    let t = Instant::now();
    cluster
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("shutdown: {e}"));
    eprintln!("stopped in {:?}", t.elapsed());
    assert_nothing_left(&dir, &pids);
    assert!(!dir.join("cluster.json").exists());
}

/// Starts `cluster up` (the binary) and returns it once it printed that it is up.
fn cluster_up(dir: &Path, bin: &Path) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args(["up", "--dir"])
        .arg(dir)
        .arg("--bin-dir")
        .arg(bin)
        .args(["--grace-secs", "5", "--nodes", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!(
                "cluster up for {} ended before it was up ({:?}): {text}",
                dir.display(),
                child.wait()
            );
        }
        text.push_str(&line);
        if line.contains("export KUBECONFIG=") {
            assert_eq!(
                line.trim(),
                format!("export KUBECONFIG={}", dir.join("kubeconfig").display())
            );
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    child
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < timeout,
            "cluster up did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_clusters_side_by_side_via_the_binary_stop_by_sigterm_and_by_down() {
    let bin = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("side-a"), tmp.path().join("side-b"));
    let t = Instant::now();
    let mut ca = cluster_up(&a, &bin);
    let mut cb = cluster_up(&b, &bin);
    eprintln!("two clusters up in {:?}", t.elapsed());
    let ka = Kubectl {
        bin: bin.join("kubectl"),
        kubeconfig: a.join("kubeconfig"),
    };
    let kb = Kubectl {
        bin: bin.join("kubectl"),
        kubeconfig: b.join("kubeconfig"),
    };
    assert_ne!(
        ka.ok(&[
            "config",
            "view",
            "-o",
            "jsonpath={.clusters[0].cluster.server}"
        ]),
        kb.ok(&[
            "config",
            "view",
            "-o",
            "jsonpath={.clusters[0].cluster.server}"
        ])
    );
    // Separate etcds: a namespace made in one is absent from the other.
    ka.ok(&["create", "namespace", "only-in-a"]);
    assert!(
        !kb.run(&["get", "namespace", "only-in-a"], None)
            .status
            .success()
    );
    assert_eq!(kb.ok(&["get", "--raw", "/readyz"]).trim(), "ok");
    // A's credentials are no good on B (different CA and tokens).
    let o = Command::new(bin.join("kubectl"))
        .args(["--kubeconfig"])
        .arg(a.join("kubeconfig"))
        .args([
            "--server",
            &kb.ok(&[
                "config",
                "view",
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
            ]),
        ])
        .args(["get", "--raw", "/readyz"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "A's kubeconfig worked against B");
    // Each has its own real node (the same name, node-0): own addresses, bridge, netns, cgroups.
    let node_ip = |k: &Kubectl| {
        k.ok(&[
            "get",
            "node",
            "node-0",
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ])
    };
    assert_eq!(node_ready(&ka, "node-0"), "True");
    assert_eq!(node_ready(&kb, "node-0"), "True");
    assert_ne!(node_ip(&ka), node_ip(&kb));
    let (id_a, id_b) = (cluster_id_of(&ka), cluster_id_of(&kb));
    assert_ne!(id_a, id_b);
    for id in [&id_a, &id_b] {
        assert!(!cgroups_of(id).is_empty(), "cgroups of {id}");
        assert!(!node_procs(id, Some("node-0")).is_empty(), "node of {id}");
        assert!(
            net_objects_with(id).iter().any(|n| n.starts_with("ejbr")),
            "bridge of {id}"
        );
    }

    let (procs_a, procs_b) = (node_procs(&id_a, None), node_procs(&id_b, None));

    let state: local_cluster::StateFile =
        serde_json::from_str(&std::fs::read_to_string(a.join("cluster.json")).unwrap()).unwrap();
    assert_eq!(state.supervisor_pid, ca.id() as i32);
    let pids_a = state.pids.clone();
    let state_b: local_cluster::StateFile =
        serde_json::from_str(&std::fs::read_to_string(b.join("cluster.json")).unwrap()).unwrap();

    // A: SIGTERM to `cluster up` (what Ctrl-C does).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ca.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut ca, Duration::from_secs(60));
    assert!(status.success(), "cluster up (A) exited with {status}");
    assert_nothing_left(&a, &pids_a);
    assert!(
        procs_a.iter().all(|p| !p.alive()),
        "A's node left processes"
    );
    assert!(procs_b.iter().all(|p| p.alive()), "B's node lost processes");
    assert_eq!(net_objects_with(&id_a), Vec::<String>::new());
    assert_eq!(cgroups_of(&id_a), Vec::<std::path::PathBuf>::new());
    // B is untouched by A's shutdown.
    assert_eq!(kb.ok(&["get", "--raw", "/readyz"]).trim(), "ok");
    assert_eq!(node_ready(&kb, "node-0"), "True");
    assert!(!node_procs(&id_b, Some("node-0")).is_empty());

    // B: `cluster down --dir`.
    let o = Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args(["down", "--dir"])
        .arg(&b)
        .output()
        .unwrap();
    assert!(o.status.success(), "cluster down: {}", stderr(&o));
    let status = wait_exit(&mut cb, Duration::from_secs(60));
    assert!(status.success(), "cluster up (B) exited with {status}");
    assert_nothing_left(&b, &state_b.pids);
    assert!(
        procs_b.iter().all(|p| !p.alive()),
        "B's node left processes"
    );
    assert_eq!(net_objects_with(&id_b), Vec::<String>::new());
    assert_eq!(cgroups_of(&id_b), Vec::<std::path::PathBuf>::new());
}

/// The id of the cluster behind `k`: its apiserver listens on its bridge's address.
fn cluster_id_of(k: &Kubectl) -> String {
    let server = k.ok(&[
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let host = server
        .trim_start_matches("https://")
        .rsplit_once(':')
        .unwrap()
        .0
        .to_string();
    let addrs = Command::new("ip")
        .args(["-o", "-4", "addr"])
        .output()
        .unwrap();
    let addrs = stdout(&addrs);
    addrs
        .lines()
        .find(|l| l.contains(&format!(" {host}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.strip_prefix("ejbr"))
        .unwrap_or_else(|| panic!("no bridge with {host}: {addrs}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nodes_run_pods_with_init_containers_users_gpus_and_termination_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("e2e-nodes");
    let t = Instant::now();
    let (cluster, k) = start_real(&dir, 3).await;
    let id = cluster_id(&cluster);

    // --- nodes: Ready real kubelets of the control plane's version on containerd, with the
    // fake GPUs of the device plugin, and a Lease each
    let version: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/version"])).unwrap();
    // The device plugin registers its GPUs a moment after the kubelet reports Ready.
    k.eventually(
        "4 GPUs on each node",
        Duration::from_secs(30),
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.allocatable.nvidia\\.com/gpu}",
        ],
        |o| stdout(o) == "4 4 4",
    );
    let nodes = k.json_ok(&["get", "nodes"]);
    let items = nodes["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{nodes}");
    for (i, n) in items.iter().enumerate() {
        assert_eq!(n["metadata"]["name"], format!("node-{i}"));
        let ready = n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True", "{n}");
        let info = &n["status"]["nodeInfo"];
        assert_eq!(info["kubeletVersion"], version["gitVersion"], "{info}");
        assert!(
            info["containerRuntimeVersion"]
                .as_str()
                .unwrap()
                .starts_with("containerd://"),
            "{info}"
        );
        assert_eq!(n["status"]["capacity"]["nvidia.com/gpu"], "4", "{n}");
        assert_eq!(n["status"]["allocatable"]["nvidia.com/gpu"], "4", "{n}");
        // The node's daemons run in its own cgroup subtree.
        assert!(!node_procs(&id, Some(&format!("node-{i}"))).is_empty());
    }
    k.eventually(
        "a Lease per node",
        Duration::from_secs(30),
        &["get", "lease", "-n", "kube-node-lease", "-o", "name"],
        |o| stdout(o).lines().count() == 3,
    );

    // --- a pod with an init container handing over through an emptyDir, a non-root user, 2
    // GPUs, the downward API; it writes its termination message and exits 3
    let mut gpu = pod_doc(
        "gpu2",
        "Never",
        r#"echo "uid=$(id -u)"
echo "gpus=$NVIDIA_VISIBLE_DEVICES"
echo "devs=$(ls /dev | grep '^nvidia[0-9]' | tr '\n' ' ')"
echo "init=$(cat /shared/x)"
echo "env=$POD_NAME $POD_NAMESPACE $POD_UID $NODE_NAME $POD_IP $HOST_IP"
echo "bye from $POD_NAME" > /dev/termination-log
exit 3"#,
        2,
    );
    gpu["spec"]["securityContext"] = json!({"runAsUser": 1000, "runAsGroup": 1000});
    let mut init = busybox("init", "echo ran-as-$(id -u) > /shared/x");
    init["volumeMounts"] = json!([{"name": "shared", "mountPath": "/shared"}]);
    gpu["spec"]["initContainers"] = json!([init]);
    gpu["spec"]["volumes"] = json!([{"name": "shared", "emptyDir": {}}]);
    gpu["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "shared", "mountPath": "/shared"}]);
    create_retrying(&k, &gpu);
    // 5 GPUs fit on no node.
    create_retrying(&k, &pod_doc("gpu5", "Never", "true", 5));
    // Graceful deletion: SIGTERM ignored, so SIGKILL after the 2 s grace.
    create_retrying(
        &k,
        &pod_doc(
            "sleeper",
            "Never",
            "trap '' TERM; while :; do sleep 1; done",
            0,
        ),
    );

    wait_phase(&k, "gpu2", "Failed");
    let term = "{.status.containerStatuses[0].state.terminated";
    assert_eq!(
        jsonpath(
            &k,
            "gpu2",
            &format!("{term}.exitCode}} {term}.reason}} {term}.message}}")
        ),
        "3 Error bye from gpu2\n"
    );
    assert_eq!(
        jsonpath(
            &k,
            "gpu2",
            "{.status.initContainerStatuses[0].state.terminated.exitCode}"
        ),
        "0"
    );
    let log = k.ok(&["logs", "gpu2"]);
    let field = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in the log:\n{log}"))
            .trim()
            .to_string()
    };
    assert_eq!(field("uid"), "1000", "{log}");
    assert_eq!(field("init"), "ran-as-1000", "{log}");
    let node = jsonpath(&k, "gpu2", "{.spec.nodeName}");
    let gpus: Vec<String> = field("gpus").split(',').map(str::to_string).collect();
    assert_eq!(gpus.len(), 2, "{log}");
    let mut want_devs = Vec::new();
    for g in &gpus {
        let i = g
            .strip_prefix(&format!("GPU-fake-{node}-"))
            .unwrap_or_else(|| panic!("GPU {g} not of {node}"));
        want_devs.push(format!("nvidia{i}"));
    }
    let mut devs: Vec<String> = field("devs")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    devs.sort();
    want_devs.sort();
    assert_eq!(devs, want_devs, "{log}");
    let (uid, pod_ip, host_ip) = (
        jsonpath(&k, "gpu2", "{.metadata.uid}"),
        jsonpath(&k, "gpu2", "{.status.podIP}"),
        jsonpath(&k, "gpu2", "{.status.hostIP}"),
    );
    assert_eq!(
        field("env"),
        format!("gpu2 default {uid} {node} {pod_ip} {host_ip}")
    );
    // Its own IP, from the pod CIDR the host routes to its node.
    assert_ne!(pod_ip, host_ip);
    let cidr = pod_cidr_of(&host_ip);
    assert!(in_cidr(&pod_ip, cidr), "{pod_ip} not in {cidr:?}");
    assert!(
        !Path::new("/dev/termination-log").exists(),
        "host /dev untouched"
    );

    k.eventually(
        "gpu5 unschedulable",
        Duration::from_secs(30),
        &[
            "get",
            "pod",
            "gpu5",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ],
        |o| stdout(o).contains("Insufficient nvidia.com/gpu"),
    );
    assert_eq!(jsonpath(&k, "gpu5", "{.status.phase}"), "Pending");

    wait_phase(&k, "sleeper", "Running");
    let sleeper = pod_procs(&id, &jsonpath(&k, "sleeper", "{.metadata.uid}"));
    assert!(sleeper.len() >= 2, "pause and the shell: {sleeper:?}");
    let t_del = Instant::now();
    k.ok(&["delete", "pod", "sleeper", "--wait=true", "--timeout=30s"]);
    eprintln!("sleeper deleted in {:?}", t_del.elapsed());
    assert!(t_del.elapsed() >= Duration::from_secs(2), "grace honoured");
    wait_dead("the sleeper's processes", &sleeper, Duration::from_secs(10));

    stop_and_check(cluster, &dir).await;
    eprintln!("real nodes test: {:?}", t.elapsed());
}
