use super::*;
use crate::fixtures::{UID, job};
use k8s_openapi::api::core::v1::EnvVar;
use serde_json::json;

fn settings() -> Settings {
    Settings {
        launcher_image: Some("ghcr.io/elasticjob/elastic-launch:0.1.0".into()),
        cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
    }
}

fn env_map(c: &Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The job of examples/elasticjob.yaml with a 2-GPU trainer and a user env var.
fn gpu_job() -> ElasticJob {
    let mut j = job();
    let c = &mut j.spec.template.spec.as_mut().unwrap().containers[0];
    c.resources = Some(ResourceRequirements {
        limits: Some([("nvidia.com/gpu".to_string(), Quantity("2".into()))].into()),
        ..Default::default()
    });
    c.env = Some(vec![EnvVar {
        name: "NCCL_DEBUG".into(),
        value: Some("INFO".into()),
        value_from: None,
    }]);
    j
}

#[test]
fn the_headless_service() {
    let s = service(&job()).unwrap();
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["metadata"]["name"], "train");
    assert_eq!(v["metadata"]["namespace"], "ml");
    assert_eq!(v["metadata"]["labels"]["elasticjob.dev/job-name"], "train");
    assert_eq!(
        v["metadata"]["ownerReferences"],
        json!([{
            "apiVersion": "elasticjob.dev/v1alpha1", "kind": "ElasticJob", "name": "train",
            "uid": UID, "controller": true, "blockOwnerDeletion": true,
        }])
    );
    assert_eq!(
        v["spec"],
        json!({
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": {"elasticjob.dev/job-name": "train"},
            "ports": [{"name": "rendezvous", "port": 29400, "targetPort": 29400, "protocol": "TCP"}],
        })
    );
}

#[test]
fn a_pod_for_a_two_gpu_template() {
    let p = pod(&gpu_job(), 1, &settings()).unwrap();
    let meta = &p.metadata;
    assert_eq!(meta.name.as_deref(), Some("train-worker-1"));
    assert_eq!(meta.namespace.as_deref(), Some("ml"));
    let labels = meta.labels.clone().unwrap();
    assert_eq!(labels["elasticjob.dev/job-name"], "train");
    assert_eq!(labels["elasticjob.dev/replica-index"], "1");
    assert_eq!(labels["app.kubernetes.io/name"], "elasticjob");
    assert_eq!(labels["app.kubernetes.io/instance"], "train");
    assert_eq!(labels["app.kubernetes.io/component"], "worker");
    assert_eq!(
        labels["app.kubernetes.io/managed-by"],
        "elasticjob-operator"
    );
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    assert_eq!(owner.uid, UID);

    let spec = p.spec.unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("train-worker-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("train"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));

    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, "elastic-launch-install");
    assert_eq!(
        init.image.as_deref(),
        Some("ghcr.io/elasticjob/elastic-launch:0.1.0")
    );
    assert_eq!(init.command, None);
    assert_eq!(
        init.args,
        Some(vec!["__install".into(), "/elasticjob/bin".into()])
    );
    let mount = &init.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (mount.name.as_str(), mount.mount_path.as_str()),
        ("elasticjob-bin", "/elasticjob/bin")
    );
    let vol = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "elasticjob-bin")
        .unwrap();
    assert!(vol.empty_dir.is_some());

    let c = &spec.containers[0];
    assert_eq!(
        c.command,
        Some(vec!["/elasticjob/bin/elastic-launch".into()])
    );
    assert_eq!(
        c.args,
        Some(vec![
            "--no-python".into(),
            "python".into(),
            "/workspace/train.py".into()
        ])
    );
    assert_eq!(
        c.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    let m = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "elasticjob-bin")
        .unwrap();
    assert_eq!(
        (m.mount_path.as_str(), m.read_only),
        ("/elasticjob/bin", Some(true))
    );
    let ports: Vec<_> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("rendezvous"), 29400),
            (Some("launcher-status"), 29401)
        ]
    );

    let env = env_map(c);
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "NCCL_DEBUG",
            "PET_NNODES",
            "PET_NPROC_PER_NODE",
            "PET_RDZV_BACKEND",
            "PET_RDZV_ENDPOINT",
            "PET_RDZV_ID",
            "PET_RDZV_CONF",
            "PET_MAX_RESTARTS",
            "PET_TERMINATION_MESSAGE_PATH",
            "PET_STATUS_PORT",
            "ELASTICJOB_NODE_INDEX",
            "PYTHONUNBUFFERED",
        ],
        "the user's environment comes first"
    );
    assert_eq!(get(&env, "PET_NNODES"), Some("1:3"));
    assert_eq!(get(&env, "PET_NPROC_PER_NODE"), Some("2"));
    assert_eq!(get(&env, "PET_RDZV_BACKEND"), Some("c10d"));
    assert_eq!(
        get(&env, "PET_RDZV_ENDPOINT"),
        Some("train-worker-0.train.ml.svc.cluster.local:29400")
    );
    assert_eq!(get(&env, "PET_RDZV_ID"), Some(UID));
    assert_eq!(
        get(&env, "PET_RDZV_CONF"),
        Some("join_timeout=600,last_call_timeout=30,close_timeout=30,is_host=0")
    );
    assert_eq!(get(&env, "PET_MAX_RESTARTS"), Some("3"));
    assert_eq!(
        get(&env, "PET_TERMINATION_MESSAGE_PATH"),
        Some("/dev/termination-log")
    );
    assert_eq!(get(&env, "PET_STATUS_PORT"), Some("29401"));
    assert_eq!(get(&env, "ELASTICJOB_NODE_INDEX"), Some("1"));
}

#[test]
fn pod_zero_hosts_the_rendezvous_and_the_endpoint_names_it() {
    let mut j = job();
    j.spec
        .rendezvous
        .conf
        .insert("heartbeat_timeout".into(), "10".into());
    j.spec.rendezvous.port = 23456;
    let c = pod(&j, 0, &settings()).unwrap().spec.unwrap().containers[0].clone();
    let env = env_map(&c);
    assert_eq!(
        get(&env, "PET_RDZV_CONF"),
        Some(
            "join_timeout=600,last_call_timeout=30,close_timeout=30,is_host=1,heartbeat_timeout=10"
        )
    );
    let endpoint = get(&env, "PET_RDZV_ENDPOINT").unwrap();
    assert_eq!(endpoint, "train-worker-0.train.ml.svc.cluster.local:23456");
    // The launcher orders ranks by the index in the host name (rendezvous::node_index): the
    // endpoint's first label is pod 0's hostname.
    let host = endpoint.split(':').next().unwrap();
    let short = host.split('.').next().unwrap();
    assert_eq!(
        short,
        pod(&j, 0, &settings())
            .unwrap()
            .spec
            .unwrap()
            .hostname
            .unwrap()
    );
    assert_eq!(pod_index("train", short), Some(0));
    let other = Settings {
        cluster_domain: "corp.example".into(),
        ..settings()
    };
    assert_eq!(
        rendezvous_endpoint("train", "ml", 29400, &other.cluster_domain),
        "train-worker-0.train.ml.svc.corp.example:29400"
    );
}

fn with_command(command: &[&str], args: &[&str]) -> ElasticJob {
    let mut j = job();
    let c = &mut j.spec.template.spec.as_mut().unwrap().containers[0];
    c.command = Some(command.iter().map(|s| s.to_string()).collect());
    c.args = (!args.is_empty()).then(|| args.iter().map(|s| s.to_string()).collect());
    j
}

fn launched(j: &ElasticJob) -> (Vec<String>, Vec<String>) {
    let c = pod(j, 0, &settings()).unwrap().spec.unwrap().containers[0].clone();
    (c.command.unwrap(), c.args.unwrap())
}

#[test]
fn torchrun_commands_are_replaced_by_the_launcher() {
    let (cmd, args) = launched(&with_command(
        &["torchrun", "--tee", "3"],
        &["train.py", "--lr", "0.1"],
    ));
    assert_eq!(cmd, ["/elasticjob/bin/elastic-launch"]);
    assert_eq!(args, ["--tee", "3", "train.py", "--lr", "0.1"]);
    let (_, args) = launched(&with_command(
        &[
            "python3",
            "-m",
            "torch.distributed.run",
            "--redirects=3",
            "train.py",
        ],
        &[],
    ));
    assert_eq!(args, ["--redirects=3", "train.py"]);
}

#[test]
fn other_commands_run_under_no_python() {
    let (_, args) = launched(&with_command(
        &["/opt/venv/bin/python"],
        &["-u", "train.py"],
    ));
    assert_eq!(
        args,
        ["--no-python", "/opt/venv/bin/python", "-u", "train.py"]
    );
    let (_, args) = launched(&with_command(&["bash", "-c", "./run.sh"], &[]));
    assert_eq!(args, ["--no-python", "bash", "-c", "./run.sh"]);
}

#[test]
fn without_injection_the_image_provides_the_launcher() {
    let mut j = job();
    j.spec.launcher.inject = false;
    let spec = pod(&j, 0, &Settings::default()).unwrap().spec.unwrap();
    assert_eq!(
        spec.containers[0].command,
        Some(vec!["elastic-launch".into()])
    );
    assert!(spec.init_containers.is_none());
    assert!(spec.volumes.is_none());
    assert!(spec.containers[0].volume_mounts.is_none());
}

#[test]
fn the_launcher_image_comes_from_the_job_or_the_operator() {
    let mut j = job();
    assert_eq!(
        pod(&j, 0, &Settings::default()),
        Err(DesiredError::NoLauncherImage)
    );
    j.spec.launcher.image = Some("registry.local/launch:dev".into());
    j.spec.launcher.image_pull_policy = Some("Always".into());
    let spec = pod(&j, 0, &settings()).unwrap().spec.unwrap();
    let init = &spec.init_containers.unwrap()[0];
    assert_eq!(init.image.as_deref(), Some("registry.local/launch:dev"));
    assert_eq!(init.image_pull_policy.as_deref(), Some("Always"));
}

#[test]
fn nproc_per_node_forms() {
    let mut j = gpu_job();
    let trainer = j.spec.template.spec.as_ref().unwrap().containers[0].clone();
    assert_eq!(nproc_per_node(&j, &trainer), "2");
    for (value, want) in [
        (json!(4), "4"),
        (json!("gpu"), "gpu"),
        (json!("cpu"), "cpu"),
    ] {
        j.spec.nproc_per_node = serde_json::from_value(value).unwrap();
        assert_eq!(nproc_per_node(&j, &trainer), want);
    }
    let plain = job();
    let trainer = plain.spec.template.spec.as_ref().unwrap().containers[0].clone();
    assert_eq!(nproc_per_node(&plain, &trainer), "auto");
}

#[test]
fn the_user_template_is_kept_and_merged() {
    let mut j = job();
    j.spec.template.metadata = Some(ObjectMeta {
        labels: Some(
            [
                ("team".to_string(), "vision".to_string()),
                ("elasticjob.dev/job-name".to_string(), "spoofed".to_string()),
            ]
            .into(),
        ),
        annotations: Some([("note".to_string(), "x".to_string())].into()),
        ..Default::default()
    });
    let pod_spec = j.spec.template.spec.as_mut().unwrap();
    pod_spec.restart_policy = Some("OnFailure".into());
    pod_spec.node_selector = Some([("gpu".to_string(), "a100".to_string())].into());
    pod_spec.init_containers = Some(vec![Container {
        name: "fetch-data".into(),
        ..Default::default()
    }]);
    pod_spec.containers[0].env = Some(vec![EnvVar {
        name: "PYTHONUNBUFFERED".into(),
        value: Some("0".into()),
        value_from: None,
    }]);
    pod_spec.containers[0].ports = Some(vec![ContainerPort {
        container_port: 29400,
        name: Some("store".into()),
        ..Default::default()
    }]);
    pod_spec.containers.push(Container {
        name: "sidecar".into(),
        ..Default::default()
    });
    pod_spec.containers.swap(0, 1);
    let p = pod(&j, 0, &settings()).unwrap();
    let labels = p.metadata.labels.unwrap();
    assert_eq!(labels["team"], "vision");
    assert_eq!(labels["elasticjob.dev/job-name"], "train");
    assert_eq!(p.metadata.annotations.unwrap()["note"], "x");
    let spec = p.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.node_selector.unwrap()["gpu"], "a100");
    let inits: Vec<&str> = spec
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["elastic-launch-install", "fetch-data"]);
    assert_eq!(spec.containers[0].name, "sidecar");
    assert_eq!(
        spec.containers[0].command, None,
        "only the trainer runs under the launcher"
    );
    let trainer = &spec.containers[1];
    assert_eq!(
        trainer.command,
        Some(vec!["/elasticjob/bin/elastic-launch".into()])
    );
    let env = env_map(trainer);
    assert_eq!(
        env.iter().filter(|(k, _)| k == "PYTHONUNBUFFERED").count(),
        1
    );
    assert_eq!(get(&env, "PYTHONUNBUFFERED"), Some("0"));
    let ports: Vec<i32> = trainer
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(
        ports,
        [29400, 29401],
        "the user's rendezvous port is kept, not doubled"
    );
}

#[test]
fn a_custom_termination_message_path_is_passed_to_the_launcher() {
    let mut j = job();
    j.spec.template.spec.as_mut().unwrap().containers[0].termination_message_path =
        Some("/tmp/why".into());
    let c = pod(&j, 0, &settings()).unwrap().spec.unwrap().containers[0].clone();
    assert_eq!(
        get(&env_map(&c), "PET_TERMINATION_MESSAGE_PATH"),
        Some("/tmp/why")
    );
}

#[test]
fn incomplete_jobs_are_errors() {
    let mut j = job();
    j.metadata.uid = None;
    assert_eq!(service(&j), Err(DesiredError::Missing("uid")));
    let mut j = job();
    j.spec.template.spec.as_mut().unwrap().containers[0].command = None;
    assert_eq!(pod(&j, 0, &settings()), Err(DesiredError::NoCommand));
    assert_eq!(trainer_name(&job()).as_deref(), Some("trainer"));
}

#[test]
fn pods_tolerate_a_lost_node_for_the_policys_timeout_unless_the_user_says_otherwise() {
    let mut j = job();
    j.spec.failure_policy.node_lost_timeout_seconds = 20;
    let tolerations = |j: &ElasticJob| {
        pod(j, 0, &settings())
            .unwrap()
            .spec
            .unwrap()
            .tolerations
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.key.unwrap_or_default(), t.effect, t.toleration_seconds))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tolerations(&j),
        [
            (
                "node.kubernetes.io/not-ready".to_string(),
                Some("NoExecute".to_string()),
                Some(20)
            ),
            (
                "node.kubernetes.io/unreachable".to_string(),
                Some("NoExecute".to_string()),
                Some(20)
            ),
        ]
    );
    let user: k8s_openapi::api::core::v1::Toleration = serde_json::from_value(serde_json::json!(
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 600}
    ))
    .unwrap();
    j.spec.template.spec.as_mut().unwrap().tolerations = Some(vec![user]);
    let got = tolerations(&j);
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].2,
        Some(600),
        "the user's own toleration is kept: {got:?}"
    );
    assert_eq!(got[1].0, "node.kubernetes.io/not-ready");
}
