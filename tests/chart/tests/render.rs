//! The chart without a cluster: `helm lint`, `helm template` with default and other values
//! (objects, names, namespaces, labels, RBAC rules, operator args, the CRD, the
//! PodDisruptionBudget), the values schema's refusals with helm's message, the chart's CRD copy
//! and NOTES.txt. Needs only helm.

use elasticjob_chart_tests::*;
use serde_json::{Value, json};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the operator does with jobs and their objects (ClusterRole, or Role in watchNamespace).
const JOB_RULES: [&str; 10] = [
    "apps controllerrevisions: create,delete,list",
    "core pods: create,delete,get,list,watch",
    "core secrets: create",
    "core services: create,get,list,patch,watch",
    "elasticjob.dev elasticjobs/status: get,patch,update",
    "elasticjob.dev elasticjobs: delete,get,list,watch",
    "events.k8s.io events: create,patch",
    "kueue.x-k8s.io workloads/status: patch",
    "kueue.x-k8s.io workloads: create,delete,get,list,watch",
    "scheduling.x-k8s.io podgroups: create,get,patch",
];
const NODE_RULES: [&str; 4] = [
    "core nodes: get,list,watch",
    "kueue.x-k8s.io resourceflavors: get,list,watch",
    "kueue.x-k8s.io workloadpriorityclasses: get",
    "scheduling.k8s.io priorityclasses: get",
];
const LEASE_RULES: [&str; 1] = ["coordination.k8s.io leases: create,get,list,patch,update,watch"];
/// The CRD's name, and the object in `inventory` (cluster-scoped).
const CRD: &str = "elasticjobs.elasticjob.dev";
const CRD_OBJECT: &str = "CustomResourceDefinition//elasticjobs.elasticjob.dev";
/// The chart's copy of the generated CRD (crds/elasticjob.yaml), rendered by templates/crd.yaml.
const CHART_CRD: &str = "files/elasticjob-crd.yaml";

fn readiness_path(docs: &[Value]) -> String {
    str_at(operator_container(docs), "/readinessProbe/httpGet/path").to_string()
}

fn assert_binding(docs: &[Value], kind: &str, ns: &str, name: &str, role_kind: &str) {
    let b = find(docs, kind, name);
    assert_eq!(str_at(b, "/metadata/namespace"), ns, "{kind} {name}");
    assert_eq!(
        b["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name})
    );
    assert_eq!(
        b["subjects"],
        json!([{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]),
        "{kind} {name} binds the chart's ServiceAccount"
    );
}

#[test]
fn lint_passes_with_default_and_other_values() {
    let chart = chart_dir();
    for sets in [
        &[][..],
        &["watchNamespace=team-a"],
        &["replicaCount=2"],
        &["leaderElection.enabled=false"],
        &["metrics.serviceMonitor.enabled=true"],
        &["metrics.service.enabled=false"],
        &["logFormat=text", "logLevel=debug", "image.tag=dev"],
        &["crds.install=false"],
    ] {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
        for s in sets {
            args.extend(["--set", s]);
        }
        let o = helm(&args);
        let out = text(&o.stdout) + &text(&o.stderr);
        assert!(
            o.status.success() && out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm lint --strict --set {sets:?}:\n{out}"
        );
    }
}

#[test]
fn chart_versions_match_the_workspace() {
    let chart = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    let chart: Value = serde_saphyr::from_str(&chart).unwrap();
    assert_eq!(
        chart["appVersion"], VERSION,
        "Chart.yaml appVersion: the image tags default to it and `make images` tags the workspace version"
    );
    assert_eq!(chart["version"], VERSION, "Chart.yaml version");
}

#[test]
fn default_values_render_cluster_wide_rbac_leader_election_and_metrics_service() {
    let docs = render(&[]);
    assert_eq!(
        inventory(&docs),
        [
            "ClusterRole//ej-elasticjob-operator",
            "ClusterRole//ej-elasticjob-operator-nodes",
            "ClusterRoleBinding//ej-elasticjob-operator",
            "ClusterRoleBinding//ej-elasticjob-operator-nodes",
            CRD_OBJECT,
            "Deployment/elasticjob-system/ej-elasticjob-operator",
            "Role/elasticjob-system/ej-elasticjob-operator-leader",
            "RoleBinding/elasticjob-system/ej-elasticjob-operator-leader",
            "Service/elasticjob-system/ej-elasticjob-operator-metrics",
            "ServiceAccount/elasticjob-system/ej-elasticjob-operator",
        ]
    );
    // Every object carries the release's labels (helm uninstall and the tests find them so).
    for d in &docs {
        let labels = &d["metadata"]["labels"];
        for (k, v) in [
            ("app.kubernetes.io/name", "elasticjob-operator"),
            ("app.kubernetes.io/instance", RELEASE),
            ("app.kubernetes.io/managed-by", "Helm"),
            ("app.kubernetes.io/version", VERSION),
        ] {
            assert_eq!(labels[k], v, "label {k} of {}", str_at(d, "/metadata/name"));
        }
    }

    // RBAC: exactly these rules, no wildcard, no secrets.
    assert_eq!(rules(find(&docs, "ClusterRole", FULLNAME)), JOB_RULES);
    let nodes = format!("{FULLNAME}-nodes");
    let leader = format!("{FULLNAME}-leader");
    assert_eq!(rules(find(&docs, "ClusterRole", &nodes)), NODE_RULES);
    assert_eq!(rules(find(&docs, "Role", &leader)), LEASE_RULES);
    assert_binding(&docs, "ClusterRoleBinding", "", FULLNAME, "ClusterRole");
    assert_binding(&docs, "ClusterRoleBinding", "", &nodes, "ClusterRole");
    assert_binding(&docs, "RoleBinding", NAMESPACE, &leader, "Role");

    // The Deployment: the chart's image and ServiceAccount, the operator's flags, non-root.
    let dep = find(&docs, "Deployment", FULLNAME);
    assert_eq!(dep["spec"]["replicas"], 1);
    let pod = &dep["spec"]["template"];
    assert_eq!(pod["spec"]["serviceAccountName"], FULLNAME);
    let c = operator_container(&docs);
    assert_eq!(
        c["image"],
        format!("ghcr.io/elasticjob/elasticjob-operator:{VERSION}")
    );
    assert!(c.get("command").is_none(), "the image's entrypoint runs");
    assert_eq!(
        operator_args(&docs),
        [
            format!("--launcher-image=ghcr.io/elasticjob/elastic-launch:{VERSION}"),
            "--cluster-domain=cluster.local".into(),
            "--metrics-addr=[::]:8080".into(),
            "--log-format=json".into(),
            "--concurrency=16".into(),
            "--kube-qps=0".into(),
            "--kube-burst=100".into(),
            "--leader-elect".into(),
            format!("--lease-name={FULLNAME}"),
            "--leader-elect-lease-duration=15".into(),
            "--leader-elect-renew-grace=5".into(),
        ]
    );
    let env: Vec<&Value> = c["env"].as_array().unwrap().iter().collect();
    assert_eq!(env[0], &json!({"name": "RUST_LOG", "value": "info"}));
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        assert!(
            env.contains(&&json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})),
            "{name} from the downward API: {env:?}"
        );
    }
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 65532);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(str_at(c, "/livenessProbe/httpGet/path"), "/healthz");
    // The operator's /readyz is true for a standby too (else a rolling update never finishes).
    assert_eq!(readiness_path(&docs), "/readyz");

    // The metrics Service selects the operator's pods.
    let svc = find(&docs, "Service", &format!("{FULLNAME}-metrics"));
    let selector = &svc["spec"]["selector"];
    assert_eq!(selector, &dep["spec"]["selector"]["matchLabels"]);
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][k], v, "pod label {k}");
    }
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}])
    );
}

/// Numbers as f64, so `minimum: 0.0` (the generated YAML) and `minimum: 0` (the same number
/// after the template's fromYaml/toYaml) compare equal.
fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().expect("a finite number")),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn the_crd_is_a_template_so_upgrades_reach_it_and_uninstall_keeps_it() {
    // A template, not crds/: Helm installs crds/ once and never upgrades it. `helm template`
    // without --include-crds renders only templates, so the CRD is here only as one.
    let docs = render(&[]);
    let crd = find(&docs, "CustomResourceDefinition", CRD);
    assert!(
        !chart_dir().join("crds").exists(),
        "charts/elasticjob-operator/crds/ is installed once and never upgraded by Helm: the CRD belongs in templates/"
    );
    assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "helm uninstall must keep the CRD, or every ElasticJob goes with it"
    );
    assert_eq!(
        str_at(crd, "/metadata/namespace"),
        "",
        "the CRD is cluster-scoped"
    );
    // The rendered CRD is the generated one (crds/elasticjob.yaml), metadata aside.
    let generated = std::fs::read_to_string(repo_root().join("crds/elasticjob.yaml")).unwrap();
    let generated: Value = serde_saphyr::from_str(&generated).unwrap();
    assert_eq!(crd["kind"], generated["kind"]);
    assert_eq!(crd["metadata"]["name"], generated["metadata"]["name"]);
    assert!(
        numbers_as_f64(&crd["spec"]) == numbers_as_f64(&generated["spec"]),
        "the rendered CRD's spec differs from crds/elasticjob.yaml's"
    );

    // crds.install=false: no CRD (managed elsewhere, or by another release); the rest stays.
    let without = render(&["crds.install=false"]);
    let mut want = inventory(&docs);
    want.retain(|o| o != CRD_OBJECT);
    assert_eq!(inventory(&without), want);
}

#[test]
fn no_pod_disruption_budget_for_one_replica() {
    for sets in [&[][..], &["replicaCount=1"]] {
        let docs = render(sets);
        assert!(
            !docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"),
            "--set {sets:?}: a PodDisruptionBudget for one replica blocks every node drain: {:?}",
            inventory(&docs)
        );
    }
}

#[test]
fn more_replicas_get_a_pod_disruption_budget_of_the_operator_pods() {
    for n in [2, 3] {
        let set = format!("replicaCount={n}");
        let docs = render(&[&set]);
        let pdb = find(&docs, "PodDisruptionBudget", FULLNAME);
        assert_eq!(pdb["apiVersion"], "policy/v1", "{set}");
        assert_eq!(pdb["metadata"]["namespace"], NAMESPACE);
        assert_eq!(
            pdb["metadata"]["labels"]["app.kubernetes.io/instance"],
            RELEASE
        );
        assert_eq!(pdb["spec"]["minAvailable"], 1, "{set}");
        assert!(pdb["spec"].get("maxUnavailable").is_none());
        // It selects exactly the operator's pods.
        let dep = find(&docs, "Deployment", FULLNAME);
        let selector = &pdb["spec"]["selector"]["matchLabels"];
        assert_eq!(selector, &dep["spec"]["selector"]["matchLabels"], "{set}");
        for (k, v) in selector.as_object().unwrap() {
            assert_eq!(
                &dep["spec"]["template"]["metadata"]["labels"][k], v,
                "pod label {k}"
            );
        }
    }
    // Kubernetes < 1.21 has no policy/v1 (the chart supports 1.20).
    let old = template(&["replicaCount=2"], &["--kube-version", "1.20.0"]).unwrap();
    assert_eq!(
        find(&old, "PodDisruptionBudget", FULLNAME)["apiVersion"],
        "policy/v1beta1"
    );
}

#[test]
fn notes_point_only_at_what_exists() {
    let root = repo_root();
    for sets in [
        &[][..],
        &["watchNamespace=team-a"],
        &["crds.install=false"],
        &["metrics.service.enabled=false"],
    ] {
        let notes = notes(sets);
        // No links: nothing public to point at.
        assert!(
            !notes.contains("http://") && !notes.contains("https://"),
            "--set {sets:?}: NOTES.txt links a URL:\n{notes}"
        );
        assert!(
            notes.contains("kubectl explain elasticjob.spec"),
            "--set {sets:?}:\n{notes}"
        );
        // Every repository path it names exists.
        let paths: Vec<&str> = notes
            .split(|c: char| c.is_whitespace() || "()`\"';,".contains(c))
            .map(|w| w.trim_end_matches(['.', ':']))
            .filter(|w| w.ends_with(".yaml") || w.ends_with(".md"))
            .collect();
        assert!(
            paths.contains(&"examples/elasticjob.yaml") && paths.contains(&"README.md"),
            "--set {sets:?}: {paths:?}"
        );
        for p in &paths {
            assert!(
                root.join(p).is_file(),
                "--set {sets:?}: NOTES.txt names {p}, which the repository does not have"
            );
        }
        // The objects it names are the rendered ones.
        let docs = render(sets);
        let deployment = format!("deployment/{FULLNAME}");
        assert!(notes.contains(&deployment), "{notes}");
        find(&docs, "Deployment", FULLNAME);
        let service = format!("service {FULLNAME}-metrics:8080/metrics");
        if docs.iter().any(|d| d["kind"] == "Service") {
            assert!(notes.contains(&service), "{notes}");
        } else {
            assert!(!notes.contains(&service), "{notes}");
        }
        // The example job's name and pods: examples/elasticjob.yaml's job is `train`.
        assert!(notes.contains(" get ej train -w"), "{notes}");
    }
    let example = std::fs::read_to_string(root.join("examples/elasticjob.yaml")).unwrap();
    assert!(
        example.contains("kind: ElasticJob\nmetadata:\n  name: train\n"),
        "NOTES.txt's commands name the job `train` of examples/elasticjob.yaml"
    );
    // With watchNamespace, the commands go to that namespace (the operator watches no other).
    let notes = notes(&["watchNamespace=team-a"]);
    for line in notes.lines().filter(|l| l.contains(" ej train")) {
        assert!(line.contains("-n team-a"), "{line}");
    }
}

#[test]
fn watch_namespace_renders_a_role_there_and_the_nodes_cluster_role() {
    let docs = render(&["watchNamespace=team-a"]);
    assert_eq!(
        inventory(&docs),
        [
            "ClusterRole//ej-elasticjob-operator-nodes",
            "ClusterRoleBinding//ej-elasticjob-operator-nodes",
            CRD_OBJECT,
            "Deployment/elasticjob-system/ej-elasticjob-operator",
            "Role/elasticjob-system/ej-elasticjob-operator-leader",
            "Role/team-a/ej-elasticjob-operator",
            "RoleBinding/elasticjob-system/ej-elasticjob-operator-leader",
            "RoleBinding/team-a/ej-elasticjob-operator",
            "Service/elasticjob-system/ej-elasticjob-operator-metrics",
            "ServiceAccount/elasticjob-system/ej-elasticjob-operator",
        ]
    );
    assert_eq!(rules(find(&docs, "Role", FULLNAME)), JOB_RULES);
    assert_binding(&docs, "RoleBinding", "team-a", FULLNAME, "Role");
    let nodes = format!("{FULLNAME}-nodes");
    assert_eq!(rules(find(&docs, "ClusterRole", &nodes)), NODE_RULES);
    assert_binding(&docs, "ClusterRoleBinding", "", &nodes, "ClusterRole");
    assert!(
        operator_args(&docs).contains(&"--namespace=team-a".to_string()),
        "{:?}",
        operator_args(&docs)
    );
    // Default: no --namespace (every namespace).
    assert!(
        !operator_args(&render(&[]))
            .iter()
            .any(|a| a.starts_with("--namespace"))
    );
}

#[test]
fn two_replicas_run_with_leader_election() {
    let docs = render(&[
        "replicaCount=2",
        "leaderElection.leaseDurationSeconds=6",
        "leaderElection.renewGraceSeconds=2",
    ]);
    assert_eq!(find(&docs, "Deployment", FULLNAME)["spec"]["replicas"], 2);
    let args = operator_args(&docs);
    assert!(args.contains(&"--leader-elect".to_string()), "{args:?}");
    assert!(
        args.contains(&format!("--lease-name={FULLNAME}")),
        "{args:?}"
    );
    assert!(
        args.ends_with(&[
            "--leader-elect-lease-duration=6".to_string(),
            "--leader-elect-renew-grace=2".to_string()
        ]),
        "{args:?}"
    );
    assert_eq!(
        rules(find(&docs, "Role", &format!("{FULLNAME}-leader"))),
        LEASE_RULES
    );
    assert_eq!(readiness_path(&docs), "/readyz");
}

#[test]
fn without_leader_election_no_lease_flags_nor_lease_role() {
    let docs = render(&["leaderElection.enabled=false"]);
    let args = operator_args(&docs);
    assert!(
        !args
            .iter()
            .any(|a| a.contains("lease") || a.contains("leader"))
    );
    assert!(
        !inventory(&docs).iter().any(|o| o.contains("-leader")),
        "{:?}",
        inventory(&docs)
    );
    assert_eq!(readiness_path(&docs), "/readyz");
}

#[test]
fn service_monitor_scrapes_the_metrics_service() {
    let docs = render(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.interval=15s",
        "metrics.serviceMonitor.labels.release=prometheus",
    ]);
    let sm = find(&docs, "ServiceMonitor", FULLNAME);
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], NAMESPACE);
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        sm["spec"]["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "15s"}])
    );
    let svc = find(&docs, "Service", &format!("{FULLNAME}-metrics"));
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "Service label {k}");
    }
    assert_eq!(svc["spec"]["ports"][0]["name"], "metrics");
}

#[test]
fn metrics_service_off_renders_no_service_and_refuses_a_service_monitor() {
    let docs = render(&["metrics.service.enabled=false"]);
    assert!(
        !docs.iter().any(|d| d["kind"] == "Service"),
        "{:?}",
        inventory(&docs)
    );
    // The operator still serves metrics on its port.
    assert_eq!(operator_container(&docs)["ports"][0]["containerPort"], 8080);
    let err = template(
        &[
            "metrics.service.enabled=false",
            "metrics.serviceMonitor.enabled=true",
        ],
        &[],
    )
    .unwrap_err();
    assert!(
        err.contains("metrics.serviceMonitor.enabled needs metrics.service.enabled"),
        "{err}"
    );
}

#[test]
fn other_values_reach_the_deployment() {
    let docs = render(&[
        "image.repository=registry.example/op",
        "image.tag=dev",
        "launcherImage.tag=dev2",
        "logFormat=text",
        "logLevel=debug",
        "clusterDomain=corp.local",
        "metrics.port=9090",
        "serviceAccount.name=ops",
        "concurrency=64",
        "kubeApi.qps=200",
        "kubeApi.burst=400",
    ]);
    let c = operator_container(&docs);
    assert_eq!(c["image"], "registry.example/op:dev");
    let args = operator_args(&docs);
    for want in [
        "--launcher-image=ghcr.io/elasticjob/elastic-launch:dev2",
        "--cluster-domain=corp.local",
        "--metrics-addr=[::]:9090",
        "--log-format=text",
        "--concurrency=64",
        "--kube-qps=200",
        "--kube-burst=400",
    ] {
        assert!(args.contains(&want.to_string()), "{want} in {args:?}");
    }
    assert_eq!(c["env"][0], json!({"name": "RUST_LOG", "value": "debug"}));
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    let dep = find(&docs, "Deployment", FULLNAME);
    assert_eq!(dep["spec"]["template"]["spec"]["serviceAccountName"], "ops");
    assert_eq!(
        find(&docs, "ServiceAccount", "ops")["metadata"]["namespace"],
        NAMESPACE
    );
    assert_eq!(
        find(&docs, "ClusterRoleBinding", FULLNAME)["subjects"][0]["name"],
        "ops"
    );

    // Bring your own ServiceAccount and RBAC.
    let docs = render(&[
        "serviceAccount.create=false",
        "serviceAccount.name=mine",
        "rbac.create=false",
    ]);
    assert_eq!(
        inventory(&docs),
        [
            CRD_OBJECT,
            "Deployment/elasticjob-system/ej-elasticjob-operator",
            "Service/elasticjob-system/ej-elasticjob-operator-metrics",
        ]
    );
    let err = template(&["serviceAccount.create=false"], &[]).unwrap_err();
    assert!(
        err.contains("serviceAccount.name is required when serviceAccount.create is false"),
        "{err}"
    );
}

#[test]
fn wrong_values_fail_with_the_schema_message() {
    // helm v4's wording (the provisioned helm): which value, and the rule it breaks.
    for (sets, want) in [
        (&["logFormat=xml"][..], &["logformat", "json", "text"][..]),
        (
            &["replicaCount=2", "leaderElection.enabled=false"],
            &["leaderelection", "enabled", "true"],
        ),
        (&["replicaCount=0"], &["/replicacount", "minimum"]),
        (&["kubeApi.qps=-1"], &["/kubeapi/qps", "minimum"]),
        (&["nosuchKey=1"], &["nosuchkey", "not allowed"]),
        (&["image.nosuch=1"], &["image", "nosuch", "not allowed"]),
        (&["watchNamespace=Team_A"], &["watchnamespace", "pattern"]),
        (
            &[
                "watchNamespace=a-namespace-name-that-is-much-longer-than-sixty-three-characters-long",
            ],
            &["watchnamespace", "pattern"],
        ),
        (&["metrics.port=70000"], &["/metrics/port", "maximum"]),
        (&["crds.install=maybe"], &["/crds/install", "boolean"]),
        (&["crds.nosuch=1"], &["crds", "nosuch", "not allowed"]),
    ] {
        let err = template(sets, &[]).expect_err(&format!("--set {sets:?} should be refused"));
        let lower = err.to_lowercase();
        assert!(
            lower.contains("values don't meet the specifications of the schema"),
            "--set {sets:?}: not the schema's refusal:\n{err}"
        );
        for w in want {
            assert!(
                lower.contains(w),
                "--set {sets:?}: {w:?} missing in:\n{err}"
            );
        }
    }
}

#[test]
fn chart_crd_is_the_generated_crd() {
    let root = repo_root();
    let generated = std::fs::read(root.join("crds/elasticjob.yaml")).unwrap();
    let chart = std::fs::read(chart_dir().join(CHART_CRD)).unwrap_or_else(|e| {
        panic!("charts/elasticjob-operator/{CHART_CRD} ({e}): templates/crd.yaml renders it")
    });
    assert!(
        generated == chart,
        "charts/elasticjob-operator/{CHART_CRD} differs from crds/elasticjob.yaml (the CRD generated from the Rust types); fix: cp crds/elasticjob.yaml charts/elasticjob-operator/{CHART_CRD}"
    );
}
