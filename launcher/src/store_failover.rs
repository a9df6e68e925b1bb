//! Where the rendezvous store lives when it can move: no pod is special.
//!
//! With `store_hosts` in `--rdzv-conf` (the operator sets `<job>-worker-{}.<service>...`), every
//! agent runs a store server at its own address on the endpoint's port, but only one store is
//! *active*: it holds this run's marker key. Agents find the store by probing every node's
//! address at once and using the lowest-indexed active one.
//! - At a job's start the `is_host` agent (pod 0) activates its own when none is active yet;
//!   the others wait until one is.
//! - When the active store is lost (its pod killed, its node gone), each member of the last
//!   round probes again; if more than half of that round's nodes answer, the lowest-indexed
//!   one activates its own store, seeded with the lost round minus its host, so the survivors
//!   re-form as soon as they are all in ([`crate::rendezvous::DynamicRendezvous::seed`]).
//!   The replacement pod finds that store like any new pod and joins as a scale-up; a
//!   recreated pod 0 does not start a fresh store while a node that was in a round answers.
//! - The majority rule keeps a node cut off by a partition from starting a store of its own:
//!   it keeps probing, and finds the store again when the network heals. Replacement pods
//!   count as alive: a job of two nodes that loses its store host re-forms on the survivor's
//!   store once the replacement answers.

use std::net::IpAddr;
use std::time::Duration;

use crate::store::{Connector, ServerConfig, StoreClient, StoreError, StoreServer};

/// How long one probe of one node waits for a TCP connect and its three requests: a live pod's
/// store answers in milliseconds, a lost node's never does, and every survivor waits this long
/// for it before it may move the store.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between probes while no store is active.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How often the node hosting the active store checks that no newer one is active elsewhere.
pub const SUPERSEDED_CHECK: Duration = Duration::from_secs(5);

/// Every node's store address: `pattern` with `{}` replaced by the node index, on `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHosts {
    pattern: String,
    pub port: u16,
    /// Indices `0..nodes` are probed (the job's maximum number of nodes).
    nodes: u32,
}

impl StoreHosts {
    /// From `store_hosts` in `--rdzv-conf`; `None` when it is not set (the store stays where
    /// the endpoint is, as torchrun's).
    pub fn from_conf(pattern: Option<&str>, port: u16, nodes: u32) -> Result<Option<Self>, String> {
        let Some(pattern) = pattern.map(str::trim).filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        if pattern.matches("{}").count() != 1 {
            return Err(format!(
                "store_hosts={pattern}: must hold one {{}} for the node index, as <job>-worker-{{}}.<service>"
            ));
        }
        Ok(Some(StoreHosts {
            pattern: pattern.to_string(),
            port,
            nodes,
        }))
    }

    /// How many nodes' addresses are probed.
    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// The address of node `index`.
    pub fn host(&self, index: u32) -> String {
        self.pattern.replace("{}", &index.to_string())
    }

    /// What node `index`'s own store binds: an IP literal binds that address (several agents
    /// on one machine, each on its own loopback address); a name is the pod's own, so every
    /// interface.
    pub fn bind_host(&self, index: u32) -> String {
        let host = self.host(index);
        match host.parse::<IpAddr>() {
            Ok(_) => host,
            Err(_) => "::".to_string(),
        }
    }

    /// How this node reaches its own store.
    pub fn own_host(&self, index: u32) -> String {
        match self.bind_host(index).as_str() {
            "::" => "localhost".to_string(),
            ip => ip.to_string(),
        }
    }

    /// Binds node `index`'s own store (inactive until [`activate`]).
    pub fn bind_own(&self, index: u32, config: ServerConfig) -> Result<StoreServer, StoreError> {
        crate::store::threads::bind(&self.bind_host(index), self.port, config)
    }
}

/// The key that makes a store the active one for `run_id`; its value is the store's
/// generation: 0 for the first, one more at each move.
pub fn active_key(run_id: &str) -> String {
    format!("rdzv/{run_id}/store_active")
}

/// The key a node sets on its own store once it has been a member of a round: a node that
/// answers a probe with it holds the job's state (the last round), a new pod does not.
pub fn member_key(run_id: &str) -> String {
    format!("rdzv/{run_id}/member")
}

/// An active store a probe found.
pub struct Active {
    pub index: u32,
    pub generation: u64,
    pub store: StoreClient,
}

/// What one probe of every node found.
pub struct Probe {
    /// The store to use: the newest generation, then the lowest index (a store that stayed
    /// active on the far side of a partition is older than the one the majority moved to).
    pub active: Option<Active>,
    /// Indices whose store answered, active or not: agents that are alive.
    pub answered: Vec<u32>,
    /// Of `answered`, those that have been members of a round ([`member_key`]).
    pub members: Vec<u32>,
}

/// Of the active stores found, as (index, generation), which to use: the newest, then the
/// lowest index.
pub fn pick(active: &[(u32, u64)]) -> Option<usize> {
    (0..active.len()).min_by_key(|&i| (std::cmp::Reverse(active[i].1), active[i].0))
}

/// Probes every node's store at once (each for at most [`PROBE_TIMEOUT`]).
/// `client_timeout` is the request timeout of the returned connection. With `newer_than`, the
/// first active store of a newer generation ends the probe: after a loss, that is where the
/// survivors moved, and waiting out the lost node's timeout would only delay the re-form.
pub async fn probe(
    hosts: &StoreHosts,
    run_id: &str,
    connector: &Connector,
    client_timeout: Duration,
    newer_than: Option<u64>,
) -> Probe {
    let mut probes = tokio::task::JoinSet::new();
    for i in 0..hosts.nodes {
        let (host, port) = (hosts.host(i), hosts.port);
        let (active_key, member_key) = (active_key(run_id), member_key(run_id));
        let connector = connector.clone();
        probes.spawn(async move {
            let c = connector
                .connect_once(&host, port, PROBE_TIMEOUT)
                .await
                .ok()?;
            let (generation, member) = tokio::time::timeout(PROBE_TIMEOUT, async {
                let member = c.check(&[member_key.as_str()]).await?;
                if !c.check(&[active_key.as_str()]).await? {
                    return Ok::<_, StoreError>((None, member));
                }
                let value = c.get(&active_key).await?;
                let generation = String::from_utf8_lossy(&value).trim().parse::<u64>().ok();
                Ok((generation, member))
            })
            .await
            .ok()?
            .ok()?;
            Some((i, generation, member, c.with_timeout(client_timeout)))
        });
    }
    let mut found = Vec::new();
    while let Some(done) = probes.join_next().await {
        let Ok(Some(answer)) = done else { continue };
        let newer = matches!((answer.1, newer_than), (Some(g), Some(lost)) if g > lost);
        found.push(answer);
        if newer {
            break;
        }
    }
    let answered = found.iter().map(|(i, ..)| *i).collect();
    let members = found.iter().filter(|f| f.2).map(|(i, ..)| *i).collect();
    let mut active: Vec<(u32, u64, StoreClient)> = found
        .into_iter()
        .filter_map(|(i, g, _, c)| Some((i, g?, c)))
        .collect();
    let keys: Vec<(u32, u64)> = active.iter().map(|(i, g, _)| (*i, *g)).collect();
    let active = pick(&keys).map(|k| {
        let (index, generation, store) = active.swap_remove(k);
        Active {
            index,
            generation,
            store,
        }
    });
    Probe {
        active,
        answered,
        members,
    }
}

/// Whether the store of `index` at `generation`, active, is superseded by the active store
/// `other` found: all nodes use `other` ([`pick`]): it is newer, or as new with a lower index
/// (two survivors that each missed the other's answer both moved the store).
pub fn superseded_by(index: u32, generation: u64, other: (u32, u64)) -> bool {
    other.0 != index && pick(&[(index, generation), other]) == Some(1)
}

/// Why this node looks for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looking {
    /// The job starts; `is_host` says whether this node hosts the store first (pod 0).
    Start { is_host: bool },
    /// The active store was lost; this node was a member of the last round, of `members`.
    AfterLoss { members: u64 },
    /// The active store was lost, but this node was in no round yet: it only waits.
    Waiting,
}

/// Whether this node activates its own store after a probe found none active.
/// - At the start, the first host (pod 0), unless a node that was in a round answers: then
///   the job is already running and lost its store, and its members re-form on one of theirs
///   (a recreated pod 0 that started a fresh store would make them start over, waiting out the
///   last call for nodes that are not coming).
/// - After a loss, the lowest-indexed member of a round that answers (a lower one that
///   answers will), and only while more than half of the last round's number of nodes answer
///   (members or not: a replacement pod is alive). A node cut off from the others by a
///   partition sees too few, and keeps looking for the store it lost (or the majority's)
///   rather than starting one of its own.
///
/// `answered` and `members` are a probe's ([`Probe`]).
pub fn should_activate(me: u32, looking: Looking, answered: &[u32], members: &[u32]) -> bool {
    match looking {
        Looking::Start { is_host } => is_host && members.is_empty(),
        Looking::AfterLoss { members: last } => {
            answered.len() as u64 * 2 > last && members.iter().all(|&i| i >= me)
        }
        Looking::Waiting => false,
    }
}

/// Makes this node's own store the active one, of `generation` (after whatever seeding the
/// caller did).
pub async fn activate(own: &StoreClient, run_id: &str, generation: u64) -> Result<(), StoreError> {
    own.set(&active_key(run_id), generation.to_string()).await?;
    // SET has no reply: a round trip so probes that follow see the marker.
    own.ping().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_names_every_node() {
        let h = StoreHosts::from_conf(Some("j-worker-{}.j.ns.svc"), 29400, 3)
            .unwrap()
            .unwrap();
        assert_eq!(h.host(2), "j-worker-2.j.ns.svc");
        assert_eq!(h.bind_host(2), "::");
        assert_eq!(h.own_host(2), "localhost");
        let ip = StoreHosts::from_conf(Some("127.0.1.{}"), 1, 3)
            .unwrap()
            .unwrap();
        assert_eq!(ip.bind_host(1), "127.0.1.1");
        assert_eq!(ip.own_host(1), "127.0.1.1");
        assert_eq!(StoreHosts::from_conf(None, 1, 3), Ok(None));
        assert_eq!(StoreHosts::from_conf(Some(" "), 1, 3), Ok(None));
        let err = StoreHosts::from_conf(Some("j-worker.j"), 1, 3).unwrap_err();
        assert!(err.contains("one {} for the node index"), "{err}");
    }

    #[test]
    fn the_newest_store_wins_then_the_lowest_index() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[(0, 0)]), Some(0));
        // Pod 0's store stayed active behind a partition; the majority moved to pod 1's.
        assert_eq!(pick(&[(0, 0), (1, 1)]), Some(1));
        assert_eq!(pick(&[(2, 1), (1, 1), (0, 0)]), Some(1));
    }

    #[test]
    fn a_store_gives_way_to_a_newer_one_or_an_as_new_lower_one() {
        assert!(superseded_by(0, 0, (1, 1)));
        assert!(superseded_by(2, 1, (1, 1)));
        assert!(!superseded_by(1, 1, (2, 1)));
        assert!(!superseded_by(1, 1, (1, 1)));
        assert!(!superseded_by(1, 2, (0, 1)));
    }

    #[test]
    fn the_first_host_or_the_lowest_survivor_activates() {
        let start = |is_host| Looking::Start { is_host };
        assert!(should_activate(0, start(true), &[0, 1], &[]));
        assert!(!should_activate(1, start(false), &[1], &[]));
        let lost = |members| Looking::AfterLoss { members };
        // Pod 0 of 3 lost: pod 1 answers, so pod 2 leaves it to pod 1.
        assert!(should_activate(1, lost(3), &[1, 2], &[1, 2]));
        assert!(!should_activate(2, lost(3), &[1, 2], &[1, 2]));
        // Pod 1 did not answer either (lost too): pod 2 is the lowest of a majority of 5.
        assert!(should_activate(2, lost(5), &[2, 3, 4], &[2, 3, 4]));
        // Pod 2 cut off from the others: alone it is no majority.
        assert!(!should_activate(2, lost(3), &[2], &[2]));
        // Two nodes: the survivor alone is no majority; with the replacement it is.
        assert!(!should_activate(1, lost(2), &[1], &[1]));
        assert!(should_activate(1, lost(2), &[0, 1], &[1]));
        assert!(!should_activate(2, Looking::Waiting, &[2], &[2]));
    }

    #[test]
    fn a_recreated_first_host_leaves_the_store_to_the_members() {
        // Pod 0's node was lost with the store: its replacement answers before the
        // survivors moved the store, and must not start a fresh one for them to adopt.
        let start = Looking::Start { is_host: true };
        assert!(!should_activate(0, start, &[0, 1, 2], &[1, 2]));
        // The survivors do not wait for it: it was in no round.
        let lost = Looking::AfterLoss { members: 3 };
        assert!(should_activate(1, lost, &[0, 1, 2], &[1, 2]));
        assert!(!should_activate(2, lost, &[0, 1, 2], &[1, 2]));
        // Every pod recreated at once: nobody holds a round; pod 0 starts afresh.
        assert!(should_activate(0, start, &[0, 1, 2], &[]));
    }
}
