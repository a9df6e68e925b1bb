//! Names shared by the API, the operator and the docs: labels, reserved names, defaults that
//! are part of the pod contract.

/// API group of the ElasticJob resource.
pub const GROUP: &str = "elasticjob.dev";

/// Label on every object the operator makes for a job: the job's name. The job's pods are
/// selected by it (Service selector, scale subresource selector).
pub const LABEL_JOB_NAME: &str = "elasticjob.dev/job-name";
/// Label on each pod: its replica index `i` (pod `<job>-worker-<i>`).
pub const LABEL_REPLICA_INDEX: &str = "elasticjob.dev/replica-index";
pub const LABEL_APP_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_APP_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_APP_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_APP_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of `app.kubernetes.io/name`.
pub const APP_NAME: &str = "elasticjob";
/// Value of `app.kubernetes.io/component` on worker pods.
pub const COMPONENT_WORKER: &str = "worker";
/// Value of `app.kubernetes.io/managed-by`, and the operator's field manager.
pub const MANAGER: &str = "elasticjob-operator";

/// The container of the pod template that runs under the launcher when the template has more
/// than one container.
pub const TRAINER_CONTAINER: &str = "trainer";
/// The init container that copies the launcher into the pod.
pub const INSTALL_CONTAINER: &str = "elastic-launch-install";
/// The shared `emptyDir` volume holding the launcher.
pub const LAUNCHER_VOLUME: &str = "elasticjob-bin";
/// Where the launcher volume is mounted, in the init container and the trainer container.
pub const LAUNCHER_DIR: &str = "/elasticjob/bin";
/// The launcher's path once injected.
pub const LAUNCHER_PATH: &str = "/elasticjob/bin/elastic-launch";
/// The launcher's name on `PATH` when the image provides it (`launcher.inject: false`).
pub const LAUNCHER_BINARY: &str = elasticjob_contract::install::BINARY_NAME;
/// Name of the rendezvous port on the Service and the trainer container.
pub const RENDEZVOUS_PORT_NAME: &str = "rendezvous";
/// Name of the launcher's status port (`spec.launcher.statusPort`) on the trainer container.
pub const STATUS_PORT_NAME: &str = "launcher-status";

/// Longest job name: the pod hostname `<job>-worker-<i>` must be a DNS label (63 characters),
/// which leaves 7 digits for the index.
pub const MAX_JOB_NAME_LEN: usize = 48;

/// Environment variables the operator or the launcher set, which the user's containers must not
/// set: every worker gets them from the launcher (torchrun's worker environment).
pub const RESERVED_ENV_NAMES: &[&str] = &[
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_NAME",
    "ROLE_WORLD_SIZE",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_USE_AGENT_STORE",
];
/// Prefixes of reserved environment variables: the launcher's `PET_*` settings (the operator
/// sets them; launcher options go on a `torchrun` command line instead) and the operator's own.
pub const RESERVED_ENV_PREFIXES: &[&str] = &["PET_", "ELASTICJOB_"];

/// True when a container must not set this environment variable.
pub fn is_reserved_env(name: &str) -> bool {
    RESERVED_ENV_NAMES.contains(&name) || RESERVED_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `--rdzv-conf` keys the operator sets itself (from `spec.rendezvous` and the pod index).
pub const RESERVED_RDZV_CONF_KEYS: &[&str] = &elasticjob_contract::env::rdzv_conf::OPERATOR_OWNED;

/// The headless Service of a job: named after it.
pub fn service_name(job: &str) -> String {
    job.to_string()
}

/// Pod `i` of a job, also its hostname.
pub fn pod_name(job: &str, index: u32) -> String {
    format!("{job}-worker-{index}")
}

/// The replica index of a pod of `job`, from its name.
pub fn pod_index(job: &str, pod: &str) -> Option<u32> {
    let index = pod.strip_prefix(job)?.strip_prefix("-worker-")?;
    if index.is_empty() || (index.len() > 1 && index.starts_with('0')) {
        return None;
    }
    index.parse().ok()
}

/// The label selector of a job's pods, as a string (`status.selector`, for the scale subresource).
pub fn selector(job: &str) -> String {
    format!("{LABEL_JOB_NAME}={job}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_round_trip() {
        assert_eq!(pod_name("train", 3), "train-worker-3");
        assert_eq!(pod_index("train", "train-worker-3"), Some(3));
        assert_eq!(pod_index("train", "train-worker-12"), Some(12));
        assert_eq!(pod_index("train", "train-worker-03"), None);
        assert_eq!(pod_index("train", "train-worker-"), None);
        assert_eq!(pod_index("train", "other-worker-1"), None);
        assert_eq!(pod_index("train", "train-x-worker-1"), None);
    }

    #[test]
    fn the_launcher_path_is_the_install_dir_and_binary() {
        assert_eq!(
            LAUNCHER_PATH,
            format!(
                "{LAUNCHER_DIR}/{}",
                elasticjob_contract::install::BINARY_NAME
            )
        );
    }

    #[test]
    fn every_variable_the_operator_sets_is_reserved() {
        let contract = elasticjob_contract::env::LAUNCHER_OPTIONS;
        for name in contract.iter().chain([
            &elasticjob_contract::env::NODE_INDEX,
            &elasticjob_contract::env::POD_IP,
        ]) {
            assert!(is_reserved_env(name), "{name}");
        }
    }

    #[test]
    fn reserved_env() {
        for name in [
            "PET_NNODES",
            "PET_TEE",
            "RANK",
            "MASTER_PORT",
            "ELASTICJOB_NODE_INDEX",
        ] {
            assert!(is_reserved_env(name), "{name}");
        }
        for name in [
            "PATH",
            "OMP_NUM_THREADS",
            "NCCL_DEBUG",
            "TORCHELASTIC_ERROR_FILE",
            "PETS",
        ] {
            assert!(!is_reserved_env(name), "{name}");
        }
    }
}
