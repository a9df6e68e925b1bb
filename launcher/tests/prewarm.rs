//! `--prewarm`: a standby interpreter becomes a worker with exactly what a fresh exec gets
//! (environment, `sys.argv`, `__main__`, `sys.path[0]`, its own session, stdin from /dev/null,
//! its output where the policy says), only with the modules already imported; a restart uses
//! new standbys; nothing is left behind; bad input is refused before anything starts.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn probe() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/prewarm_probe.py")
        .display()
        .to_string()
}

/// Runs the probe on 2 local workers (rank 1 fails once) with or without `--prewarm=colorsys`;
/// returns the launcher's output and what every worker recorded, by `seen_<attempt>_<rank>`.
fn run_probe(prewarm: bool, dir: &Path) -> (std::process::Output, BTreeMap<String, Value>) {
    let out_dir = dir.join("seen");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut args = vec![
        "--standalone".to_string(),
        "--nproc-per-node=2".into(),
        "--max-restarts=1".into(),
        "--monitor-interval=0.05".into(),
        "--redirects=1".into(),
        format!("--log-dir={}", dir.join("logs").display()),
    ];
    if prewarm {
        args.push("--prewarm=colorsys".into());
    }
    args.push(probe());
    args.push(out_dir.display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = launch_cmd(&refs);
    cmd.env("PYTHON_EXEC", torch_python());
    let out = run_with_limit(cmd, Duration::from_secs(60));
    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(&out_dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().replace(".json", "");
        let text = std::fs::read_to_string(entry.path()).unwrap();
        seen.insert(name, serde_json::from_str(&text).unwrap());
    }
    (out, seen)
}

/// The parts of a worker's view that differ between runs: the run id, the master port, paths
/// under the run's temporary directories.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut()
        .unwrap()
        .remove("colorsys_imported_before_me");
    let env = v["env"].as_object_mut().unwrap();
    for key in [
        "MASTER_PORT",
        "TORCHELASTIC_RUN_ID",
        "TORCHELASTIC_ERROR_FILE",
        "ELASTICJOB_STOP_REASON_FILE",
        "ELASTICJOB_PROGRESS_FILE",
    ] {
        assert!(env.remove(key).is_some(), "{key} is set");
    }
    v["argv"][1] = Value::Null;
    v
}

#[test]
fn a_prewarmed_worker_sees_what_a_fresh_one_sees() {
    let fresh_dir = tempfile::tempdir().unwrap();
    let warm_dir = tempfile::tempdir().unwrap();
    let (fresh_out, fresh) = run_probe(false, fresh_dir.path());
    let (warm_out, warm) = run_probe(true, warm_dir.path());
    assert!(fresh_out.status.success(), "{}", describe(&fresh_out));
    assert!(warm_out.status.success(), "{}", describe(&warm_out));
    let keys = ["seen_0_0", "seen_0_1", "seen_1_0", "seen_1_1"];
    assert_eq!(
        fresh.keys().collect::<Vec<_>>(),
        keys.iter().collect::<Vec<_>>()
    );
    assert_eq!(
        warm.keys().collect::<Vec<_>>(),
        keys.iter().collect::<Vec<_>>()
    );
    for key in keys {
        let (f, w) = (&fresh[key], &warm[key]);
        assert_eq!(f["colorsys_imported_before_me"], false, "{key}: {f}");
        assert_eq!(
            w["colorsys_imported_before_me"], true,
            "{key}: prewarmed: {w}"
        );
        assert_eq!(comparable(f), comparable(w), "{key}");
        assert_eq!(w["name"], "__main__");
        assert_eq!(w["c_env_rank"], w["env"]["RANK"], "the C environment too");
        assert_eq!(
            (&w["session_leader"], &w["stdin_is_null"]),
            (&Value::Bool(true), &Value::Bool(true))
        );
    }
    // Output went where --redirects said: each rank's stdout.log, per attempt.
    for (attempt, rank) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let logs = warm_dir.path().join("logs");
        let run = std::fs::read_dir(&logs)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let log = std::fs::read_to_string(run.join(format!("attempt_{attempt}/{rank}/stdout.log")))
            .unwrap_or_default();
        assert!(
            log.contains(&format!("of attempt {attempt} says hello")),
            "attempt {attempt} rank {rank}: {log:?}"
        );
    }
    // The standbys of a round that never came (the last) are gone with the launcher.
    let left = processes_with(&probe());
    assert!(left.is_empty(), "left behind: {left:?}");
    let standbys = processes_with("importlib.import_module(_name)");
    assert!(standbys.is_empty(), "standbys left behind: {standbys:?}");
}

#[test]
fn prewarm_refuses_what_it_cannot_do() {
    for (args, needle) in [
        (
            vec!["--prewarm=torch", "--no-python", "/bin/true"],
            "--prewarm needs a Python entrypoint",
        ),
        (
            vec!["--prewarm=torch;rm", "x.py"],
            "'torch;rm' is not a Python module name",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            describe(&out)
        );
    }
}

/// A module that cannot be imported: the standby says so, and the worker runs all the same
/// (from the standby, activated while it was still importing, or fresh once the launcher saw
/// the failure); the job still runs.
#[test]
fn a_standby_that_fails_to_import_falls_back_to_a_fresh_start() {
    let d = tempfile::tempdir().unwrap();
    let script = d.path().join("ok.py");
    std::fs::write(&script, "print('fresh worker ran', flush=True)\n").unwrap();
    let script = script.display().to_string();
    let mut cmd = launch_cmd(&["--standalone", "--prewarm=no_such_module_here", &script]);
    cmd.env("PYTHON_EXEC", torch_python());
    let out = run_with_limit(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", describe(&out));
    let text = describe(&out);
    assert!(text.contains("fresh worker ran"), "{text}");
    assert!(
        text.contains("--prewarm: cannot import no_such_module_here"),
        "{text}"
    );
}

/// A standby still importing when its round forms becomes the worker all the same: the script
/// runs once the import ends, with the module imported, and no second interpreter imports it.
#[test]
fn a_standby_still_importing_becomes_the_worker() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("slow_module.py"),
        "import time\ntime.sleep(2)\n",
    )
    .unwrap();
    let script = d.path().join("worker.py");
    std::fs::write(
        &script,
        "import sys\nprint('slow_module imported before me:', 'slow_module' in sys.modules, flush=True)\n",
    )
    .unwrap();
    let script = script.display().to_string();
    let mut cmd = launch_cmd(&["--standalone", "--prewarm=slow_module", &script]);
    cmd.env("PYTHON_EXEC", torch_python())
        .env("PYTHONPATH", d.path());
    let out = run_with_limit(cmd, Duration::from_secs(60));
    let text = describe(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("slow_module imported before me: True"),
        "{text}"
    );
    assert!(text.contains("workers=1 prewarmed=1"), "{text}");
}
