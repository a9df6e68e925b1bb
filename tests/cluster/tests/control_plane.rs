//! End-to-end tests of the local control plane with the real binaries and the real kubectl.
//!
//! Behind the cargo feature `control-plane-tests` (off by default, so `cargo test --workspace`
//! does not compile or run them): `make cluster-test` provisions and runs them. With the feature
//! on, nothing is skipped: a failed provision fails the test.
#![cfg(feature = "control-plane-tests")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
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
    cfg.kubelet.nodes = 0;
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
    assert_eq!(version["gitVersion"], "v1.20.2", "{version}");

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

    // --- ServiceAccount gets a token secret (1.20 token controller); RBAC refuses it (403)
    k.ok(&["create", "serviceaccount", "-n", "e2e", "robot"]);
    let o = k.eventually(
        "a token secret for SA robot",
        Duration::from_secs(60),
        &[
            "get",
            "sa",
            "-n",
            "e2e",
            "robot",
            "-o",
            "jsonpath={.secrets[0].name}",
        ],
        |o| o.status.success() && !stdout(o).is_empty(),
    );
    let secret = stdout(&o);
    assert_eq!(
        k.ok(&[
            "get",
            "secret",
            "-n",
            "e2e",
            &secret,
            "-o",
            "jsonpath={.type}"
        ]),
        "kubernetes.io/service-account-token"
    );
    let sa_token = k.ok(&[
        "get",
        "secret",
        "-n",
        "e2e",
        &secret,
        "-o",
        "go-template={{.data.token | base64decode}}",
    ]);
    assert!(sa_token.starts_with("ey"), "not a JWT: {sa_token:?}");
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
        .args(["--grace-secs", "5"])
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
    // B is untouched by A's shutdown.
    assert_eq!(kb.ok(&["get", "--raw", "/readyz"]).trim(), "ok");

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_stand_in_registers_gpu_nodes_and_runs_pods_as_processes() {
    let bin = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("e2e-kubelet");
    let mut cfg = ClusterConfig::new(&dir, &bin).unwrap();
    cfg.kubelet.nodes = 3;
    cfg.kubelet.gpus_per_node = 4;
    cfg.kubelet.image_map = [("local/sh".to_string(), PathBuf::from("/bin/sh"))].into();
    let t = Instant::now();
    let cluster = Cluster::start(cfg)
        .await
        .unwrap_or_else(|e| panic!("cluster start: {e}"));
    let k = Kubectl {
        bin: bin.join("kubectl"),
        kubeconfig: cluster.kubeconfig(),
    };
    // --- nodes: Ready, with GPU capacity, and a Lease each
    k.eventually(
        "3 Ready nodes",
        Duration::from_secs(30),
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ],
        |o| stdout(o).lines().filter(|l| *l == "True").count() == 3,
    );
    eprintln!("3 Ready nodes {:?} after start", t.elapsed());
    assert_eq!(
        k.ok(&[
            "get",
            "node",
            "node-0",
            "-o",
            "jsonpath={.status.allocatable.nvidia\\.com/gpu} {.status.capacity.cpu} {.status.capacity.pods}"
        ]),
        "4 8 110"
    );
    assert_eq!(
        k.ok(&["get", "lease", "-n", "kube-node-lease", "-o", "name"])
            .lines()
            .count(),
        3
    );

    // --- a failing pod: exit code 3 and the termination message (the pod name, from the env)
    create_retrying(
        &k,
        &pod_doc(
            "fail3",
            "Never",
            "echo $POD_NAME > /dev/termination-log; exit 3",
            0,
        ),
    );
    wait_phase(&k, "fail3", "Failed");
    let term = "{.status.containerStatuses[0].state.terminated";
    assert_eq!(
        jsonpath(&k, "fail3", &format!("{term}.exitCode}} {term}.message}}")),
        "3 fail3\n"
    );

    // --- a successful pod with an init container; env and downward API checked
    let mut ok = pod_doc(
        "ok",
        "Never",
        "echo \"$POD_NAME $POD_NAMESPACE $POD_UID $NODE_NAME $POD_IP $HOST_IP $(pwd) $(cat /shared/x)\" > /dev/termination-log",
        0,
    );
    // The init container hands over through an emptyDir at a path the host does not have.
    ok["spec"]["initContainers"] = json!([{"name": "init", "image": "local/none",
        "command": ["/bin/sh", "-c", "echo init-ran > /shared/x"],
        "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}]);
    ok["spec"]["volumes"] = json!([{"name": "shared", "emptyDir": {}}]);
    ok["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "shared", "mountPath": "/shared"}]);
    create_retrying(&k, &ok);
    wait_phase(&k, "ok", "Succeeded");
    let uid = jsonpath(&k, "ok", "{.metadata.uid}");
    let node = jsonpath(&k, "ok", "{.spec.nodeName}");
    let ips = jsonpath(&k, "ok", "{.status.podIP} {.status.hostIP}");
    assert!(ips.starts_with("10."), "pod network addresses: {ips}");
    assert_eq!(
        jsonpath(&k, "ok", &format!("{term}.exitCode}} {term}.reason}}")),
        "0 Completed"
    );
    assert_eq!(
        jsonpath(&k, "ok", &format!("{term}.message}}")),
        format!("ok default {uid} {node} {ips} /tmp init-ran\n")
    );
    assert_eq!(
        jsonpath(
            &k,
            "ok",
            "{.status.initContainerStatuses[0].state.terminated.exitCode}"
        ),
        "0"
    );

    // --- GPUs: 4 on 4-GPU nodes is scheduled and sees its devices; 5 stays Pending
    create_retrying(
        &k,
        &pod_doc(
            "gpu4",
            "Never",
            "echo $CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES > /dev/termination-log",
            4,
        ),
    );
    create_retrying(&k, &pod_doc("gpu5", "Never", "true", 5));
    wait_phase(&k, "gpu4", "Succeeded");
    assert_eq!(
        jsonpath(&k, "gpu4", &format!("{term}.message}}")),
        "0,1,2,3 0,1,2,3\n"
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

    // --- no `command`: the image map's binary runs with the args; an unmapped image fails
    let mut mapped = pod_doc("mapped", "Never", "", 0);
    let c = &mut mapped["spec"]["containers"][0];
    c.as_object_mut().unwrap().remove("command");
    c["image"] = json!("local/sh");
    c["args"] = json!(["-c", "echo mapped $0 > /dev/termination-log"]);
    create_retrying(&k, &mapped);
    let mut unmapped = mapped.clone();
    unmapped["metadata"]["name"] = json!("unmapped");
    unmapped["spec"]["containers"][0]["image"] = json!("local/nothing");
    create_retrying(&k, &unmapped);
    wait_phase(&k, "mapped", "Succeeded");
    assert_eq!(
        jsonpath(&k, "mapped", &format!("{term}.message}}")),
        "mapped /bin/sh\n"
    );
    wait_phase(&k, "unmapped", "Failed");
    let r = jsonpath(&k, "unmapped", &format!("{term}.reason}} {term}.message}}"));
    assert!(
        r.starts_with("StartError ") && r.contains("local/nothing"),
        "{r}"
    );

    // --- OnFailure: fails twice, then succeeds; restartCount 2
    // The count lives in an emptyDir: it outlives container restarts (the container's own
    // writable layer does not).
    let mut onfailure = pod_doc(
        "onfailure",
        "OnFailure",
        "echo x >> /data/count; test $(wc -l < /data/count) -ge 3",
        0,
    );
    onfailure["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    onfailure["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    create_retrying(&k, &onfailure);
    wait_phase(&k, "onfailure", "Succeeded");
    assert_eq!(
        jsonpath(
            &k,
            "onfailure",
            "{.status.containerStatuses[0].restartCount}"
        ),
        "2"
    );

    // --- graceful deletion: SIGTERM ignored, so SIGKILL after the 2 s grace; no process left
    let marker = format!("e2e-marker-{}", std::process::id());
    let mut sleeper = pod_doc(
        "sleeper",
        "Never",
        "trap '' TERM; while :; do sleep 1; done",
        0,
    );
    sleeper["spec"]["containers"][0]["command"] = json!([
        "/bin/sh",
        "-c",
        "trap '' TERM; while :; do sleep 1; done",
        marker
    ]);
    create_retrying(&k, &sleeper);
    wait_phase(&k, "sleeper", "Running");
    assert_eq!(processes_with(&marker).len(), 1, "the pod's shell runs");
    let t = Instant::now();
    k.ok(&["delete", "pod", "sleeper", "--wait=true", "--timeout=30s"]);
    eprintln!("sleeper deleted in {:?}", t.elapsed());
    assert!(t.elapsed() >= Duration::from_secs(2), "grace was honoured");
    assert!(
        processes_with(&marker).is_empty(),
        "the pod's process is gone"
    );

    let pids = cluster.pids();
    cluster
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("shutdown: {e}"));
    assert_nothing_left(&dir, &pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_v1_pods_get_own_netns_ip_etc_hosts_and_termination_log() {
    let bin = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("e2e-podnet");
    let mut cfg = ClusterConfig::new(&dir, &bin).unwrap();
    cfg.kubelet.nodes = 2;
    let cluster = Cluster::start(cfg)
        .await
        .unwrap_or_else(|e| panic!("cluster start: {e}"));
    let k = Kubectl {
        bin: bin.join("kubectl"),
        kubeconfig: cluster.kubeconfig(),
    };
    // A server pod with a headless-service name; it answers with its own view of itself.
    let mut server = pod_doc(
        "server",
        "Never",
        "cd $(mktemp -d) && { hostname; getent hosts web-0.web.default.svc.cluster.local; readlink /proc/self/ns/net; } > info && exec /usr/bin/python3 -m http.server 8080 --bind $POD_IP",
        0,
    );
    server["spec"]["hostname"] = json!("web-0");
    server["spec"]["subdomain"] = json!("web");
    create_retrying(&k, &server);
    wait_phase(&k, "server", "Running");
    let ips = jsonpath(&k, "server", "{.status.podIP} {.status.hostIP}");
    let (ip, host_ip) = ips.split_once(' ').unwrap();
    assert!(ip.starts_with("10.") && host_ip.ends_with(".1"), "{ips}");
    assert_eq!(
        ip.rsplit_once('.').unwrap().0,
        host_ip.rsplit_once('.').unwrap().0,
        "same /24"
    );
    // The bridge is the interface with the host address; its name carries the cluster's id.
    let addrs = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "-4", "addr"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let bridge = addrs
        .lines()
        .find(|l| l.contains(&format!(" {host_ip}/24")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no interface with {host_ip}: {addrs}"))
        .to_string();
    let id = bridge
        .strip_prefix("ejbr")
        .expect("bridge name")
        .to_string();
    let ours = net_objects_with(&id);
    assert!(
        ours.iter().any(|n| n.starts_with("ej-")),
        "a netns: {ours:?}"
    );
    // The host reaches the pod's server at the pod IP (through the bridge), another pod does
    // too, and the pod saw its own names and netns.
    let url = format!("http://{ip}:8080/info");
    let start = Instant::now();
    let info = loop {
        let o = Command::new("curl")
            .args(["-sf", "--max-time", "2", &url])
            .output()
            .unwrap();
        if o.status.success() {
            break stdout(&o);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "curl {url}: {}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let host_netns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let mut lines = info.lines();
    assert_eq!(lines.next(), Some("web-0"), "UTS hostname: {info}");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with(&format!("{ip} "))
                && l.contains("web-0.web.default.svc.cluster.local")),
        "/etc/hosts: {info}"
    );
    assert_ne!(
        lines.next(),
        Some(host_netns.to_str().unwrap()),
        "own netns: {info}"
    );
    let client = pod_doc(
        "client",
        "Never",
        &format!("curl -sf --max-time 5 {url} | head -1 > /dev/termination-log"),
        0,
    );
    create_retrying(&k, &client);
    wait_phase(&k, "client", "Succeeded");
    let term = "{.status.containerStatuses[0].state.terminated";
    assert_eq!(
        jsonpath(&k, "client", &format!("{term}.message}}")),
        "web-0\n"
    );
    assert_ne!(jsonpath(&k, "client", "{.status.podIP}"), ip, "IP per pod");
    // --- termination message written at the default terminationMessagePath
    create_retrying(
        &k,
        &pod_doc(
            "boom",
            "Never",
            "echo boom-$POD_NAME > /dev/termination-log; exit 1",
            0,
        ),
    );
    wait_phase(&k, "boom", "Failed");
    assert_eq!(
        jsonpath(&k, "boom", &format!("{term}.exitCode}} {term}.message}}")),
        "1 boom-boom\n"
    );
    assert!(
        !Path::new("/dev/termination-log").exists(),
        "host /dev untouched"
    );
    // --- emptyDir: shared by the pod's containers, private to the pod
    let vm = json!([{"name": "scratch", "mountPath": "/mnt"}]);
    let mut vol = pod_doc(
        "vol",
        "Never",
        "while [ ! -f /mnt/from-writer ]; do sleep 0.1; done; cat /mnt/from-writer > /dev/termination-log",
        0,
    );
    let mut writer = vol["spec"]["containers"][0].clone();
    writer["name"] = json!("writer");
    writer["command"] = json!(["/bin/sh", "-c", "echo $POD_NAME > /mnt/from-writer"]);
    vol["spec"]["containers"][0]["volumeMounts"] = vm.clone();
    writer["volumeMounts"] = vm;
    vol["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(writer);
    vol["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
    create_retrying(&k, &vol);
    wait_phase(&k, "vol", "Succeeded");
    assert_eq!(
        jsonpath(
            &k,
            "vol",
            "{.status.containerStatuses[?(@.name==\"main\")].state.terminated.message}"
        ),
        "vol\n"
    );
    assert!(
        !Path::new("/mnt/from-writer").exists(),
        "host /mnt untouched"
    );
    k.ok(&["delete", "pod", "vol", "--wait=true", "--timeout=30s"]);
    // --- deleting pods removes their netns and veth (vol's goes right after its deletion)
    let netns_count = |v: &[String]| v.iter().filter(|n| n.starts_with("ej-")).count();
    let start = Instant::now();
    let before = loop {
        let before = net_objects_with(&id);
        if netns_count(&before) <= 3 || start.elapsed() > Duration::from_secs(10) {
            break before;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        before.iter().filter(|n| n.starts_with("ej-")).count(),
        3,
        "{before:?}"
    );
    k.ok(&[
        "delete",
        "pod",
        "server",
        "client",
        "--wait=true",
        "--timeout=30s",
    ]);
    // Terminal pods are removed from the API at once; their netns goes right after.
    let start = Instant::now();
    let after = loop {
        let after = net_objects_with(&id);
        if after.len() <= 3 || start.elapsed() > Duration::from_secs(10) {
            break after;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        after.iter().filter(|n| n.starts_with("ej-")).count(),
        1,
        "{after:?}"
    );
    assert_eq!(
        after.iter().filter(|n| n.starts_with("ejv")).count(),
        1,
        "{after:?}"
    );
    // --- shutdown removes the rest, bridge included
    let pids = cluster.pids();
    cluster
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("shutdown: {e}"));
    assert_nothing_left(&dir, &pids);
    assert_eq!(
        net_objects_with(&id),
        Vec::<String>::new(),
        "nothing of the pod network left"
    );
}
