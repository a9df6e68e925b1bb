//! A container's own view of the filesystem (kubelet stand-in).
//!
//! There are no images, so a container's root filesystem is an **overlay of the host's `/`**:
//! the host's files are the read-only lower layer, and a per-container upper dir (wiped on every
//! start, as a restarted container gets a fresh writable layer) takes every write. So a container
//! can create `/workspace` or `/elasticjob/bin` without touching the host, and volumes can be
//! mounted at any path. On top of it, in the container's own mount namespace: `/proc` and `/sys`
//! (the host's), the pod's own `/dev`, `/etc/hosts` and `/etc/resolv.conf` of the pod, the
//! termination message file, and the pod's volumes. Then `chroot` into it.
//!
//! Everything is mounted inside the container's private mount namespace, so nothing appears on
//! the host and nothing needs unmounting: the namespace goes away with its last process.
//!
//! What the forked child runs ([`Isolation::enter`]) is prepared here beforehand, as plain
//! syscall arguments: after `fork` in a threaded program only async-signal-safe calls are allowed.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// One bind mount into the container: a host path at a path the container sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: PathBuf,
}

impl Mount {
    pub fn new(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Mount {
        Mount {
            source: source.into(),
            target: target.into(),
        }
    }
}

/// `path` as the container resolves it before anything is mounted: its lower layer is the
/// host's `/`, so a symlink on the host (Debian's `/var/run` → `/run`) is one in the container
/// too, and an absolute link target is relative to the container's root. Components that do not
/// exist are kept as written (they will be created in the upper layer).
pub fn resolve(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    let mut pending: VecDeque<OsString> = VecDeque::new();
    let push_front = |pending: &mut VecDeque<OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => pending.push_front(n.to_os_string()),
                Component::ParentDir => pending.push_front("..".into()),
                _ => {}
            }
        }
    };
    push_front(&mut pending, path);
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            out.pop();
            continue;
        }
        let next = out.join(&c);
        match fs::read_link(&next) {
            Ok(target) if links < 40 => {
                links += 1;
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                push_front(&mut pending, &target);
            }
            _ => out = next,
        }
    }
    out
}

/// A pod's own `/dev`: placeholder files and dirs under `<pod dir>/dev` onto which the host's
/// device nodes are bind-mounted, so files that do not exist on the host (the default
/// `terminationMessagePath` /dev/termination-log) can be bind-mounted there without touching
/// the host's /dev. Returns the host-side bind mounts (host device → placeholder) and the dir.
pub fn pod_dev(pod_dir: &Path) -> std::io::Result<(Vec<(PathBuf, PathBuf)>, PathBuf)> {
    let dev = pod_dir.join("dev");
    fs::create_dir_all(&dev)?;
    let mut binds = Vec::new();
    for n in ["null", "zero", "full", "random", "urandom", "tty", "ptmx"] {
        let host = Path::new("/dev").join(n);
        if host.exists() {
            fs::write(dev.join(n), b"")?;
            binds.push((host, dev.join(n)));
        }
    }
    for d in ["pts", "shm"] {
        let host = Path::new("/dev").join(d);
        if host.is_dir() {
            fs::create_dir_all(dev.join(d))?;
            binds.push((host, dev.join(d)));
        }
    }
    for (l, t) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        match std::os::unix::fs::symlink(t, dev.join(l)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok((binds, dev))
}

fn cstr(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| format!("{p:?}: {e}"))
}

/// What a container process does between fork and exec: enter the pod's network namespace,
/// get its own mount and UTS namespaces, build its root filesystem, chroot.
pub struct Isolation {
    /// Open `/run/netns/<name>` (kept open until the spawn returns).
    netns: OwnedFd,
    /// Where the overlay is mounted (host path) and its options.
    root: CString,
    overlay_options: CString,
    /// Host-side binds made before the root exists (the pod's /dev placeholders).
    pre_binds: Vec<(CString, CString)>,
    /// Directories and files to create (host paths under `root`, in order; existing ones are
    /// fine), then the binds onto them.
    mkdirs: Vec<CString>,
    mkfiles: Vec<CString>,
    binds: Vec<(CString, CString)>,
    hostname: CString,
    cwd: CString,
}

impl Isolation {
    /// Prepares the container's dir (`<container dir>/{upper,work,root}`, the upper layer
    /// fresh) and every argument of [`Isolation::enter`]. `pre_binds` are host → host (the pod's
    /// /dev placeholders); `mounts` target container paths, in order.
    pub fn new(
        netns: &Path,
        container_dir: &Path,
        pre_binds: &[(PathBuf, PathBuf)],
        mounts: &[Mount],
        hostname: &str,
        cwd: &str,
    ) -> Result<Isolation, String> {
        let (upper, work, root) = (
            container_dir.join("upper"),
            container_dir.join("work"),
            container_dir.join("root"),
        );
        for d in [&upper, &work] {
            if d.exists() {
                fs::remove_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
        }
        for d in [&upper, &work, &root] {
            fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let on_root = |container_path: &Path| {
            root.join(container_path.strip_prefix("/").unwrap_or(container_path))
        };
        let (mut mkdirs, mut mkfiles, mut binds) = (Vec::new(), Vec::new(), Vec::new());
        for m in mounts {
            if !m.target.is_absolute() {
                return Err(format!("mount path {:?} must be absolute", m.target));
            }
            let target = resolve(&m.target);
            let mut ancestors: Vec<&Path> = target.ancestors().skip(1).collect();
            ancestors.reverse();
            for a in ancestors.into_iter().skip(1) {
                mkdirs.push(cstr(&on_root(a))?);
            }
            if m.source.is_dir() {
                mkdirs.push(cstr(&on_root(&target))?);
            } else {
                mkfiles.push(cstr(&on_root(&target))?);
            }
            binds.push((cstr(&m.source)?, cstr(&on_root(&target))?));
        }
        let f = fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
        let overlay_options = format!(
            "lowerdir=/,upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        Ok(Isolation {
            netns: f.into(),
            root: cstr(&root)?,
            overlay_options: CString::new(overlay_options).map_err(|e| e.to_string())?,
            pre_binds: pre_binds
                .iter()
                .map(|(s, t)| Ok((cstr(s)?, cstr(t)?)))
                .collect::<Result<_, String>>()?,
            mkdirs,
            mkfiles,
            binds,
            hostname: CString::new(hostname).map_err(|e| e.to_string())?,
            cwd: CString::new(cwd).map_err(|e| e.to_string())?,
        })
    }

    /// Runs in the forked child: only raw syscalls, no allocation. An error names nothing
    /// (errno only), so the setup is checked as much as possible in [`Isolation::new`].
    pub fn enter(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        let bind = |s: &CString, t: &CString| {
            // SAFETY: NUL-terminated strings owned by self.
            let r = unsafe {
                libc::mount(
                    s.as_ptr(),
                    t.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            };
            if r != 0 { Err(err()) } else { Ok(()) }
        };
        // SAFETY: plain syscalls on valid fds and NUL-terminated strings owned by self.
        unsafe {
            if libc::setns(self.netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(err());
            }
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
                return Err(err());
            }
            // Nothing mounted here propagates back to the host.
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(err());
            }
            for (s, t) in &self.pre_binds {
                bind(s, t)?;
            }
            if libc::mount(
                c"overlay".as_ptr(),
                self.root.as_ptr(),
                c"overlay".as_ptr(),
                0,
                self.overlay_options.as_ptr().cast(),
            ) != 0
            {
                return Err(err());
            }
            for d in &self.mkdirs {
                if libc::mkdir(d.as_ptr(), 0o755) != 0 && *libc::__errno_location() != libc::EEXIST
                {
                    return Err(err());
                }
            }
            for f in &self.mkfiles {
                let fd = libc::open(
                    f.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd < 0 {
                    return Err(err());
                }
                libc::close(fd);
            }
            for (s, t) in &self.binds {
                bind(s, t)?;
            }
            let h = self.hostname.as_bytes();
            if libc::sethostname(h.as_ptr().cast(), h.len()) != 0 {
                return Err(err());
            }
            if libc::chroot(self.root.as_ptr()) != 0 {
                return Err(err());
            }
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                return Err(err());
            }
        }
        Ok(())
    }
}

/// Enters a running container's namespaces and root (for an exec probe): its network, mount
/// and UTS namespaces through `/proc/<pid>/ns/*`, then its root, which is mounted at the same
/// host path inside its mount namespace.
pub struct JoinContainer {
    net: OwnedFd,
    mnt: OwnedFd,
    uts: OwnedFd,
    root: CString,
}

impl JoinContainer {
    pub fn new(pid: i32, container_dir: &Path) -> Result<JoinContainer, String> {
        let open = |ns: &str| -> Result<OwnedFd, String> {
            let p = format!("/proc/{pid}/ns/{ns}");
            fs::File::open(&p)
                .map(Into::into)
                .map_err(|e| format!("{p}: {e}"))
        };
        Ok(JoinContainer {
            net: open("net")?,
            mnt: open("mnt")?,
            uts: open("uts")?,
            root: cstr(&container_dir.join("root"))?,
        })
    }

    /// Runs in the forked child.
    pub fn enter(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        // SAFETY: plain syscalls on fds and strings owned by self.
        unsafe {
            for (fd, ty) in [
                (&self.net, libc::CLONE_NEWNET),
                (&self.uts, libc::CLONE_NEWUTS),
                (&self.mnt, libc::CLONE_NEWNS),
            ] {
                if libc::setns(fd.as_raw_fd(), ty) != 0 {
                    return Err(err());
                }
            }
            if libc::chroot(self.root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(err());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_follows_host_symlinks_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        fs::create_dir_all(real.join("sub")).unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("real", d.path().join("rel")).unwrap();
        assert_eq!(
            resolve(&d.path().join("abs/sub/new/x")),
            real.join("sub/new/x")
        );
        assert_eq!(resolve(&d.path().join("rel/sub")), real.join("sub"));
        assert_eq!(resolve(&d.path().join("rel/../rel/sub")), real.join("sub"));
        assert_eq!(
            resolve(Path::new("/elasticjob/bin")),
            PathBuf::from("/elasticjob/bin")
        );
        // A loop does not hang.
        std::os::unix::fs::symlink("loop", d.path().join("loop")).unwrap();
        let _ = resolve(&d.path().join("loop/x"));
    }
}
