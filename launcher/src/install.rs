//! `elastic-launch __install DIR`: the launcher copies itself into `DIR` (an `emptyDir` shared
//! with the user's container), so that any image can run it. Used by the ElasticJob operator's
//! init container, whose image is the launcher's and whose args are `__install /elasticjob/bin`.
//!
//! The copy is atomic (a temporary file renamed into place) with mode 0755, and `DIR/torchrun`
//! is a symbolic link to it, so commands written for torchrun find it too.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use elasticjob_contract::install::{ARG as INSTALL_ARG, BINARY_NAME, TORCHRUN_LINK};

/// Copies `exe` to `dir/elastic-launch` (creating `dir`) and points `dir/torchrun` at it.
/// Returns the installed path.
pub fn install(exe: &Path, dir: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let target = dir.join(BINARY_NAME);
    let pid = std::process::id();
    let tmp = dir.join(format!(".{BINARY_NAME}.{pid}.tmp"));
    let copied = fs::copy(exe, &tmp)
        .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)))
        .and_then(|_| fs::File::open(&tmp)?.sync_all())
        .and_then(|_| fs::rename(&tmp, &target));
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let link = dir.join(TORCHRUN_LINK);
    let tmp_link = dir.join(format!(".{TORCHRUN_LINK}.{pid}.tmp"));
    let _ = fs::remove_file(&tmp_link);
    let linked = symlink(BINARY_NAME, &tmp_link).and_then(|_| fs::rename(&tmp_link, &link));
    if let Err(e) = linked {
        let _ = fs::remove_file(&tmp_link);
        return Err(e);
    }
    Ok(target)
}

/// The running executable: `/proc/self/exe`, which works even when the file it was started
/// from is gone.
pub fn current_exe() -> PathBuf {
    let proc = PathBuf::from("/proc/self/exe");
    if proc.exists() {
        proc
    } else {
        std::env::current_exe().unwrap_or(proc)
    }
}

/// `elastic-launch __install DIR`: the exit status (0 installed, 1 failed, 2 usage).
pub fn install_main(args: &[String]) -> u8 {
    let [dir] = args else {
        eprintln!(
            "usage: elastic-launch {INSTALL_ARG} DIR\ncopies the launcher to DIR/{BINARY_NAME} (and DIR/{TORCHRUN_LINK})"
        );
        return 2;
    };
    match install(&current_exe(), Path::new(dir)) {
        Ok(target) => {
            eprintln!("elastic-launch: installed {}", target.display());
            0
        }
        Err(e) => {
            eprintln!("elastic-launch {INSTALL_ARG}: cannot install into {dir}: {e}");
            1
        }
    }
}
