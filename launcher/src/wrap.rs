//! `elastic-launch __wrap COMMAND...`: runs a shell command that calls `torchrun` itself
//! (`sh -c "pip install -r req.txt && torchrun train.py"`) once per pod, with this launcher
//! standing in as the `torchrun` it calls: `torchrun` on its PATH is this executable, which
//! reads the operator's `PET_*` variables as torchrun would.
//!
//! It stays the command's parent for the container's life: it forwards SIGTERM, SIGINT and
//! SIGHUP to the command's process group (so the launcher inside stops its workers
//! gracefully, even when the shell dies at once), waits for what is still shutting down after
//! a signal, and exits with the command's status.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use elasticjob_contract::install::TORCHRUN_LINK;

/// Signals passed on to the command.
const FORWARDED: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// `elastic-launch __wrap COMMAND...`: the command's exit status (128 + n when signal n ended
/// it), or 127 when it cannot be started.
pub fn wrap_main(argv: &[String]) -> u8 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!(
            "usage: elastic-launch __wrap COMMAND [ARGS...]\nruns COMMAND once, with `torchrun` on its PATH being this launcher"
        );
        return 2;
    };
    let torchrun_dir = match torchrun_dir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("elastic-launch __wrap: cannot put torchrun on the command's PATH: {e}");
            return 127;
        }
    };
    let code = run(program, args, &torchrun_dir.path);
    if torchrun_dir.made {
        let _ = std::fs::remove_dir_all(&torchrun_dir.path);
    }
    code
}

struct TorchrunDir {
    path: PathBuf,
    /// Made here (removed at the end), not the install directory.
    made: bool,
}

/// A directory whose `torchrun` is this executable: the one it was installed in (the
/// operator's `/elasticjob/bin`), else a private one made for the purpose.
fn torchrun_dir() -> std::io::Result<TorchrunDir> {
    let exe = std::fs::read_link("/proc/self/exe").or_else(|_| std::env::current_exe())?;
    if let Some(dir) = exe.parent()
        && std::fs::canonicalize(dir.join(TORCHRUN_LINK)).is_ok_and(|t| t == exe)
    {
        return Ok(TorchrunDir {
            path: dir.to_path_buf(),
            made: false,
        });
    }
    let dir = std::env::temp_dir().join(format!("elastic-launch-wrap-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::os::unix::fs::symlink(&exe, dir.join(TORCHRUN_LINK))?;
    Ok(TorchrunDir {
        path: dir,
        made: true,
    })
}

/// `dir` in front of `PATH`.
fn path_with(dir: &Path) -> OsString {
    let mut path = dir.as_os_str().to_owned();
    if let Some(old) = std::env::var_os("PATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(old);
    }
    path
}

#[allow(unsafe_code)] // pre_exec: the child must not inherit the blocked signal mask
fn run(program: &str, args: &[String], torchrun_dir: &Path) -> u8 {
    let mut forwarded = SigSet::empty();
    for sig in FORWARDED {
        forwarded.add(sig);
    }
    let mut waited = forwarded;
    waited.add(Signal::SIGCHLD);
    // Signals are taken with sigwait: blocked before the child exists, so none is lost.
    if let Err(e) = waited.thread_block() {
        eprintln!("elastic-launch __wrap: cannot block signals: {e}");
        return 127;
    }
    // Orphans (the launcher, once the shell that started it died) stay ours to wait for.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut command = Command::new(program);
    command
        .args(args)
        .env("PATH", path_with(torchrun_dir))
        .process_group(0);
    // SAFETY: sigprocmask is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            waited
                .thread_unblock()
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("elastic-launch __wrap: cannot run `{program}`: {e}");
            return 127;
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    let mut status: Option<u8> = None;
    let mut signaled = false;
    loop {
        // Reap whatever ended; the command's own end is its status.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == pid => status = Some(code as u8),
                Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                    status = Some(128 + sig as i32 as u8)
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => {}
                Err(Errno::ECHILD) => return status.unwrap_or(1),
                Err(_) => break,
            }
        }
        // Done when the command ended, unless a signal asked everything to stop: then what
        // is still stopping (the launcher and its workers) is waited for.
        if let Some(code) = status
            && !signaled
        {
            return code;
        }
        match waited.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                signaled = true;
                // The whole group: a shell dies of it without passing it on.
                let _ = kill(Pid::from_raw(-pid.as_raw()), sig);
            }
            Err(_) => {}
        }
    }
}
