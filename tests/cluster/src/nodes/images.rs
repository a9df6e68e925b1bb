//! Images for the nodes: small OCI archives are imported into each node at start; large ones
//! are loaded once per machine into a cached containerd root that every node gets as hard links.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tracing::info;

use super::*;

/// Archives above this size (the PyTorch image: gigabytes) are not imported into every node: they
/// are loaded once into a cached containerd root that each node gets as hard links (see
/// [`preloaded_root`]); smaller ones (the operator, the launcher) are imported at every start.
pub(super) const LARGE_IMAGE: u64 = 256 << 20;

/// containerd's databases in its root: written in place, so each node needs its own copy.
pub(super) const CONTAINERD_DBS: [&str; 2] = [
    "io.containerd.metadata.v1.bolt/meta.db",
    "io.containerd.snapshotter.v1.overlayfs/metadata.db",
];

/// What the nodes load: the small archives, imported into each node at start, and the cached
/// containerd root holding the large ones (see [`preloaded_root`]), if any.
pub(super) fn prepare_images(
    archives: Vec<PathBuf>,
) -> Result<(Vec<PathBuf>, Option<PathBuf>), String> {
    let mut small = Vec::new();
    let mut large = Vec::new();
    for a in archives {
        let size = fs::metadata(&a)
            .map_err(io(format!("image archive {}", a.display())))?
            .len();
        if size > LARGE_IMAGE {
            large.push(a);
        } else {
            small.push(a);
        }
    }
    let preloaded = if large.is_empty() {
        None
    } else {
        Some(preloaded_root(
            &crate::cache_dir().join("node-images"),
            &large,
        )?)
    };
    Ok((small, preloaded))
}

/// A containerd root with `archives` imported, cached under `cache/<key>` where the key hashes
/// the archives' names, sizes and times, so each set is imported once per machine (minutes for
/// the PyTorch image) and every node of every cluster starts with it in a second: the content
/// blobs and unpacked layers are read-only for containerd (containers write into their own
/// upper directories), so nodes share them as hard links; only its databases are copied.
/// Other keys' roots are removed.
pub fn preloaded_root(cache: &Path, archives: &[PathBuf]) -> Result<PathBuf, String> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for a in archives {
        let m = fs::metadata(a).map_err(io(a.display()))?;
        (a, m.len(), m.modified().ok()).hash(&mut h);
    }
    let key = format!("{:016x}", h.finish());
    let dir = cache.join(&key);
    let root = dir.join("root");
    if dir.join(".done").exists() {
        return Ok(root);
    }
    fs::create_dir_all(cache).map_err(io(cache.display()))?;
    let lock = fs::File::create(cache.join(".lock")).map_err(io("lock"))?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("locking {}: {e}", cache.display()))
        .and_then(|_guard| {
            if dir.join(".done").exists() {
                return Ok(());
            }
            for e in fs::read_dir(cache).map_err(io(cache.display()))?.flatten() {
                if e.path().is_dir() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
            import_archives(&dir, archives)?;
            fs::write(dir.join(".done"), "").map_err(io("marker"))
        })?;
    Ok(root)
}

/// Runs a containerd of its own on `dir/root` just long enough to import `archives`.
pub(super) fn import_archives(dir: &Path, archives: &[PathBuf]) -> Result<(), String> {
    // The state dir holds the socket: keep its path short.
    let state = PathBuf::from(format!("/run/ej-images-{}", std::process::id()));
    let sock = state.join("c.sock");
    fs::create_dir_all(dir.join("root")).map_err(io(dir.display()))?;
    let conf = dir.join("containerd.toml");
    fs::write(&conf, containerd_config()).map_err(io("config"))?;
    let mut c = Command::new("containerd");
    c.arg("--config")
        .arg(&conf)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(&state)
        .arg("--address")
        .arg(&sock);
    let mut child = spawn(c, &dir.join("containerd.log"), &[])?;
    let result = wait_for(Duration::from_secs(20), || sock.exists())
        .map_err(|_| format!("containerd for {} did not start", dir.display()))
        .and_then(|_| {
            for a in archives {
                info!(archive = %a.display(), "importing (once per machine)");
                run(Command::new("ctr")
                    .arg("--address")
                    .arg(&sock)
                    .args(["-n", "k8s.io", "images", "import"])
                    .arg(a))
                .map_err(|e| format!("importing {}: {e}", a.display()))?;
            }
            Ok(())
        });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let _ = fs::remove_dir_all(&state);
    result
}

/// `cp -al from/. to/`, then real copies of containerd's databases.
pub(super) fn link_tree(from: &Path, to: &Path) -> Result<(), String> {
    fs::create_dir_all(to).map_err(io(to.display()))?;
    run(Command::new("cp")
        .arg("-al")
        .arg(format!("{}/.", from.display()))
        .arg(to))?;
    for db in CONTAINERD_DBS {
        let (src, dst) = (from.join(db), to.join(db));
        if src.exists() {
            let _ = fs::remove_file(&dst);
            fs::copy(&src, &dst).map_err(io(dst.display()))?;
        }
    }
    Ok(())
}
