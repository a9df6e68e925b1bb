//! examples/elasticjob.yaml is a valid job, and its pods are what the pod contract says.

use elasticjob_crds::ElasticJob;
use elasticjob_operator::desired::{self, Settings};
use elasticjob_operator::plan::{Action, plan};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

fn example() -> (ElasticJob, Value) {
    let text = include_str!("../../examples/elasticjob.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).expect("the example parses");
    let config_map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .unwrap()
        .clone();
    let mut job: ElasticJob = serde_json::from_value(
        docs.into_iter()
            .find(|d| d["kind"] == "ElasticJob")
            .unwrap(),
    )
    .expect("the example is an ElasticJob");
    // What the apiserver adds.
    job.metadata.namespace = Some("default".into());
    job.metadata.uid = Some("0b5e8d3c-1111-4222-8333-444455556666".into());
    job.metadata.generation = Some(1);
    (job, config_map)
}

#[test]
fn the_example_is_valid() {
    let (job, _) = example();
    assert_eq!(elasticjob_crds::validate(&job), Ok(()));
    assert!(elasticjob_crds::warnings(&job).is_empty());
    assert_eq!(job.spec.desired_replicas(), 2);
}

#[test]
fn the_example_runs_its_script_under_the_launcher() {
    let (job, config_map) = example();
    assert!(
        config_map["data"]["train.py"]
            .as_str()
            .unwrap()
            .contains("init_process_group")
    );
    let settings = Settings {
        launcher_image: Some("elastic-launch:dev".into()),
        ..Default::default()
    };
    let pod = desired::pod(&job, 0, &settings).unwrap();
    let c = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        c.args.as_deref().unwrap(),
        ["--no-python", "python", "/workspace/train.py"]
    );
    let env = |name: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(env("PET_NPROC_PER_NODE").as_deref(), Some("2"));
    assert_eq!(env("PET_NNODES").as_deref(), Some("1:3"));
    assert_eq!(env("STEPS").as_deref(), Some("20"));
    assert!(
        env("PET_RDZV_CONF")
            .unwrap()
            .contains("last_call_timeout=10")
    );
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/workspace", "/elasticjob/bin"]);

    let p = plan(
        &job,
        &[],
        "2026-03-01T12:00:00Z".parse::<Timestamp>().unwrap(),
    );
    assert_eq!(
        p.actions,
        [
            Action::ApplyService,
            Action::CreatePod { index: 0 },
            Action::CreatePod { index: 1 }
        ]
    );
}

/// examples/networkpolicy.yaml fences the example job: its selectors are the job's pod labels
/// and the operator chart's pod labels, its port the launchers' status port.
#[test]
fn the_network_policy_example_selects_the_jobs_pods_and_admits_the_operator() {
    let (job, _) = example();
    let policy: Value =
        serde_saphyr::from_str(include_str!("../../examples/networkpolicy.yaml")).unwrap();
    let selector =
        serde_json::to_value(desired::selector(&job.metadata.name.clone().unwrap())).unwrap();
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], selector);
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(
        ingress[0]["from"][0]["podSelector"]["matchLabels"],
        selector
    );
    assert!(
        ingress[0].get("ports").is_none(),
        "the job's pods on every port"
    );
    let operator = &ingress[1]["from"][0];
    assert_eq!(
        operator["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "elasticjob-operator"
    );
    assert_eq!(
        ingress[1]["ports"][0]["port"],
        i64::from(job.spec.launcher.status_port)
    );
}
