//! The objects a job should have: one headless Service and pods `<job>-worker-<i>`, per the pod
//! contract (`docs/pod-contract.md`; its names are in the `elasticjob-contract` crate). Pure
//! functions of the job and the operator's settings; the names are deterministic, so applying
//! them twice never makes two of anything.
//!
//! The pod contract, for pod `i` of job `J` in namespace `N`:
//! - name and hostname `J-worker-i`, subdomain `J` (the headless Service), so it resolves as
//!   `J-worker-i.J.N.svc.<cluster domain>`; restartPolicy Never (the operator recreates pods,
//!   the launcher restarts workers); labels `elasticjob.dev/job-name=J`,
//!   `elasticjob.dev/replica-index=i`, `app.kubernetes.io/*`; the job as controller owner.
//! - launcher injection (`spec.launcher.inject`, default true): init container
//!   `elastic-launch-install` (the launcher image, no command, args `__install
//!   /elasticjob/bin`) copies the launcher into the `elasticjob-bin` emptyDir, mounted at
//!   `/elasticjob/bin` in it and (read-only) in the trainer container. It passes the
//!   `restricted` Pod Security Standard on its own: non-root (the pod's uid when the template
//!   sets a non-root one, else the launcher image's 65532), no privilege escalation, no
//!   capabilities, RuntimeDefault seccomp, read-only root filesystem (it writes only into the
//!   emptyDir). The copy is mode 0755, so the trainer runs it whatever its uid.
//! - the trainer container runs `/elasticjob/bin/elastic-launch` (`elastic-launch` from PATH
//!   without injection) with the user's command as arguments: a torchrun command keeps its
//!   options; any other program runs under `--no-python`, except a `python script` or
//!   `python -m module` command with `spec.launcher.prewarm`: the launcher gets the script and
//!   `PYTHON_EXEC=<that python>`, as it starts the (prewarmed) interpreters itself.
//! - its environment gets, after the user's: `PET_NNODES=min:max`, `PET_NPROC_PER_NODE`,
//!   `PET_RDZV_BACKEND=c10d`, `PET_RDZV_ENDPOINT=J-worker-0.J.N.svc.<domain>:<port>`,
//!   `PET_RDZV_ID=<job uid>`, `PET_RDZV_CONF` (timeouts, `is_host=1` on pod 0 only, every
//!   pod's address as `store_hosts`, extra conf),
//!   `PET_MAX_RESTARTS`, `PET_TERMINATION_MESSAGE_PATH`, `PET_STATUS_PORT` (the launcher's
//!   read-only progress endpoint, which the operator polls), `ELASTICJOB_NODE_INDEX=i`, and
//!   `PYTHONUNBUFFERED=1` unless the user set it; terminationMessagePolicy
//!   FallbackToLogsOnError, so the launcher's JSON report (or the log tail) reaches the status;
//!   container ports `rendezvous` and `launcher-status`.
//! - NoExecute tolerations of the node-lost taints for failurePolicy.nodeLostTimeoutSeconds
//!   (unless the template has its own), so a pod on a dead node is evicted and replaced in a
//!   minute rather than Kubernetes' five.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    ObjectFieldSelector, Pod, PodSpec, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use elasticjob_contract::env as env_name;
use elasticjob_contract::env::rdzv_conf::{
    CLOSE_TIMEOUT, EXPECTED_NODES, IS_HOST, JOIN_TIMEOUT, LAST_CALL_TIMEOUT, STORE_HOSTS,
};
use elasticjob_contract::install;
use elasticjob_crds::accelerator::accelerator_request;
use elasticjob_crds::command::{self, Invocation};
use elasticjob_crds::names::*;
use elasticjob_crds::spec::{ElasticJob, ElasticJobSpec, Nproc};
use elasticjob_crds::validate::full_command;

/// Kubernetes' default cluster DNS domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// The path Kubernetes gives a container's termination message by default.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// The launcher image's user (images/launcher.Dockerfile: `FROM scratch`, `USER 65532:65532`,
/// the uid distroless calls `nonroot`): the install container's uid unless the pod sets a
/// non-root one.
pub const LAUNCHER_UID: i64 = 65532;

/// The operator's own settings that shape the objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The launcher image when a job names none (`--launcher-image`).
    pub launcher_image: Option<String>,
    /// The cluster's DNS domain, for the rendezvous endpoint.
    pub cluster_domain: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            launcher_image: None,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    #[error("the ElasticJob has no metadata.{0} (it was not read from the apiserver)")]
    Missing(&'static str),
    #[error(
        "the pod template has no trainer container (the only container, or the one named \"trainer\")"
    )]
    NoTrainer,
    #[error("the trainer container has no command")]
    NoCommand,
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "no launcher image: set spec.launcher.image, or start the operator with --launcher-image"
    )]
    NoLauncherImage,
}

struct JobRef<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
}

fn job_ref(job: &ElasticJob) -> Result<JobRef<'_>, DesiredError> {
    let m = &job.metadata;
    Ok(JobRef {
        name: m.name.as_deref().ok_or(DesiredError::Missing("name"))?,
        namespace: m
            .namespace
            .as_deref()
            .ok_or(DesiredError::Missing("namespace"))?,
        uid: m.uid.as_deref().ok_or(DesiredError::Missing("uid"))?,
    })
}

/// Labels of everything the operator makes for a job.
pub fn labels(job: &str) -> BTreeMap<String, String> {
    [
        (LABEL_JOB_NAME, job),
        (LABEL_APP_NAME, APP_NAME),
        (LABEL_APP_INSTANCE, job),
        (LABEL_APP_MANAGED_BY, MANAGER),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Labels of pod `index`.
pub fn pod_labels(job: &str, index: u32) -> BTreeMap<String, String> {
    let mut l = labels(job);
    l.insert(LABEL_REPLICA_INDEX.into(), index.to_string());
    l.insert(LABEL_APP_COMPONENT.into(), COMPONENT_WORKER.into());
    l
}

/// The selector of the job's pods.
pub fn selector(job: &str) -> BTreeMap<String, String> {
    [(LABEL_JOB_NAME.to_string(), job.to_string())].into()
}

/// The job as the controlling owner: deleting the job deletes its objects, and they cannot
/// outlive it.
pub fn owner_reference(job: &ElasticJob) -> Result<OwnerReference, DesiredError> {
    job_ref(job)?;
    let mut owner = job
        .controller_owner_ref(&())
        .ok_or(DesiredError::Missing("uid"))?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

/// The rendezvous endpoint: pod 0 through the headless Service.
pub fn rendezvous_endpoint(job: &str, namespace: &str, port: i32, cluster_domain: &str) -> String {
    format!(
        "{}:{port}",
        pod_address(job, namespace, cluster_domain, &0.to_string())
    )
}

/// Every pod's address through the headless Service, `{}` standing for its index: where the
/// launchers look for the rendezvous store when the pod hosting it is lost.
pub fn store_hosts(job: &str, namespace: &str, cluster_domain: &str) -> String {
    pod_address(job, namespace, cluster_domain, "{}")
}

fn pod_address(job: &str, namespace: &str, cluster_domain: &str, index: &str) -> String {
    format!(
        "{job}-worker-{index}.{}.{namespace}.svc.{cluster_domain}",
        service_name(job)
    )
}

/// The Secret holding the job's launcher token (`ELASTICJOB_STORE_TOKEN`).
pub fn store_token_secret_name(job: &str) -> String {
    format!("{job}-store-token")
}

/// The key of the token in [`store_token_secret`].
pub const STORE_TOKEN_KEY: &str = "token";

/// The job's launcher token, `token` (random, made once): only the job's launchers may write
/// the rendezvous's keys on its stores. Immutable: the running pods read it once, at start.
pub fn store_token_secret(job: &ElasticJob, token: String) -> Result<Secret, DesiredError> {
    let j = job_ref(job)?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(store_token_secret_name(j.name)),
            namespace: Some(j.namespace.into()),
            labels: Some(labels(j.name)),
            owner_references: Some(vec![owner_reference(job)?]),
            ..Default::default()
        },
        immutable: Some(true),
        string_data: Some(BTreeMap::from([(STORE_TOKEN_KEY.to_string(), token)])),
        type_: Some("Opaque".into()),
        ..Default::default()
    })
}

/// The job's headless Service: named after the job, no cluster IP, publishing pods before
/// they are ready (the launchers must meet before any is ready), the rendezvous port.
pub fn service(job: &ElasticJob) -> Result<Service, DesiredError> {
    let j = job_ref(job)?;
    let port = job.spec.rendezvous.port;
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(service_name(j.name)),
            namespace: Some(j.namespace.into()),
            labels: Some(labels(j.name)),
            owner_references: Some(vec![owner_reference(job)?]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(j.name)),
            ports: Some(vec![ServicePort {
                name: Some(RENDEZVOUS_PORT_NAME.into()),
                port,
                target_port: Some(IntOrString::Int(port)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// `PET_NPROC_PER_NODE`: `auto` becomes the number of accelerators the container asks for
/// (`nvidia.com/gpu`, `amd.com/gpu`, `gpu.intel.com/i915|xe`, `habana.ai/gaudi`) when it asks
/// for one kind; otherwise the launcher counts what the pod was given.
pub fn nproc_per_node(job: &ElasticJob, trainer: &Container) -> String {
    match job.spec.nproc_per_node.parse() {
        Ok(Nproc::Count(n)) => n.to_string(),
        Ok(Nproc::Gpu) => "gpu".into(),
        Ok(Nproc::Cpu) => "cpu".into(),
        // Two kinds of accelerator is a validation error: such a job never gets pods.
        Ok(Nproc::Auto) | Err(_) => match accelerator_request(trainer) {
            Ok(Some(asked)) => asked.count.to_string(),
            Ok(None) | Err(_) => "auto".into(),
        },
    }
}

/// `PET_RDZV_CONF`: the timeouts, whether this pod hosts the store at first (pod 0 does),
/// every pod's address (the store moves to a survivor when its host is lost), how many pods
/// the job runs (its first round closes when they are in, without a last call), then the
/// user's extra settings.
pub fn rdzv_conf(job: &ElasticJob, index: u32, store_hosts: &str) -> String {
    let r = &job.spec.rendezvous;
    let mut parts = vec![
        format!("{JOIN_TIMEOUT}={}", r.join_timeout_seconds),
        format!("{LAST_CALL_TIMEOUT}={}", r.last_call_timeout_seconds),
        format!("{CLOSE_TIMEOUT}={}", r.close_timeout_seconds),
        format!("{IS_HOST}={}", u8::from(index == 0)),
        format!("{STORE_HOSTS}={store_hosts}"),
        format!("{EXPECTED_NODES}={}", job.spec.desired_replicas()),
    ];
    parts.extend(r.conf.iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(",")
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The variables the operator gives the trainer container of pod `index`, after the user's.
pub fn launcher_env(
    job: &ElasticJob,
    index: u32,
    trainer: &Container,
    settings: &Settings,
) -> Result<Vec<EnvVar>, DesiredError> {
    let j = job_ref(job)?;
    let spec = &job.spec;
    let mut out = vec![
        env(
            env_name::NNODES,
            format!("{}:{}", spec.min_replicas, spec.max_replicas),
        ),
        env(env_name::NPROC_PER_NODE, nproc_per_node(job, trainer)),
        env(env_name::RDZV_BACKEND, "c10d"),
        env(
            env_name::RDZV_ENDPOINT,
            rendezvous_endpoint(
                j.name,
                j.namespace,
                spec.rendezvous.port,
                &settings.cluster_domain,
            ),
        ),
        env(env_name::RDZV_ID, j.uid),
        env(
            env_name::RDZV_CONF,
            rdzv_conf(
                job,
                index,
                &store_hosts(j.name, j.namespace, &settings.cluster_domain),
            ),
        ),
        env(env_name::MAX_RESTARTS, spec.max_restarts.max(0).to_string()),
        env(
            env_name::TERMINATION_MESSAGE_PATH,
            trainer
                .termination_message_path
                .as_deref()
                .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH),
        ),
        env(env_name::STATUS_PORT, spec.launcher.status_port.to_string()),
        env(
            env_name::SHUTDOWN_TIMEOUT,
            shutdown_timeout(termination_grace(job)).to_string(),
        ),
        env(env_name::NODE_INDEX, index.to_string()),
        EnvVar {
            name: env_name::POD_IP.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        EnvVar {
            name: env_name::STORE_TOKEN.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: store_token_secret_name(j.name),
                    key: STORE_TOKEN_KEY.into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(stall) = spec.failure_policy.stall_timeout_seconds {
        out.push(env(env_name::STALL_TIMEOUT, stall.to_string()));
    }
    if !spec.launcher.prewarm.is_empty() {
        out.push(env(env_name::PREWARM, spec.launcher.prewarm.join(",")));
    }
    let user_sets = |name: &str| trainer.env.iter().flatten().any(|e| e.name == name);
    if !user_sets("PYTHONUNBUFFERED") {
        out.push(env("PYTHONUNBUFFERED", "1"));
    }
    Ok(out)
}

/// The pod's `terminationGracePeriodSeconds` (Kubernetes' default: 30).
fn termination_grace(job: &ElasticJob) -> i64 {
    job.spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
}

/// The launcher's SIGTERM→SIGKILL grace for its workers when the pod is stopped: the pod's
/// grace less what the launcher needs to stop its workers' leftovers and write its report
/// before the kubelet kills the container (3 s; half the grace when that is short), so a
/// just-in-time checkpoint gets nearly all the time the user gave the pod.
pub fn shutdown_timeout(termination_grace_seconds: i64) -> i64 {
    let g = termination_grace_seconds.max(0);
    if g > 6 { g - 3 } else { g / 2 }
}

/// The taints a node gets when it stops reporting (NoExecute: its pods are evicted once their
/// toleration runs out).
pub const NODE_LOST_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// Tolerates each of [`NODE_LOST_TAINTS`] for `seconds`, unless the template has its own
/// toleration for it (the user's choice wins).
fn add_node_lost_tolerations(pod_spec: &mut PodSpec, seconds: i32) {
    let tolerations = pod_spec.tolerations.get_or_insert_with(Vec::new);
    for taint in NODE_LOST_TAINTS {
        if tolerations.iter().any(|t| t.key.as_deref() == Some(taint)) {
            continue;
        }
        tolerations.push(Toleration {
            key: Some(taint.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(seconds.max(0).into()),
            value: None,
        });
    }
}

/// The install init container's securityContext: what the `restricted` Pod Security Standard
/// asks of a container, so a namespace that enforces it admits the operator's part of the pod
/// whatever the template says (the template's own containers are the user's to secure).
///
/// The uid: a non-root `runAsUser` of the pod's securityContext is kept (the init container
/// inherits it; a platform that assigns uids, such as OpenShift's, refuses any other), else
/// [`LAUNCHER_UID`]: an explicit uid works with any launcher image (the kubelet cannot check
/// `runAsNonRoot` against a named USER) and overrides a pod-level `runAsUser: 0`, which would
/// otherwise contradict `runAsNonRoot`. The install reads its own binary and writes only into
/// the emptyDir (world-writable), so any uid works and the root filesystem can be read-only.
pub fn install_security_context(pod_spec: &PodSpec) -> SecurityContext {
    let pod_uid = pod_spec
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user);
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: match pod_uid {
            Some(uid) if uid != 0 => None,
            _ => Some(LAUNCHER_UID),
        },
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// The install init container.
fn install_container(
    image: String,
    pull_policy: Option<String>,
    security_context: SecurityContext,
) -> Container {
    Container {
        name: INSTALL_CONTAINER.into(),
        image: Some(image),
        image_pull_policy: pull_policy,
        args: Some(vec![install::ARG.into(), LAUNCHER_DIR.into()]),
        volume_mounts: Some(vec![VolumeMount {
            name: LAUNCHER_VOLUME.into(),
            mount_path: LAUNCHER_DIR.into(),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_string(), Quantity("10m".into())),
                    ("memory".to_string(), Quantity("32Mi".into())),
                ]
                .into(),
            ),
            limits: Some([("memory".to_string(), Quantity("128Mi".into()))].into()),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(security_context),
        ..Default::default()
    }
}

/// Pod `index` of the job.
pub fn pod(job: &ElasticJob, index: u32, settings: &Settings) -> Result<Pod, DesiredError> {
    let j = job_ref(job)?;
    let spec = &job.spec;
    let name = pod_name(j.name, index);
    let template_meta = spec.template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.extend(pod_labels(j.name, index));

    let mut pod_spec: PodSpec = spec.template.spec.clone().unwrap_or_default();
    let t = spec
        .trainer_container_index()
        .ok_or(DesiredError::NoTrainer)?;
    let trainer = pod_spec.containers[t].clone();
    let argv = full_command(&trainer);
    if trainer.command.as_ref().is_none_or(Vec::is_empty) {
        return Err(DesiredError::NoCommand);
    }
    let invocation = command::invocation(&argv);
    if let Invocation::Unsupported(why) = &invocation {
        return Err(DesiredError::Unsupported(why.clone()));
    }
    let launcher = &spec.launcher;
    let program = if launcher.inject {
        LAUNCHER_PATH
    } else {
        LAUNCHER_BINARY
    };
    let mut env = trainer.env.clone().unwrap_or_default();
    env.extend(launcher_env(job, index, &trainer, settings)?);
    let args = match &invocation {
        // Prewarmed interpreters are started by the launcher: it needs the script, and the
        // command's own interpreter as PYTHON_EXEC.
        Invocation::Program { argv } if !launcher.prewarm.is_empty() => {
            let (python, entrypoint) = command::python_entrypoint(argv)
                .ok_or_else(|| DesiredError::Unsupported(command::PREWARM_NEEDS_PYTHON.into()))?;
            env.push(self::env(env_name::PYTHON_EXEC, python));
            entrypoint
        }
        _ => invocation.launcher_args(),
    };

    let c = &mut pod_spec.containers[t];
    c.command = Some(vec![program.into()]);
    c.args = Some(args);
    c.env = Some(env);
    c.termination_message_policy = Some("FallbackToLogsOnError".into());
    let ports = c.ports.get_or_insert_with(Vec::new);
    for (name, port) in [
        (RENDEZVOUS_PORT_NAME, spec.rendezvous.port),
        (STATUS_PORT_NAME, launcher.status_port),
    ] {
        let declared = ports
            .iter()
            .any(|p| p.container_port == port || p.name.as_deref() == Some(name));
        if !declared {
            ports.push(ContainerPort {
                name: Some(name.into()),
                container_port: port,
                protocol: Some("TCP".into()),
                ..Default::default()
            });
        }
    }
    if launcher.inject {
        let image = launcher
            .image
            .clone()
            .or_else(|| settings.launcher_image.clone())
            .ok_or(DesiredError::NoLauncherImage)?;
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: LAUNCHER_VOLUME.into(),
                mount_path: LAUNCHER_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        let install = install_container(
            image,
            launcher.image_pull_policy.clone(),
            install_security_context(&pod_spec),
        );
        pod_spec
            .init_containers
            .get_or_insert_with(Vec::new)
            .insert(0, install);
        pod_spec.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: LAUNCHER_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    add_node_lost_tolerations(&mut pod_spec, spec.failure_policy.node_lost_timeout_seconds);
    pod_spec.hostname = Some(name.clone());
    pod_spec.subdomain = Some(service_name(j.name));
    pod_spec.restart_policy = Some("Never".into());
    crate::gang::join(job, &mut pod_spec, &mut labels);

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(j.namespace.into()),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: Some(vec![owner_reference(job)?]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    })
}

/// Pod `index` as it is created now: [`pod`], preferring nodes other than `avoided` (the nodes
/// where the job recently lost pods because of the node: [`crate::bad_nodes`]). Pods are
/// created, never patched or compared with this, so a running pod without the term is not
/// "different": only new pods (replacements, scale-ups) get it.
pub fn new_pod(
    job: &ElasticJob,
    index: u32,
    settings: &Settings,
    avoided: &[String],
) -> Result<Pod, DesiredError> {
    let mut p = pod(job, index, settings)?;
    if let Some(spec) = p.spec.as_mut() {
        crate::bad_nodes::avoid_nodes(spec, avoided);
    }
    Ok(p)
}

/// The ControllerRevision holding generation `generation` of the job's spec.
pub fn valid_spec_name(job: &str, generation: i64) -> String {
    format!("{job}-spec-{generation}")
}

/// The job's spec, saved once the operator found it valid: a ControllerRevision (as
/// StatefulSets keep their history) whose revision is the job's generation. An invalid edit of
/// a running job then does not stop it: the operator goes on with the newest saved spec.
pub fn valid_spec_revision(job: &ElasticJob) -> Result<ControllerRevision, DesiredError> {
    let j = job_ref(job)?;
    let generation = job.metadata.generation.unwrap_or_default();
    let data = serde_json::to_value(&job.spec)
        .map_err(|e| DesiredError::Unsupported(format!("the spec does not serialize: {e}")))?;
    Ok(ControllerRevision {
        metadata: ObjectMeta {
            name: Some(valid_spec_name(j.name, generation)),
            namespace: Some(j.namespace.into()),
            labels: Some(labels(j.name)),
            owner_references: Some(vec![owner_reference(job)?]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision: generation,
    })
}

/// The newest spec saved by [`valid_spec_revision`] for the job with UID `uid`, with its
/// generation. Revisions of another job (an earlier one of the same name) and ones that no
/// longer parse are passed over.
pub fn newest_valid_spec(
    revisions: &[ControllerRevision],
    uid: &str,
) -> Option<(i64, ElasticJobSpec)> {
    revisions
        .iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
        .filter_map(|r| {
            Some((
                r.revision,
                serde_json::from_value(r.data.as_ref()?.0.clone()).ok()?,
            ))
        })
        .max_by_key(|(generation, _)| *generation)
}

/// The name of the trainer container, for reading pod statuses.
pub fn trainer_name(job: &ElasticJob) -> Option<String> {
    let i = job.spec.trainer_container_index()?;
    Some(job.spec.template.spec.as_ref()?.containers[i].name.clone())
}

/// Whether `live` (an object as the apiserver has it) already holds every field `desired`
/// sets, so a server-side apply of `desired` would change nothing. What the apiserver or others
/// add (defaults, clusterIP, other managers' fields) is ignored; lists must match item by
/// item. A field the operator stops setting is not noticed (the apply that would drop it is
/// skipped); the operator's objects never lose a field while they live.
pub fn holds(desired: &impl serde::Serialize, live: &impl serde::Serialize) -> bool {
    fn subset(want: &serde_json::Value, have: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (want, have) {
            (Value::Object(w), Value::Object(h)) => w
                .iter()
                .all(|(k, v)| v.is_null() || h.get(k).is_some_and(|hv| subset(v, hv))),
            (Value::Array(w), Value::Array(h)) => {
                w.len() == h.len() && w.iter().zip(h).all(|(a, b)| subset(a, b))
            }
            _ => want == have,
        }
    }
    match (serde_json::to_value(desired), serde_json::to_value(live)) {
        (Ok(d), Ok(l)) => subset(&d, &l),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
