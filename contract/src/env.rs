//! What the operator sets on the trainer container and the launcher reads: torchrun's own
//! `PET_*` variables (each is the environment form of a launcher option, `--nnodes` →
//! `PET_NNODES`), the pod's replica index, and the `--rdzv-conf` keys the operator owns.

pub const NNODES: &str = "PET_NNODES";
pub const NPROC_PER_NODE: &str = "PET_NPROC_PER_NODE";
pub const RDZV_BACKEND: &str = "PET_RDZV_BACKEND";
pub const RDZV_ENDPOINT: &str = "PET_RDZV_ENDPOINT";
pub const RDZV_ID: &str = "PET_RDZV_ID";
pub const RDZV_CONF: &str = "PET_RDZV_CONF";
pub const MAX_RESTARTS: &str = "PET_MAX_RESTARTS";
/// Where the launcher writes its [`crate::report::RunReport`] (the container's
/// `terminationMessagePath`).
pub const TERMINATION_MESSAGE_PATH: &str = "PET_TERMINATION_MESSAGE_PATH";
/// The port of the launcher's read-only `/status` endpoint ([`crate::progress`]).
pub const STATUS_PORT: &str = "PET_STATUS_PORT";
/// The grace the launcher gives its workers between SIGTERM and SIGKILL when it is stopped:
/// the pod's `terminationGracePeriodSeconds` less a margin for the launcher's own exit.
pub const SHUTDOWN_TIMEOUT: &str = "PET_SHUTDOWN_TIMEOUT";
/// Seconds after which ranks that reported progress and fell silent stall the worker group
/// (`failurePolicy.stallTimeoutSeconds`; set only when the job sets it).
pub const STALL_TIMEOUT: &str = "PET_STALL_TIMEOUT";
/// Modules standby interpreters import ahead of a round (`spec.launcher.prewarm`, comma
/// list; set only when the job sets it).
pub const PREWARM: &str = "PET_PREWARM";
/// The interpreter the launcher runs Python entrypoints with (torchrun's name): the operator
/// sets the command's own `python` when it hands the launcher the script itself
/// (`spec.launcher.prewarm` with a `python script.py` command).
pub const PYTHON_EXEC: &str = "PYTHON_EXEC";
/// The pod's replica index `i` (pod `<job>-worker-<i>`): orders the nodes' group ranks.
pub const NODE_INDEX: &str = "ELASTICJOB_NODE_INDEX";
/// The pod's IP (the Downward API's `status.podIP`): the address a launcher that is a round's
/// group rank 0 gives the workers as their store (`MASTER_ADDR`). Its pod's DNS name is no
/// good there: for seconds after a pod is replaced, it can still resolve to the old pod's IP
/// (the Service's endpoints and the DNS caches lag), and the workers' connect fails.
pub const POD_IP: &str = "ELASTICJOB_POD_IP";
/// The secret that makes a store connection one of the job's launchers, so only they write the
/// rendezvous's keys (the operator sets it from the job's Secret `<job>-store-token`). The launcher keeps it from its workers.
pub const STORE_TOKEN: &str = "ELASTICJOB_STORE_TOKEN";

/// Every `PET_*` variable the operator sets. Each must be a launcher option's variable.
pub const LAUNCHER_OPTIONS: [&str; 12] = [
    NNODES,
    NPROC_PER_NODE,
    RDZV_BACKEND,
    RDZV_ENDPOINT,
    RDZV_ID,
    RDZV_CONF,
    MAX_RESTARTS,
    TERMINATION_MESSAGE_PATH,
    STATUS_PORT,
    SHUTDOWN_TIMEOUT,
    STALL_TIMEOUT,
    PREWARM,
];

/// `--rdzv-conf` keys the operator sets itself (from `spec.rendezvous` and the pod index), so
/// a job may not set them.
pub mod rdzv_conf {
    /// Seconds a node waits to join a round before it gives up.
    pub const JOIN_TIMEOUT: &str = "join_timeout";
    /// Seconds a round stays open for more nodes once it has the minimum.
    pub const LAST_CALL_TIMEOUT: &str = "last_call_timeout";
    /// Seconds a closed round waits for its members to finish joining.
    pub const CLOSE_TIMEOUT: &str = "close_timeout";
    /// Whether this node hosts the rendezvous store (the operator makes pod 0 the host).
    pub const IS_HOST: &str = "is_host";
    /// How many nodes the job runs (its replicas): the first round closes as soon as that many
    /// joined, without waiting out the last call.
    pub const EXPECTED_NODES: &str = "expected_nodes";
    /// Every pod's address, with `{}` for its index (`<job>-worker-{}.<service>`): each
    /// launcher runs a standby store there on the endpoint's port, so the store moves to a
    /// survivor when the pod hosting it is lost.
    pub const STORE_HOSTS: &str = "store_hosts";

    pub const OPERATOR_OWNED: [&str; 6] = [
        JOIN_TIMEOUT,
        LAST_CALL_TIMEOUT,
        CLOSE_TIMEOUT,
        IS_HOST,
        EXPECTED_NODES,
        STORE_HOSTS,
    ];
}
