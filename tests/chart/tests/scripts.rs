//! The kind scripts (tests/kind/*.sh) cannot run here (no Docker): they are at least valid bash
//! and shellcheck-clean. shellcheck is required (`make test` installs it; nothing is skipped).

use std::path::PathBuf;
use std::process::Command;

use elasticjob_chart_tests::{repo_root, text};

fn kind_scripts() -> Vec<PathBuf> {
    let dir = repo_root().join("tests/kind");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    v.sort();
    let names: Vec<_> = v.iter().map(|p| p.file_name().unwrap()).collect();
    assert_eq!(names, ["faults.sh", "run.sh"], "tests/kind/*.sh");
    v
}

#[test]
fn kind_scripts_parse_and_are_executable() {
    use std::os::unix::fs::PermissionsExt;
    for script in kind_scripts() {
        let o = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .expect("running bash");
        assert!(
            o.status.success(),
            "bash -n {}: {}",
            script.display(),
            text(&o.stderr)
        );
        let mode = std::fs::metadata(&script).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", script.display());
    }
}

#[test]
fn kind_scripts_are_shellcheck_clean() {
    let scripts = kind_scripts();
    let o = Command::new("shellcheck")
        .args(&scripts)
        .output()
        .unwrap_or_else(|e| {
            panic!("shellcheck is required ({e}): apt-get install -y shellcheck (make test installs it)")
        });
    assert!(
        o.status.success(),
        "shellcheck {scripts:?}:\n{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

#[test]
fn faults_script_explains_its_usage() {
    let script = repo_root().join("tests/kind/faults.sh");
    let help = Command::new(&script).arg("--help").output().unwrap();
    assert!(help.status.success());
    let usage = text(&help.stderr);
    for verb in ["kill-pod", "cut-net", "restore-net", "lose-node"] {
        assert!(usage.contains(verb), "{verb} in:\n{usage}");
    }
    // Bad usage: status 2, before touching any cluster.
    for args in [&["bogus"][..], &[], &["kill-pod"], &["lose-node", "a", "b"]] {
        let o = Command::new(&script).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "faults.sh {args:?}");
    }
}
