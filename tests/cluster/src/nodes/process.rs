//! The nodes' processes and cgroups: spawning a daemon into a node's namespaces and cgroup,
//! finding, killing and removing everything of a node.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracing::warn;

use super::*;

/// cgroup v1 hierarchies the kubelet needs its `cgroupRoot` in.
pub(super) const HIERARCHIES: [&str; 9] = [
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
];

/// Where the node's cgroups can end up: [`HIERARCHIES`], and on a hybrid host the cgroup v2
/// `unified` tree, in which runc and the kubelet make the same paths (removed at shutdown).
pub(super) const CLEANUP_HIERARCHIES: [&str; 10] = [
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
    "unified",
];

/// Spawns `c` with its output in `log`, in its own process group, killed with its parent, and
/// first moved into the cgroup directories `cgroups` (so everything it forks stays there).
#[allow(unsafe_code)] // pre_exec: the cgroup move and death signal must happen before exec
pub(super) fn spawn(mut c: Command, log: &Path, cgroups: &[PathBuf]) -> Result<Child, String> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(log.display()))?;
    let err = out.try_clone().map_err(io("dup"))?;
    let procs: Vec<std::ffi::CString> = cgroups
        .iter()
        .map(|d| {
            std::ffi::CString::new(d.join("cgroup.procs").display().to_string()).expect("no NUL")
        })
        .collect();
    c.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    // SAFETY: only async-signal-safe calls (open, write, close, prctl) between fork and exec.
    unsafe {
        c.pre_exec(move || {
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.spawn().map_err(io(format!("starting {c:?}")))
}

/// A command that runs `program` inside the node's namespaces (those of its holder).
pub(super) fn in_node(holder: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg("-t")
        .arg(holder.to_string())
        .args(["-m", "-u", "-n", "--"])
        .arg(program);
    c
}

pub(super) fn wait_for(timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<(), ()> {
    let t = Instant::now();
    while !ok() {
        if t.elapsed() > timeout {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The node's subtree in every hierarchy, with `system/` for its daemons. cpuset needs its
/// cpus and mems set before anything may join.
pub(super) fn make_cgroups(l: &NodeLayout) -> Result<(), String> {
    for h in HIERARCHIES {
        let leaf = l.system_cgroup(h);
        fs::create_dir_all(&leaf).map_err(io(leaf.display()))?;
        if h == "cpuset" {
            let root = PathBuf::from("/sys/fs/cgroup/cpuset");
            let mut dir = root.clone();
            for part in leaf.strip_prefix(&root).expect("under root").components() {
                let parent = dir.clone();
                dir.push(part);
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = fs::read_to_string(parent.join(f)).map_err(io(f))?;
                    fs::write(dir.join(f), v.trim()).map_err(io(dir.join(f).display()))?;
                }
            }
        }
    }
    Ok(())
}

/// The node's cgroup directories in hierarchy `h`, each before its children.
pub(super) fn cgroup_dirs(l: &NodeLayout, h: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut stack = vec![PathBuf::from(format!("/sys/fs/cgroup/{h}{}", l.cgroup))];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = fs::read_dir(&d) {
            stack.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
        dirs.push(d);
    }
    dirs
}

/// The processes directly in cgroup directory `dir`.
pub(super) fn cgroup_procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Every process in the node's subtree (its daemons, shims and containers).
pub(super) fn node_pids(l: &NodeLayout) -> Vec<i32> {
    cgroup_dirs(l, "pids")
        .iter()
        .flat_map(|d| cgroup_procs(d))
        .collect()
}

fn sigkill_all(l: &NodeLayout) {
    for pid in node_pids(l) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Kills everything of the node at once: frozen first, so nothing forks or reacts meanwhile.
pub(super) fn kill_node(n: &mut Node) {
    let freezer = PathBuf::from(format!("/sys/fs/cgroup/freezer{}", n.layout.cgroup));
    let _ = fs::write(freezer.join("freezer.state"), "FROZEN");
    for _ in 0..3 {
        sigkill_all(&n.layout);
        let _ = fs::write(freezer.join("freezer.state"), "THAWED");
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in &mut n.daemons {
        let _ = d.child.kill();
        let _ = d.child.wait();
    }
    let _ = n.holder.kill();
    let _ = n.holder.wait();
    let t = Instant::now();
    while !node_pids(&n.layout).is_empty() && t.elapsed() < Duration::from_secs(5) {
        sigkill_all(&n.layout);
        std::thread::sleep(Duration::from_millis(50));
    }
    n.lost = true;
}

/// Removes the node's cgroup directories, deepest first (they must be empty of processes).
pub(super) fn remove_cgroups(l: &NodeLayout) {
    for h in CLEANUP_HIERARCHIES {
        for d in cgroup_dirs(l, h).iter().rev() {
            if let Err(e) = fs::remove_dir(d)
                && d.exists()
            {
                warn!(dir = %d.display(), "cannot remove cgroup: {e}");
            }
        }
    }
}
