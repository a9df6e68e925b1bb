//! The body of the launcher's read-only `GET /status` (with `--status-port`), which the
//! operator polls while the pod runs: its state, the rendezvous round, the world size and the
//! worker-group restarts so far.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::KIND;

/// Where the launcher is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Waiting for a rendezvous round to form (at start, and between rounds).
    Rendezvous,
    /// This round's workers are running.
    Running,
    /// The workers finished; waiting for the other nodes at the exit barrier, or done.
    Succeeded,
    /// The workers failed with no restarts left, or the launcher failed.
    Failed,
    /// A signal arrived; the workers are being stopped.
    Stopping,
    /// A state this version does not know (a newer launcher's).
    #[serde(other)]
    Unknown,
}

impl State {
    /// The states a launcher reports.
    pub const REPORTED: [State; 5] = [
        State::Rendezvous,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Stopping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Rendezvous => "Rendezvous",
            State::Running => "Running",
            State::Succeeded => "Succeeded",
            State::Failed => "Failed",
            State::Stopping => "Stopping",
            State::Unknown => "Unknown",
        }
    }
}

/// A snapshot of the launcher's progress. Every field but `kind` and `state` has a default,
/// so a body from an older launcher still parses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Always [`KIND`].
    pub kind: String,
    pub state: State,
    /// The rendezvous round of the current (or last) worker group.
    #[serde(default)]
    pub round: Option<u64>,
    /// This node's rank among the round's nodes.
    #[serde(default)]
    pub group_rank: Option<u32>,
    /// Nodes in the round.
    #[serde(default)]
    pub nnodes: Option<u32>,
    /// Workers in the round, all nodes together (`WORLD_SIZE`).
    #[serde(default)]
    pub world_size: Option<u32>,
    /// Workers on this node.
    #[serde(default)]
    pub local_world_size: u32,
    /// Worker-group restarts after this node's workers failed (the `--max-restarts` budget).
    #[serde(default)]
    pub restart_count: u32,
    #[serde(default)]
    pub max_restarts: u32,
    /// Rounds re-formed without a failure here: a node joined or left, or the store was lost.
    #[serde(default)]
    pub re_forms: u32,
    /// What this node's workers reported about their training (the newest report), if they
    /// report at all ([`PROGRESS_FILE_ENV`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
    /// Worker groups this node restarted because they stopped reporting progress.
    #[serde(default)]
    pub stalls: u32,
    /// The last of those: which local ranks were silent, and since when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stall: Option<Stall>,
}

/// The worker environment variable naming the file a worker appends its progress to, one JSON
/// object per line: `{"step": 120, "total": 1000, "loss": 0.31, ...}` (`step` required, `total`
/// optional, any other numeric field is a metric). One file per local rank.
pub const PROGRESS_FILE_ENV: &str = "ELASTICJOB_PROGRESS_FILE";

/// The newest progress report of a node's workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Training {
    /// The highest step reported by any local rank.
    pub step: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// The newest numeric metrics reported (loss, throughput, ...).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Unix seconds of the newest report.
    pub updated: f64,
    /// Steps per second, measured over this round's reports (None until there are two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_second: Option<f64>,
}

/// A worker group that stopped making progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stall {
    pub round: u64,
    /// Global ranks that reported in this round and then fell silent.
    pub silent_ranks: Vec<u32>,
    /// Seconds since the silent ranks last reported.
    pub silent_seconds: f64,
    /// Unix seconds when the stall was declared.
    pub at: f64,
}

impl Progress {
    /// A launcher's progress before its first round.
    pub fn new(local_world_size: u32, max_restarts: u32) -> Self {
        Progress {
            kind: KIND.into(),
            state: State::Rendezvous,
            round: None,
            group_rank: None,
            nnodes: None,
            world_size: None,
            local_world_size,
            restart_count: 0,
            max_restarts,
            re_forms: 0,
            training: None,
            stalls: 0,
            last_stall: None,
        }
    }

    /// Reads a `/status` body; None unless it is a launcher's.
    pub fn parse(body: &str) -> Option<Progress> {
        serde_json::from_str::<Progress>(body)
            .ok()
            .filter(|p| p.kind == KIND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_camel_case() {
        let p = Progress {
            state: State::Running,
            round: Some(2),
            group_rank: Some(1),
            nnodes: Some(2),
            world_size: Some(8),
            restart_count: 1,
            re_forms: 3,
            ..Progress::new(4, 3)
        };
        let json = serde_json::to_string(&p).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["kind"], KIND);
        assert_eq!(v["state"], "Running");
        assert_eq!(v["worldSize"], 8);
        assert_eq!(v["localWorldSize"], 4);
        assert_eq!(v["reForms"], 3);
        assert_eq!(Progress::parse(&json), Some(p));
    }

    /// The first launchers with `/status` sent only these fields.
    #[test]
    fn an_older_body_still_parses() {
        let p = Progress::parse(
            r#"{"kind":"elastic-launch/v1","state":"Running","round":2,"worldSize":4,"restartCount":1}"#,
        )
        .unwrap();
        assert_eq!(
            (p.state, p.round, p.world_size, p.restart_count),
            (State::Running, Some(2), Some(4), 1)
        );
    }

    #[test]
    fn a_newer_state_is_unknown_and_other_bodies_are_not_progress() {
        let p = Progress::parse(r#"{"kind":"elastic-launch/v1","state":"Draining"}"#).unwrap();
        assert_eq!(p.state.as_str(), "Unknown");
        assert_eq!(
            Progress::parse(r#"{"kind":"other","state":"Running"}"#),
            None
        );
        assert_eq!(Progress::parse("<html>"), None);
    }

    #[test]
    fn state_names_are_their_json() {
        for s in State::REPORTED {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
