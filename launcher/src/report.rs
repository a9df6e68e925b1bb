//! What the pod tells Kubernetes when the launcher ends: the contract's
//! [`RunReport`], written to the container's termination message file, where the operator
//! reads which rank failed and why, and the final worker-group restart count.

use std::path::{Path, PathBuf};

use elasticjob_contract::report::{Reason, RunReport};

use crate::failures::ProcessFailure;

/// The default path inside a Kubernetes container.
pub const KUBERNETES_TERMINATION_LOG: &str = "/dev/termination-log";

/// What the launcher knows about its run when it ends, whatever the ending.
#[derive(Debug, Clone, Copy)]
pub struct RunFacts<'a> {
    pub host: &'a str,
    pub restart_count: u32,
    pub max_restarts: u32,
    pub round: Option<u64>,
}

impl RunFacts<'_> {
    fn report(&self, reason: Reason, message: String, timestamp: i64) -> RunReport {
        RunReport {
            restart_count: self.restart_count,
            max_restarts: self.max_restarts,
            round: self.round,
            ..RunReport::new(reason, message, self.host, timestamp)
        }
    }

    pub fn succeeded(&self) -> RunReport {
        self.report(Reason::Succeeded, "the workers succeeded".into(), now())
    }

    /// The workers failed with no restarts left; `root` is the first failure.
    pub fn worker_failed(&self, root: &ProcessFailure) -> RunReport {
        RunReport {
            rank: Some(root.global_rank),
            local_rank: Some(root.local_rank),
            exit_code: Some(root.exitcode),
            signal: root.signal_name().map(str::to_string),
            ..self.report(Reason::WorkerFailed, root.message.clone(), root.timestamp)
        }
    }

    /// The launcher itself ended the run: a signal, or an error of its own.
    pub fn launcher(&self, reason: Reason, message: String) -> RunReport {
        self.report(reason, message, now())
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Where to write the report: the explicit setting, else the Kubernetes default when it
/// exists and is writable (so running outside a pod writes nothing).
pub fn termination_message_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.into());
    }
    let default = Path::new(KUBERNETES_TERMINATION_LOG);
    let writable = std::fs::OpenOptions::new()
        .append(true)
        .open(default)
        .is_ok();
    writable.then(|| default.into())
}

/// Writes `report` to `path`, cut to what Kubernetes keeps.
pub fn write_report(path: &Path, report: &RunReport) -> std::io::Result<()> {
    std::fs::write(path, report.to_bounded_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_failure_names_the_rank_and_keeps_the_run_facts() {
        let facts = RunFacts {
            host: "job-worker-1",
            restart_count: 2,
            max_restarts: 3,
            round: Some(4),
        };
        let root = ProcessFailure {
            local_rank: 1,
            global_rank: 3,
            pid: 7,
            exitcode: -9,
            error_file: None,
            message: "Signal 9 (SIGKILL) received by PID 7".into(),
            traceback: None,
            error_data: None,
            timestamp: 5,
        };
        let r = facts.worker_failed(&root);
        assert_eq!(r.reason, Reason::WorkerFailed);
        assert_eq!(
            (r.rank, r.local_rank, r.exit_code),
            (Some(3), Some(1), Some(-9))
        );
        assert_eq!(r.signal.as_deref(), Some("SIGKILL"));
        assert_eq!((r.restart_count, r.max_restarts, r.round), (2, 3, Some(4)));
        assert_eq!((r.host.as_str(), r.timestamp), ("job-worker-1", 5));
        assert_eq!(RunReport::parse(&r.to_bounded_json()), Some(r));
    }
}
