//! What the cluster-backed tests of every crate share: the provisioned control-plane binaries,
//! the PyTorch venv and the workspace binaries built next to the running test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `tests/cluster/provision.sh` (seconds when cached, minutes the first time; its progress
/// goes to stderr) and returns the bin dir it prints last: kubectl, helm and the control plane.
pub fn provision() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("provision.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("running provision.sh");
    assert!(
        out.status.success(),
        "{} failed ({}): see its messages above",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("provision.sh prints the bin dir")
            .trim(),
    )
}

/// Runs `tests/cluster/images.sh` (seconds when cached; the first time it builds the static
/// binaries and the images, the PyTorch one included: minutes) and returns the OCI archives it
/// prints last, for [`crate::nodes::NodesConfig::images`]: the launcher, the operator and the
/// PyTorch image, under their real names.
pub fn images() -> Vec<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("images.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("running images.sh");
    assert!(
        out.status.success(),
        "{} failed ({}): see its messages above",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .expect("images.sh prints the archives");
    last.split(',').map(|a| PathBuf::from(a.trim())).collect()
}

/// The PyTorch venv's python (the trainer image of the examples): `ELASTICJOB_PYTHON`, else
/// what `tests/scripts/python-env.sh` prints (it builds the cached venv on first use).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ELASTICJOB_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/python-env.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("running python-env.sh");
    assert!(out.status.success(), "{} failed", script.display());
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Where cargo put the binaries of the profile this test executable was built with: the test is
/// `<target>/<profile>/deps/<test>-<hash>`, the binaries are `<target>/<profile>/<name>`.
pub fn profile_dir_of(test_exe: &Path) -> Option<PathBuf> {
    let deps = test_exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    Some(deps.parent()?.to_path_buf())
}

/// A workspace binary built next to this test executable. Panics with the command to build it.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = profile_dir_of(&exe).unwrap_or_else(|| {
        panic!(
            "test executable {} is not in <target>/<profile>/deps",
            exe.display()
        )
    });
    let path = dir.join(name);
    if !path.is_file() {
        let release = if dir.file_name().is_some_and(|p| p == "release") {
            " --release"
        } else {
            ""
        };
        panic!(
            "{} is missing: build the binaries first, with the same CARGO_TARGET_DIR and profile as the tests:\n    cargo build{release} -p elastic-launch -p elasticjob-operator",
            path.display()
        );
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_sit_beside_the_deps_dir() {
        assert_eq!(
            profile_dir_of(Path::new("/t/target/debug/deps/e2e-0123abcd")),
            Some(PathBuf::from("/t/target/debug"))
        );
        assert_eq!(profile_dir_of(Path::new("/t/target/debug/e2e")), None);
    }
}
