//! Standby Python interpreters (`--prewarm=MODULE[,MODULE...]`): started once a round trains
//! (the agent decides when), importing those modules (torch: seconds), then, when the
//! next round forms, given their worker's environment, arguments and output to run the script
//! as `__main__`, so a restart does not wait for `import torch` again. The cost is an idle
//! interpreter per local worker.
//!
//! A standby is started like any worker (its own session, the parent-death signal, watched by
//! the guardian and the reaper), with `python -u -c BOOTSTRAP MODULES` and, as its stdin, one
//! end of a Unix socket pair. It says `R` once the modules are imported (`F` if one fails to
//! import: it says why on stderr and, if activated, runs the script all the same, as a fresh
//! worker would). Activation is one message on that socket: a JSON line (`argv`, `module`, the
//! whole `env`, which output streams follow) carrying, as `SCM_RIGHTS`, the file descriptors of
//! its stdout and stderr (a log file, a tee pipe or /dev/null; none when it keeps the
//! launcher's). The bootstrap puts them on fds 1 and 2, /dev/null on fd 0, replaces
//! `os.environ` (and so the C environment) and `sys.argv`, and runs the script with
//! `runpy.run_path` (`-m` modules with `runpy.run_module`). Closing the launcher's end makes
//! an unused standby exit 0. A standby still importing can be activated at once: the message
//! waits in the socket and the script starts as soon as the import ends, never later than a
//! fresh interpreter would have (which would import from the start) and without a second
//! import competing for the node's cores.
//!
//! Caveat: whatever reads the environment while the modules are imported (at prewarm time)
//! sees the launcher's environment, not the worker's: `RANK`, `LOCAL_RANK`, `MASTER_ADDR`...
//! are not set yet. Prewarm only modules that read them later (torch does, at
//! `init_process_group`).

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use nix::sys::socket::{ControlMessage, MsgFlags, recv, sendmsg};
use serde::Serialize;
use tokio::net::UnixStream;

use crate::workers::{self, ProcessSpec, WorkerError};

/// The interpreter's side. Kept short: it runs before every prewarmed worker.
const BOOTSTRAP: &str = r#"
import importlib, json, os, runpy, socket, sys
_sock = socket.socket(fileno=0)
_state = b"R"
try:
    for _name in filter(None, sys.argv[1].split(",")):
        importlib.import_module(_name)
except Exception as _e:
    print(f"elastic-launch --prewarm: cannot import {_name}: {_e!r}; a worker started from this interpreter runs its script without it", file=sys.stderr, flush=True)
    _state = b"F"
try:
    _sock.send(_state)
except OSError:
    pass
try:
    _msg, _fds, _, _ = socket.recv_fds(_sock, 1 << 16, 2)
    while _msg and not _msg.endswith(b"\n"):
        _more = _sock.recv(1 << 16)
        _msg = _msg + _more if _more else b""
except OSError:
    _msg = b""
if not _msg:
    os._exit(0)
_sock.detach()
_job = json.loads(_msg)
_fds = list(_fds)
for _target, _given in ((1, _job["stdout"]), (2, _job["stderr"])):
    if _given:
        _fd = _fds.pop(0)
        os.dup2(_fd, _target)
        os.close(_fd)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
os.environ.clear()
os.environ.update(_job["env"])
sys.argv = list(_job["argv"])
if _job["module"]:
    sys.path[0] = os.getcwd()
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    runpy.run_path(sys.argv[0], run_name="__main__")
"#;

/// One started standby interpreter.
pub struct Standby {
    pub pid: u32,
    /// The launcher's end of the activation socket.
    socket: UnixStream,
    /// It said it imported its modules.
    ready: bool,
    started: std::time::Instant,
}

/// Where a standby is, looked at without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// It imported its modules and waits for its worker's environment.
    Ready,
    /// Still importing, for `for_s` seconds since it started.
    Importing { for_s: u64 },
    /// A module failed to import (the standby said why on stderr).
    ImportFailed,
    /// It exited, or broke its socket.
    Gone,
}

/// What a standby becomes.
#[derive(Serialize)]
struct Activation<'a> {
    /// The script and its arguments, or the module and its arguments.
    argv: &'a [String],
    module: bool,
    env: &'a BTreeMap<String, String>,
    stdout: bool,
    stderr: bool,
}

/// Starts a standby: `python -u -c BOOTSTRAP modules`, in the launcher's environment.
pub fn start(python: &str, modules: &[String]) -> Result<Standby, WorkerError> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(WorkerError::Standby)?;
    ours.set_nonblocking(true).map_err(WorkerError::Standby)?;
    let socket = UnixStream::from_std(ours).map_err(WorkerError::Standby)?;
    let pid = workers::spawn(ProcessSpec {
        program: python.into(),
        args: vec![
            "-u".into(),
            "-c".into(),
            BOOTSTRAP.into(),
            modules.join(","),
        ],
        env: Vec::new(),
        stdin: Stdio::from(OwnedFd::from(theirs)),
        stdout: Stdio::inherit(),
        stderr: Stdio::inherit(),
    })?;
    Ok(Standby {
        pid,
        socket,
        ready: false,
        started: std::time::Instant::now(),
    })
}

impl Standby {
    /// Whether the standby has imported its modules, without waiting.
    pub fn readiness(&mut self) -> Readiness {
        if self.ready {
            return Readiness::Ready;
        }
        // A plain non-blocking recv: tokio's cached readiness may not have seen the byte yet.
        let mut byte = [0u8; 1];
        match recv(self.socket.as_raw_fd(), &mut byte, MsgFlags::MSG_DONTWAIT) {
            Ok(1) if byte[0] == b'R' => {
                self.ready = true;
                Readiness::Ready
            }
            Ok(1) if byte[0] == b'F' => Readiness::ImportFailed,
            Err(nix::errno::Errno::EAGAIN) => Readiness::Importing {
                for_s: self.started.elapsed().as_secs(),
            },
            _ => Readiness::Gone,
        }
    }

    /// Turns the standby into a worker: `argv` is the script (or, with `module`, the module)
    /// and its arguments; `env` the worker's whole environment; `stdout`/`stderr` where its
    /// output goes (None: the launcher's own, which it already has).
    pub fn activate(
        self,
        argv: &[String],
        module: bool,
        env: &BTreeMap<String, String>,
        stdout: Option<&OwnedFd>,
        stderr: Option<&OwnedFd>,
    ) -> std::io::Result<u32> {
        let mut message = serde_json::to_vec(&Activation {
            argv,
            module,
            env,
            stdout: stdout.is_some(),
            stderr: stderr.is_some(),
        })
        .expect("an activation serializes");
        message.push(b'\n');
        let fds: Vec<i32> = [stdout, stderr]
            .into_iter()
            .flatten()
            .map(|fd| fd.as_raw_fd())
            .collect();
        let rights = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        // The whole line goes in one call: it is far smaller than the socket's buffer, which is
        // empty (the standby only reads).
        let sent = sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(&message)],
            cmsgs,
            MsgFlags::empty(),
            None,
        )?;
        if sent != message.len() {
            return Err(std::io::Error::other(format!(
                "sent {sent} of {} bytes of the activation",
                message.len()
            )));
        }
        Ok(self.pid)
    }
}
