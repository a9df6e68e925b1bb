//! What the cluster-backed tests of every crate share: the provisioned cluster binaries and
//! the images for its nodes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
fn last_line_of(script: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
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
