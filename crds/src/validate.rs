//! Validation of an ElasticJob: the checks of the CRD's CEL rules, for apiservers that do not run
//! them (Kubernetes < 1.25 drops `x-kubernetes-validations`), and more that CEL cannot express
//! well. Each issue names the field and says what to fix; the operator puts them in the Failed
//! condition's message and in an event.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::Container;

use crate::accelerator::accelerator_request;
use crate::command::{self, Invocation};
use crate::names::{
    INSTALL_CONTAINER, LAUNCHER_DIR, LAUNCHER_VOLUME, MAX_JOB_NAME_LEN, RESERVED_RDZV_CONF_KEYS,
    TRAINER_CONTAINER, is_reserved_env,
};
use crate::spec::{ElasticJob, ElasticJobSpec, Nproc};

/// One problem with a job, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationIssue {
    /// The field, as a path from the object root: `spec.minReplicas`.
    pub field: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl ValidationIssue {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationIssue {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Joins issues into one message (for a condition or an event).
pub fn describe(issues: &[ValidationIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every problem that stops the job from running.
pub fn validate(job: &ElasticJob) -> Result<(), Vec<ValidationIssue>> {
    let mut issues = Vec::new();
    if let Some(name) = job.metadata.name.as_deref() {
        check_name(name, &mut issues);
    }
    check_spec(&job.spec, &mut issues);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues)
    }
}

/// Problems of an edit that turns the spec a job runs, `running`, into `edited`: the checks of
/// the CRD's transition rules (CEL `oldSelf`), for apiservers that do not run them.
pub fn validate_edit(running: &ElasticJobSpec, edited: &ElasticJobSpec) -> Vec<ValidationIssue> {
    let mut issues = Vec::new();
    let (old, new) = (running.rendezvous.port, edited.rendezvous.port);
    if old != new {
        issues.push(ValidationIssue::new(
            "spec.rendezvous.port",
            format!(
                "the port cannot change from {old} to {new}: the job's running pods meet on {old}, and new pods would not find them; set it back to {old}, or delete the job and create it again"
            ),
        ));
    }
    if running.gang != edited.gang {
        issues.push(ValidationIssue::new(
            "spec.gang",
            "gang cannot change while the job exists: its pods are already bound to a scheduler; set it back, or delete the job and create it again",
        ));
    }
    issues
}

/// Problems the operator works around and reports: `replicas` outside the bounds (it runs the
/// nearest bound), `nprocPerNode` above the accelerators the trainer asks for, a shell that runs
/// torchrun itself.
pub fn warnings(job: &ElasticJob) -> Vec<ValidationIssue> {
    let spec = &job.spec;
    let mut out = Vec::new();
    if let Some(r) = spec.replicas
        && spec.min_replicas <= spec.max_replicas
        && !(spec.min_replicas..=spec.max_replicas).contains(&r)
    {
        out.push(ValidationIssue::new(
            "spec.replicas",
            format!(
                "replicas {r} is outside [minReplicas {}, maxReplicas {}]; running {} pods: scale within the bounds or change them",
                spec.min_replicas,
                spec.max_replicas,
                spec.desired_replicas()
            ),
        ));
    }
    if let Some(i) = spec.trainer_container_index() {
        let c = &spec
            .template
            .spec
            .as_ref()
            .expect("has a trainer")
            .containers[i];
        if let (Ok(Nproc::Count(n)), Ok(Some(asked))) =
            (spec.nproc_per_node.parse(), accelerator_request(c))
            && n > asked.count
        {
            out.push(ValidationIssue::new(
                "spec.nprocPerNode",
                format!(
                    "nprocPerNode {n} is more than the {} {} the container {} asks for: workers will share devices; use nprocPerNode: auto for one worker per device",
                    asked.count, asked.resource, c.name
                ),
            ));
        }
        if let Invocation::Program { argv } = command::invocation(&full_command(c))
            && argv
                .iter()
                .skip(1)
                .any(|a| a.contains("torchrun") || a.contains("torch.distributed.run"))
        {
            out.push(ValidationIssue::new(
                format!("spec.template.spec.containers[{i}].command"),
                "the command seems to run torchrun inside another program, which the operator runs once per local rank (a launcher in every worker): start the command with torchrun itself, or write it as a shell command (sh -c \"... && torchrun ...\"), which runs once per pod",
            ));
        }
    }
    out
}

/// The container's command followed by its args.
pub fn full_command(c: &Container) -> Vec<String> {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect()
}

fn check_name(name: &str, issues: &mut Vec<ValidationIssue>) {
    let dns_label = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !dns_label || name.len() > MAX_JOB_NAME_LEN {
        issues.push(ValidationIssue::new(
            "metadata.name",
            format!(
                "\"{name}\" must be a DNS label of at most {MAX_JOB_NAME_LEN} characters (lower-case letters, digits and '-', starting with a letter): it names the Service and prefixes the pod host names <name>-worker-<i>"
            ),
        ));
    }
}

fn check_spec(spec: &ElasticJobSpec, issues: &mut Vec<ValidationIssue>) {
    let mut issue =
        |field: &str, message: String| issues.push(ValidationIssue::new(field, message));
    if spec.min_replicas < 1 {
        issue(
            "spec.minReplicas",
            format!(
                "minReplicas is {}: it must be at least 1",
                spec.min_replicas
            ),
        );
    }
    if spec.max_replicas < 1 {
        issue(
            "spec.maxReplicas",
            format!(
                "maxReplicas is {}: it must be at least 1",
                spec.max_replicas
            ),
        );
    }
    if spec.min_replicas > spec.max_replicas {
        issue(
            "spec.minReplicas",
            format!(
                "minReplicas {} is greater than maxReplicas {}: minReplicas must be less than or equal to maxReplicas",
                spec.min_replicas, spec.max_replicas
            ),
        );
    }
    if let Some(r) = spec.replicas
        && r < 1
    {
        issue(
            "spec.replicas",
            format!(
                "replicas is {r}: it must be at least 1 (suspend the job with spec.runPolicy.suspend to stop all pods)"
            ),
        );
    }
    if let Err(e) = spec.nproc_per_node.parse() {
        issue("spec.nprocPerNode", e);
    }
    if spec.max_restarts < 0 {
        issue(
            "spec.maxRestarts",
            format!("maxRestarts is {}: it must be 0 or more", spec.max_restarts),
        );
    }

    let rdzv = &spec.rendezvous;
    if !(1..=65535).contains(&rdzv.port) {
        issue(
            "spec.rendezvous.port",
            format!(
                "port {} is not a TCP port: use 1-65535 (default 29400)",
                rdzv.port
            ),
        );
    }
    let status_port = spec.launcher.status_port;
    if !(1..=65535).contains(&status_port) {
        issue(
            "spec.launcher.statusPort",
            format!("port {status_port} is not a TCP port: use 1-65535 (default 29401)"),
        );
    } else if status_port == rdzv.port {
        issue(
            "spec.launcher.statusPort",
            format!(
                "port {status_port} is also spec.rendezvous.port: the launcher serves its status and pod 0 the rendezvous store; use another port (default 29401)"
            ),
        );
    }
    for (field, value) in [
        (
            "spec.rendezvous.joinTimeoutSeconds",
            rdzv.join_timeout_seconds,
        ),
        (
            "spec.rendezvous.lastCallTimeoutSeconds",
            rdzv.last_call_timeout_seconds,
        ),
        (
            "spec.rendezvous.closeTimeoutSeconds",
            rdzv.close_timeout_seconds,
        ),
    ] {
        if value < 1 {
            issue(field, format!("{value} seconds: it must be at least 1"));
        }
    }
    for (key, value) in &rdzv.conf {
        let field = format!("spec.rendezvous.conf.{key}");
        if key.trim().is_empty() || key.contains([',', '=']) {
            issue(
                &field,
                format!("the key \"{key}\" must be a non-empty name without ',' or '='"),
            );
        } else if RESERVED_RDZV_CONF_KEYS.contains(&key.as_str()) {
            issue(
                &field,
                if key == "is_host" {
                    "is_host is set by the operator (pod 0 hosts the store): remove it".to_string()
                } else {
                    format!("set spec.rendezvous.{} instead", camel_seconds(key))
                },
            );
        }
        if value.contains(',') || value.trim().is_empty() {
            issue(
                &field,
                format!("the value \"{value}\" must be non-empty and must not contain ','"),
            );
        }
    }

    let fp = &spec.failure_policy;
    for (field, value) in [
        (
            "spec.failurePolicy.maxApplicationRestarts",
            fp.max_application_restarts,
        ),
        (
            "spec.failurePolicy.maxInfrastructureRestarts",
            fp.max_infrastructure_restarts,
        ),
        (
            "spec.failurePolicy.backoff.initialSeconds",
            fp.backoff.initial_seconds,
        ),
        (
            "spec.failurePolicy.backoff.maxSeconds",
            fp.backoff.max_seconds,
        ),
    ] {
        if value < 0 {
            issue(field, format!("{value}: it must be 0 or more"));
        }
    }
    if fp.backoff.initial_seconds > fp.backoff.max_seconds {
        issue(
            "spec.failurePolicy.backoff.initialSeconds",
            format!(
                "initialSeconds {} is greater than maxSeconds {}",
                fp.backoff.initial_seconds, fp.backoff.max_seconds
            ),
        );
    }
    let avoid = &fp.avoid_failed_nodes;
    for (field, value) in [
        (
            "spec.failurePolicy.avoidFailedNodes.windowSeconds",
            avoid.window_seconds,
        ),
        (
            "spec.failurePolicy.avoidFailedNodes.maxNodes",
            avoid.max_nodes,
        ),
    ] {
        if value < 1 {
            issue(field, format!("{value}: it must be at least 1"));
        }
    }
    if fp.pod_termination_timeout_seconds < 1 {
        issue(
            "spec.failurePolicy.podTerminationTimeoutSeconds",
            format!(
                "{} seconds: it must be at least 1",
                fp.pod_termination_timeout_seconds
            ),
        );
    }
    for (field, codes) in [
        (
            "spec.failurePolicy.permanentExitCodes",
            &fp.permanent_exit_codes,
        ),
        (
            "spec.failurePolicy.retryableExitCodes",
            &fp.retryable_exit_codes,
        ),
    ] {
        for code in codes.iter().filter(|c| !(1..=255).contains(*c)) {
            issue(
                field,
                format!("{code} is not a failure exit code: use 1-255"),
            );
        }
    }
    let permanent: BTreeSet<_> = fp.permanent_exit_codes.iter().collect();
    let both: Vec<String> = fp
        .retryable_exit_codes
        .iter()
        .filter(|c| permanent.contains(c))
        .map(ToString::to_string)
        .collect();
    if !both.is_empty() {
        issue(
            "spec.failurePolicy.retryableExitCodes",
            format!(
                "exit codes {} are also in permanentExitCodes: list each code in one of them",
                both.join(", ")
            ),
        );
    }

    let rp = &spec.run_policy;
    if let Some(d) = rp.active_deadline_seconds
        && d < 1
    {
        issue(
            "spec.runPolicy.activeDeadlineSeconds",
            format!("{d}: it must be at least 1 (leave it unset for no deadline)"),
        );
    }
    if let Some(t) = rp.ttl_seconds_after_finished
        && t < 0
    {
        issue(
            "spec.runPolicy.ttlSecondsAfterFinished",
            format!("{t}: it must be 0 or more (leave it unset to keep the job)"),
        );
    }
    if spec
        .launcher
        .image
        .as_deref()
        .is_some_and(|i| i.trim().is_empty())
    {
        issue(
            "spec.launcher.image",
            "the launcher image is empty: name an image or leave it unset for the operator's"
                .into(),
        );
    }
    check_template(spec, issues);
}

/// `join_timeout` → `joinTimeoutSeconds`.
fn camel_seconds(key: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out + "Seconds"
}

fn check_template(spec: &ElasticJobSpec, issues: &mut Vec<ValidationIssue>) {
    let mut issue =
        |field: String, message: String| issues.push(ValidationIssue::new(field, message));
    let Some(pod) = spec.template.spec.as_ref() else {
        issue(
            "spec.template.spec".into(),
            "the pod template has no spec: give it containers".into(),
        );
        return;
    };
    if pod.containers.is_empty() {
        issue(
            "spec.template.spec.containers".into(),
            "the pod template has no containers: add the container that trains".into(),
        );
        return;
    }
    for (i, c) in pod.containers.iter().enumerate() {
        for (j, e) in c.env.iter().flatten().enumerate() {
            if is_reserved_env(&e.name) {
                issue(
                    format!("spec.template.spec.containers[{i}].env[{j}]"),
                    format!(
                        "{} is reserved: the operator and the launcher set PET_*, ELASTICJOB_* and the workers' torchrun variables (RANK, WORLD_SIZE, MASTER_ADDR, ...); remove it{}",
                        e.name,
                        if e.name.starts_with("PET_") {
                            " and pass launcher options on a torchrun command line instead"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
    }
    let Some(t) = spec.trainer_container_index() else {
        let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        issue(
            "spec.template.spec.containers".into(),
            format!(
                "the template has {} containers ({}) and none is named \"{TRAINER_CONTAINER}\": name the container that trains \"{TRAINER_CONTAINER}\"",
                names.len(),
                names.join(", ")
            ),
        );
        return;
    };
    let trainer = &pod.containers[t];
    let field = format!("spec.template.spec.containers[{t}]");
    if let Err(e) = accelerator_request(trainer) {
        issue(format!("{field}.resources"), e.to_string());
    }
    if trainer.command.as_ref().is_none_or(|c| c.is_empty()) {
        issue(
            format!("{field}.command"),
            format!(
                "the container {} has no command: the operator runs it under the launcher and cannot see the image's entrypoint; set command (e.g. [\"torchrun\", \"train.py\"] or [\"python\", \"train.py\"])",
                trainer.name
            ),
        );
    } else {
        match command::invocation(&full_command(trainer)) {
            Invocation::Unsupported(why) => issue(format!("{field}.command"), why),
            Invocation::Torchrun { args } => {
                for (option, advice) in command::owned_options(&args) {
                    issue(
                        format!("{field}.command"),
                        format!(
                            "the torchrun option {option} is set by the operator: remove it ({advice})"
                        ),
                    );
                }
                if command::script_index(&args).is_none() {
                    issue(
                        format!("{field}.command"),
                        "torchrun is given no training script: add it (e.g. [\"torchrun\", \"train.py\"])".into(),
                    );
                }
            }
            // Its torchrun reads the operator's PET_* variables: nothing to check here.
            Invocation::Wrapper { .. } => {}
            Invocation::Program { argv } => {
                if !spec.launcher.prewarm.is_empty() && command::python_entrypoint(&argv).is_none()
                {
                    issue(
                        format!("{field}.command"),
                        command::PREWARM_NEEDS_PYTHON.into(),
                    );
                }
            }
        }
    }
    if spec.launcher.inject {
        let reserved_volume = pod
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == LAUNCHER_VOLUME);
        if reserved_volume {
            issue(
                "spec.template.spec.volumes".into(),
                format!(
                    "the volume name {LAUNCHER_VOLUME} is used by the operator for the launcher: rename your volume"
                ),
            );
        }
        let reserved_mount = trainer
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.trim_end_matches('/') == LAUNCHER_DIR);
        if reserved_mount {
            issue(
                format!("{field}.volumeMounts"),
                format!(
                    "{LAUNCHER_DIR} is where the operator mounts the launcher: mount your volume elsewhere"
                ),
            );
        }
        let reserved_init = pod
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == INSTALL_CONTAINER);
        if reserved_init {
            issue(
                "spec.template.spec.initContainers".into(),
                format!(
                    "the init container name {INSTALL_CONTAINER} is used by the operator: rename yours"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::NprocPerNode;
    use k8s_openapi::api::core::v1::{EnvVar, PodSpec, PodTemplateSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn container(name: &str, command: &[&str]) -> Container {
        Container {
            name: name.into(),
            image: Some("img".into()),
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn job(containers: Vec<Container>) -> ElasticJob {
        let mut job = ElasticJob::new(
            "train",
            ElasticJobSpec {
                min_replicas: 1,
                max_replicas: 3,
                replicas: Some(2),
                nproc_per_node: NprocPerNode::default(),
                max_restarts: 3,
                rendezvous: Default::default(),
                failure_policy: Default::default(),
                run_policy: Default::default(),
                launcher: Default::default(),
                gang: None,
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers,
                        ..Default::default()
                    }),
                },
            },
        );
        job.metadata.namespace = Some("default".into());
        job
    }

    fn ok_job() -> ElasticJob {
        job(vec![container("main", &["python", "train.py"])])
    }

    fn messages(job: &ElasticJob) -> Vec<String> {
        validate(job)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn an_edit_may_not_move_the_rendezvous_port_of_a_running_job() {
        let running = ok_job().spec;
        let mut scaled = running.clone();
        scaled.replicas = Some(3);
        assert_eq!(validate_edit(&running, &scaled), vec![]);
        let mut moved = running.clone();
        moved.rendezvous.port = 29500;
        let issues = validate_edit(&running, &moved);
        assert_eq!(issues.len(), 1);
        assert_eq!(
            issues[0].to_string(),
            "spec.rendezvous.port: the port cannot change from 29400 to 29500: the job's running pods meet on 29400, and new pods would not find them; set it back to 29400, or delete the job and create it again"
        );
    }

    #[test]
    fn an_edit_may_not_turn_gang_scheduling_on_or_off() {
        let running = ok_job().spec;
        let mut gang = running.clone();
        gang.gang = Some(crate::spec::GangPolicy {
            scheduler_name: crate::spec::default_gang_scheduler(),
            schedule_timeout_seconds: 60,
        });
        let issues = validate_edit(&running, &gang);
        assert_eq!(issues.len(), 1);
        assert!(
            issues[0]
                .to_string()
                .starts_with("spec.gang: gang cannot change")
        );
    }

    #[test]
    fn only_jobs_managed_by_nobody_else_are_this_operators() {
        let mut policy = crate::spec::RunPolicy::default();
        assert!(policy.managed_here());
        policy.managed_by = Some(crate::spec::MANAGED_BY_THIS_OPERATOR.into());
        assert!(policy.managed_here());
        policy.managed_by = Some("kueue.x-k8s.io/multikueue".into());
        assert!(!policy.managed_here());
    }

    #[test]
    fn a_plain_job_is_valid() {
        assert_eq!(validate(&ok_job()), Ok(()));
        assert!(warnings(&ok_job()).is_empty());
    }

    #[test]
    fn min_above_max() {
        let mut j = ok_job();
        j.spec.min_replicas = 4;
        j.spec.replicas = None;
        let m = messages(&j);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("spec.minReplicas: minReplicas 4 is greater than maxReplicas 3"));
    }

    #[test]
    fn replicas_out_of_bounds_is_a_warning_and_is_clamped() {
        let mut j = ok_job();
        j.spec.replicas = Some(5);
        assert_eq!(validate(&j), Ok(()));
        let w = warnings(&j);
        assert!(
            w[0].message
                .contains("replicas 5 is outside [minReplicas 1, maxReplicas 3]; running 3 pods"),
            "{w:?}"
        );
        assert_eq!(j.spec.desired_replicas(), 3);
        j.spec.replicas = None;
        assert_eq!(j.spec.desired_replicas(), 3);
        j.spec.replicas = Some(0);
        assert!(messages(&j)[0].contains("replicas is 0: it must be at least 1"));
    }

    #[test]
    fn nproc_forms() {
        let mut j = ok_job();
        for good in [
            IntOrString::Int(2),
            IntOrString::String("auto".into()),
            IntOrString::String("gpu".into()),
            IntOrString::String("cpu".into()),
        ] {
            j.spec.nproc_per_node = NprocPerNode(good);
            assert_eq!(validate(&j), Ok(()));
        }
        j.spec.nproc_per_node = NprocPerNode(IntOrString::String("4".into()));
        assert_eq!(j.spec.nproc_per_node.parse(), Ok(Nproc::Count(4)));
        j.spec.nproc_per_node = NprocPerNode(IntOrString::String("04".into()));
        assert!(messages(&j)[0].contains("must be auto, gpu, cpu or a positive integer"));
        j.spec.nproc_per_node = NprocPerNode(IntOrString::String("many".into()));
        assert!(messages(&j)[0].contains("must be auto, gpu, cpu or a positive integer"));
        j.spec.nproc_per_node = NprocPerNode(IntOrString::Int(0));
        assert!(messages(&j)[0].starts_with("spec.nprocPerNode: nprocPerNode is 0"));
    }

    #[test]
    fn reserved_env_names_are_refused_in_every_container() {
        let mut trainer = container("trainer", &["python", "t.py"]);
        trainer.env = Some(vec![
            EnvVar {
                name: "NCCL_DEBUG".into(),
                value: Some("INFO".into()),
                ..Default::default()
            },
            EnvVar {
                name: "PET_NNODES".into(),
                value: Some("2".into()),
                ..Default::default()
            },
        ]);
        let mut sidecar = container("sidecar", &["sleep", "inf"]);
        sidecar.env = Some(vec![EnvVar {
            name: "RANK".into(),
            ..Default::default()
        }]);
        let m = messages(&job(vec![sidecar, trainer]));
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].starts_with("spec.template.spec.containers[0].env[0]: RANK is reserved"));
        assert!(
            m[1].starts_with("spec.template.spec.containers[1].env[1]: PET_NNODES is reserved")
        );
        assert!(m[1].contains("torchrun command line"));
    }

    #[test]
    fn the_trainer_container_rule() {
        let two = job(vec![container("a", &["x"]), container("b", &["y"])]);
        assert!(messages(&two)[0].contains("none is named \"trainer\""));
        let named = job(vec![container("a", &["x"]), container("trainer", &["y"])]);
        assert_eq!(validate(&named), Ok(()));
        assert_eq!(named.spec.trainer_container_index(), Some(1));
        let none = job(vec![]);
        assert!(messages(&none)[0].contains("no containers"));
    }

    #[test]
    fn the_command_must_be_present_and_not_set_operator_options() {
        let m = messages(&job(vec![container("main", &[])]));
        assert!(m[0].contains("has no command"), "{m:?}");
        let m = messages(&job(vec![container(
            "main",
            &[
                "torchrun",
                "--nnodes=2",
                "--nproc-per-node",
                "8",
                "--tee",
                "3",
                "train.py",
            ],
        )]));
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains(
            "--nnodes is set by the operator: remove it (set spec.minReplicas and spec.maxReplicas)"
        ));
        assert!(m[1].contains(
            "--nproc-per-node is set by the operator: remove it (set spec.nprocPerNode)"
        ));
        let m = messages(&job(vec![container("main", &["torchrun", "--tee", "3"])]));
        assert!(m[0].contains("no training script"));
        let m = messages(&job(vec![container(
            "main",
            &["python", "-m", "torch.distributed.launch", "t.py"],
        )]));
        assert!(m[0].contains("deprecated"));
    }

    #[test]
    fn prewarm_needs_a_python_command() {
        let prewarmed = |command: &[&str]| {
            let mut j = job(vec![container("main", command)]);
            j.spec.launcher.prewarm = vec!["torch".into()];
            j
        };
        assert!(validate(&prewarmed(&["python", "train.py"])).is_ok());
        assert!(validate(&prewarmed(&["torchrun", "train.py"])).is_ok());
        let m = messages(&prewarmed(&["bash", "run.sh"]));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("spec.launcher.prewarm needs a Python command"),
            "{m:?}"
        );
    }

    #[test]
    fn the_status_port_is_a_port_of_its_own() {
        let mut j = ok_job();
        j.spec.launcher.status_port = j.spec.rendezvous.port;
        let m = messages(&j);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("spec.launcher.statusPort: port 29400 is also spec.rendezvous.port"),
            "{m:?}"
        );
        j.spec.launcher.status_port = 0;
        assert!(messages(&j)[0].contains("port 0 is not a TCP port"));
    }

    #[test]
    fn ports_timeouts_and_conf() {
        let mut j = ok_job();
        j.spec.rendezvous.port = 70000;
        j.spec.rendezvous.join_timeout_seconds = 0;
        j.spec
            .rendezvous
            .conf
            .insert("join_timeout".into(), "5".into());
        j.spec.rendezvous.conf.insert("is_host".into(), "1".into());
        j.spec
            .rendezvous
            .conf
            .insert("read_timeout".into(), "1,2".into());
        let m = messages(&j);
        assert_eq!(m.len(), 5, "{m:?}");
        assert!(m[0].contains("port 70000 is not a TCP port"));
        assert!(m[1].starts_with("spec.rendezvous.joinTimeoutSeconds: 0 seconds"));
        assert!(m[2].contains("is_host is set by the operator"));
        assert!(m[3].contains("set spec.rendezvous.joinTimeoutSeconds instead"));
        assert!(m[4].contains("must not contain ','"));
    }

    #[test]
    fn failure_policy_codes() {
        let mut j = ok_job();
        j.spec.failure_policy.retryable_exit_codes = vec![1, 2, 300];
        let m = messages(&j);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("300 is not a failure exit code"));
        assert!(m[1].contains("exit codes 2 are also in permanentExitCodes"));
    }

    #[test]
    fn avoid_failed_nodes_needs_a_window_and_a_node() {
        let mut j = ok_job();
        j.spec.failure_policy.avoid_failed_nodes.window_seconds = 0;
        j.spec.failure_policy.avoid_failed_nodes.max_nodes = -1;
        let m = messages(&j);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].starts_with("spec.failurePolicy.avoidFailedNodes.windowSeconds: 0"));
        assert!(m[1].starts_with("spec.failurePolicy.avoidFailedNodes.maxNodes: -1"));
        // Off is valid, whatever the other values.
        j.spec.failure_policy.avoid_failed_nodes.enabled = false;
        j.spec.failure_policy.avoid_failed_nodes.window_seconds = 60;
        j.spec.failure_policy.avoid_failed_nodes.max_nodes = 1;
        assert_eq!(validate(&j), Ok(()));
    }

    #[test]
    fn job_names_must_fit_host_names() {
        let mut j = ok_job();
        j.metadata.name = Some("Train_1".into());
        assert!(messages(&j)[0].starts_with("metadata.name: \"Train_1\" must be a DNS label"));
        j.metadata.name = Some("a".repeat(49));
        assert!(validate(&j).is_err());
        j.metadata.name = Some("a".repeat(48));
        assert_eq!(validate(&j), Ok(()));
    }

    #[test]
    fn reserved_launcher_names() {
        let mut j = ok_job();
        let pod = j.spec.template.spec.as_mut().unwrap();
        pod.volumes = Some(vec![k8s_openapi::api::core::v1::Volume {
            name: "elasticjob-bin".into(),
            ..Default::default()
        }]);
        assert!(messages(&j)[0].contains("rename your volume"));
        j.spec.launcher.inject = false;
        assert_eq!(validate(&j), Ok(()));
    }

    #[test]
    fn accelerator_warnings_name_the_resource() {
        for resource in ["nvidia.com/gpu", "amd.com/gpu", "habana.ai/gaudi"] {
            let mut c = container("main", &["python", "t.py"]);
            c.resources = Some(ResourceRequirements {
                limits: Some([(resource.to_string(), Quantity("2".into()))].into()),
                ..Default::default()
            });
            let mut j = job(vec![c]);
            assert!(warnings(&j).is_empty(), "{:?}", warnings(&j));
            j.spec.nproc_per_node = NprocPerNode::count(4);
            let w = warnings(&j);
            assert!(
                w[0].message
                    .contains(&format!("nprocPerNode 4 is more than the 2 {resource}")),
                "{w:?}"
            );
        }
    }

    #[test]
    fn a_trainer_asking_for_two_kinds_of_accelerator_is_refused() {
        let mut c = container("main", &["python", "t.py"]);
        c.resources = Some(ResourceRequirements {
            limits: Some(
                [
                    ("nvidia.com/gpu".to_string(), Quantity("1".into())),
                    ("amd.com/gpu".to_string(), Quantity("1".into())),
                ]
                .into(),
            ),
            ..Default::default()
        });
        let j = job(vec![c]);
        let issues = validate(&j).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(
            issues[0].field,
            "spec.template.spec.containers[0].resources"
        );
        assert!(
            issues[0]
                .message
                .contains("more than one kind of accelerator (nvidia.com/gpu, amd.com/gpu)"),
            "{issues:?}"
        );
    }

    #[test]
    fn torchrun_inside_a_program_is_a_warning_and_inside_a_shell_command_is_fine() {
        // A shell command calling torchrun runs once per pod (the launcher's __wrap).
        let j = job(vec![container(
            "main",
            &["sh", "-c", "pip install x && torchrun train.py"],
        )]);
        assert_eq!(validate(&j), Ok(()));
        assert!(warnings(&j).is_empty(), "{:?}", warnings(&j));
        // A program handed torchrun would run it in every worker.
        let j = job(vec![container(
            "main",
            &["./launch.sh", "torchrun", "train.py"],
        )]);
        assert_eq!(validate(&j), Ok(()));
        assert!(
            warnings(&j)[0]
                .message
                .contains("start the command with torchrun itself, or write it as a shell command")
        );
    }
}
