//! What the cluster-backed tests of every crate share: the repository's root, the provisioned
//! cluster binaries and the images for its nodes.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The repository's root, the checkout the tests run in: the first directory holding
/// `Cargo.lock` above the running test's package (cargo sets `CARGO_MANIFEST_DIR` for it).
/// Not this crate's compile-time path: a library built in another checkout of the repository
/// (CI's clone) and reused from the shared target directory would point there.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or_else(|| {
            panic!(
                "no Cargo.lock above {}: not in the repository",
                start.display()
            )
        })
        .to_path_buf()
}

/// Runs `tests/cluster/provision.sh` (seconds when cached, minutes the first time; its progress
/// goes to stderr) and returns the bin dir it prints last: kubectl, helm and the cluster's
/// Kubernetes binaries.
pub fn provision() -> PathBuf {
    PathBuf::from(last_line_of("provision.sh"))
}

/// Runs `tests/cluster/images.sh` (seconds when cached; the first time it builds the static
/// binaries and the images, the PyTorch one included: minutes) and returns the OCI archives it
/// prints last, for [`crate::nodes::NodesConfig::images`]: the launcher, the operator and the
/// PyTorch image, under their real names.
pub fn images() -> Vec<PathBuf> {
    last_line_of("images.sh")
        .split(',')
        .map(|a| PathBuf::from(a.trim()))
        .collect()
}

/// Runs a script of `tests/cluster/` (its progress on stderr) and returns the last line it
/// printed on stdout.
pub fn last_line_of(script: &str) -> String {
    let script = repo_root().join("tests/cluster").join(script);
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}): see its messages above",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{} printed nothing", script.display()))
        .trim()
        .to_string()
}
