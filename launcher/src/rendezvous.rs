//! Rendezvous: which nodes form the next round, and each node's group rank in it.
//!
//! Two backends, as torchrun's: `static` (fixed membership, `--node-rank` of `--nnodes`) and
//! `c10d` (elastic, `MIN:MAX` nodes). Both run over the c10d TCPStore that one agent hosts.
//!
//! The c10d protocol is our own (Rust agents only), event-driven with the store's blocking
//! WAIT instead of torchrun's 1 s polling of one pickled blob under compare-and-set:
//! - `round` holds the round new nodes join. A node joins round `r` with `ADD r<r>/joined 1`,
//!   which gives it an arrival index `k`, and publishes its description at `r<r>/node/<k>`.
//! - The node that arrives `min`-th sets `r<r>/min_reached`; everyone then waits on
//!   `r<r>/sealed` for at most `last_call_timeout`, after which any of them seals the round
//!   with compare-and-set at the number joined so far (capped at `max`). The `max`-th node
//!   seals at once, so a full round completes in a few store round trips.
//! - No one waits out the last call when nobody else is coming: a re-form closes as soon as
//!   every node of the previous round that is still alive has joined (a node whose heartbeat
//!   stopped, or that leaves on a signal, is counted under `r<r>/gone`); a store's first round
//!   closes once `expected_nodes` (the job's replicas) joined. Whoever's write completes the
//!   round seals it ([`seal_early`]); the last call remains the bound for nodes still starting.
//! - A node whose index is beyond the sealed count is late: if the round is below `max` it opens
//!   round `r+1` and joins it; otherwise it waits in reserve for `r+1` to open.
//! - Once sealed, one member (the first to claim `r<r>/assigner`) reads every description,
//!   orders them and writes each node its own assignment at `r<r>/assign/<k>`; every node reads
//!   only its own, so a round costs O(N) store traffic, not O(N²).
//! - Running nodes watch `r<r+1>/joined` with a blocking WAIT: any node joining the next round
//!   (a late or new node, or a peer restarting after a failure) makes them stop their workers
//!   and join it too.
//!
//! Group ranks order nodes by their node index when they have one (pod `<job>-worker-<i>`),
//! then by arrival, so rank 0 lives on pod 0 next to the store.

use std::collections::BTreeMap;
use std::time::Duration;

use elasticjob_contract::env::rdzv_conf;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::NodeRange;
use crate::store::{StoreClient, StoreError};

/// A node's description, published when it joins a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDesc {
    /// Unique per agent process: `<host>_<pid>_<random>`.
    pub id: String,
    pub host: String,
    /// Stable index (pod ordinal) when known; orders group ranks.
    pub index: Option<u32>,
    pub nproc: u32,
    /// The `TORCHELASTIC_RESTART_COUNT` this node proposes for the round: one more than the
    /// last it used. The round takes the largest proposal, so every node of a round agrees.
    pub next_restart: u32,
}

/// What a completed round tells this node; the assigner of the round writes one per member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundInfo {
    pub round: u64,
    pub group_rank: u32,
    pub group_world_size: u32,
    /// Global rank of this node's local rank 0.
    pub base_global_rank: u32,
    pub world_size: u32,
    /// `TORCHELASTIC_RESTART_COUNT` of this round, the same on every node: torch < 2.15
    /// workers prefix their store keys with it (`/worker/attempt_<n>`), so nodes must agree.
    pub restart_count: u32,
    /// The node this one watches for heartbeats: the next in group-rank order.
    pub ring_peer: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rendezvous timed out after {waited_s:.0}s (join_timeout): {what}")]
    Timeout { waited_s: f64, what: String },
    #[error("rendezvous store holds a corrupt value under {key}: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("rendezvous for run {run_id} is closed: the job finished; not joining")]
    Closed { run_id: String },
}

/// Settings of the c10d rendezvous from `--rdzv-conf`: torchrun's names; torchrun's defaults
/// except the heartbeat, which notices a lost peer or store host in 2 s instead of 15.
#[derive(Debug, Clone, PartialEq)]
pub struct RendezvousConf {
    pub join: Duration,
    pub last_call: Duration,
    pub close: Duration,
    pub keep_alive_interval: Duration,
    /// Deadline of one heartbeat (its store operations).
    pub heartbeat: Duration,
    pub keep_alive_max_attempt: u32,
    pub read: Duration,
    /// How many nodes the first round of a store waits for before it closes without a last
    /// call (`expected_nodes`, set by the operator to the job's replicas). Unset: torchrun's
    /// rule, the first round waits out `last_call` for nodes beyond the minimum.
    pub expected_nodes: Option<u64>,
}

impl Default for RendezvousConf {
    fn default() -> Self {
        RendezvousConf {
            join: Duration::from_secs(600),
            last_call: Duration::from_secs(30),
            close: Duration::from_secs(30),
            keep_alive_interval: DEFAULT_KEEP_ALIVE_INTERVAL,
            heartbeat: DEFAULT_HEARTBEAT_TIMEOUT,
            keep_alive_max_attempt: DEFAULT_KEEP_ALIVE_MAX_ATTEMPT,
            read: Duration::from_secs(60),
            expected_nodes: None,
        }
    }
}

/// A peer is lost after `DEFAULT_KEEP_ALIVE_INTERVAL * DEFAULT_KEEP_ALIVE_MAX_ATTEMPT` (2 s)
/// without a beat. torchrun waits 15 s (5 s × 3): 13 s more of a whole job standing idle
/// after every silent node loss. A beat is one small store write every half second per node,
/// and the agent is a light process, so even a loaded machine beats on time.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(500);
pub const DEFAULT_KEEP_ALIVE_MAX_ATTEMPT: u32 = 4;
/// A store that does not answer a heartbeat's operation within this long counts as lost (its
/// host killed, its node gone, a partition), so a silent store host is noticed as fast as a
/// silent peer. The store answers in microseconds; a client that is starved itself reads a
/// reply that came before its timer.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads the rendezvous settings from `--rdzv-conf`; unknown keys are ignored as torchrun does.
pub fn parse_conf(conf: &BTreeMap<String, String>) -> Result<RendezvousConf, String> {
    let mut t = RendezvousConf::default();
    let seconds = |name: &str, default: Duration| -> Result<Duration, String> {
        let Some(value) = conf.get(name) else {
            return Ok(default);
        };
        let secs: f64 = value.trim().parse().map_err(|_| {
            format!(
                "--rdzv-conf {name}={value}: the value does not represent a valid number of seconds"
            )
        })?;
        crate::config::duration_from_secs(secs)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "--rdzv-conf {name}={value}: the {name} must be positive, at most {} seconds",
                    crate::config::MAX_SECONDS
                )
            })
    };
    t.join = seconds(rdzv_conf::JOIN_TIMEOUT, t.join)?;
    t.last_call = seconds(rdzv_conf::LAST_CALL_TIMEOUT, t.last_call)?;
    t.close = seconds(rdzv_conf::CLOSE_TIMEOUT, t.close)?;
    t.keep_alive_interval = seconds("keep_alive_interval", t.keep_alive_interval)?;
    t.heartbeat = seconds("heartbeat_timeout", t.heartbeat)?;
    t.read = seconds("read_timeout", t.read)?;
    if let Some(v) = conf.get("keep_alive_max_attempt") {
        t.keep_alive_max_attempt = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            format!("--rdzv-conf keep_alive_max_attempt={v}: must be a positive integer")
        })?;
    }
    if let Some(v) = conf.get(rdzv_conf::EXPECTED_NODES) {
        t.expected_nodes = Some(v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            format!(
                "--rdzv-conf {}={v}: must be a positive integer (the number of nodes the job runs)",
                rdzv_conf::EXPECTED_NODES
            )
        })?);
    }
    Ok(t)
}

/// Assignments of a sealed round, in arrival order (`members[k-1]` arrived `k`-th): group
/// ranks by node index, then arrival; global ranks in group-rank order; the round's restart
/// count is the largest proposal, so every node of the round agrees on it.
pub fn assign(round: u64, members: &[NodeDesc]) -> Vec<RoundInfo> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    // A stable sort keeps arrival order among nodes without an index and among equal indices.
    order.sort_by_key(|&i| members[i].index.unwrap_or(u32::MAX));
    let world_size = members.iter().map(|m| m.nproc).sum();
    let restart_count = members.iter().map(|m| m.next_restart).max().unwrap_or(0);
    let n = members.len();
    let mut out = vec![None; n];
    let mut base = 0;
    for (rank, &i) in order.iter().enumerate() {
        let peer = order[(rank + 1) % n];
        out[i] = Some(RoundInfo {
            round,
            group_rank: rank as u32,
            group_world_size: n as u32,
            base_global_rank: base,
            world_size,
            restart_count,
            ring_peer: (n > 1).then(|| members[peer].id.clone()),
        });
        base += members[i].nproc;
    }
    out.into_iter()
        .map(|a| a.expect("every member is ranked"))
        .collect()
}

/// True when `host` names this machine: torchrun's is-host rule for the c10d store.
pub fn is_local_host(host: &str) -> bool {
    if host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        return true;
    }
    let me = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    if host == me {
        return true;
    }
    use std::net::ToSocketAddrs;
    let resolve = |h: &str| -> Vec<std::net::IpAddr> {
        (h, 0)
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default()
    };
    let mine = resolve(&me);
    resolve(host).iter().any(|ip| mine.contains(ip))
}

/// A node's stable index when it is a pod of an ElasticJob (`<job>-worker-<i>`) or set
/// explicitly with `ELASTICJOB_NODE_INDEX`; it orders group ranks.
pub fn node_index(env: &BTreeMap<String, String>, host: &str) -> Option<u32> {
    if let Some(v) = env.get(elasticjob_contract::env::NODE_INDEX) {
        return v.trim().parse().ok();
    }
    let short = host.split('.').next()?;
    let (_, index) = short.rsplit_once("-worker-")?;
    index.parse().ok()
}

/// The key that exists while node `id`'s store connection is open (an ephemeral key).
fn alive_key(id: &str) -> String {
    format!("ephemeral/alive/{id}")
}

fn parse_u64(key: &str, bytes: &[u8]) -> Result<u64, RendezvousError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| RendezvousError::Corrupt {
            key: key.into(),
            detail: format!("{:?} is not a number", String::from_utf8_lossy(bytes)),
        })
}

/// The elastic c10d rendezvous, seen from one node.
pub struct DynamicRendezvous {
    store: StoreClient,
    run_id: String,
    nodes: NodeRange,
    conf: RendezvousConf,
    me: NodeDesc,
    /// The last round this node took part in, and how many nodes it had.
    last_round: Option<u64>,
    last_size: u64,
    /// This node's arrival index in its last round (its description is `r<round>/node/<k>`).
    last_arrival: u64,
    /// The last round this node joined, as a member or too late (then it comes to the next).
    last_joined: Option<u64>,
}

impl DynamicRendezvous {
    pub fn new(
        store: &StoreClient,
        run_id: &str,
        nodes: NodeRange,
        conf: RendezvousConf,
        me: NodeDesc,
    ) -> Self {
        DynamicRendezvous {
            store: store.prefixed(&format!("rdzv/{run_id}")),
            run_id: run_id.into(),
            nodes,
            conf,
            me,
            last_round: None,
            last_size: 0,
            last_arrival: 0,
            last_joined: None,
        }
    }

    pub fn node(&self) -> &NodeDesc {
        &self.me
    }

    /// The store this rendezvous runs on, after a reconnect.
    pub fn set_store(&mut self, store: &StoreClient) {
        self.store = store.prefixed(&self.keys_on_prefix());
        // A new store (its host restarted) starts again at round 0; join whatever is current.
        self.last_round = None;
        self.last_joined = None;
    }

    /// How many nodes the last round this node took part in had; None before its first.
    pub fn last_size(&self) -> Option<u64> {
        self.last_round.map(|_| self.last_size)
    }

    /// Uses `store`, found after the last one was lost. A store that knows this node's last
    /// round (the same store, or one a survivor moved the run to) carries the run on: this
    /// node keeps its last round, so the next round is a re-form of it. Any other is a fresh
    /// start (a restarted first host's), where rounds begin again.
    pub async fn adopt(&mut self, store: &StoreClient) -> Result<(), RendezvousError> {
        let view = store.prefixed(&self.keys_on_prefix());
        let knows_the_run = match self.last_round {
            Some(last) => {
                let mine = format!("r{last}/node/{}", self.last_arrival);
                view.check(&[format!("r{last}/seeded").as_str()]).await?
                    || (view.check(&[mine.as_str()]).await?
                        && serde_json::from_slice::<NodeDesc>(&view.get(&mine).await?)
                            .is_ok_and(|d| d.id == self.me.id))
            }
            None => false,
        };
        if knows_the_run {
            self.store = view;
            self.last_joined = self.last_round;
        } else {
            self.set_store(store);
        }
        Ok(())
    }

    /// Moves the run to `store`, this node's own, which it is about to activate: writes the
    /// last round there, less its host (the store that was lost), so the re-form closes once
    /// every other member is back.
    pub async fn seed(&mut self, store: &StoreClient) -> Result<(), RendezvousError> {
        self.store = store.prefixed(&self.keys_on_prefix());
        self.last_joined = self.last_round;
        let Some(last) = self.last_round else {
            return Ok(());
        };
        let r = format!("r{last}");
        self.store
            .add(&format!("{r}/joined"), self.last_size as i64)
            .await?;
        self.store.add(&format!("{r}/gone"), 1).await?;
        self.store.set(&format!("{r}/seeded"), b"1").await?;
        self.store
            .compare_set("round", b"", (last + 1).to_string().as_bytes())
            .await?;
        tracing::info!(
            round = last,
            nodes = self.last_size,
            "seeded the moved store with the lost round, less its host"
        );
        Ok(())
    }

    /// Sets the restart count this node proposes for the next round.
    pub fn propose_restart_count(&mut self, next: u32) {
        self.me.next_restart = next;
    }

    pub fn conf(&self) -> &RendezvousConf {
        &self.conf
    }

    /// The key whose appearance means some node waits to form the round after `round`.
    pub fn next_round_key(round: u64) -> String {
        format!("r{}/joined", round + 1)
    }

    /// A client view on this run's rendezvous keys (for watchers on their own connection).
    pub fn keys_on(&self, store: &StoreClient) -> StoreClient {
        store.prefixed(&self.keys_on_prefix())
    }

    /// The prefix of this run's rendezvous keys.
    pub fn keys_on_prefix(&self) -> String {
        format!("rdzv/{}", self.run_id)
    }

    /// Joins the next round and waits until it is sealed with this node in it.
    pub async fn next_round(&mut self) -> Result<RoundInfo, RendezvousError> {
        let started = Instant::now();
        let deadline = started + self.conf.join;
        if self.store.check(&["closed"]).await? {
            return Err(RendezvousError::Closed {
                run_id: self.run_id.clone(),
            });
        }
        let mut round = self.open_round().await?;
        loop {
            match self.join_round(round, deadline, started).await? {
                Joined::Member(info) => {
                    self.last_round = Some(info.round);
                    self.last_size = info.group_world_size.into();
                    return Ok(info);
                }
                Joined::Late {
                    sealed,
                    placement: Placement::OpenNext,
                } => {
                    tracing::info!(
                        round,
                        sealed,
                        "round already sealed without this node; opening the next round"
                    );
                    round = self.advance_round(round).await?;
                }
                Joined::Late { sealed, .. } => {
                    tracing::info!(
                        round,
                        sealed,
                        max = self.nodes.max,
                        "round is full; waiting in reserve for the next round"
                    );
                    self.wait_keys(
                        &[Self::next_round_key(round)],
                        deadline,
                        started,
                        "a place in a full job (reserve node)",
                    )
                    .await?;
                    if self.store.check(&["closed"]).await? {
                        self.acknowledge_close(round).await?;
                        return Err(RendezvousError::Closed {
                            run_id: self.run_id.clone(),
                        });
                    }
                    round += 1;
                }
            }
        }
    }

    /// The round to join: the store's current round, but never one this node already had.
    async fn open_round(&mut self) -> Result<u64, RendezvousError> {
        let current = self.store.compare_set("round", b"", b"0").await?;
        let current = parse_u64("round", &current)?;
        match self.last_round {
            Some(last) if current <= last => self.advance_round(last).await,
            _ => Ok(current),
        }
    }

    /// Moves the store's `round` from `from` to `from + 1` (unless someone already did) and
    /// returns the round to join.
    async fn advance_round(&mut self, from: u64) -> Result<u64, RendezvousError> {
        let next = (from + 1).to_string();
        let now = self
            .store
            .compare_set("round", from.to_string().as_bytes(), next.as_bytes())
            .await?;
        Ok(parse_u64("round", &now)?.max(from + 1))
    }

    async fn join_round(
        &mut self,
        round: u64,
        deadline: Instant,
        started: Instant,
    ) -> Result<Joined, RendezvousError> {
        let r = format!("r{round}");
        let k = self.store.add(&format!("{r}/joined"), 1).await? as u64;
        let desc = serde_json::to_vec(&self.me).expect("node description serializes");
        self.store.set(&format!("{r}/node/{k}"), &desc).await?;
        // Alive while this connection is: the store drops the key when it closes.
        self.store.set(&alive_key(&self.me.id), b"1").await?;
        let (min, max) = (self.nodes.min as u64, self.nodes.max as u64);
        tracing::info!(round, arrival = k, min, max, "joined rendezvous round");
        let returning = round > 0 && self.last_joined == Some(round - 1);
        self.last_joined = Some(round);
        if round > 0 {
            // Every joiner adds (0 or 1), so the key exists once anyone joined.
            self.store
                .add(&format!("{r}/returning"), i64::from(returning))
                .await?;
        }
        let arrival = on_arrival(k, min, max);
        if arrival.reaches_min {
            self.store.set(&format!("{r}/min_reached"), b"1").await?;
        }
        if let Some(size) = arrival.seals {
            self.store
                .compare_set(&format!("{r}/sealed"), b"", size.to_string().as_bytes())
                .await?;
        } else if k >= min && (round > 0 || self.conf.expected_nodes.is_some()) {
            // (A first round without expected_nodes keeps torchrun's last call: nothing to check.)
            self.seal_if_everyone_is_in(round).await?;
        }
        let sealed_key = format!("{r}/sealed");
        if !self.store.check(&[sealed_key.as_str()]).await? {
            if k < min {
                tracing::info!(
                    round,
                    joined = k,
                    min,
                    wait_s = (deadline - Instant::now()).as_secs_f64().round(),
                    "waiting for at least {min} nodes"
                );
            }
            self.wait_keys(
                &[format!("{r}/min_reached")],
                deadline,
                started,
                &format!("{min} nodes to join round {round} (minimum of --nnodes)"),
            )
            .await?;
            let last_call = self
                .conf
                .last_call
                .min(deadline.saturating_duration_since(Instant::now()));
            if !self.store.check(&[sealed_key.as_str()]).await? {
                tracing::info!(
                    round,
                    last_call_s = last_call.as_secs_f64(),
                    max,
                    "minimum reached; waiting up to last_call_timeout for more nodes"
                );
            }
            // In a re-form the first to join also looks, every heartbeat interval, for nodes
            // of the previous round that are gone without anyone saying so (their workers'
            // peers failed first and re-joined before a heartbeat noticed).
            let look_every = if round > 0 && k == 1 {
                self.conf.keep_alive_interval
            } else {
                last_call
            };
            let last_call_ends = Instant::now() + last_call;
            let mut quorum_warned = false;
            loop {
                let step = look_every.min(last_call_ends.saturating_duration_since(Instant::now()));
                match self.store.wait(&[sealed_key.as_str()], step).await {
                    Ok(()) => break,
                    Err(e) if !e.is_timeout() => return Err(e.into()),
                    Err(_) if Instant::now() < last_call_ends => {
                        self.count_departed(round).await?;
                    }
                    Err(_) => {
                        let joined = self.store.add(&format!("{r}/joined"), 0).await? as u64;
                        let previous = self.previous(round).await?;
                        if !has_quorum(joined, previous) {
                            let warn = !std::mem::replace(&mut quorum_warned, true);
                            self.wait_for_quorum(
                                round,
                                joined,
                                previous,
                                (deadline, started),
                                warn,
                            )
                            .await?;
                            continue;
                        }
                        let count = seal_at(joined, max).to_string();
                        self.store
                            .compare_set(&sealed_key, b"", count.as_bytes())
                            .await?;
                        break;
                    }
                }
            }
        }
        let sealed = parse_u64(&sealed_key, &self.store.get(&sealed_key).await?)?;
        match placement(k, sealed, max) {
            Placement::Member => self.last_arrival = k,
            placement => return Ok(Joined::Late { sealed, placement }),
        }
        if self.store.add(&format!("{r}/assigner"), 1).await? == 1 {
            self.write_assignments(round, sealed).await?;
        }
        let key = format!("{r}/assign/{k}");
        let info: RoundInfo =
            serde_json::from_slice(&self.store.get(&key).await?).map_err(|e| {
                RendezvousError::Corrupt {
                    key: key.clone(),
                    detail: e.to_string(),
                }
            })?;
        tracing::info!(
            round,
            group_rank = info.group_rank,
            nodes = sealed,
            world_size = info.world_size,
            restart_count = info.restart_count,
            waited_s = started.elapsed().as_secs_f64(),
            "rendezvous round complete"
        );
        Ok(Joined::Member(info))
    }

    /// Seals `round` at once when nobody else is coming: every live node of the round before
    /// has joined it (a re-form), or the job's expected number of nodes has (a store's first
    /// round). Called by every joiner and by every node that says a member is gone, after its own
    /// write, so whichever write completes the round also seals it.
    async fn seal_if_everyone_is_in(&self, round: u64) -> Result<(), RendezvousError> {
        let r = format!("r{round}");
        let joined = self.store.add(&format!("{r}/joined"), 0).await? as u64;
        let previous = self.previous(round).await?;
        let (min, max) = (self.nodes.min as u64, self.nodes.max as u64);
        if let Some(size) = seal_early(joined, min, max, previous, self.conf.expected_nodes) {
            let sealed = self
                .store
                .compare_set(&format!("{r}/sealed"), b"", size.to_string().as_bytes())
                .await?;
            if sealed == size.to_string().as_bytes() {
                tracing::info!(
                    round,
                    nodes = size,
                    ?previous,
                    "every expected node joined; round closed without a last call"
                );
            }
        }
        Ok(())
    }

    /// What the next round knows of the round before `round`, if there is one.
    async fn previous(&self, round: u64) -> Result<Option<Previous>, RendezvousError> {
        let Some(prev) = round.checked_sub(1) else {
            return Ok(None);
        };
        let (p, r) = (format!("r{prev}"), format!("r{round}"));
        let joined = self.store.add(&format!("{p}/joined"), 0).await? as u64;
        let gone = self.store.add(&format!("{p}/gone"), 0).await? as u64;
        let departed = self.store.add(&format!("{p}/departed"), 0).await? as u64;
        let returned = self.store.add(&format!("{r}/returning"), 0).await? as u64;
        // A moved store starts from the lost round's size alone; the move itself needed more
        // than half of that round (store_failover), which is the quorum.
        let seeded = self.store.check(&[format!("{p}/seeded").as_str()]).await?;
        Ok(Some(Previous {
            live: joined.saturating_sub(gone),
            returned,
            quorum_of: if seeded {
                0
            } else {
                joined.saturating_sub(departed)
            },
        }))
    }

    /// Says that `id`, a member of `round`, is gone because its heartbeat stopped, so the next
    /// round does not wait for it. Silence is no proof: it may still run on the other side of
    /// a partition, so it still counts towards the next round's quorum ([`has_quorum`]).
    /// Counted once however many nodes say it.
    pub async fn declare_gone(&self, round: u64, id: &str) -> Result<(), RendezvousError> {
        self.mark_gone(round, id, false).await
    }

    /// Marks `id` gone from `round`; `departed` when that is certain (it left on a signal, or
    /// its store connection closed): it no longer counts towards the next round's quorum.
    async fn mark_gone(&self, round: u64, id: &str, departed: bool) -> Result<(), RendezvousError> {
        let r = format!("r{round}");
        if self.store.add(&format!("{r}/gone/{id}"), 1).await? == 1 {
            self.store.add(&format!("{r}/gone"), 1).await?;
        }
        if departed && self.store.add(&format!("{r}/departed/{id}"), 1).await? == 1 {
            self.store.add(&format!("{r}/departed"), 1).await?;
        }
        // Nodes that already joined the next round may be waiting only for this one.
        let next = format!("r{}/joined", round + 1);
        if self.store.check(&[next.as_str()]).await? {
            self.seal_if_everyone_is_in(round + 1).await?;
        }
        Ok(())
    }

    /// Counts gone the nodes of the round before `round` that have not joined it and whose
    /// connection to the store is closed (their alive key is gone): a crashed agent.
    async fn count_departed(&self, round: u64) -> Result<(), RendezvousError> {
        let prev = round - 1;
        // A moved store knows the lost round's size, not its members.
        if self
            .store
            .check(&[format!("r{prev}/seeded").as_str()])
            .await?
        {
            return Ok(());
        }
        let previous = self.members_of(prev).await?;
        let returned = self.members_of(round).await?;
        for id in previous.iter().filter(|id| !returned.contains(id)) {
            if !self.store.check(&[alive_key(id).as_str()]).await? {
                tracing::info!(round = prev, node = %id, "a node of the previous round is gone (its store connection closed)");
                self.mark_gone(prev, id, true).await?;
            } else if self.finished(prev, id).await? {
                tracing::info!(round = prev, node = %id, "a node of the previous round is done (its workers succeeded)");
                self.mark_gone(prev, id, true).await?;
            }
        }
        Ok(())
    }

    /// Without a quorum, a round must not seal: this side of a partition may be the smaller
    /// one, and the other side, with more than half of the nodes, moves the store and trains.
    /// Waits a heartbeat interval for more nodes (the partition heals, replacements come, a
    /// silent node's connection turns out closed), up to join_timeout.
    async fn wait_for_quorum(
        &self,
        round: u64,
        joined: u64,
        previous: Option<Previous>,
        (deadline, started): (Instant, Instant),
        warn: bool,
    ) -> Result<(), RendezvousError> {
        let quorum_of = previous.map_or(0, |p| p.quorum_of);
        let what = format!(
            "a quorum for round {round}: {joined} of the {quorum_of} nodes of round {} that did not leave are here, and at least half must be (the others stopped answering without leaving: a partition may have cut this side off, and the other side may be training)",
            round - 1
        );
        if Instant::now() >= deadline {
            return Err(RendezvousError::Timeout {
                waited_s: started.elapsed().as_secs_f64(),
                what: format!("waited for {what}"),
            });
        }
        if warn {
            tracing::warn!(round, joined, quorum_of, "waiting for {what}");
        }
        let sealed = format!("r{round}/sealed");
        let step = self
            .conf
            .keep_alive_interval
            .min(deadline.saturating_duration_since(Instant::now()));
        match self.store.wait(&[sealed.as_str()], step).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_timeout() => self.count_departed(round).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `id`'s workers succeeded in `round` ([`Heartbeat::finish`]).
    async fn finished(&self, round: u64, id: &str) -> Result<bool, RendezvousError> {
        let key = format!("r{round}/hb/{id}");
        Ok(self.store.check(&[key.as_str()]).await? && self.store.get(&key).await? == FINISHED)
    }

    /// A member of `round`, other than this node, whose store connection has closed: its
    /// launcher is gone (killed with its pod, or its node), which breaks the others' collectives.
    pub async fn departed_member(
        &self,
        round: &RoundInfo,
    ) -> Result<Option<String>, RendezvousError> {
        let members = self
            .descriptions(round.round, round.group_world_size.into())
            .await?;
        for id in members
            .into_iter()
            .map(|d| d.id)
            .filter(|id| *id != self.me.id)
        {
            if !self.store.check(&[alive_key(&id).as_str()]).await? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The ids of every node that joined `round` so far (members and late arrivals).
    async fn members_of(&self, round: u64) -> Result<Vec<String>, RendezvousError> {
        let joined = self.store.add(&format!("r{round}/joined"), 0).await? as u64;
        let descs = self.descriptions(round, joined).await?;
        Ok(descs.into_iter().map(|d| d.id).collect())
    }

    /// The descriptions of the first `n` nodes to join `round`, in arrival order (one
    /// MULTI_GET, which waits for a node between its ADD and its SET).
    async fn descriptions(&self, round: u64, n: u64) -> Result<Vec<NodeDesc>, RendezvousError> {
        let keys: Vec<String> = (1..=n).map(|i| format!("r{round}/node/{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values = self.store.multi_get(&refs).await?;
        keys.iter()
            .zip(values)
            .map(|(key, value)| {
                serde_json::from_slice(&value).map_err(|e| RendezvousError::Corrupt {
                    key: key.clone(),
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// This node leaves the job (its pod is being deleted): the next round does not wait for it,
    /// and the members still running re-form at once (their watch on the next round's `joined`
    /// fires), not when their workers fail on the missing peer, which torch workers can take
    /// long to do, or when the heartbeat notices.
    pub async fn leave(&self) -> Result<(), RendezvousError> {
        let Some(round) = self.last_round else {
            return Ok(());
        };
        self.mark_gone(round, &self.me.id, true).await?;
        self.store
            .set(&format!("r{round}/left"), self.me.id.as_bytes())
            .await?;
        self.store.add(&Self::next_round_key(round), 0).await?;
        Ok(())
    }

    /// The node that last left `round` on its way out ([`Self::leave`]), if any.
    pub async fn left(&self, round: u64) -> Result<Option<String>, RendezvousError> {
        let key = format!("r{round}/left");
        if !self.store.check(&[key.as_str()]).await? {
            return Ok(None);
        }
        let id = self.store.get(&key).await?;
        Ok(Some(String::from_utf8_lossy(&id).into_owned()))
    }

    /// Reads every member's description of the sealed round and writes each its assignment.
    async fn write_assignments(&self, round: u64, sealed: u64) -> Result<(), RendezvousError> {
        let r = format!("r{round}");
        let members = self.descriptions(round, sealed).await?;
        let assignments = assign(round, &members);
        let pairs: Vec<(String, Vec<u8>)> = assignments
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    format!("{r}/assign/{}", i + 1),
                    serde_json::to_vec(a).expect("assignment serializes"),
                )
            })
            .collect();
        self.store.multi_set(pairs).await?;
        Ok(())
    }

    async fn wait_keys(
        &self,
        keys: &[String],
        deadline: Instant,
        started: Instant,
        what: &str,
    ) -> Result<(), RendezvousError> {
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let left = deadline.saturating_duration_since(Instant::now());
        match self.store.wait(&refs, left).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_timeout() => Err(RendezvousError::Timeout {
                waited_s: started.elapsed().as_secs_f64(),
                what: format!("waited for {what}"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Rank 0 of `round` tells the others where the round's worker store is.
    pub async fn publish_master(
        &self,
        round: u64,
        addr: &str,
        port: u16,
    ) -> Result<(), RendezvousError> {
        self.store
            .set(&format!("r{round}/MASTER_ADDR"), addr.as_bytes())
            .await?;
        self.store
            .set(
                &format!("r{round}/MASTER_PORT"),
                port.to_string().as_bytes(),
            )
            .await?;
        Ok(())
    }

    /// Where rank 0 of `round` hosts the round's worker store (waits until it says).
    pub async fn master_of(&self, round: u64) -> Result<(String, u16), RendezvousError> {
        let (addr_key, port_key) = (
            format!("r{round}/MASTER_ADDR"),
            format!("r{round}/MASTER_PORT"),
        );
        let values = self
            .store
            .multi_get(&[addr_key.as_str(), port_key.as_str()])
            .await?;
        let addr = String::from_utf8_lossy(&values[0]).into_owned();
        let port = parse_u64(&port_key, &values[1])?;
        let port = u16::try_from(port).map_err(|_| RendezvousError::Corrupt {
            key: port_key,
            detail: format!("{port} is not a port"),
        })?;
        Ok((addr, port))
    }

    /// Marks the run finished, so nodes that arrive later do not wait for a job that is over.
    /// Also wakes nodes waiting in reserve for the next round, so they learn the job is over,
    /// and gives them a moment to read that before this node (maybe the store host) exits.
    pub async fn close(&self) -> Result<(), RendezvousError> {
        self.store.set("closed", b"1").await?;
        let Some(last) = self.last_round else {
            return Ok(());
        };
        let r = format!("r{last}");
        let joined = self.store.add(&format!("{r}/joined"), 0).await?;
        let sealed = parse_u64("sealed", &self.store.get(&format!("{r}/sealed")).await?)? as i64;
        let reserve = joined - sealed;
        if reserve > 0 {
            self.store
                .set(
                    &format!("{r}/reserve_expected"),
                    reserve.to_string().as_bytes(),
                )
                .await?;
        }
        // ADD 0 creates the key (and wakes its waiters) without counting a node.
        self.store.add(&Self::next_round_key(last), 0).await?;
        if reserve > 0 {
            let grace = self.conf.close.min(Duration::from_secs(5));
            if let Err(e) = self
                .store
                .wait(&[&format!("{r}/reserve_told")], grace)
                .await
            {
                tracing::debug!(error = %e, reserve, "reserve nodes did not all acknowledge the end of the job");
            }
        }
        Ok(())
    }

    /// A reserve node woken by [`close`](Self::close) says it has seen the end.
    async fn acknowledge_close(&self, round: u64) -> Result<(), RendezvousError> {
        let r = format!("r{round}");
        let acks = self.store.add(&format!("{r}/reserve_acks"), 1).await?;
        let expected = self.store.get(&format!("{r}/reserve_expected")).await?;
        if acks >= parse_u64("reserve_expected", &expected)? as i64 {
            self.store.set(&format!("{r}/reserve_told"), b"1").await?;
        }
        Ok(())
    }
}

/// A heartbeat key's value once its node's workers finished.
const FINISHED: &[u8] = b"finished";

/// Liveness inside a running round: every node bumps its own heartbeat key, and watches the
/// next node in group-rank order (a ring), so the cost per node stays constant however many
/// nodes there are. A node whose heartbeat has not moved for `keep_alive_interval *
/// keep_alive_max_attempt` (2 s by default; torchrun's 15 s) is declared lost. Time, not a count of
/// checks, decides: a starved agent whose own checks bunch up must not declare a live peer dead.
///
/// The same time is this node's lease: its peers count it lost no sooner than `dead_after`
/// after its last beat that reached the store, so a node that cannot renew the lease (cut off
/// by a partition, or its store gone) must have stopped its workers by then ([`Heartbeat::
/// fence_at`], [`Heartbeat::lease_end`]): two copies of a rank never run at once.
pub struct Heartbeat {
    store: StoreClient,
    own_key: String,
    peer_key: Option<String>,
    peer_id: String,
    last_seen: Option<Vec<u8>>,
    last_change: Instant,
    dead_after: Duration,
    beats: u64,
    /// When the newest beat known to be in the store was sent (it got there no sooner).
    renewed: Instant,
}

impl Heartbeat {
    /// Starts heartbeating for `round` (writes the first beat at once).
    pub async fn start(
        rdzv: &DynamicRendezvous,
        store: &StoreClient,
        round: &RoundInfo,
    ) -> Result<Heartbeat, StoreError> {
        // A heartbeat that cannot complete within heartbeat_timeout is a store problem: the
        // client then reports the connection lost and the agent re-joins.
        let store = rdzv
            .keys_on(store)
            .prefixed(&format!("r{}/hb", round.round))
            .with_timeout(rdzv.conf.heartbeat);
        let hb = Heartbeat {
            own_key: rdzv.me.id.clone(),
            peer_key: round.ring_peer.clone(),
            peer_id: round.ring_peer.clone().unwrap_or_default(),
            store,
            last_seen: None,
            last_change: Instant::now(),
            dead_after: rdzv.conf.keep_alive_interval * rdzv.conf.keep_alive_max_attempt,
            beats: 0,
            // The round was just formed through this store.
            renewed: Instant::now(),
        };
        hb.store.set(&hb.own_key, b"0").await?;
        Ok(hb)
    }

    /// Marks this node's workers as finished: its peer stops watching it, since a node waiting
    /// at the exit barrier beats no more but is not lost (its peer may still be finishing, e.g.
    /// rank 0 writing the final checkpoint).
    pub async fn finish(&mut self) -> Result<(), StoreError> {
        self.store.set(&self.own_key, FINISHED).await
    }

    /// One beat and one look at the peer; `Some(peer)` once the peer counts as lost.
    pub async fn tick(&mut self) -> Result<Option<String>, StoreError> {
        self.beats += 1;
        let sent = Instant::now();
        self.store
            .set(&self.own_key, self.beats.to_string().as_bytes())
            .await?;
        // SET has no reply: the next reply on the connection says it is in.
        let Some(peer_key) = &self.peer_key else {
            self.store.ping().await?;
            self.renewed = sent;
            return Ok(None);
        };
        let present = self.store.check(&[peer_key.as_str()]).await?;
        self.renewed = sent;
        let seen = if present {
            Some(self.store.get(peer_key).await?)
        } else {
            None
        };
        if seen.as_deref() == Some(FINISHED) {
            return Ok(None);
        }
        if seen.is_some() && seen != self.last_seen {
            self.last_seen = seen;
            self.last_change = Instant::now();
            return Ok(None);
        }
        Ok((self.last_change.elapsed() >= self.dead_after).then(|| self.peer_id.clone()))
    }

    /// When this node's lease ends unless renewed: its peers may count it lost from then.
    pub fn lease_end(&self) -> Instant {
        self.renewed + self.dead_after
    }

    /// When a node that could not renew its lease starts stopping its workers: a quarter of
    /// the lease before it ends, which is their time to exit. A beat that starts late (this
    /// agent was starved of CPU) still gets that quarter to get through: a starved node is
    /// rarely a lost one, and a false fence restarts the whole job.
    pub fn fence_at(&self) -> Instant {
        let quarter = self.dead_after / 4;
        (self.lease_end() - quarter).max(Instant::now() + quarter)
    }

    /// The error of a lease that could not be renewed in time.
    pub fn lease_lost(&self) -> StoreError {
        StoreError::Timeout {
            addr: self.store.addr().to_string(),
            what: "renewing this node's heartbeat lease".into(),
            timeout: self.dead_after * 3 / 4,
        }
    }
}

enum Joined {
    Member(RoundInfo),
    /// Arrived after the round was sealed: [`Placement::OpenNext`] or [`Placement::Reserve`].
    Late {
        sealed: u64,
        placement: Placement,
    },
}

/// What the `k`-th node to arrive in a round of `min..=max` nodes writes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// This node completes the minimum: it sets `r<r>/min_reached`.
    pub reaches_min: bool,
    /// This node completes the maximum: it seals the round at `max` without waiting.
    pub seals: Option<u64>,
}

pub fn on_arrival(k: u64, min: u64, max: u64) -> Arrival {
    Arrival {
        reaches_min: k == min,
        seals: (k == max).then_some(max),
    }
}

/// The nodes of the round before a re-form, members and those that came too late for it (they
/// come to the next round, from reserve or at once): how many are still alive (joined minus
/// gone), how many of them joined the new round so far, and how many did not provably leave
/// (the quorum's base).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previous {
    pub live: u64,
    pub returned: u64,
    pub quorum_of: u64,
}

/// Whether `joined` nodes may form a round after `previous`: at least half of the previous
/// round's nodes that did not provably leave (left on a signal, or their store connection
/// closed) must be among them; replacements and new nodes count. A partition can leave the
/// store on its smaller side, whose heartbeats see the others fall silent: without this rule it
/// would re-form and train while the larger side, which moves the store only with more than
/// half of those nodes (`store_failover`), trains too, two copies of every rank. So at most one
/// side forms a round; a tie goes to the side that kept the store.
pub fn has_quorum(joined: u64, previous: Option<Previous>) -> bool {
    previous.is_none_or(|p| joined * 2 >= p.quorum_of)
}

/// The size to seal a round at before its last call runs out, if nobody else is coming: with at
/// least `min` joined, a re-form once every live node of the previous round is back (new
/// nodes that joined meanwhile come along; ones still starting join later, as a scale-up), a
/// store's first round once the `expected` number of nodes is in. Never above `max`.
pub fn seal_early(
    joined: u64,
    min: u64,
    max: u64,
    previous: Option<Previous>,
    expected: Option<u64>,
) -> Option<u64> {
    if joined < min || !has_quorum(joined, previous) {
        return None;
    }
    let complete = match previous {
        Some(p) => p.returned >= p.live,
        None => expected.is_some_and(|e| joined >= e.clamp(min, max)),
    };
    (complete || joined >= max).then(|| joined.min(max))
}

/// The size a round is sealed at when its last call runs out: everyone joined so far, up to
/// `max`.
pub fn seal_at(joined: u64, max: u64) -> u64 {
    joined.min(max)
}

/// Where the `k`-th arrival of a round sealed at `sealed` nodes stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the round.
    Member,
    /// Too late for a round that is not full: open the next round and join it.
    OpenNext,
    /// Too late for a full round: wait in reserve until the next round opens.
    Reserve,
}

pub fn placement(k: u64, sealed: u64, max: u64) -> Placement {
    if k <= sealed {
        Placement::Member
    } else if sealed < max {
        Placement::OpenNext
    } else {
        Placement::Reserve
    }
}

/// Static rendezvous: `nnodes` nodes, ranks given by `--node-rank`. Every node counts itself in
/// and waits until all have, so workers start only when the whole group is there.
pub async fn static_round(
    store: &StoreClient,
    run_id: &str,
    node_rank: u32,
    nnodes: u32,
    nproc: u32,
    timeout: Duration,
) -> Result<RoundInfo, RendezvousError> {
    let store = store.prefixed(&format!("static/{run_id}"));
    let started = Instant::now();
    store
        .set(&format!("nproc/{node_rank}"), nproc.to_string().as_bytes())
        .await?;
    let arrived = store.add("arrived", 1).await?;
    if arrived == nnodes as i64 {
        store.set("ready", b"1").await?;
    }
    if nnodes > 1 {
        tracing::info!(
            node_rank,
            nnodes,
            timeout_s = timeout.as_secs(),
            "waiting for all static nodes to arrive"
        );
    }
    match store.wait(&["ready"], timeout).await {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            return Err(RendezvousError::Timeout {
                waited_s: started.elapsed().as_secs_f64(),
                what: format!(
                    "waited for all {nnodes} nodes of the static rendezvous (--nnodes); check that every node uses the same --master-addr/--master-port and a distinct --node-rank"
                ),
            });
        }
        Err(e) => return Err(e.into()),
    }
    let keys: Vec<String> = (0..nnodes).map(|r| format!("nproc/{r}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values = store.multi_get(&refs).await?;
    let nprocs: Vec<u32> = keys
        .iter()
        .zip(values)
        .map(|(k, v)| parse_u64(k, &v).map(|n| n as u32))
        .collect::<Result<_, _>>()?;
    Ok(RoundInfo {
        round: 0,
        group_rank: node_rank,
        group_world_size: nnodes,
        base_global_rank: nprocs[..node_rank as usize].iter().sum(),
        world_size: nprocs.iter().sum(),
        restart_count: 0,
        ring_peer: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, index: Option<u32>, nproc: u32) -> NodeDesc {
        NodeDesc {
            id: id.into(),
            host: "h".into(),
            index,
            nproc,
            next_restart: 0,
        }
    }

    #[test]
    fn ranks_follow_node_index_then_arrival() {
        let mut members = vec![
            node("c", Some(2), 4),
            node("x", None, 1),
            node("a", Some(0), 2),
            node("y", None, 1),
        ];
        members[1].next_restart = 3;
        let a = assign(7, &members);
        assert!(a.iter().all(|a| a.round == 7));
        let ranks: Vec<u32> = a.iter().map(|a| a.group_rank).collect();
        assert_eq!(ranks, [1, 2, 0, 3]);
        let bases: Vec<u32> = a.iter().map(|a| a.base_global_rank).collect();
        assert_eq!(bases, [2, 6, 0, 7]);
        assert!(
            a.iter()
                .all(|a| a.world_size == 8 && a.group_world_size == 4 && a.restart_count == 3)
        );
        let peers: Vec<&str> = a.iter().map(|a| a.ring_peer.as_deref().unwrap()).collect();
        assert_eq!(peers, ["x", "y", "c", "a"]);
        assert_eq!(assign(0, &members[..1])[0].ring_peer, None);
    }

    #[test]
    fn node_index_from_pod_name_or_env() {
        let env = BTreeMap::new();
        assert_eq!(node_index(&env, "train-worker-3"), Some(3));
        assert_eq!(
            node_index(&env, "train-worker-12.train.ns.svc.cluster.local"),
            Some(12)
        );
        assert_eq!(node_index(&env, "laptop"), None);
        let env = BTreeMap::from([("ELASTICJOB_NODE_INDEX".to_string(), "5".to_string())]);
        assert_eq!(node_index(&env, "train-worker-3"), Some(5));
    }

    #[test]
    fn localhost_is_local() {
        assert!(is_local_host("localhost"));
        assert!(is_local_host("127.0.0.1"));
        assert!(is_local_host("::1"));
    }

    #[test]
    fn conf_timeouts() {
        let conf = BTreeMap::from([
            ("join_timeout".to_string(), "5".to_string()),
            ("last_call_timeout".to_string(), "0.5".to_string()),
            ("'unknown".to_string(), "x'".to_string()),
        ]);
        let t = parse_conf(&conf).unwrap();
        assert_eq!(t.join, Duration::from_secs(5));
        assert_eq!(t.last_call, Duration::from_millis(500));
        assert_eq!(t.heartbeat, DEFAULT_HEARTBEAT_TIMEOUT);
        assert_eq!(t.close, Duration::from_secs(30));
        assert_eq!(
            t.keep_alive_interval * t.keep_alive_max_attempt,
            Duration::from_secs(2)
        );
        assert_eq!(t.expected_nodes, None);
        let expected = BTreeMap::from([("expected_nodes".to_string(), "3".to_string())]);
        assert_eq!(parse_conf(&expected).unwrap().expected_nodes, Some(3));
        let bad = BTreeMap::from([("expected_nodes".to_string(), "0".to_string())]);
        assert!(parse_conf(&bad).unwrap_err().contains("expected_nodes=0"));
        // 1e300 and inf were more than a Duration holds: a panic.
        for value in ["-1", "0", "1e-300", "1e300", "inf", "NaN"] {
            let bad = BTreeMap::from([("join_timeout".to_string(), value.to_string())]);
            let err = parse_conf(&bad).unwrap_err();
            assert!(
                err.contains(&format!("join_timeout={value}")) && err.contains("must be positive"),
                "{err}"
            );
        }
        let bad = BTreeMap::from([("last_call_timeout".to_string(), "soon".to_string())]);
        assert!(
            parse_conf(&bad)
                .unwrap_err()
                .contains("last_call_timeout=soon")
        );
    }

    #[test]
    fn arrivals_mark_the_minimum_and_the_maximum_seals() {
        // (k, min, max) → (reaches_min, seals)
        let table = [
            (1, 2, 4, (false, None)),
            (2, 2, 4, (true, None)),
            (4, 2, 4, (false, Some(4))),
            // min == max: the same arrival does both.
            (3, 3, 3, (true, Some(3))),
            (5, 2, 4, (false, None)),
        ];
        for (k, min, max, (reaches_min, seals)) in table {
            let want = Arrival { reaches_min, seals };
            assert_eq!(on_arrival(k, min, max), want, "k={k} min={min} max={max}");
        }
    }

    #[test]
    fn a_round_closes_early_when_nobody_else_is_coming() {
        let prev = |live, returned| {
            Some(Previous {
                live,
                returned,
                quorum_of: live,
            })
        };
        // (joined, min, max, previous, expected) → seal at
        #[rustfmt::skip]
        let table = [
            // A store's first round: torchrun's rule without an expectation (the last call).
            (2, 2, 4, None,         None,    None),
            (4, 2, 4, None,         None,    Some(4)),
            // ... and closes as soon as the expected replicas are in.
            (2, 2, 4, None,         Some(3), None),
            (3, 2, 4, None,         Some(3), Some(3)),
            // An expectation outside min..=max is clamped to it.
            (2, 2, 4, None,         Some(1), Some(2)),
            (1, 2, 4, None,         Some(1), None),
            // A re-form: 3 members, 1 gone, both others back.
            (2, 2, 4, prev(2, 2),   None,    Some(2)),
            // ... one of them still missing: wait (the last call bounds it).
            (2, 2, 4, prev(3, 2),   None,    None),
            // ... a new node came along with the returning ones.
            (3, 2, 4, prev(2, 2),   Some(2), Some(3)),
            // ... never below min, however many are gone.
            (1, 2, 4, prev(1, 1),   None,    None),
            (5, 2, 4, prev(9, 1),   None,    Some(4)),
            // ... never without a quorum: 1 of the 3 nodes of the last round that did not leave.
            (1, 1, 4, Some(Previous { live: 1, returned: 1, quorum_of: 3 }), None, None),
        ];
        for (joined, min, max, previous, expected, want) in table {
            assert_eq!(
                seal_early(joined, min, max, previous, expected),
                want,
                "joined={joined} min={min} max={max} previous={previous:?} expected={expected:?}"
            );
        }
    }

    #[test]
    fn a_round_forms_only_with_half_of_the_last_round_that_did_not_leave() {
        let after = |quorum_of| {
            Some(Previous {
                live: 0,
                returned: 0,
                quorum_of,
            })
        };
        // (joined, quorum_of) → may form
        let table = [
            // Partitions of 5: the side with 2 waits; the side with 3 moved the store (more
            // than half) and forms.
            (2, 5, false),
            (3, 5, true),
            // A tie goes to the side that kept the store (the other needs more than half).
            (1, 2, true),
            (2, 4, true),
            // Everyone else left on a signal: nobody to wait for.
            (1, 1, true),
            // Replacements count.
            (3, 4, true),
        ];
        for (joined, quorum_of, want) in table {
            assert_eq!(
                has_quorum(joined, after(quorum_of)),
                want,
                "joined={joined} quorum_of={quorum_of}"
            );
        }
        assert!(has_quorum(1, None), "a store's first round needs none");
    }

    #[test]
    fn a_round_seals_at_who_joined_capped_at_max() {
        assert_eq!(seal_at(3, 4), 3);
        assert_eq!(seal_at(6, 4), 4);
    }

    #[test]
    fn late_arrivals_open_the_next_round_or_wait_in_reserve() {
        // (k, sealed, max) → placement
        let table = [
            (1, 2, 4, Placement::Member),
            (2, 2, 4, Placement::Member),
            (3, 2, 4, Placement::OpenNext),
            (4, 4, 4, Placement::Member),
            (5, 4, 4, Placement::Reserve),
            (9, 4, 4, Placement::Reserve),
        ];
        for (k, sealed, max, want) in table {
            assert_eq!(
                placement(k, sealed, max),
                want,
                "k={k} sealed={sealed} max={max}"
            );
        }
    }
}
