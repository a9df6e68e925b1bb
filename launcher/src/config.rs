//! The launcher's resolved configuration: plain data, produced by `cli` from the command line
//! and the `PET_*` environment, consumed by the agent. Nothing here does IO.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::store::AgentToken;

/// `--nnodes`: `N` or `MIN:MAX`, with `0 < min <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRange {
    pub min: u32,
    pub max: u32,
}

/// `--nproc-per-node` before device discovery resolves it to a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NprocSpec {
    Count(u32),
    Cpu,
    Gpu,
    Xpu,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdzvBackend {
    /// Fixed membership: `--node-rank` of `--nnodes` (max) nodes, store at master addr:port.
    Static,
    /// Dynamic, elastic rendezvous through a c10d TCPStore hosted by one of the agents.
    C10d,
}

/// Which of a worker's standard streams go to files (torchrun's `Std`: 0 none, 1 out, 2 err, 3 all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Std {
    pub out: bool,
    pub err: bool,
}

/// `-r/--redirects` and `-t/--tee`: one `Std` for every local rank, or a per-rank map
/// (ranks missing from the map get none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdSpec {
    All(Std),
    PerRank(BTreeMap<u32, Std>),
}

impl StdSpec {
    pub fn none() -> Self {
        StdSpec::All(Std::default())
    }

    pub fn for_rank(&self, local_rank: u32) -> Std {
        match self {
            StdSpec::All(std) => *std,
            StdSpec::PerRank(map) => map.get(&local_rank).copied().unwrap_or_default(),
        }
    }
}

/// How a worker process is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrypointKind {
    /// `python -u script.py args...` (interpreter from `PYTHON_EXEC`, else `python3`/`python`).
    PythonScript,
    /// `python -u -m module args...` (`-m/--module`).
    PythonModule,
    /// The script itself is the program (`--no-python`).
    Binary,
    /// `--run-path`: a Python worker runs the script through `runpy.run_path` and records an
    /// uncaught exception to `TORCHELASTIC_ERROR_FILE`, as torchrun's function entrypoint does.
    RunPath,
}

/// The resolved launcher configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub nnodes: NodeRange,
    pub nproc_per_node: NprocSpec,
    pub rdzv_backend: RdzvBackend,
    /// `host[:port]` as given (after `--standalone` / static defaults were applied).
    pub rdzv_endpoint: String,
    pub rdzv_id: String,
    /// `--rdzv-conf` key/value pairs; values stay strings, unknown keys are kept and ignored.
    pub rdzv_conf: BTreeMap<String, String>,
    pub standalone: bool,
    pub max_restarts: u32,
    pub monitor_interval: Duration,
    /// Accepted for compatibility (`spawn|fork|forkserver`); workers are always exec'd.
    pub start_method: String,
    /// Accepted for compatibility; the launcher logs through `tracing`.
    pub event_log_handler: String,
    pub role: String,
    pub entrypoint_kind: EntrypointKind,
    pub log_dir: Option<PathBuf>,
    pub redirects: StdSpec,
    pub tee: StdSpec,
    /// `--log-line-prefix-template`, else `TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE`.
    pub log_line_prefix_template: Option<String>,
    pub local_ranks_filter: Option<BTreeSet<u32>>,
    pub duplicate_stdout_filters: Vec<String>,
    pub duplicate_stderr_filters: Vec<String>,
    pub node_rank: u32,
    pub master_addr: String,
    pub master_port: u16,
    pub local_addr: Option<String>,
    /// Only `default` (the built-in layout) exists; checked before anything starts.
    pub logs_specs: Option<String>,
    pub numa_binding: Option<String>,
    pub signals_to_handle: Vec<Signal>,
    /// Grace between SIGTERM and SIGKILL when the launcher stops its workers.
    pub shutdown_timeout: Duration,
    pub exit_barrier_timeout: Duration,
    pub virtual_local_rank: bool,
    /// Where a failure summary for Kubernetes is written (`--termination-message-path`).
    pub termination_message_path: Option<PathBuf>,
    /// Where the launcher serves its progress (`--status-port`); `None`: nowhere.
    pub status_port: Option<u16>,
    /// Modules standby interpreters import ahead of a round (`--prewarm`); empty: off.
    pub prewarm: Vec<String>,
    /// Ranks that reported progress and stay silent this long stall the group
    /// (`--stall-timeout`); `None`: never.
    pub stall_timeout: Option<Duration>,
    /// What makes this launcher's store connections the job's launchers'
    /// (`ELASTICJOB_STORE_TOKEN`, else one every launcher knows).
    pub store_token: AgentToken,
    pub training_script: String,
    pub training_script_args: Vec<String>,
}

/// The longest duration any setting may give (about 31 years): longer means "never" to a
/// person, and `Instant + Duration` must not overflow (a `Duration` holds up to 1.8e19 s).
pub const MAX_SECONDS: f64 = 1e9;

/// `secs` (non-negative, as given) as a Duration; None when it is not finite or above
/// [`MAX_SECONDS`].
pub fn duration_from_secs(secs: f64) -> Option<Duration> {
    (0.0..=MAX_SECONDS)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}
