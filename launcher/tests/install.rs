//! `elastic-launch __install DIR`, the operator's init-container mode: the launcher copies
//! itself to DIR/elastic-launch (atomically, mode 0755, creating DIR) with a `torchrun` link,
//! and the copy runs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_elastic-launch");

fn install(dir: &Path) -> Output {
    Command::new(BIN)
        .args(["__install", &dir.display().to_string()])
        .output()
        .expect("run elastic-launch __install")
}

#[test]
fn copies_itself_with_a_torchrun_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("elasticjob/bin"); // does not exist yet
    let out = install(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("installed"));

    let target = dir.join("elastic-launch");
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    assert!(
        std::fs::read(&target).unwrap() == std::fs::read(BIN).unwrap(),
        "the copy differs from the launcher"
    );
    let link = dir.join("torchrun");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("elastic-launch")
    );

    // Both names run the launcher.
    for exe in [&target, &link] {
        let help = Command::new(exe).arg("--help").output().unwrap();
        assert!(help.status.success(), "{}", exe.display());
        assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: elastic-launch"));
    }

    // Again (a restarted init container): replaced in place, no temporary files left.
    let out = install(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["elastic-launch", "torchrun"]);
}

#[test]
fn needs_exactly_one_directory() {
    let out = Command::new(BIN).arg("__install").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: elastic-launch __install DIR"));
    let out = Command::new(BIN)
        .args(["__install", "a", "b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn reports_a_directory_it_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = install(&file.join("bin"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot install into"));
}
