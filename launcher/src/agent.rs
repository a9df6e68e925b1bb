//! The agent: the lifecycle of one node, as torch elastic's `LocalElasticAgent`:
//! rendezvous → start workers → monitor → (restart | finish). A worker failure stops the whole
//! local group and re-forms the job through rendezvous, counted against `--max-restarts`; a
//! node waiting to join makes running nodes re-form without counting a restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use elasticjob_contract::env::rdzv_conf;
use elasticjob_contract::report::{Reason, message};
use elasticjob_contract::stop::{self, StopNotice, StopReason};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{Config, RdzvBackend};
use crate::devices;
use crate::entrypoint;
use crate::failures::{self, ProcessFailure};
use crate::lifecycle::{self, AfterWait, Budget, Grace, GroupEnd, Next, WaitEnd};
use crate::logs::{self, LogLayout, OutputPolicy, StreamKind, TeeSource};
use crate::prewarm::{self, Readiness, Standby};
use crate::progress::{self, Progress, ProgressSender, Stall, State, StopTold};
use crate::rendezvous::{self, DynamicRendezvous, Heartbeat, NodeDesc, RendezvousError, RoundInfo};
use crate::store::{self, Connector, ServerConfig, StoreClient, StoreError, StoreServer};
use crate::store_failover::{self, Looking, StoreHosts};
use crate::training::{self, RoundProgress};
use crate::worker_env::{self, RoundEnv, WorkerRanks};
use crate::workers::{self, Guardian, ProcessSpec, Reaper};

/// Grace between SIGTERM and SIGKILL when stopping workers for a restart (torchrun's 30 s).
const RESTART_STOP_GRACE: Duration = Duration::from_secs(30);

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    Succeeded,
    /// The worker group failed with no restarts left (those it spent are the agent's
    /// [`Agent::restart_count`]).
    WorkersFailed {
        failures: Vec<ProcessFailure>,
        round: Option<u64>,
    },
    /// One of `--signals-to-handle` arrived; the workers got it too.
    Signaled(Signal),
    /// The job finished before this node got a place in it (it arrived late or waited in
    /// reserve); nothing failed and nothing is left to do.
    AlreadyFinished,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Device(#[from] devices::DeviceError),
    #[error(transparent)]
    Rendezvous(#[from] RendezvousError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Worker(#[from] workers::WorkerError),
    #[error(transparent)]
    VirtualLocalRank(#[from] worker_env::VirtualLocalRankError),
    #[error("{prefix}: {0}", prefix = message::INVALID_RDZV_CONF)]
    RdzvConf(String),
    #[error("{prefix}: {0}", prefix = message::INVALID_ENDPOINT)]
    Endpoint(String),
    #[error("log directory: {0}")]
    Logs(std::io::Error),
    #[error("cannot host the rendezvous store on port {port}: {source}")]
    HostStore { port: u16, source: StoreError },
    #[error(
        "no rendezvous store is active at any of the {nodes} nodes' addresses ({example}:{port}, ...) after {waited_s:.0}s (join_timeout); is the node that hosts it first (is_host=1) running?"
    )]
    NoActiveStore {
        nodes: u32,
        example: String,
        port: u16,
        waited_s: f64,
    },
    #[error(transparent)]
    StatusEndpoint(#[from] progress::ServeError),
}

impl AgentError {
    /// The machine-readable reason in the report for Kubernetes.
    pub fn reason(&self) -> Reason {
        match self {
            AgentError::Rendezvous(_) | AgentError::RdzvConf(_) | AgentError::Endpoint(_) => {
                Reason::RendezvousFailed
            }
            AgentError::Store(_)
            | AgentError::HostStore { .. }
            | AgentError::NoActiveStore { .. } => Reason::StoreFailed,
            AgentError::Device(_) => Reason::DeviceUnavailable,
            _ => Reason::LauncherError,
        }
    }
}

/// Facts fixed for the whole run.
struct Node {
    host: String,
    nproc: u32,
    run_id: String,
    layout: LogLayout,
    policy: OutputPolicy,
    parent_env: BTreeMap<String, String>,
    /// Where the agent keeps what it shares with its workers: the stop notice
    /// ([`stop::FILE_ENV`]) and their progress files ([`training::PROGRESS_FILE_ENV`]).
    /// Removed with the agent.
    state_dir: tempfile::TempDir,
}

impl Node {
    fn stop_file(&self) -> PathBuf {
        self.state_dir.path().join("stop_reason.json")
    }
}

struct Rendezvous {
    store: StoreClient,
    /// Where `store` connects, for extra connections (a blocking WAIT needs its own).
    endpoint: (String, u16),
    /// The endpoint's host as the user wrote it (`localhost` for `--standalone`).
    endpoint_host: String,
    /// How long to keep trying to (re)join: `join_timeout` (c10d) or `timeout` (static).
    join_timeout: Duration,
    /// Connects as one of the job's launchers.
    connector: Connector,
    /// Kept alive for the run: the store other nodes and the workers talk to (with
    /// `failover`, this node's own store, active or standing by).
    server: Option<StoreServer>,
    /// Set when the store moves to a survivor when its host is lost (`store_hosts`).
    failover: Option<Failover>,
    backend: Backend,
}

/// A movable store ([`store_failover`]): every node's address, this node's index, and which
/// store is in use.
struct Failover {
    hosts: StoreHosts,
    me: u32,
    run_id: String,
    connector: Connector,
    /// How this node's own store serves (as the job's launchers' store).
    server_config: ServerConfig,
    /// The index and generation of the store in use.
    active: u32,
    generation: u64,
    /// Whether this node's own store says it has been in a round ([`store_failover::member_key`]).
    marked_member: bool,
}

/// What looking for the store came to.
enum Located {
    /// Another node's store (or this node's, activated earlier) is active.
    Found(store_failover::Active),
    /// Nobody's is: this node's own store is to be activated, connected here.
    ActivateOwn(StoreClient),
}

impl Failover {
    /// Probes until some store is active or this node should activate its own, for up to
    /// `join`.
    async fn locate(&self, looking: Looking, join: Duration) -> Result<Located, AgentError> {
        let start = tokio::time::Instant::now();
        loop {
            let newer_than = match looking {
                Looking::Start { .. } => None,
                Looking::AfterLoss { .. } | Looking::Waiting => Some(self.generation),
            };
            let probe =
                store_failover::probe(&self.hosts, &self.run_id, &self.connector, join, newer_than)
                    .await;
            if let Some(active) = probe.active {
                return Ok(Located::Found(active));
            }
            if store_failover::should_activate(self.me, looking, &probe.answered, &probe.members) {
                let own = (self.connector)
                    .connect(&self.hosts.own_host(self.me), self.hosts.port, join)
                    .await?;
                return Ok(Located::ActivateOwn(own));
            }
            if start.elapsed() >= join {
                return Err(AgentError::NoActiveStore {
                    nodes: self.hosts.nodes(),
                    example: self.hosts.host(0),
                    port: self.hosts.port,
                    waited_s: start.elapsed().as_secs_f64(),
                });
            }
            tokio::time::sleep(store_failover::PROBE_INTERVAL).await;
        }
    }

    /// Uses the active store found.
    fn use_found(&mut self, found: store_failover::Active) -> StoreClient {
        self.active = found.index;
        self.generation = found.generation;
        found.store
    }

    /// Activates this node's own store as `generation` (once the caller seeded it) and uses it.
    async fn activate_own(
        &mut self,
        own: StoreClient,
        generation: u64,
    ) -> Result<StoreClient, AgentError> {
        store_failover::activate(&own, &self.run_id, generation).await?;
        tracing::info!(
            index = self.me,
            generation,
            port = self.hosts.port,
            "hosting the rendezvous store"
        );
        self.active = self.me;
        self.generation = generation;
        Ok(own)
    }

    /// Once this node has been in a round, says so on its own store, so that probes tell it
    /// from a new pod. Best effort: unmarked, it only counts as a new pod.
    async fn mark_member(&mut self) {
        if self.marked_member {
            return;
        }
        let own = (self.hosts.own_host(self.me), self.hosts.port);
        let marked = async {
            let c = (self.connector)
                .connect_once(&own.0, own.1, store_failover::PROBE_TIMEOUT)
                .await?;
            c.set(&store_failover::member_key(&self.run_id), "1")
                .await?;
            c.ping().await
        };
        match marked.await {
            Ok(()) => self.marked_member = true,
            Err(e) => tracing::warn!(error = %e, "could not mark this node's store as a member's"),
        }
    }

    /// Where other connections to the store in use go.
    fn endpoint(&self) -> (String, u16) {
        let host = if self.active == self.me {
            self.hosts.own_host(self.me)
        } else {
            self.hosts.host(self.active)
        };
        (host, self.hosts.port)
    }

    /// While this node hosts the store in use: a task that ends when the store all nodes use is
    /// another (this one was cut off, and the others moved on without it; or two survivors both
    /// moved the store, and the other's has the lower index).
    fn superseded(&self) -> Option<AbortOnDrop<()>> {
        if self.active != self.me {
            return None;
        }
        let (hosts, run_id, connector, me, generation) = (
            self.hosts.clone(),
            self.run_id.clone(),
            self.connector.clone(),
            self.me,
            self.generation,
        );
        Some(AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(store_failover::SUPERSEDED_CHECK).await;
                let timeout = store_failover::PROBE_TIMEOUT;
                let probe = store_failover::probe(&hosts, &run_id, &connector, timeout, None).await;
                if probe.active.is_some_and(|a| {
                    store_failover::superseded_by(me, generation, (a.index, a.generation))
                }) {
                    return;
                }
            }
        })))
    }
}

/// Completes when the task does; never without one.
async fn ended(task: &mut Option<AbortOnDrop<()>>) {
    match task.as_mut() {
        Some(t) => {
            let _ = (&mut t.0).await;
        }
        None => std::future::pending().await,
    }
}

enum Backend {
    Static,
    Dynamic(Box<DynamicRendezvous>),
}

pub struct Agent {
    cfg: Config,
    node: Node,
    rdzv: Rendezvous,
    reaper: Reaper,
    guardian: Guardian,
    signals: mpsc::UnboundedReceiver<Signal>,
    /// Restarts spent on this node's own worker failures (the `--max-restarts` budget).
    failure_restarts: u32,
    /// `TORCHELASTIC_RESTART_COUNT` of the current round.
    attempt: u32,
    /// The store this node hosts for the current round's workers, when it is rank 0 (c10d).
    worker_store: Option<StoreServer>,
    /// Tasks copying the current group's teed output to the console.
    tees: Vec<tokio::task::JoinHandle<()>>,
    /// What `--status-port` serves.
    progress: ProgressSender,
    /// Why the operator said it will stop this pod (`POST /stop`), if it did.
    stop_told: StopTold,
    /// The current round's progress files.
    round_progress: Option<RoundProgress>,
    /// Standby interpreters for the next round's workers (`--prewarm`).
    standbys: Vec<Standby>,
    /// A standby died before its round: prewarming is off for the rest of the run.
    prewarm_failed: bool,
}

/// One started worker.
struct Worker {
    local_rank: u32,
    global_rank: u32,
    pid: u32,
    exit: Option<i32>,
}

enum GroupEvent {
    Succeeded,
    Failed,
    /// A node waits to join the next round (scale-up, or a peer re-forming after a failure).
    MembershipChanged,
    /// A peer of this round stopped heartbeating.
    PeerLost(String),
    /// A peer of this round left the job (its pod is being stopped) and said so.
    PeerLeft(String),
    Signal(Signal),
    /// The store is unreachable. `lease_end`: when this node's peers may count it lost, by
    /// which its workers must be gone (set while it heartbeats).
    StoreLost {
        error: StoreError,
        lease_end: Option<Instant>,
    },
    /// Ranks that reported progress fell silent for `--stall-timeout`.
    Stalled {
        ranks: Vec<u32>,
        silent: Duration,
    },
}

impl GroupEvent {
    fn end(&self) -> GroupEnd {
        match self {
            GroupEvent::Succeeded => GroupEnd::Succeeded,
            // A stalled group is a failed one: stopped, charged once, restarted.
            GroupEvent::Failed | GroupEvent::Stalled { .. } => GroupEnd::Failed,
            GroupEvent::MembershipChanged => GroupEnd::MembershipChanged,
            GroupEvent::PeerLost(_) | GroupEvent::PeerLeft(_) => GroupEnd::PeerLost,
            GroupEvent::Signal(sig) => GroupEnd::Signal(*sig),
            GroupEvent::StoreLost { .. } => GroupEnd::StoreLost,
        }
    }
}

fn wait_end(waited: &Result<RoundInfo, AgentError>) -> WaitEnd {
    match waited {
        Ok(_) => WaitEnd::Formed,
        Err(AgentError::Rendezvous(RendezvousError::Closed { .. })) => WaitEnd::JobClosed,
        Err(_) => WaitEnd::Failed,
    }
}

/// How long a standby may take to import its modules before prewarming is given up.
const STANDBY_READY_LIMIT: Duration = Duration::from_secs(120);
/// When the next round's standbys start if this round's workers report no progress: by then
/// they have most likely imported and initialised (see [`Agent::prewarm_once_training`]).
const STANDBY_START_DELAY: Duration = Duration::from_secs(30);

/// How often the agent reads its workers' progress files.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The failures a stall leaves: one per silent local worker, for the report.
fn stall_failures(group: &[Worker], ranks: &[u32], silent: Duration) -> Vec<ProcessFailure> {
    let now = chrono::Utc::now().timestamp();
    group
        .iter()
        .filter(|w| ranks.contains(&w.global_rank))
        .map(|w| ProcessFailure {
            local_rank: w.local_rank,
            global_rank: w.global_rank,
            pid: w.pid,
            exitcode: 1,
            error_file: None,
            message: format!(
                "stalled: rank {} reported no progress for {:.0}s (--stall-timeout); its worker group was restarted",
                w.global_rank,
                silent.as_secs_f64()
            ),
            traceback: None,
            timestamp: now,
            error_data: None,
        })
        .collect()
}

/// What the workers still running are told before their signal: why (this node's own
/// knowledge, or for a signal what the operator said beforehand) and how long they have. None
/// when the workers all ended by themselves.
fn stop_notice(
    event: &GroupEvent,
    told: &StopTold,
    round: u64,
    grace: Duration,
) -> Option<StopNotice> {
    let (reason, message) = match event {
        GroupEvent::Succeeded => return None,
        GroupEvent::Failed => (
            StopReason::WorkerFailed,
            "a worker of this node failed; the round is re-formed or the job fails".to_string(),
        ),
        GroupEvent::Stalled { ranks, silent } => (
            StopReason::Stalled,
            format!(
                "ranks {ranks:?} reported no progress for {:.0}s (--stall-timeout)",
                silent.as_secs_f64()
            ),
        ),
        GroupEvent::MembershipChanged => (
            StopReason::MembershipChanged,
            "a node is joining the job (a scale-up, a replacement or a peer re-forming)".into(),
        ),
        GroupEvent::PeerLost(peer) => (
            StopReason::PeerLost,
            format!("node {peer} stopped heartbeating; the round is re-formed without it"),
        ),
        GroupEvent::PeerLeft(peer) => (
            StopReason::PeerLost,
            format!(
                "node {peer} left the job (its pod is being stopped); the round is re-formed without it"
            ),
        ),
        GroupEvent::StoreLost { error: e, .. } => (
            StopReason::StoreLost,
            format!("the rendezvous store is unreachable ({e}); the round is re-formed"),
        ),
        GroupEvent::Signal(sig) => match told.lock().expect("stop reason lock").take() {
            Some(t) => (t.reason, t.message),
            None => (
                StopReason::PodStopped,
                format!("the launcher got {sig}: the pod is being stopped"),
            ),
        },
    };
    Some(StopNotice {
        reason,
        message,
        round: Some(round),
        grace_seconds: grace.as_secs_f64(),
    })
}

/// Writes the notice whole (a temporary file renamed into place), so a worker never reads half.
fn write_stop_notice(path: &std::path::Path, notice: &StopNotice) {
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec(notice).expect("stop notice serializes");
    if let Err(e) = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, path)) {
        tracing::warn!(error = %e, path = %path.display(), "cannot write the workers' stop notice");
    }
}

/// Says why the round ended, with what only the event knows (the peer, the store's error).
fn log_group_end(event: &GroupEvent, round: u64) {
    match event {
        GroupEvent::Succeeded | GroupEvent::Failed => {}
        GroupEvent::Stalled { ranks, silent } => tracing::warn!(
            round,
            ?ranks,
            silent_s = silent.as_secs_f64().round(),
            "ranks stopped reporting progress (--stall-timeout); restarting the worker group"
        ),
        GroupEvent::Signal(sig) => {
            tracing::warn!(signal = %sig, "received death signal, shutting down workers");
        }
        GroupEvent::MembershipChanged => tracing::info!(
            round,
            "a node is waiting to join; restarting workers into a new round (not counted as a restart)"
        ),
        GroupEvent::PeerLeft(peer) => tracing::info!(
            round,
            peer = %peer,
            "a node of this round left the job; re-forming without it (not counted as a restart)"
        ),
        GroupEvent::PeerLost(peer) => tracing::warn!(
            round,
            peer = %peer,
            "a node of this round stopped heartbeating; re-forming without it (not counted as a restart)"
        ),
        GroupEvent::StoreLost {
            error,
            lease_end: None,
        } => {
            tracing::warn!(%error, "lost the rendezvous store; stopping workers and re-joining");
        }
        GroupEvent::StoreLost {
            error,
            lease_end: Some(end),
        } => tracing::warn!(
            %error,
            lease_left_ms = end.saturating_duration_since(Instant::now()).as_millis() as u64,
            "lost the rendezvous store (a partition, or its host gone): stopping workers before this node's heartbeat lease ends, when its peers may re-form without it, then re-joining"
        ),
    }
}

impl Agent {
    /// Prepares everything that does not depend on a round: devices, logs, store, signals.
    pub async fn setup(cfg: Config) -> Result<Agent, AgentError> {
        let mut parent_env: BTreeMap<String, String> = std::env::vars().collect();
        let nproc = devices::resolve_nproc(cfg.nproc_per_node, &devices::discover())?;
        if !matches!(cfg.nproc_per_node, crate::config::NprocSpec::Count(_)) {
            tracing::info!(
                nproc_per_node = nproc.count,
                device = %nproc.device,
                "resolved --nproc-per-node from the machine's devices"
            );
        }
        let (progress, published) =
            tokio::sync::watch::channel(Progress::new(nproc.count, cfg.max_restarts));
        let stop_told = StopTold::default();
        if let Some(port) = cfg.status_port {
            progress::serve(port, published, stop_told.clone()).await?;
        }
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        let run_id = cfg.rdzv_id.clone();
        let layout =
            LogLayout::create(cfg.log_dir.as_deref(), &run_id).map_err(AgentError::Logs)?;
        if let Some(dir) = layout.run_dir() {
            tracing::info!(log_dir = %dir.display(), "log directory set");
        }
        if let Some(v) = worker_env::default_omp_num_threads(nproc.count, &parent_env) {
            eprintln!("{}", worker_env::OMP_WARNING);
            parent_env.insert("OMP_NUM_THREADS".into(), v.into());
        }
        let signals = install_signal_handlers(&cfg.signals_to_handle);
        workers::become_subreaper();
        workers::raise_open_files_limit();
        let guardian = Guardian::start()?;
        let reaper = Reaper::new(cfg.monitor_interval)?;
        let rdzv = connect_rendezvous(&cfg, nproc.count, &host, &parent_env).await?;
        let policy = OutputPolicy {
            redirects: cfg.redirects.clone(),
            tee: cfg.tee.clone(),
            local_ranks_filter: cfg.local_ranks_filter.clone(),
        };
        // Not in the log directory, whose layout is torchrun's (attempt_<n>/ only).
        let state_dir = tempfile::Builder::new()
            .prefix("elastic-launch-")
            .tempdir()
            .map_err(AgentError::Logs)?;
        let node = Node {
            host,
            nproc: nproc.count,
            run_id,
            layout,
            policy,
            parent_env,
            state_dir,
        };
        Ok(Agent {
            cfg,
            node,
            rdzv,
            reaper,
            guardian,
            signals,
            failure_restarts: 0,
            attempt: 0,
            worker_store: None,
            tees: Vec::new(),
            progress,
            stop_told,
            round_progress: None,
            standbys: Vec::new(),
            prewarm_failed: false,
        })
    }

    pub fn host(&self) -> &str {
        &self.node.host
    }

    /// Restarts spent on worker failures so far.
    pub fn restart_count(&self) -> u32 {
        self.failure_restarts
    }

    /// The latest progress (what `--status-port` serves).
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    fn set_state(&self, state: State) {
        self.progress.send_modify(|p| p.state = state);
    }

    /// Reconnects to the rendezvous store (up to join_timeout); a handled signal (the pod being
    /// deleted) ends the wait at once: Some(signal).
    async fn reconnect_unless_signaled(&mut self) -> Result<Option<Signal>, AgentError> {
        tokio::select! {
            r = reconnect(&mut self.rdzv) => r.map(|()| None),
            Some(sig) = self.signals.recv() => {
                tracing::warn!(signal = %sig, "received signal while reconnecting to the rendezvous store; exiting");
                Ok(Some(sig))
            }
        }
    }

    /// Runs rounds until the workers succeed, fail for good, or a handled signal arrives.
    pub async fn run(&mut self) -> Result<Outcome, AgentError> {
        let mut started_once = false;
        loop {
            let next_restart = if started_once { self.attempt + 1 } else { 0 };
            if !started_once {
                // The first round's standbys import while the nodes gather. Later rounds use the
                // standbys started while the last one trained; started now, after a round too
                // short to start them, they would import alongside the fresh workers.
                self.prewarm();
            }
            self.set_state(State::Rendezvous);
            let mut superseded = self.rdzv.failover.as_ref().and_then(Failover::superseded);
            let (end, waited) = tokio::select! {
                r = next_round(&mut self.rdzv, &self.cfg, &self.node, self.failure_restarts, next_restart) => (wait_end(&r), Some(r)),
                Some(sig) = self.signals.recv() => (WaitEnd::Signal(sig), None),
                () = ended(&mut superseded) => {
                    // Waiting in a store nobody else uses: close it and find theirs.
                    self.close_own_store().await?;
                    continue;
                }
            };
            match lifecycle::after_wait(end, started_once) {
                AfterWait::StartWorkers | AfterWait::Fail => {}
                AfterWait::NotNeeded => {
                    tracing::info!(run_id = %self.node.run_id, "the job already finished; this node is not needed");
                    return Ok(Outcome::AlreadyFinished);
                }
                AfterWait::Exit(sig) => {
                    tracing::warn!(signal = %sig, "received signal during rendezvous; exiting");
                    self.set_state(State::Stopping);
                    return Ok(Outcome::Signaled(sig));
                }
            }
            let round = waited.expect("only a signal ends the wait without a result")?;
            self.attempt = round.restart_count;
            started_once = true;
            let master = match self.worker_store_for(&round).await {
                Ok(master) => master,
                Err(AgentError::Rendezvous(RendezvousError::Store(e)))
                    if e.is_connection_lost() =>
                {
                    tracing::warn!(error = %e, "lost the rendezvous store before starting workers; re-joining");
                    if let Some(sig) = self.reconnect_unless_signaled().await? {
                        return Ok(Outcome::Signaled(sig));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let standbys = self.take_standbys();
            let mut group = self.start_workers(&round, master, standbys)?;
            self.progress.send_modify(|p| {
                p.state = State::Running;
                p.round = Some(round.round);
                p.group_rank = Some(round.group_rank);
                p.nnodes = Some(round.group_world_size);
                p.world_size = Some(round.world_size);
            });
            let event = self.monitor(&mut group, &round).await;
            let end = event.end();
            log_group_end(&event, round.round);
            self.tell_who_is_gone(&event, &round).await;
            // Only workers that failed on their own are failures; the rest are stopped. Read
            // before anything is stopped.
            let failures = match &event {
                GroupEvent::Failed => self.collect_failures(&mut group),
                GroupEvent::Stalled { ranks, silent } => {
                    self.record_stall(round.round, ranks, *silent);
                    stall_failures(&group, ranks, *silent)
                }
                _ => Vec::new(),
            };
            // Claimed before stopping the rest, which takes time, so the node whose worker
            // failed first is the one that claims it.
            let first = end.claims_round_failure() && self.claim_round_failure(&round).await;
            let budget = Budget {
                used: self.failure_restarts,
                max: self.cfg.max_restarts,
            };
            let decision = lifecycle::decide(end, first, budget);
            if let Some(state) = decision.state {
                self.set_state(state);
            }
            let (sig, grace) = decision.stop;
            let grace = match grace {
                Grace::Shutdown => self.cfg.shutdown_timeout,
                Grace::Restart => RESTART_STOP_GRACE,
            };
            // Fenced: gone before the lease ends, whatever their grace would have been.
            let grace = match &event {
                GroupEvent::StoreLost {
                    lease_end: Some(end),
                    ..
                } => grace.min(end.saturating_duration_since(Instant::now())),
                _ => grace,
            };
            if let Some(notice) = stop_notice(&event, &self.stop_told, round.round, grace) {
                write_stop_notice(&self.node.stop_file(), &notice);
            }
            self.stop(&group, sig, grace).await;
            if let Some(root) = failures::root_cause(&failures) {
                tracing::warn!(rank = root.global_rank, local_rank = root.local_rank, exitcode = root.exitcode, pid = root.pid, message = %root.message, "worker failed");
            }
            if decision.re_form {
                if end == GroupEnd::Failed {
                    tracing::warn!(
                        round = round.round,
                        "another node's workers failed first in this round (this node's likely failed with them); re-forming without counting a restart here"
                    );
                }
                self.progress.send_modify(|p| p.re_forms += 1);
            }
            if decision.charge_restart {
                self.failure_restarts += 1;
                let restarts = self.failure_restarts;
                self.progress.send_modify(|p| p.restart_count = restarts);
                tracing::warn!(
                    restart = restarts,
                    max_restarts = self.cfg.max_restarts,
                    "restarting the worker group"
                );
            }
            match decision.next {
                Next::Finish => {
                    self.exit_barrier(&round).await;
                    if let Backend::Dynamic(d) = &self.rdzv.backend
                        && let Err(e) = d.close().await
                    {
                        tracing::debug!(error = %e, "could not mark the rendezvous closed");
                    }
                    tracing::info!(round = round.round, "workers succeeded");
                    return Ok(Outcome::Succeeded);
                }
                Next::Exit(sig) => return Ok(Outcome::Signaled(sig)),
                Next::Rejoin { reconnect } => {
                    if reconnect && let Some(sig) = self.reconnect_unless_signaled().await? {
                        return Ok(Outcome::Signaled(sig));
                    }
                }
                Next::GiveUp => {
                    self.set_state(State::Failed);
                    self.announce_failure(&round).await;
                    return Ok(Outcome::WorkersFailed {
                        failures,
                        round: Some(round.round),
                    });
                }
            }
        }
    }

    /// `MASTER_ADDR`/`MASTER_PORT` of the round. Static: the user's master address and port,
    /// served by node 0's agent. c10d: a fresh store per round, hosted by the rank 0 agent, as
    /// torch ≥ 2.15 workers expect (they no longer prefix keys per attempt, so a store reused
    /// across restarts hands them the previous round's stale addresses; torchrun 2.15 itself
    /// fails that way on a restart).
    async fn worker_store_for(&mut self, round: &RoundInfo) -> Result<(String, u16), AgentError> {
        let Backend::Dynamic(d) = &self.rdzv.backend else {
            if self.attempt > 0 && self.cfg.nnodes.max == 1 {
                self.forget_worker_keys().await?;
            }
            return Ok((self.cfg.master_addr.clone(), self.cfg.master_port));
        };
        self.worker_store = None;
        if round.group_rank != 0 {
            return Ok(d.master_of(round.round).await?);
        }
        let server = store::threads::bind("::", 0, ServerConfig::for_agents(&self.cfg.store_token))
            .map_err(|source| AgentError::HostStore { port: 0, source })?;
        let pod_ip = self
            .node
            .parent_env
            .get(elasticjob_contract::env::POD_IP)
            .map(|ip| ip.trim())
            .filter(|ip| !ip.is_empty());
        let addr = match (
            pod_ip,
            &self.rdzv.failover,
            &self.rdzv.server,
            &self.cfg.local_addr,
        ) {
            // In an ElasticJob pod: its IP, not its DNS name, which may still resolve to the
            // pod it replaced (`env::POD_IP`). An IPv6 one bracketed, as an endpoint's is.
            (Some(ip), ..) => match ip.parse::<std::net::Ipv6Addr>() {
                Ok(v6) => format!("[{v6}]"),
                Err(_) => ip.to_string(),
            },
            // Every node's address is known.
            (None, Some(f), _, _) => f.hosts.host(f.me),
            // Hosting the rendezvous store means the endpoint reaches this machine.
            (None, None, Some(_), _) => self.rdzv.endpoint_host.clone(),
            (None, None, None, Some(local)) => local.clone(),
            (None, None, None, None) => self.node.host.clone(),
        };
        d.publish_master(round.round, &addr, server.port()).await?;
        let port = server.port();
        self.worker_store = Some(server);
        Ok((addr, port))
    }

    /// Static, single node: the workers' store is the user's `--master-port`, the same in every
    /// attempt, so before a restart the previous attempt's worker keys are deleted (torch 2.15
    /// workers would read them as their peers' addresses). With several static nodes restarting
    /// independently, as torchrun's, there is no safe moment to do this.
    async fn forget_worker_keys(&self) -> Result<(), AgentError> {
        let rendezvous_keys = format!("static/{}/", self.node.run_id);
        let store = &self.rdzv.store;
        let mut deleted = 0;
        for key in store.list_keys().await? {
            if !key.starts_with(&rendezvous_keys) && store.delete_key(&key).await? {
                deleted += 1;
            }
        }
        tracing::debug!(deleted, "deleted the previous attempt's worker keys");
        Ok(())
    }

    /// Starts the round's workers, from `standbys` (--prewarm) as far as they go.
    fn start_workers(
        &mut self,
        round: &RoundInfo,
        master: (String, u16),
        mut standbys: Vec<Standby>,
    ) -> Result<Vec<Worker>, AgentError> {
        let node = &self.node;
        node.layout
            .prepare_attempt(self.attempt, node.nproc)
            .map_err(AgentError::Logs)?;
        // A new round's workers start with no stop notice and no progress.
        let stop_file = node.stop_file();
        if let Err(e) = std::fs::remove_file(&stop_file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, path = %stop_file.display(), "cannot remove the last round's stop notice");
        }
        let progress_files: Vec<(u32, PathBuf)> = (0..node.nproc)
            .map(|i| {
                (
                    round.base_global_rank + i,
                    RoundProgress::path(node.state_dir.path(), i),
                )
            })
            .collect();
        self.round_progress = Some(RoundProgress::start(progress_files.clone()));
        let mut prewarmed_workers = 0;
        let node = &self.node;
        let round_env = RoundEnv {
            role: self.cfg.role.clone(),
            run_id: node.run_id.clone(),
            restart_count: self.attempt,
            max_restarts: self.cfg.max_restarts,
            master_addr: master.0,
            master_port: master.1,
            use_agent_store: true,
            virtual_local_rank: self.cfg.virtual_local_rank,
        };
        let python = entrypoint::python_exec(&node.parent_env);
        let mut group = Vec::with_capacity(node.nproc as usize);
        for local_rank in 0..node.nproc {
            let global_rank = round.base_global_rank + local_rank;
            let ranks = WorkerRanks {
                local_rank,
                global_rank,
                role_rank: global_rank,
                group_rank: round.group_rank,
                group_world_size: round.group_world_size,
                world_size: round.world_size,
                role_world_size: round.world_size,
                local_world_size: node.nproc,
            };
            let error_file = node.layout.error_file(self.attempt, local_rank);
            let error_file = error_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let mut env =
                worker_env::worker_env(&ranks, &round_env, &error_file, &node.parent_env)?;
            if let Some(v) = node.parent_env.get("OMP_NUM_THREADS") {
                env.insert("OMP_NUM_THREADS".into(), v.clone());
            }
            env.insert(stop::FILE_ENV.into(), stop_file.display().to_string());
            env.insert(
                training::PROGRESS_FILE_ENV.into(),
                progress_files[local_rank as usize].1.display().to_string(),
            );
            let (program, args) = entrypoint::worker_command(&self.cfg, &python, local_rank);
            let prefix = logs::line_prefix(
                self.cfg.log_line_prefix_template.as_deref(),
                &self.cfg.role,
                global_rank,
                local_rank,
                short_host(&node.host),
            );
            let mut streams = Vec::new();
            for kind in [StreamKind::Stdout, StreamKind::Stderr] {
                let plan = node
                    .policy
                    .plan(&node.layout, self.attempt, local_rank, kind);
                let prepared = logs::prepare_stream(&plan).map_err(AgentError::Logs)?;
                if let Some((read, file)) = prepared.tee {
                    let (filters, name) = match kind {
                        StreamKind::Stdout => {
                            (&self.cfg.duplicate_stdout_filters, "filtered_stdout.log")
                        }
                        StreamKind::Stderr => {
                            (&self.cfg.duplicate_stderr_filters, "filtered_stderr.log")
                        }
                    };
                    let filtered_file = (!filters.is_empty())
                        .then(|| node.layout.attempt_dir(self.attempt))
                        .flatten()
                        .map(|d: PathBuf| d.join(name));
                    let source = TeeSource {
                        read,
                        file,
                        prefix: prefix.clone(),
                        kind,
                        filters: filters.clone(),
                        filtered_file,
                    };
                    self.tees.push(tokio::spawn(async move {
                        if let Err(e) = logs::run_tee(source).await {
                            tracing::warn!(error = %e, "worker log tee failed");
                        }
                    }));
                }
                streams.push(prepared.worker);
            }
            let stderr = streams.pop().expect("stderr");
            let stdout = streams.pop().expect("stdout");
            // A standby (--prewarm) becomes the worker; without one, or if it is gone, the
            // worker is started fresh.
            let activated = standbys
                .pop()
                .zip(entrypoint::prewarmed_argv(&self.cfg, local_rank))
                .and_then(|(standby, (argv, module))| {
                    let mut whole = node.parent_env.clone();
                    whole.extend(env.clone());
                    let pid = standby.pid;
                    standby
                        .activate(&argv, module, &whole, stdout.as_ref(), stderr.as_ref())
                        .inspect_err(|e| {
                            self.prewarm_failed = true;
                            tracing::warn!(pid, error = %e, "a standby interpreter is gone; starting workers fresh from now on");
                        })
                        .ok()
                });
            let pid = match activated {
                Some(pid) => {
                    prewarmed_workers += 1;
                    pid
                }
                None => {
                    let stdio = |fd: Option<std::os::fd::OwnedFd>| {
                        fd.map_or_else(std::process::Stdio::inherit, std::process::Stdio::from)
                    };
                    let pid = workers::spawn(ProcessSpec {
                        program,
                        args,
                        env: env.into_iter().collect(),
                        stdin: std::process::Stdio::null(),
                        stdout: stdio(stdout),
                        stderr: stdio(stderr),
                    })?;
                    self.reaper.watch(pid);
                    self.guardian.watch(pid);
                    pid
                }
            };
            tracing::debug!(local_rank, global_rank, pid, "started worker");
            group.push(Worker {
                local_rank,
                global_rank,
                pid,
                exit: None,
            });
        }
        tracing::info!(
            round = round.round,
            group_rank = round.group_rank,
            world_size = round.world_size,
            restart_count = self.attempt,
            workers = node.nproc,
            prewarmed = prewarmed_workers,
            "started workers"
        );
        Ok(group)
    }

    async fn monitor(&mut self, group: &mut [Worker], round: &RoundInfo) -> GroupEvent {
        let mut watcher = self.membership_watcher(round);
        let mut heartbeat = match &self.rdzv.backend {
            Backend::Dynamic(d) if round.group_world_size > 1 => {
                match Heartbeat::start(d, &self.rdzv.store, round).await {
                    Ok(hb) => Some(hb),
                    Err(error) => {
                        return GroupEvent::StoreLost {
                            error,
                            lease_end: None,
                        };
                    }
                }
            }
            _ => None,
        };
        let interval = match &self.rdzv.backend {
            Backend::Dynamic(d) => d.conf().keep_alive_interval,
            Backend::Static => Duration::from_secs(3600),
        };
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut look = tokio::time::interval(PROGRESS_INTERVAL);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut superseded = self.rdzv.failover.as_ref().and_then(Failover::superseded);
        let mut close_own_store = false;
        let mut standbys_due = Some(tokio::time::Instant::now() + STANDBY_START_DELAY);
        loop {
            for w in group.iter_mut().filter(|w| w.exit.is_none()) {
                w.exit = self.reaper.take_exit(w.pid);
            }
            if group.iter().any(|w| w.exit.is_some_and(|c| c != 0)) {
                return GroupEvent::Failed;
            }
            if group.iter().all(|w| w.exit == Some(0)) {
                if let Some(hb) = heartbeat.as_mut()
                    && let Err(e) = hb.finish().await
                {
                    tracing::debug!(error = %e, "could not mark this node finished in its heartbeat");
                }
                return GroupEvent::Succeeded;
            }
            tokio::select! {
                _ = self.reaper.changed() => {}
                Some(sig) = self.signals.recv() => return GroupEvent::Signal(sig),
                _ = look.tick() => {
                    if let Some(stalled) = self.look_at_progress() {
                        return stalled;
                    }
                    if standbys_due.is_some_and(|due| self.prewarm_once_training(due)) {
                        standbys_due = None;
                    }
                }
                _ = beat.tick(), if heartbeat.is_some() => {
                    let hb = heartbeat.as_mut().expect("guarded");
                    // Not renewed by then, the lease is lost: fence this node.
                    match tokio::time::timeout_at(hb.fence_at(), hb.tick()).await {
                        Ok(Ok(None)) => {}
                        Ok(Ok(Some(peer))) => return GroupEvent::PeerLost(peer),
                        Ok(Err(error)) if error.is_connection_lost() => {
                            return GroupEvent::StoreLost { error, lease_end: Some(hb.lease_end()) };
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed"),
                        Err(_) => {
                            return GroupEvent::StoreLost { error: hb.lease_lost(), lease_end: Some(hb.lease_end()) };
                        }
                    }
                }
                result = async { match watcher.as_mut() { Some(w) => (&mut w.0).await, None => std::future::pending().await } } => {
                    watcher = None;
                    match result {
                        Ok(Ok(())) => return self.membership_event(round).await,
                        Ok(Err(error)) => {
                            let lease_end = heartbeat.as_ref().map(Heartbeat::lease_end);
                            return GroupEvent::StoreLost { error, lease_end };
                        }
                        Err(_) => {}
                    }
                }
                () = ended(&mut superseded) => {
                    superseded = None;
                    close_own_store = true;
                }
            }
            if std::mem::take(&mut close_own_store) {
                // The watcher's and the heartbeat's connections close with it: StoreLost next.
                if let Err(e) = self.close_own_store().await {
                    tracing::error!(error = %e, "could not reopen this node's store");
                }
            }
        }
    }

    /// Why the next round's key appeared: a member of this round left and said so, or a node
    /// is joining.
    async fn membership_event(&self, round: &RoundInfo) -> GroupEvent {
        if let Backend::Dynamic(d) = &self.rdzv.backend
            && let Ok(Some(peer)) = d.left(round.round).await
        {
            return GroupEvent::PeerLeft(peer);
        }
        GroupEvent::MembershipChanged
    }

    /// A newer store is active elsewhere: the one this node hosts was cut off and the others
    /// moved on. Closing it sends every node still on it, this one too, looking for the newest;
    /// a fresh standby takes its place.
    async fn close_own_store(&mut self) -> Result<(), AgentError> {
        let Some(f) = &mut self.rdzv.failover else {
            return Ok(());
        };
        tracing::warn!(
            generation = f.generation,
            "a newer rendezvous store is active at another node; closing the one this node hosts"
        );
        if let Some(old) = self.rdzv.server.take() {
            old.shutdown().await;
        }
        let server = f
            .hosts
            .bind_own(f.me, f.server_config.clone())
            .map_err(|source| AgentError::HostStore {
                port: f.hosts.port,
                source,
            })?;
        self.rdzv.server = Some(server);
        Ok(())
    }

    /// Tops the standby interpreters up to one per local worker (`--prewarm`), each importing
    /// the modules while the current round trains; started like workers (own session, death
    /// signal, guardian, reaper). A standby that cannot start turns prewarming off.
    fn prewarm(&mut self) {
        if self.cfg.prewarm.is_empty() || self.prewarm_failed {
            return;
        }
        let python = entrypoint::python_exec(&self.node.parent_env);
        while self.standbys.len() < self.node.nproc as usize {
            match prewarm::start(&python, &self.cfg.prewarm) {
                Ok(standby) => {
                    self.reaper.watch(standby.pid);
                    self.guardian.watch(standby.pid);
                    self.standbys.push(standby);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prewarm; starting workers fresh");
                    self.prewarm_failed = true;
                    return;
                }
            }
        }
    }

    /// Starts the next round's standbys once this round trains: every local worker reported
    /// progress, or `due` passed for workers that report none. Started with the round, they
    /// would import alongside its workers and slow the round's own start, on a node with few
    /// cores by seconds. True once started.
    fn prewarm_once_training(&mut self, due: tokio::time::Instant) -> bool {
        let training = self
            .round_progress
            .as_ref()
            .is_some_and(RoundProgress::all_reported);
        if !training && tokio::time::Instant::now() < due {
            return false;
        }
        self.prewarm();
        true
    }

    /// The standbys for this round's workers: those that imported their modules and those
    /// still importing (activated now, they run the script once the import ends, sooner than a
    /// fresh interpreter would). One that died, failed to import, or has not imported within
    /// STANDBY_READY_LIMIT is killed and prewarming turned off.
    fn take_standbys(&mut self) -> Vec<Standby> {
        let mut usable = Vec::with_capacity(self.standbys.len());
        for mut standby in std::mem::take(&mut self.standbys) {
            match standby.readiness() {
                Readiness::Ready => usable.push(standby),
                Readiness::Importing { for_s } if for_s < STANDBY_READY_LIMIT.as_secs() => {
                    usable.push(standby)
                }
                state => {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(standby.pid as i32),
                        Signal::SIGKILL,
                    );
                    self.prewarm_failed = true;
                    tracing::warn!(pid = standby.pid, ?state, modules = ?self.cfg.prewarm, "a standby interpreter did not import its modules (see its error above); starting workers fresh from now on");
                }
            }
        }
        usable
    }

    /// Reads the workers' new progress reports into `/status`; a stall once ranks that
    /// reported stay silent for `--stall-timeout`.
    fn look_at_progress(&mut self) -> Option<GroupEvent> {
        let progress = self.round_progress.as_mut()?;
        let now = tokio::time::Instant::now();
        if let Some(training) = progress.read(now, unix_now()) {
            let training = training.clone();
            self.progress.send_modify(|p| p.training = Some(training));
        }
        let timeout = self.cfg.stall_timeout?;
        let (ranks, silent) = progress.silent(now, timeout);
        (!ranks.is_empty()).then_some(GroupEvent::Stalled { ranks, silent })
    }

    fn record_stall(&self, round: u64, ranks: &[u32], silent: Duration) {
        let stall = Stall {
            round,
            silent_ranks: ranks.to_vec(),
            silent_seconds: silent.as_secs_f64(),
            at: unix_now(),
        };
        self.progress.send_modify(|p| {
            p.stalls += 1;
            p.last_stall = Some(stall);
        });
    }

    /// A task that completes when some node waits to join the round after `round`; it runs on
    /// its own connection because a blocking WAIT holds the connection it is sent on. It keeps
    /// trying to connect until the join timeout; failing that, it reports the store as lost.
    fn membership_watcher(&self, round: &RoundInfo) -> Option<AbortOnDrop<Result<(), StoreError>>> {
        let Backend::Dynamic(d) = &self.rdzv.backend else {
            return None;
        };
        let key = DynamicRendezvous::next_round_key(round.round);
        let (host, port) = self.rdzv.endpoint.clone();
        let join_timeout = self.rdzv.join_timeout;
        let keys = d.keys_on_prefix();
        let connector = self.rdzv.connector.clone();
        Some(AbortOnDrop(tokio::spawn(async move {
            let conn = connector
                .connect(&host, port, join_timeout)
                .await?
                .prefixed(&keys);
            loop {
                match conn.wait(&[key.as_str()], Duration::from_secs(3600)).await {
                    Err(e) if e.is_timeout() => continue,
                    other => return other,
                }
            }
        })))
    }

    /// Tells the other nodes that a peer of the round is gone (its heartbeat stopped) or that
    /// this node leaves (a signal: its pod is being deleted), so their next round closes as soon
    /// as everyone else is in instead of waiting out the last call. Best effort, bounded: a
    /// store that does not answer leaves the last call as the bound.
    async fn tell_who_is_gone(&self, event: &GroupEvent, round: &RoundInfo) {
        let Backend::Dynamic(d) = &self.rdzv.backend else {
            return;
        };
        let tell = async {
            match event {
                GroupEvent::PeerLost(peer) => d.declare_gone(round.round, peer).await,
                GroupEvent::Signal(_) => d.leave().await,
                _ => Ok(()),
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), tell).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not tell the other nodes who left the round")
            }
            Err(_) => tracing::debug!(
                "the store did not answer in time; the other nodes' last call bounds their wait"
            ),
        }
    }

    /// Lets the tee tasks copy what the stopped workers last wrote. A descendant that still
    /// holds a pipe open must not keep the launcher waiting, hence the bound.
    async fn drain_tees(&mut self) {
        let tees = std::mem::take(&mut self.tees);
        let all = async {
            for tee in tees {
                let _ = tee.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), all)
            .await
            .is_err()
        {
            tracing::debug!(
                "worker output still open after the workers exited; not waiting for it"
            );
        }
    }

    async fn stop(&mut self, group: &[Worker], sig: Signal, grace: Duration) {
        let pgids: Vec<u32> = group.iter().map(|w| w.pid).collect();
        workers::stop_groups(&pgids, sig, grace, &mut self.reaper).await;
        for pgid in pgids {
            self.guardian.forget(pgid);
        }
        self.drain_tees().await;
    }

    fn collect_failures(&mut self, group: &mut [Worker]) -> Vec<ProcessFailure> {
        let now = chrono::Utc::now().timestamp();
        let mut failures = Vec::new();
        for w in group.iter_mut() {
            if w.exit.is_none() {
                w.exit = self.reaper.take_exit(w.pid);
            }
            let Some(code) = w.exit.filter(|c| *c != 0) else {
                continue;
            };
            let path = self.node.layout.error_file(self.attempt, w.local_rank);
            let content = match path.as_deref().map(failures::read_error_file) {
                Some(Ok(content)) => content,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "ignoring unreadable worker error file");
                    None
                }
                None => None,
            };
            let path = path.unwrap_or_default();
            failures.push(failures::failure_from_exit(
                w.local_rank,
                w.global_rank,
                w.pid,
                code,
                &path,
                content,
                now,
            ));
        }
        failures
    }

    /// Waits until every node of the round finished its workers, so the store host does not
    /// exit while others still need the store. Says what it waits for; never hangs silently.
    /// The round's exit-barrier keys.
    fn exit_keys(&self, round: &RoundInfo) -> StoreClient {
        match &self.rdzv.backend {
            Backend::Dynamic(d) => d
                .keys_on(&self.rdzv.store)
                .prefixed(&format!("r{}/exit", round.round)),
            Backend::Static => self
                .rdzv
                .store
                .prefixed(&format!("static/{}/exit/{}", self.node.run_id, round.round)),
        }
    }

    /// Whether this node's worker failure is the first of `round` among its nodes. A worker that
    /// dies breaks the collectives of the others, so one crash makes every node's workers fail;
    /// only the first node to report is charged a restart (`--max-restarts`), the others re-form
    /// as after a membership change. A node stopped by a signal (a pod deleted by scale-down)
    /// claims the round too, so the failures its departure causes are charged to no one; so
    /// does a node that was killed (its pod or its node lost): it cannot claim, but its store
    /// connection closed, and the first failure after it is not charged, nor is one whose store
    /// went with its host. torchrun charges every node, so one crash spends all nodes' budgets
    /// at once and then fails them all. Static rendezvous and single-node rounds keep torchrun's
    /// rule; a store that does not answer within a second charges the failure.
    async fn claim_round_failure(&self, round: &RoundInfo) -> bool {
        let Backend::Dynamic(d) = &self.rdzv.backend else {
            return true;
        };
        if round.group_world_size <= 1 {
            return true;
        }
        let keys = d
            .keys_on(&self.rdzv.store)
            .prefixed(&format!("r{}/failures", round.round));
        match tokio::time::timeout(Duration::from_secs(1), keys.add("count", 1)).await {
            Ok(Ok(1)) => {
                let departed =
                    tokio::time::timeout(Duration::from_secs(1), d.departed_member(round)).await;
                match departed {
                    Ok(Ok(Some(node))) => {
                        tracing::info!(node = %node, round = round.round, "a node of this round is gone (its store connection closed): its loss broke this node's workers; not counting a restart");
                        false
                    }
                    _ => true,
                }
            }
            Ok(Ok(_)) => false,
            Ok(Err(e)) if e.is_connection_lost() => {
                tracing::info!(error = %e, "the store went with its host, whose loss broke this node's workers; not counting a restart");
                false
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not tell the other nodes of the failure; counting it here");
                true
            }
            Err(_) => {
                tracing::debug!("the store did not answer in time; counting the failure here");
                true
            }
        }
    }

    /// Tells nodes waiting at this round's exit barrier that this node failed for good, so they
    /// stop waiting at once instead of at the barrier's timeout.
    async fn announce_failure(&self, round: &RoundInfo) {
        if round.group_world_size > 1 {
            let message = format!(
                "failed:{} (group rank {})",
                self.node.host, round.group_rank
            );
            if let Err(e) = self
                .exit_keys(round)
                .set("all_done", message.as_bytes())
                .await
            {
                tracing::debug!(error = %e, "could not announce the failure to the other nodes");
            }
        }
    }

    async fn exit_barrier(&self, round: &RoundInfo) {
        if round.group_world_size <= 1 {
            return;
        }
        let store = self.exit_keys(round);
        let done = match store.add("done", 1).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "exit barrier: store unreachable; exiting");
                return;
            }
        };
        if done >= round.group_world_size as i64 {
            let _ = store.set("all_done", b"1").await;
            return;
        }
        let timeout = self.cfg.exit_barrier_timeout;
        tracing::info!(
            finished = done,
            nodes = round.group_world_size,
            timeout_s = timeout.as_secs(),
            "workers succeeded; waiting at the exit barrier for the other nodes to finish"
        );
        match store.wait(&["all_done"], timeout).await {
            Ok(()) => {
                let outcome = store.get("all_done").await.unwrap_or_default();
                if let Some(who) = String::from_utf8_lossy(&outcome).strip_prefix("failed:") {
                    tracing::warn!(node = %who, "another node failed for good; this node's workers succeeded, exiting 0");
                }
            }
            Err(e) if e.is_timeout() => {
                let finished = store.add("done", 0).await.unwrap_or(done);
                tracing::warn!(
                    finished,
                    nodes = round.group_world_size,
                    timeout_s = timeout.as_secs(),
                    "exit barrier timed out: {} node(s) never finished (failed or restarting); this node's workers succeeded, exiting 0",
                    round.group_world_size as i64 - finished
                );
            }
            Err(e) => tracing::warn!(error = %e, "exit barrier: lost the store; exiting"),
        }
    }
}

async fn next_round(
    rdzv: &mut Rendezvous,
    cfg: &Config,
    node: &Node,
    failure_restarts: u32,
    next_restart: u32,
) -> Result<RoundInfo, AgentError> {
    match &mut rdzv.backend {
        Backend::Static => {
            let mut info = rendezvous::static_round(
                &rdzv.store,
                &node.run_id,
                cfg.node_rank,
                cfg.nnodes.max,
                node.nproc,
                static_timeout(cfg),
            )
            .await?;
            // Static membership never changes and nodes restart on their own, as torchrun's.
            info.round = failure_restarts as u64;
            info.restart_count = failure_restarts;
            Ok(info)
        }
        Backend::Dynamic(_) => {
            // The store host may go away while we wait; keep re-joining until join_timeout.
            let deadline = tokio::time::Instant::now() + rdzv.join_timeout;
            loop {
                let Backend::Dynamic(d) = &mut rdzv.backend else {
                    unreachable!()
                };
                d.propose_restart_count(next_restart);
                match d.next_round().await {
                    Err(RendezvousError::Store(e))
                        if e.is_connection_lost() && tokio::time::Instant::now() < deadline =>
                    {
                        tracing::warn!(error = %e, "lost the rendezvous store while joining; re-joining");
                        reconnect(rdzv).await?;
                    }
                    Ok(info) => {
                        if let Some(f) = &mut rdzv.failover {
                            f.mark_member().await;
                        }
                        return Ok(info);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// Reconnects to the rendezvous store after losing it: where it moved to (or this node's own,
/// if it is the lowest survivor) with `store_hosts`; else the endpoint (whose host may be a
/// new agent, e.g. a recreated pod 0), retrying until `join_timeout`, never hosting.
async fn reconnect(rdzv: &mut Rendezvous) -> Result<(), AgentError> {
    let join = rdzv.join_timeout;
    if let (Some(f), Backend::Dynamic(d)) = (&mut rdzv.failover, &mut rdzv.backend) {
        let looking = match d.last_size() {
            Some(members) => Looking::AfterLoss { members },
            None => Looking::Waiting,
        };
        tracing::info!(
            ?looking,
            join_timeout_s = join.as_secs(),
            "looking for the rendezvous store at every node's address"
        );
        let store = match f.locate(looking, join).await? {
            Located::Found(found) => {
                d.adopt(&found.store).await?;
                f.use_found(found)
            }
            Located::ActivateOwn(own) => {
                tracing::warn!(
                    index = f.me,
                    "the rendezvous store was lost; this node hosts it now"
                );
                d.seed(&own).await?;
                f.activate_own(own, f.generation + 1).await?
            }
        };
        tracing::info!(
            index = f.active,
            generation = f.generation,
            "rendezvous store found"
        );
        rdzv.endpoint = f.endpoint();
        rdzv.store = store;
        return Ok(());
    }
    let (host, port) = rdzv.endpoint.clone();
    tracing::info!(endpoint = %format!("{host}:{port}"), join_timeout_s = join.as_secs(), "reconnecting to the rendezvous store");
    let store = rdzv.connector.connect(&host, port, join).await?;
    if let Backend::Dynamic(d) = &mut rdzv.backend {
        d.set_store(&store);
    }
    rdzv.store = store;
    Ok(())
}

/// The static backend's `timeout` rdzv-conf key (torchrun injects 900 s).
fn static_timeout(cfg: &Config) -> Duration {
    cfg.rdzv_conf
        .get("timeout")
        .and_then(|t| t.trim().parse().ok())
        .filter(|t: &f64| *t > 0.0)
        .and_then(crate::config::duration_from_secs)
        .unwrap_or(Duration::from_secs(900))
}

/// A spawned task that is cancelled when its handle goes out of scope.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn short_host(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

fn install_signal_handlers(signals: &[Signal]) -> mpsc::UnboundedReceiver<Signal> {
    let (tx, rx) = mpsc::unbounded_channel();
    for &sig in signals {
        let mut stream = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::from_raw(sig as i32),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(signal = %sig, error = %e, "cannot handle signal");
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// Hosts or joins the store and picks the backend. Returns the rendezvous and the address
/// workers use for the agent's store (`MASTER_ADDR`, `MASTER_PORT`).
async fn connect_rendezvous(
    cfg: &Config,
    nproc: u32,
    host: &str,
    env: &BTreeMap<String, String>,
) -> Result<Rendezvous, AgentError> {
    let timeouts = rendezvous::parse_conf(&cfg.rdzv_conf).map_err(AgentError::RdzvConf)?;
    let connector = Connector::agent(&cfg.store_token);
    let server_config = ServerConfig::for_agents(&cfg.store_token);
    match cfg.rdzv_backend {
        RdzvBackend::Static => {
            let (addr, port) = (cfg.master_addr.clone(), cfg.master_port);
            let server = if cfg.node_rank == 0 {
                Some(
                    store::threads::bind("::", port, server_config)
                        .map_err(|source| AgentError::HostStore { port, source })?,
                )
            } else {
                None
            };
            let connect_host = if server.is_some() {
                "localhost"
            } else {
                addr.as_str()
            };
            let store = connector
                .connect(connect_host, port, static_timeout(cfg))
                .await?;
            let endpoint = (connect_host.to_string(), port);
            Ok(Rendezvous {
                store,
                endpoint,
                endpoint_host: addr,
                join_timeout: static_timeout(cfg),
                connector,
                server,
                failover: None,
                backend: Backend::Static,
            })
        }
        RdzvBackend::C10d => {
            let (ep_host, ep_port) = crate::cli::parse_endpoint(&cfg.rdzv_endpoint, 29400)
                .map_err(AgentError::Endpoint)?;
            let forced = cfg.rdzv_conf.get(rdzv_conf::IS_HOST).map(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "t" | "yes" | "y"
                )
            });
            let index = rendezvous::node_index(env, host);
            let hosts = StoreHosts::from_conf(
                cfg.rdzv_conf
                    .get(rdzv_conf::STORE_HOSTS)
                    .map(String::as_str),
                ep_port,
                cfg.nnodes.max,
            )
            .map_err(AgentError::RdzvConf)?;
            let (server, failover, store, endpoint) = match hosts {
                Some(hosts) => {
                    let me = index.ok_or_else(|| {
                        AgentError::RdzvConf(format!(
                            "{}: this node's index is unknown; set {} or run as pod <job>-worker-<i>",
                            rdzv_conf::STORE_HOSTS,
                            elasticjob_contract::env::NODE_INDEX
                        ))
                    })?;
                    let own_server = server_config.clone();
                    let server =
                        hosts
                            .bind_own(me, own_server)
                            .map_err(|source| AgentError::HostStore {
                                port: ep_port,
                                source,
                            })?;
                    let mut failover = Failover {
                        hosts,
                        me,
                        run_id: cfg.rdzv_id.clone(),
                        connector: connector.clone(),
                        server_config,
                        active: me,
                        generation: 0,
                        marked_member: false,
                    };
                    let looking = Looking::Start {
                        is_host: forced.unwrap_or(false),
                    };
                    let store = match failover.locate(looking, timeouts.join).await? {
                        Located::Found(found) => failover.use_found(found),
                        Located::ActivateOwn(own) => failover.activate_own(own, 0).await?,
                    };
                    let endpoint = failover.endpoint();
                    (Some(server), Some(failover), store, endpoint)
                }
                None => {
                    let server =
                        host_store_at_endpoint(cfg, &ep_host, ep_port, forced, server_config)?;
                    let port = server.as_ref().map(|s| s.port()).unwrap_or(ep_port);
                    let connect_host = if server.is_some() {
                        "localhost"
                    } else {
                        ep_host.as_str()
                    };
                    let store = connector.connect(connect_host, port, timeouts.join).await?;
                    (server, None, store, (connect_host.to_string(), port))
                }
            };
            let id = format!(
                "{host}_{}_{:08x}",
                std::process::id(),
                rand::random::<u32>()
            );
            let me = NodeDesc {
                id,
                host: cfg.local_addr.clone().unwrap_or_else(|| host.to_string()),
                index,
                nproc,
                next_restart: 0,
            };
            let join_timeout = timeouts.join;
            let dynamic = DynamicRendezvous::new(&store, &cfg.rdzv_id, cfg.nnodes, timeouts, me);
            let endpoint_host = if ep_host.is_empty() {
                "localhost".to_string()
            } else {
                ep_host
            };
            Ok(Rendezvous {
                store,
                endpoint,
                endpoint_host,
                join_timeout,
                connector,
                server,
                failover,
                backend: Backend::Dynamic(Box::new(dynamic)),
            })
        }
    }
}

/// torchrun's rule: the agent on the endpoint's machine hosts the store there (or whoever
/// `is_host` names). None: this node is a client.
fn host_store_at_endpoint(
    cfg: &Config,
    ep_host: &str,
    ep_port: u16,
    forced: Option<bool>,
    config: ServerConfig,
) -> Result<Option<StoreServer>, AgentError> {
    if !forced.unwrap_or_else(|| rendezvous::is_local_host(ep_host)) {
        return Ok(None);
    }
    match store::threads::bind("::", ep_port, config) {
        Ok(s) => {
            tracing::info!(port = s.port(), run_id = %cfg.rdzv_id, "hosting the rendezvous store");
            Ok(Some(s))
        }
        Err(e) if forced.is_none() => {
            tracing::info!(endpoint = %cfg.rdzv_endpoint, error = %e, "another agent hosts the store on this machine; joining as a client");
            Ok(None)
        }
        Err(source) => Err(AgentError::HostStore {
            port: ep_port,
            source,
        }),
    }
}
