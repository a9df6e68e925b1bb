use super::*;
use crate::fixtures::{UID, job};
use k8s_openapi::api::core::v1::{EnvVar, PodSecurityContext};
use serde_json::{Value, json};

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

/// The source of a variable set from elsewhere (a Secret, a field of the pod).
fn value_from<'a>(c: &'a Container, name: &str) -> &'a EnvVarSource {
    let var = c.env.iter().flatten().find(|e| e.name == name);
    let var = var.unwrap_or_else(|| panic!("{name} is not set"));
    assert_eq!(var.value, None, "{name} has a value of its own");
    var.value_from.as_ref().unwrap()
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
            "PET_SHUTDOWN_TIMEOUT",
            "ELASTICJOB_NODE_INDEX",
            "ELASTICJOB_POD_IP",
            "ELASTICJOB_STORE_TOKEN",
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
        Some(
            "join_timeout=600,last_call_timeout=30,close_timeout=30,is_host=0,\
             store_hosts=train-worker-{}.train.ml.svc.cluster.local,expected_nodes=2"
        )
    );
    assert_eq!(get(&env, "PET_MAX_RESTARTS"), Some("3"));
    assert_eq!(
        get(&env, "PET_TERMINATION_MESSAGE_PATH"),
        Some("/dev/termination-log")
    );
    assert_eq!(get(&env, "PET_STATUS_PORT"), Some("29401"));
    assert_eq!(get(&env, "PET_SHUTDOWN_TIMEOUT"), Some("27"));
    assert_eq!(get(&env, "ELASTICJOB_NODE_INDEX"), Some("1"));
    assert_eq!(
        value_from(c, "ELASTICJOB_POD_IP")
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "status.podIP"
    );
    // The launchers' token comes from the job's Secret, never in the pod spec itself.
    let from = value_from(c, "ELASTICJOB_STORE_TOKEN")
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (from.name.as_str(), from.key.as_str()),
        ("train-store-token", "token")
    );
}

#[test]
fn the_store_token_secret_is_the_jobs_and_immutable() {
    let secret = store_token_secret(&job(), "abc".into()).unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("train-store-token"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("ml"));
    assert_eq!(secret.immutable, Some(true));
    assert_eq!(
        secret.string_data.unwrap().get("token").map(String::as_str),
        Some("abc")
    );
    let owner = &secret.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("ElasticJob", UID)
    );
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
            "join_timeout=600,last_call_timeout=30,close_timeout=30,is_host=1,\
             store_hosts=train-worker-{}.train.ml.svc.cluster.local,expected_nodes=2,heartbeat_timeout=10"
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
fn a_shell_command_calling_torchrun_runs_once_with_the_launcher_as_its_torchrun() {
    let script = "pip install -r req.txt && torchrun --nproc-per-node=2 train.py";
    let (program, args) = launched(&with_command(&["bash", "-c"], &[script]));
    assert_eq!(program, ["/elasticjob/bin/elastic-launch"]);
    assert_eq!(args, ["__wrap", "bash", "-c", script]);
}

#[test]
fn with_prewarm_a_python_command_hands_the_launcher_its_script() {
    let mut j = with_command(&["/opt/venv/bin/python"], &["-u", "train.py", "--lr", "1"]);
    j.spec.launcher.prewarm = vec!["torch".into()];
    let c = pod(&j, 0, &settings()).unwrap().spec.unwrap().containers[0].clone();
    assert_eq!(c.args.unwrap(), ["train.py", "--lr", "1"]);
    let env = c.env.unwrap();
    let value = |name: &str| {
        env.iter()
            .rfind(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        value("PYTHON_EXEC").as_deref(),
        Some("/opt/venv/bin/python")
    );
    assert_eq!(value("PET_PREWARM").as_deref(), Some("torch"));
    let mut j = with_command(&["bash", "-c", "./run.sh"], &[]);
    j.spec.launcher.prewarm = vec!["torch".into()];
    let err = pod(&j, 0, &settings()).unwrap_err().to_string();
    assert!(
        err.contains("spec.launcher.prewarm needs a Python command"),
        "{err}"
    );
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
fn auto_counts_every_vendors_accelerators() {
    let j = job();
    let mut trainer = j.spec.template.spec.as_ref().unwrap().containers[0].clone();
    let ask = |pairs: &[(&str, &str)]| ResourceRequirements {
        limits: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        ),
        ..Default::default()
    };
    for (resource, want) in [
        ("amd.com/gpu", "2"),
        ("gpu.intel.com/xe", "2"),
        ("gpu.intel.com/i915", "2"),
        ("habana.ai/gaudi", "2"),
    ] {
        trainer.resources = Some(ask(&[(resource, "2")]));
        assert_eq!(nproc_per_node(&j, &trainer), want, "{resource}");
    }
    // Two kinds cannot size the workers (validation refuses the job): the launcher decides.
    trainer.resources = Some(ask(&[("amd.com/gpu", "2"), ("nvidia.com/gpu", "1")]));
    assert_eq!(nproc_per_node(&j, &trainer), "auto");
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

/// What the `restricted` Pod Security Standard (baseline included) refuses in `pod`, one line per
/// finding; empty when a namespace labelled `pod-security.kubernetes.io/enforce=restricted`
/// admits it. The checks of Kubernetes' pod-security-admission, on the fields a pod of ours can
/// have (AppArmor annotations aside).
fn restricted_violations(pod: &Pod) -> Vec<String> {
    let p = serde_json::to_value(pod).unwrap();
    let spec = &p["spec"];
    let pod_sc = &spec["securityContext"];
    let mut out = Vec::new();
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[field] == true {
            out.push(format!("spec.{field}"));
        }
    }
    const VOLUMES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for v in spec["volumes"].as_array().into_iter().flatten() {
        for kind in v.as_object().unwrap().keys().filter(|k| *k != "name") {
            if !VOLUMES.contains(&kind.as_str()) {
                out.push(format!("volume {}: {kind}", v["name"]));
            }
        }
    }
    const SAFE_SYSCTLS: [&str; 5] = [
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
    ];
    for s in pod_sc["sysctls"].as_array().into_iter().flatten() {
        if !SAFE_SYSCTLS.contains(&s["name"].as_str().unwrap_or("")) {
            out.push(format!("sysctl {}", s["name"]));
        }
    }
    if pod_sc["runAsUser"] == 0 {
        out.push("spec.securityContext.runAsUser: 0".into());
    }
    let seccomp_ok = |sc: &Value| {
        matches!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    if pod_sc["seccompProfile"]["type"] == "Unconfined" {
        out.push("spec.securityContext.seccompProfile: Unconfined".into());
    }
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten());
    for c in containers {
        let name = c["name"].as_str().unwrap_or("");
        let sc = &c["securityContext"];
        let mut bad = |what: &str| out.push(format!("container {name}: {what}"));
        if sc["privileged"] == true {
            bad("privileged");
        }
        if sc["allowPrivilegeEscalation"] != false {
            bad("allowPrivilegeEscalation is not false");
        }
        let caps = &sc["capabilities"];
        if !caps["drop"]
            .as_array()
            .is_some_and(|d| d.contains(&json!("ALL")))
        {
            bad("capabilities.drop has no ALL");
        }
        for add in caps["add"].as_array().into_iter().flatten() {
            if add != "NET_BIND_SERVICE" {
                bad(&format!("capabilities.add {add}"));
            }
        }
        // runAsNonRoot: the container's own, else the pod's; false anywhere is refused.
        if sc["runAsNonRoot"] == false
            || (sc["runAsNonRoot"] != true && pod_sc["runAsNonRoot"] != true)
        {
            bad("runAsNonRoot is not true");
        }
        if sc["runAsUser"] == 0 {
            bad("runAsUser: 0");
        }
        if sc["seccompProfile"]["type"] == "Unconfined" || !(seccomp_ok(sc) || seccomp_ok(pod_sc)) {
            bad("seccompProfile is not RuntimeDefault or Localhost");
        }
        for port in c["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_i64().unwrap_or(0) != 0 {
                bad("hostPort");
            }
        }
        if sc["procMount"].as_str().is_some_and(|m| m != "Default") {
            bad("procMount");
        }
    }
    out
}

/// examples/elasticjob.yaml's ElasticJob, as the apiserver hands it to the operator.
fn example_job() -> ElasticJob {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/elasticjob.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let doc = docs
        .into_iter()
        .find(|d| d["kind"] == "ElasticJob")
        .expect("examples/elasticjob.yaml has an ElasticJob");
    let mut j: ElasticJob = serde_json::from_value(doc).unwrap();
    j.metadata.namespace = Some("ml".into());
    j.metadata.uid = Some(UID.into());
    j
}

fn install_container_of(j: &ElasticJob) -> Container {
    let spec = pod(j, 0, &settings()).unwrap().spec.unwrap();
    let init = spec.init_containers.unwrap()[0].clone();
    assert_eq!(init.name, INSTALL_CONTAINER);
    init
}

#[test]
fn the_install_container_passes_the_restricted_pod_security_standard() {
    // A template without any securityContext: only the user's trainer is refused.
    let p = pod(&job(), 0, &settings()).unwrap();
    let violations = restricted_violations(&p);
    assert!(!violations.is_empty());
    assert!(
        violations
            .iter()
            .all(|v| v.starts_with("container trainer:")),
        "the operator's parts must pass restricted: {violations:#?}"
    );
    let init = install_container_of(&job());
    assert_eq!(
        serde_json::to_value(&init.security_context).unwrap(),
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    // The launcher image runs as that uid too (a numeric USER, which the kubelet can check
    // against runAsNonRoot).
    let dockerfile = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../images/launcher.Dockerfile"
    ))
    .unwrap();
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim() == format!("USER {LAUNCHER_UID}:{LAUNCHER_UID}")),
        "images/launcher.Dockerfile runs as USER {LAUNCHER_UID}:{LAUNCHER_UID}"
    );
}

#[test]
fn the_install_container_runs_as_the_pods_non_root_uid_and_never_as_root() {
    let with_pod_uid = |uid: Option<i64>| {
        let mut j = job();
        j.spec.template.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
            run_as_user: uid,
            ..Default::default()
        });
        install_container_of(&j).security_context.unwrap()
    };
    // A non-root uid of the pod is inherited (platforms that assign uids refuse any other).
    let sc = with_pod_uid(Some(1000));
    assert_eq!((sc.run_as_user, sc.run_as_non_root), (None, Some(true)));
    // The pod says root: the install still runs as the launcher's user, not as root (which
    // runAsNonRoot would refuse to start).
    let sc = with_pod_uid(Some(0));
    assert_eq!(
        (sc.run_as_user, sc.run_as_non_root),
        (Some(65532), Some(true))
    );
    let sc = with_pod_uid(None);
    assert_eq!(sc.run_as_user, Some(65532));
}

#[test]
fn the_example_job_passes_the_restricted_pod_security_standard() {
    let j = example_job();
    for index in [0, 1] {
        let p = pod(&j, index, &settings()).unwrap();
        assert_eq!(
            restricted_violations(&p),
            Vec::<String>::new(),
            "pod {index} of examples/elasticjob.yaml in a restricted namespace"
        );
        // The template's uid reaches the install container, which stays non-root.
        let spec = p.spec.unwrap();
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.security_context.as_ref().unwrap().run_as_user, None);
        assert_eq!(
            spec.security_context.as_ref().unwrap().run_as_user,
            Some(1000)
        );
    }
}

#[test]
fn restricted_violations_finds_what_restricted_refuses() {
    let mut j = example_job();
    let spec = j.spec.template.spec.as_mut().unwrap();
    spec.host_network = Some(true);
    spec.security_context.as_mut().unwrap().run_as_user = Some(0);
    let sc = spec.containers[0].security_context.as_mut().unwrap();
    sc.allow_privilege_escalation = None;
    sc.capabilities = Some(Capabilities {
        add: Some(vec!["SYS_ADMIN".into()]),
        drop: None,
    });
    sc.run_as_non_root = Some(false);
    spec.volumes
        .as_mut()
        .unwrap()
        .push(serde_json::from_value(json!({"name": "host", "hostPath": {"path": "/"}})).unwrap());
    let v = restricted_violations(&pod(&j, 0, &settings()).unwrap());
    for want in [
        "spec.hostNetwork",
        "spec.securityContext.runAsUser: 0",
        "volume \"host\": hostPath",
        "container trainer: allowPrivilegeEscalation is not false",
        "container trainer: capabilities.drop has no ALL",
        "container trainer: capabilities.add \"SYS_ADMIN\"",
        "container trainer: runAsNonRoot is not true",
    ] {
        assert!(v.contains(&want.to_string()), "{want} not in {v:#?}");
    }
    assert!(
        !v.iter().any(|l| l.contains(INSTALL_CONTAINER)),
        "the install container overrides the pod's root uid: {v:#?}"
    );
}

#[test]
fn the_launchers_shutdown_grace_follows_the_pods() {
    // (terminationGracePeriodSeconds → PET_SHUTDOWN_TIMEOUT)
    for (grace, want) in [
        (30, 27),
        (120, 117),
        (7, 4),
        (6, 3),
        (1, 0),
        (0, 0),
        (-5, 0),
    ] {
        assert_eq!(shutdown_timeout(grace), want, "grace {grace}");
    }
    let mut j = job();
    j.spec
        .template
        .spec
        .as_mut()
        .unwrap()
        .termination_grace_period_seconds = Some(600);
    let c = pod(&j, 1, &settings()).unwrap().spec.unwrap().containers[0].clone();
    assert_eq!(get(&env_map(&c), "PET_SHUTDOWN_TIMEOUT"), Some("597"));
}

#[test]
fn optional_launcher_settings_become_its_variables() {
    let c = |j: &ElasticJob| pod(j, 1, &settings()).unwrap().spec.unwrap().containers[0].clone();
    let mut j = job();
    let env = env_map(&c(&j));
    assert_eq!(
        (get(&env, "PET_PREWARM"), get(&env, "PET_STALL_TIMEOUT")),
        (None, None)
    );
    j.spec.launcher.prewarm = vec!["torch".into(), "numpy".into()];
    j.spec.failure_policy.stall_timeout_seconds = Some(120);
    let env = env_map(&c(&j));
    assert_eq!(get(&env, "PET_PREWARM"), Some("torch,numpy"));
    assert_eq!(get(&env, "PET_STALL_TIMEOUT"), Some("120"));
}

#[test]
fn the_newest_saved_spec_of_the_same_job_is_the_last_valid_one() {
    let mut j = job();
    j.metadata.generation = Some(2);
    let older = valid_spec_revision(&j).unwrap();
    j.metadata.generation = Some(5);
    j.spec.max_replicas = 7;
    let newer = valid_spec_revision(&j).unwrap();
    assert_eq!(newer.metadata.name.as_deref(), Some("train-spec-5"));
    assert_eq!(newer.revision, 5);
    // An earlier job of the same name, not yet garbage-collected.
    let mut other = newer.clone();
    other.revision = 9;
    other.metadata.owner_references.as_mut().unwrap()[0].uid = "another-uid".into();

    let (generation, spec) =
        newest_valid_spec(&[older.clone(), other.clone(), newer], UID).expect("a saved spec");
    assert_eq!(generation, 5);
    assert_eq!(spec, j.spec);
    assert_eq!(newest_valid_spec(&[other], UID), None);
}

#[test]
fn a_live_service_with_the_apiservers_additions_holds_the_desired_one() {
    let svc = service(&job()).unwrap();
    let mut live = serde_json::to_value(&svc).unwrap();
    live["metadata"]["resourceVersion"] = json!("7");
    live["metadata"]["uid"] = json!("s1");
    live["spec"]["sessionAffinity"] = json!("None");
    live["spec"]["clusterIPs"] = json!(["None"]);
    live["spec"]["ports"][0]["appProtocol"] = json!("tcp");
    live["status"] = json!({"loadBalancer": {}});
    let live: Service = serde_json::from_value(live).unwrap();
    assert!(holds(&svc, &live));

    let mut edited = live.clone();
    edited.spec.as_mut().unwrap().publish_not_ready_addresses = Some(false);
    assert!(
        !holds(&svc, &edited),
        "someone changed a field the operator sets"
    );
    let mut relabelled = live.clone();
    relabelled.metadata.labels.as_mut().unwrap().clear();
    assert!(!holds(&svc, &relabelled));
    let mut more_ports = live;
    let port = more_ports.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].clone();
    more_ports
        .spec
        .as_mut()
        .unwrap()
        .ports
        .as_mut()
        .unwrap()
        .push(port);
    assert!(!holds(&svc, &more_ports));
}
