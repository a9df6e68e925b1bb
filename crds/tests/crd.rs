//! The generated CRD: the checked-in YAML is current, it has what the issue asks for (CEL rules,
//! printer columns, subresources), it is structural and small enough for `kubectl apply`, and
//! its CEL rules (evaluated here with kube-cel) agree with the operator's own validation.

use elasticjob_crds::{ElasticJob, crd_yaml, validate};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

const REGENERATE: &str = "cargo run -p elasticjob-crds --bin crdgen > crds/elasticjob.yaml";

fn checked_in() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/elasticjob.yaml");
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path} ({e}); generate it with: {REGENERATE}"))
}

#[test]
fn checked_in_crd_is_current() {
    let generated = crd_yaml().expect("the CRD serializes");
    assert!(
        checked_in() == generated,
        "crds/elasticjob.yaml differs from what the Rust types generate; regenerate it with:\n    {REGENERATE}"
    );
}

#[test]
fn yaml_reads_back_as_the_same_crd() {
    let back: CustomResourceDefinition =
        serde_saphyr::from_str(&crd_yaml().unwrap()).expect("the YAML parses as a CRD");
    assert_eq!(back, ElasticJob::crd());
}

fn crd() -> Value {
    serde_json::to_value(ElasticJob::crd()).unwrap()
}

fn schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn rules(node: &Value) -> Vec<String> {
    node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn names_scope_and_version() {
    let crd = crd();
    assert_eq!(crd["metadata"]["name"], "elasticjobs.elasticjob.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["ej"]));
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
}

#[test]
fn has_cel_rules_for_cross_field_checks() {
    let s = schema();
    let spec = &s["properties"]["spec"];
    let spec_rules = rules(spec);
    assert!(spec_rules.contains(&"self.minReplicas <= self.maxReplicas".to_string()));
    assert!(
        spec_rules
            .iter()
            .any(|r| r.contains("self.replicas >= self.minReplicas"))
    );
    assert!(
        spec_rules
            .iter()
            .any(|r| r.contains("startsWith('PET_')") && r.contains("'MASTER_ADDR'"))
    );
    assert!(rules(&s)[0].contains("self.metadata.name"));
    assert!(
        rules(&spec["properties"]["nprocPerNode"])[0]
            .contains("string(self) in ['auto', 'gpu', 'cpu']")
    );
    assert!(rules(&spec["properties"]["rendezvous"])[0].contains("is_host"));
    assert!(
        rules(&spec["properties"]["failurePolicy"]["properties"]["backoff"])[0]
            .contains("initialSeconds")
    );
    // Every reserved name of the API is in the CEL rule.
    let env_rule = spec_rules.iter().find(|r| r.contains("PET_")).unwrap();
    for name in elasticjob_crds::names::RESERVED_ENV_NAMES {
        assert!(
            env_rule.contains(&format!("'{name}'")),
            "{name} missing from the CEL rule"
        );
    }
    for prefix in elasticjob_crds::names::RESERVED_ENV_PREFIXES {
        assert!(
            env_rule.contains(&format!("startsWith('{prefix}')")),
            "{prefix}"
        );
    }
}

#[test]
fn has_openapi_bounds() {
    let spec = &schema()["properties"]["spec"]["properties"];
    assert_eq!(spec["minReplicas"]["minimum"], 1.0);
    assert_eq!(spec["maxReplicas"]["minimum"], 1.0);
    assert_eq!(spec["rendezvous"]["properties"]["port"]["maximum"], 65535.0);
    assert_eq!(
        spec["runPolicy"]["properties"]["cleanPodPolicy"]["enum"],
        json!(["None", "Running", "All"])
    );
    let pod = &spec["template"]["properties"]["spec"]["properties"];
    assert_eq!(pod["containers"]["maxItems"], 16);
    assert_eq!(
        pod["containers"]["items"]["properties"]["env"]["maxItems"],
        512
    );
    assert_eq!(
        pod["containers"]["items"]["properties"]["env"]["items"]["properties"]["name"]["maxLength"],
        256
    );
}

#[test]
fn has_printer_columns_and_subresources() {
    let version = &crd()["spec"]["versions"][0];
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("priority").is_none())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "State", "Min", "Max", "Replicas", "Ready", "Progress", "Restarts", "Age"
        ]
    );
    assert_eq!(version["subresources"]["status"], json!({}));
    assert_eq!(
        version["subresources"]["scale"],
        json!({
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        })
    );
}

/// Structural schema (apiextensions v1): every node has a type (or is int-or-string), no
/// references, no type in anyOf/allOf/oneOf, no `preserve-unknown-fields` needed.
fn check_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
    let obj = node.as_object().unwrap();
    if obj.contains_key("$ref") {
        problems.push(format!("{path}: $ref"));
    }
    if obj.contains_key("x-kubernetes-preserve-unknown-fields") {
        problems.push(format!("{path}: preserve-unknown-fields"));
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if !obj.contains_key("type") && !int_or_string {
        problems.push(format!("{path}: no type"));
    }
    for key in ["anyOf", "allOf", "oneOf"] {
        for sub in obj.get(key).and_then(Value::as_array).into_iter().flatten() {
            if sub.get("type").is_some()
                || sub.get("description").is_some()
                || sub.get("default").is_some()
            {
                problems.push(format!("{path}.{key}: type/description/default inside"));
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            check_structural(sub, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), problems);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        check_structural(ap, &format!("{path}{{}}"), problems);
    }
}

#[test]
fn schema_is_structural() {
    let mut problems = Vec::new();
    check_structural(&schema(), "", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Our own fields (not the embedded Kubernetes types) all have descriptions: `kubectl explain`
/// is the user's manual.
fn check_descriptions(node: &Value, path: &str, missing: &mut Vec<String>) {
    if node.get("description").is_none() {
        missing.push(path.to_string());
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let p = format!("{path}.{name}");
            // Kubernetes' own types keep their (shortened) descriptions; `conditions` items are
            // metav1.Condition, `time` fields metav1.Time.
            if !matches!(p.as_str(), ".spec.template" | ".status.conditions") {
                check_descriptions(sub, &p, missing);
            }
        }
    }
    if let Some(props) = node.get("items").and_then(|i| i.get("properties")) {
        for (name, sub) in props.as_object().unwrap() {
            check_descriptions(sub, &format!("{path}[].{name}"), missing);
        }
    }
}

#[test]
fn every_field_is_described() {
    let s = schema();
    let mut missing = Vec::new();
    for part in ["spec", "status"] {
        check_descriptions(&s["properties"][part], &format!(".{part}"), &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
}

#[test]
fn small_enough_for_kubectl_apply() {
    // Client-side apply keeps the whole object in an annotation, limited to 256 KiB; the
    // apiserver's object limit is 1.5 MB.
    let json = serde_json::to_string(&ElasticJob::crd()).unwrap();
    assert!(
        json.len() < 200 * 1024,
        "the CRD is {} bytes of JSON",
        json.len()
    );
}

fn example() -> Value {
    json!({
        "apiVersion": "elasticjob.dev/v1alpha1",
        "kind": "ElasticJob",
        "metadata": {"name": "train", "namespace": "default"},
        "spec": {
            "minReplicas": 1,
            "maxReplicas": 3,
            "replicas": 2,
            "nprocPerNode": 2,
            "template": {"spec": {"containers": [{
                "name": "trainer",
                "image": "pytorch/pytorch",
                "command": ["python", "/workspace/train.py"],
                "env": [{"name": "NCCL_DEBUG", "value": "INFO"}],
            }]}},
        },
    })
}

/// CEL's verdict (kube-cel, with the schema's defaults applied first, as the apiserver does) and
/// the operator's.
fn verdicts(object: &Value) -> (Result<(), String>, Result<(), String>) {
    thread_local! {
        static COMPILED: kube_cel::CompiledSchema = kube_cel::compile_schema(&schema());
    }
    let cel = COMPILED
        .with(|compiled| kube_cel::Validator::new().validate_compiled(compiled, object, None))
        .map_err(|e| {
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        });
    let job: ElasticJob = serde_json::from_value(object.clone()).expect("the object loads");
    let ours = validate(&job).map_err(|e| {
        e.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    });
    (cel, ours)
}

#[test]
fn cel_rules_accept_a_good_job() {
    let (cel, ours) = verdicts(&example());
    assert_eq!(cel, Ok(()));
    assert_eq!(ours, Ok(()));
    for nproc in [
        json!("auto"),
        json!("gpu"),
        json!("cpu"),
        json!(8),
        json!("8"),
    ] {
        let mut job = example();
        job["spec"]["nprocPerNode"] = nproc.clone();
        assert_eq!(verdicts(&job), (Ok(()), Ok(())), "{nproc}");
    }
    let mut minimal = example();
    minimal["spec"] = json!({"maxReplicas": 2, "template": example()["spec"]["template"]});
    let (cel, ours) = verdicts(&minimal);
    assert_eq!(cel, Ok(()));
    assert_eq!(ours, Ok(()));
}

#[test]
fn cel_rules_and_validate_refuse_the_same_jobs() {
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "min > max",
            Box::new(|j| j["spec"]["minReplicas"] = json!(4)),
            "minReplicas",
        ),
        (
            "reserved env",
            Box::new(|j| {
                j["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"] =
                    json!("WORLD_SIZE")
            }),
            "reserved",
        ),
        (
            "PET_ env",
            Box::new(|j| {
                j["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"] =
                    json!("PET_NNODES")
            }),
            "reserved",
        ),
        (
            "nproc word",
            Box::new(|j| j["spec"]["nprocPerNode"] = json!("many")),
            "nprocPerNode",
        ),
        (
            "nproc zero",
            Box::new(|j| j["spec"]["nprocPerNode"] = json!(0)),
            "nprocPerNode",
        ),
        (
            "nproc negative",
            Box::new(|j| j["spec"]["nprocPerNode"] = json!(-2)),
            "nprocPerNode",
        ),
        (
            "nproc leading zero",
            Box::new(|j| j["spec"]["nprocPerNode"] = json!("02")),
            "nprocPerNode",
        ),
        (
            "is_host conf",
            Box::new(|j| j["spec"]["rendezvous"] = json!({"conf": {"is_host": "1"}})),
            "is_host",
        ),
        (
            "backoff",
            Box::new(|j| {
                j["spec"]["failurePolicy"] =
                    json!({"backoff": {"initialSeconds": 100, "maxSeconds": 10}})
            }),
            "initialSeconds",
        ),
        (
            "bad name",
            Box::new(|j| j["metadata"]["name"] = json!("Train.1")),
            "DNS label",
        ),
    ];
    for (what, change, needle) in cases {
        let mut job = example();
        change(&mut job);
        let (cel, ours) = verdicts(&job);
        let cel = cel.expect_err(&format!("CEL accepted: {what}"));
        let ours = ours.expect_err(&format!("validate accepted: {what}"));
        assert!(cel.contains(needle), "{what}: CEL said {cel}");
        assert!(ours.contains(needle), "{what}: validate said {ours}");
    }
}

#[test]
fn replicas_out_of_bounds_is_refused_by_cel_and_clamped_by_the_operator() {
    let mut job = example();
    job["spec"]["replicas"] = json!(5);
    let (cel, ours) = verdicts(&job);
    assert!(
        cel.unwrap_err()
            .contains("replicas must be within [minReplicas, maxReplicas]")
    );
    // A 1.20 apiserver lets it through: the operator runs maxReplicas pods and warns.
    assert_eq!(ours, Ok(()));
    let job: ElasticJob = serde_json::from_value(job).unwrap();
    assert_eq!(job.spec.desired_replicas(), 3);
    assert!(!elasticjob_crds::warnings(&job).is_empty());
}

#[test]
fn defaults_fill_a_minimal_job() {
    let job: ElasticJob = serde_json::from_value(json!({
        "apiVersion": "elasticjob.dev/v1alpha1",
        "kind": "ElasticJob",
        "metadata": {"name": "t"},
        "spec": {"maxReplicas": 2, "nprocPerNode": null, "template": {}},
    }))
    .unwrap();
    let s = &job.spec;
    assert_eq!((s.min_replicas, s.replicas, s.max_restarts), (1, None, 3));
    assert_eq!(s.nproc_per_node.parse(), Ok(elasticjob_crds::Nproc::Auto));
    assert_eq!(s.rendezvous.port, 29400);
    assert_eq!(s.rendezvous.join_timeout_seconds, 600);
    assert_eq!(s.failure_policy.permanent_exit_codes, [2, 126, 127]);
    assert_eq!(s.failure_policy.max_application_restarts, 3);
    assert_eq!(s.failure_policy.max_infrastructure_restarts, 10);
    assert_eq!(s.failure_policy.pod_termination_timeout_seconds, 15);
    assert_eq!(s.failure_policy.node_lost_timeout_seconds, 30);
    assert_eq!(
        s.run_policy.clean_pod_policy,
        elasticjob_crds::CleanPodPolicy::Running
    );
    assert!(s.launcher.inject);
    assert_eq!(s.desired_replicas(), 2);
}
