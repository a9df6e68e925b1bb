//! Shared helpers for the launcher's subprocess tests: the binary, the PyTorch interpreter,
//! free ports, and running a launcher with a clean `PET_*` environment and a deadline.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn launcher() -> &'static str {
    env!("CARGO_BIN_EXE_elastic-launch")
}

pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bin")
}

pub fn script(name: &str) -> String {
    bin_dir().join(name).display().to_string()
}

/// The venv interpreter with PyTorch: `ELASTICJOB_PYTHON` (set by `make test`), else the
/// provisioning script, which is idempotent and prints the path.
pub fn torch_python() -> String {
    if let Ok(p) = std::env::var("ELASTICJOB_PYTHON") {
        return p;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scripts/python-env.sh");
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run python-env.sh");
    assert!(out.status.success(), "python-env.sh failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A port that was free a moment ago (bind to 0, read, close).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A launcher command with torchrun's test setup: every `PET_*` removed, and the sentinel
/// variable that must reach the workers.
pub fn launch_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(launcher());
    for (k, _) in std::env::vars() {
        if k.starts_with("PET_") || k == "TORCHELASTIC_ERROR_FILE" {
            cmd.env_remove(k);
        }
    }
    cmd.env("TEST_SENTINEL_PARENT", "FOOBAR")
        .env("LOGLEVEL", "info")
        .args(args);
    cmd
}

/// Runs to completion, failing the test if it takes longer than `limit` (the child is killed).
pub fn run_with_limit(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn launcher");
    wait_output(child, limit)
}

/// A running launcher that is SIGKILLed if the test ends without waiting for it (a failed
/// assertion), so a failing test never leaves a launcher (and, through its guardian, workers)
/// behind.
pub struct Running(Option<Child>);

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        Running(Some(
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn launcher"),
        ))
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    pub fn output(mut self, limit: Duration) -> Output {
        wait_output(self.0.take().unwrap(), limit)
    }

    pub fn kill(&mut self) {
        let child = self.0.as_mut().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for launcher"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "launcher did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

pub fn run(args: &[&str]) -> Output {
    run_with_limit(launch_cmd(args), Duration::from_secs(120))
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_success(out: &Output) {
    assert!(out.status.success(), "launcher failed:\n{}", describe(out));
}

/// File names in a directory.
pub fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

pub fn ranks(n: u32) -> BTreeSet<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// Polls `cond` until true or `limit` passes (then panics with `what`).
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes (pid, cmdline) whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) && pid != std::process::id() {
            // Zombies have an empty cmdline and are skipped above.
            found.push((pid, cmdline));
        }
    }
    found
}
