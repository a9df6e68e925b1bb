//! Worker processes: spawning each in its own session (its own process group), reaping,
//! stopping a group (signal, grace, SIGKILL), and making sure nothing outlives the launcher.
//!
//! Three mechanisms keep the promise "no process left behind":
//! - the launcher is a child subreaper, so orphaned grandchildren are reparented to it and
//!   reaped here instead of escaping to init;
//! - each worker gets `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with the launcher;
//! - a guardian process (this binary, `__guardian`) holds the list of worker process groups and
//!   kills them when the launcher's end of a pipe closes, which happens however the launcher
//!   dies, even by SIGKILL. torchrun has none of this and leaves orphans.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

pub const GUARDIAN_ARG: &str = "__guardian";

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{prefix} `{program}`: {source}", prefix = elasticjob_contract::report::message::CANNOT_START_WORKER)]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot start the process guardian: {0}")]
    Guardian(std::io::Error),
    #[error("cannot install the SIGCHLD handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot start a standby interpreter (--prewarm): {0}")]
    Standby(std::io::Error),
}

/// Makes this process a child subreaper (Linux), so descendants orphaned by a worker are
/// reparented here and can be reaped and killed.
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper");
    }
}

/// Raises the soft limit on open files to the hard limit: data-loading workers inherit the
/// higher limit, as they would under most container runtimes.
pub fn raise_open_files_limit() {
    if let Err(e) = elasticjob_contract::limits::raise_open_files_limit() {
        tracing::warn!(error = %e, "cannot raise the open files limit");
    }
}

/// Everything needed to start one worker process.
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// Starts a worker as the leader of a new session, with a parent-death signal.
#[allow(unsafe_code)] // pre_exec: the session and death signal must be set between fork and exec
pub fn spawn(spec: ProcessSpec) -> Result<u32, WorkerError> {
    let parent = std::process::id() as libc::pid_t;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        // The launchers' secret is theirs: a worker that has it could end the job's rounds.
        .env_remove(elasticjob_contract::env::STORE_TOKEN)
        .envs(spec.env)
        .stdin(spec.stdin)
        .stdout(spec.stdout)
        .stderr(spec.stderr);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The launcher died between fork and prctl: do not run unsupervised.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| WorkerError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    // The reaper collects the exit status; dropping `Child` neither waits nor kills.
    Ok(child.id())
}

/// The guardian's end of the bargain, seen from the launcher.
pub struct Guardian {
    pipe: std::process::ChildStdin,
}

impl Guardian {
    pub fn start() -> Result<Guardian, WorkerError> {
        let exe = std::env::current_exe().map_err(WorkerError::Guardian)?;
        let mut command = Command::new(exe);
        command
            .arg(GUARDIAN_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0);
        let mut child = command.spawn().map_err(WorkerError::Guardian)?;
        let pipe = child.stdin.take().expect("piped stdin");
        Ok(Guardian { pipe })
    }

    pub fn watch(&mut self, pgid: u32) {
        self.send(&format!("+{pgid}\n"));
    }

    pub fn forget(&mut self, pgid: u32) {
        self.send(&format!("-{pgid}\n"));
    }

    fn send(&mut self, line: &str) {
        if let Err(e) = self.pipe.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "process guardian is gone; workers may outlive a killed launcher");
        }
    }
}

/// The guardian process: records process groups from stdin and SIGKILLs the remaining ones
/// when stdin reaches EOF (the launcher exited or was killed).
#[allow(unsafe_code)] // setting a signal disposition has no safe wrapper in nix
pub fn guardian_main() -> i32 {
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: setting a disposition to SIG_IGN installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
    }
    let mut groups = std::collections::BTreeSet::new();
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { break };
        match (
            line.get(..1),
            line.get(1..).and_then(|n| n.parse::<i32>().ok()),
        ) {
            (Some("+"), Some(pgid)) => {
                groups.insert(pgid);
            }
            (Some("-"), Some(pgid)) => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    0
}

/// Exit code as torchrun reports it: the code, or minus the signal number.
pub fn exit_code(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), -(sig as i32))),
        _ => None,
    }
}

/// Collects exit statuses of all children (workers and reparented orphans) as SIGCHLD arrives.
pub struct Reaper {
    sigchld: tokio::signal::unix::Signal,
    /// Workers whose exit we wait for. Other children (orphans reparented to us, the guardian)
    /// are reaped but not recorded: pids are reused, and a stale record would make a new
    /// worker with the same pid look dead at once.
    watched: HashSet<i32>,
    exits: HashMap<i32, i32>,
    fallback_poll: Duration,
}

impl Reaper {
    /// `fallback_poll` bounds the wait when a SIGCHLD is coalesced or missed (the monitor
    /// interval).
    pub fn new(fallback_poll: Duration) -> Result<Reaper, WorkerError> {
        let sigchld = signal(SignalKind::child()).map_err(WorkerError::Signal)?;
        Ok(Reaper {
            sigchld,
            watched: HashSet::new(),
            exits: HashMap::new(),
            fallback_poll,
        })
    }

    /// Reaps everything that has exited so far.
    pub fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let Some((pid, code)) = exit_code(status)
                        && self.watched.remove(&pid)
                    {
                        self.exits.insert(pid, code);
                    }
                }
            }
        }
    }

    /// Starts recording the exit of a freshly spawned worker.
    pub fn watch(&mut self, pid: u32) {
        self.exits.remove(&(pid as i32));
        self.watched.insert(pid as i32);
    }

    /// Takes the exit code of `pid` if it has exited.
    pub fn take_exit(&mut self, pid: u32) -> Option<i32> {
        self.exits.remove(&(pid as i32))
    }

    /// Waits for the next child state change (or the fallback poll), then reaps.
    pub async fn changed(&mut self) {
        let _ = tokio::time::timeout(self.fallback_poll, self.sigchld.recv()).await;
        self.reap();
    }
}

/// Whether any process of the group is still alive (or a zombie not yet reaped).
pub fn group_alive(pgid: u32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid as i32), None), Err(Errno::ESRCH))
}

pub fn signal_group(pgid: u32, sig: Signal) {
    match killpg(Pid::from_raw(pgid as i32), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pgid, signal = %sig, error = %e, "cannot signal worker process group")
        }
    }
}

/// Stops every given process group: `first` to each, then SIGKILL after `grace` to whatever is
/// left; returns once every group is empty (or after a bounded wait for processes stuck in the
/// kernel, which is logged). Exit codes of leaders stay in the reaper.
pub async fn stop_groups(pgids: &[u32], first: Signal, grace: Duration, reaper: &mut Reaper) {
    reaper.reap();
    let alive = |pgids: &[u32]| {
        pgids
            .iter()
            .copied()
            .filter(|&p| group_alive(p))
            .collect::<Vec<_>>()
    };
    let mut remaining = alive(pgids);
    if remaining.is_empty() {
        return;
    }
    for &pgid in &remaining {
        signal_group(pgid, first);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while !remaining.is_empty() && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline, reaper.changed()).await;
        reaper.reap();
        remaining = alive(&remaining);
    }
    if remaining.is_empty() {
        return;
    }
    tracing::warn!(groups = ?remaining, grace_s = grace.as_secs_f64(), "workers did not stop after {first}; sending SIGKILL");
    for &pgid in &remaining {
        signal_group(pgid, Signal::SIGKILL);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !remaining.is_empty() && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline, reaper.changed()).await;
        remaining = alive(&remaining);
    }
    if !remaining.is_empty() {
        tracing::error!(groups = ?remaining, "worker processes survive SIGKILL (stuck in uninterruptible sleep?); leaving them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reaper_records_only_watched_children() {
        let mut reaper = Reaper::new(Duration::from_millis(20)).unwrap();
        let unwatched = Command::new("true").spawn().unwrap().id();
        let watched = Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap()
            .id();
        reaper.watch(watched);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let code = loop {
            reaper.changed().await;
            if let Some(code) = reaper.take_exit(watched) {
                break code;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "watched child never reaped"
            );
        };
        assert_eq!(code, 7);
        assert_eq!(
            reaper.take_exit(unwatched),
            None,
            "an unwatched exit must not be kept"
        );
    }

    #[test]
    fn exit_codes_follow_popen() {
        let pid = Pid::from_raw(7);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some((7, 3)));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((7, -9))
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }
}
