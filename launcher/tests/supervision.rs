//! The launcher's own promises beyond test_run.py: restarts with correct counts, signal
//! forwarding, no orphans after a SIGKILL, the failure report and termination message, macro
//! substitution, log files, and a store that survives hostile connections mid-job.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn sh(script: &str) -> Vec<String> {
    vec![
        "--no-python".into(),
        "/bin/bash".into(),
        "-c".into(),
        script.into(),
    ]
}

fn run_args(args: &[String]) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs)
}

/// Rank 1 fails in attempts 0 and 1 with exit 3; with two restarts allowed the third attempt
/// succeeds, and every attempt sees the right TORCHELASTIC_RESTART_COUNT.
#[test]
fn restarts_count_up_and_succeed_within_budget() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    // Rank 1 fails only once rank 0 has recorded the attempt, or rank 0 could be stopped first.
    let script = format!(
        r#"c=$TORCHELASTIC_RESTART_COUNT; touch {dir}/attempt_${{c}}_rank_$RANK; if [ "$RANK" = 1 ] && [ "$c" -lt 2 ]; then while [ ! -e {dir}/attempt_${{c}}_rank_0 ]; do sleep 0.01; done; exit 3; fi; exit 0"#
    );
    let mut args = vec!["--nproc-per-node=2".to_string(), "--max-restarts=2".into()];
    args.extend(sh(&script));
    let out = run_args(&args);
    assert_success(&out);
    let expected: std::collections::BTreeSet<String> = (0..3)
        .flat_map(|a| (0..2).map(move |r| format!("attempt_{a}_rank_{r}")))
        .collect();
    assert_eq!(names(d.path()), expected, "{}", describe(&out));
}

/// With the budget exhausted the launcher exits 1, prints torchrun's report naming the rank,
/// and writes the JSON summary for Kubernetes.
#[test]
fn exhausted_budget_fails_with_report_and_termination_message() {
    let d = tempfile::tempdir().unwrap();
    let term = d.path().join("termination-log");
    let mut args = vec![
        "--nproc-per-node=2".to_string(),
        "--max-restarts=1".into(),
        format!("--termination-message-path={}", term.display()),
    ];
    args.extend(sh(r#"[ "$RANK" = 1 ] && exit 3; sleep 30"#));
    let out = run_args(&args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/bin/bash FAILED"), "{stderr}");
    assert!(stderr.contains("rank      : 1 (local_rank: 1)"), "{stderr}");
    assert!(stderr.contains("exitcode  : 3 (pid: "), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(summary["reason"], "WorkerFailed");
    assert_eq!(summary["rank"], 1);
    assert_eq!(summary["exitCode"], 3);
    assert_eq!(summary["restartCount"], 1);
    assert_eq!(summary["maxRestarts"], 1);
}

/// `GET` on the launcher's status port: the body, or None while it does not answer.
fn status_get(port: u16, path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_string())
}

/// `--status-port` serves the progress while the job runs (the operator's channel): after a
/// worker failure the restart count, then the running round and world size; the success
/// summary in the termination message keeps the final count.
#[test]
fn status_port_serves_progress_and_the_success_summary_keeps_the_restart_count() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let term = d.path().join("termination-log");
    let port = free_port();
    let mut args = vec![
        "--nproc-per-node=2".to_string(),
        "--max-restarts=2".into(),
        format!("--status-port={port}"),
        format!("--termination-message-path={}", term.display()),
    ];
    // Attempt 0: rank 1 fails (once rank 0 started). Attempt 1: both wait for `go`.
    args.extend(sh(&format!(
        r#"c=$TORCHELASTIC_RESTART_COUNT; touch {dir}/attempt_${{c}}_rank_$RANK; if [ "$c" = 0 ]; then if [ "$RANK" = 1 ]; then while [ ! -e {dir}/attempt_0_rank_0 ]; do sleep 0.01; done; exit 3; fi; sleep 30; fi; while [ ! -e {dir}/go ]; do sleep 0.05; done"#
    )));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let launcher = Running::spawn(launch_cmd(&refs));
    let mut last = None;
    wait_until(
        Duration::from_secs(60),
        "the status to show the restart",
        || {
            last = status_get(port, "/status");
            last.as_deref().is_some_and(|b| {
                let v: serde_json::Value = serde_json::from_str(b).unwrap();
                v["state"] == "Running" && v["restartCount"] == 1
            })
        },
    );
    let v: serde_json::Value = serde_json::from_str(last.as_deref().unwrap()).unwrap();
    assert_eq!(v["kind"], "elastic-launch/v1", "{v}");
    assert_eq!(v["worldSize"], 2, "{v}");
    assert_eq!(v["maxRestarts"], 2, "{v}");
    assert_eq!(v["localWorldSize"], 2, "{v}");
    let metrics = status_get(port, "/metrics").expect("metrics");
    assert!(metrics.contains("elastic_launch_restarts 1"), "{metrics}");
    assert!(
        metrics.contains("elastic_launch_state{state=\"Running\"} 1"),
        "{metrics}"
    );
    std::fs::File::create(d.path().join("go")).unwrap();
    let out = launcher.output(Duration::from_secs(60));
    assert_success(&out);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(summary["reason"], "Succeeded", "{summary}");
    assert_eq!(summary["restartCount"], 1, "{summary}");
    assert_eq!(summary["round"], v["round"], "{summary}");
}

/// A taken status port is refused at start with a message that names the option.
#[test]
fn a_taken_status_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut args = vec![format!("--status-port={port}")];
    args.extend(sh("exit 0"));
    let out = run_args(&args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot serve the launcher status on port {port}"))
            && stderr.contains("--status-port"),
        "{stderr}"
    );
}

/// A worker's error.json becomes the root cause, and is forwarded to the launcher's own
/// TORCHELASTIC_ERROR_FILE with errorCode added, as torchrun's @record does.
#[test]
fn error_file_is_read_and_forwarded() {
    let d = tempfile::tempdir().unwrap();
    let parent_file = d.path().join("parent_error.json");
    let script = r#"echo '{"message": {"message": "ValueError: bad batch", "extraInfo": {"py_callstack": "Traceback (most recent call last):\nValueError: bad batch", "timestamp": "1700000000"}}}' > "$TORCHELASTIC_ERROR_FILE"; exit 7"#;
    let mut args = vec!["--nproc-per-node=1".to_string()];
    args.extend(sh(script));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = launch_cmd(&refs);
    cmd.env("TORCHELASTIC_ERROR_FILE", &parent_file);
    let out = run_with_limit(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("traceback : Traceback (most recent call last):\n  ValueError: bad batch"),
        "{stderr}"
    );
    let forwarded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&parent_file).unwrap()).unwrap();
    assert_eq!(forwarded["message"]["message"], "ValueError: bad batch");
    assert_eq!(forwarded["message"]["errorCode"], 7);
}

#[test]
fn killed_worker_shows_signal_name() {
    let mut args = vec!["--nproc-per-node=1".to_string()];
    args.extend(sh("kill -9 $BASHPID")); // `$$` would be the macro escape for `$`
    let out = run_args(&args);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exitcode  : -9 (pid: ") && stderr.contains(" (SIGKILL)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Signal 9 (SIGKILL) received by PID"),
        "{stderr}"
    );
}

/// SIGTERM to the launcher reaches every worker; the launcher then exits non-zero.
#[test]
fn handled_signal_is_forwarded_to_workers() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let script = format!(
        r#"trap 'touch {dir}/term_$RANK; exit 0' TERM; touch {dir}/ready_$RANK; while true; do sleep 0.05; done"#
    );
    let mut args = vec!["--nproc-per-node=2".to_string()];
    args.extend(sh(&script));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = Running::spawn(launch_cmd(&refs));
    wait_until(Duration::from_secs(20), "workers ready", || {
        names(d.path()).len() == 2
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.output(Duration::from_secs(30));
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        names(d.path()).contains("term_0") && names(d.path()).contains("term_1"),
        "{:?}\n{}",
        names(d.path()),
        describe(&out)
    );
}

/// SIGKILL of the launcher mid-run: workers and their children (same process group) all die.
#[test]
fn sigkilled_launcher_leaves_no_process_behind() {
    let marker = format!("987.{}", std::process::id());
    let script = format!("sleep {marker} & (sleep {marker} &) ; sleep {marker}");
    let mut args = vec!["--nproc-per-node=2".to_string()];
    args.extend(sh(&script));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = Running::spawn(launch_cmd(&refs));
    let sleeps = || {
        processes_with(&format!("sleep {marker}"))
            .iter()
            .filter(|(_, cmd)| cmd.starts_with("sleep"))
            .count()
    };
    wait_until(
        Duration::from_secs(20),
        "6 sleeping worker descendants",
        || sleeps() == 6,
    );
    child.kill();
    wait_until(
        Duration::from_secs(10),
        "every worker descendant to be gone",
        || sleeps() == 0,
    );
    assert!(
        processes_with(&format!("-c {script}")).is_empty(),
        "a worker shell survived"
    );
}

/// `${local_rank}` in any argument becomes the worker's local rank; `$$` is an escaped `$`.
#[test]
fn local_rank_macro_in_arguments() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let mut args = vec![
        "--nproc-per-node=3".to_string(),
        "--no-python".into(),
        "/usr/bin/touch".into(),
    ];
    args.push(format!("{dir}/lr_${{local_rank}}"));
    args.push(format!("{dir}/plain_$local_rank"));
    let out = run_args(&args);
    assert_success(&out);
    let expected: std::collections::BTreeSet<String> = (0..3)
        .flat_map(|i| [format!("lr_{i}"), format!("plain_{i}")])
        .collect();
    assert_eq!(names(d.path()), expected);
}

/// `--log-dir` layout with `-r`: per-attempt, per-rank stdout/stderr files, nothing on the
/// console; `--local-ranks-filter` keeps other ranks' tee off the console.
#[test]
fn log_dir_layout_redirects_and_filter() {
    let logs = tempfile::tempdir().unwrap();
    let mut args = vec![
        format!("--log-dir={}", logs.path().display()),
        "--rdzv-id=layout".into(),
        "--nproc-per-node=2".into(),
        "-r".into(),
        "1".into(),
        "--tee=2".into(),
        "--local-ranks-filter=1".into(),
    ];
    args.extend(sh("echo out-$RANK; echo err-$RANK >&2"));
    let out = run_args(&args);
    assert_success(&out);
    let run_dirs: Vec<_> = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(run_dirs.len(), 1);
    let run_dir = &run_dirs[0];
    assert!(
        run_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("layout_")
    );
    for rank in 0..2 {
        let rank_dir = run_dir.join(format!("attempt_0/{rank}"));
        assert_eq!(
            std::fs::read_to_string(rank_dir.join("stdout.log")).unwrap(),
            format!("out-{rank}\n")
        );
        assert_eq!(
            std::fs::read_to_string(rank_dir.join("stderr.log")).unwrap(),
            format!("err-{rank}\n")
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("out-"),
        "redirected stdout must not reach the console: {stdout}"
    );
    assert!(stderr.contains("[default1]:err-1"), "{stderr}");
    assert!(
        !stderr.contains("err-0"),
        "rank 0 is filtered out: {stderr}"
    );
}

/// Port scanners and broken clients hit the store while real torch workers use it: the job
/// finishes correctly.
#[test]
fn hostile_connections_do_not_disturb_a_running_job() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let port_arg = format!("--master-port={port}");
    let s = script("test_script_store_loop.py");
    let dir = d.path().display().to_string();
    let mut cmd = launch_cmd(&[
        "--nproc-per-node=2",
        "--master-addr=localhost",
        &port_arg,
        &s,
        &dir,
    ]);
    cmd.env("PYTHON_EXEC", torch_python());
    let child = Running::spawn(cmd);
    wait_until(Duration::from_secs(60), "workers in their loop", || {
        names(d.path()).len() == 2
    });
    let garbage: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0x00, 0xde, 0xad, 0xbe, 0xef],
        &[
            0x00, 0xce, 0xf7, 0x85, 0x3c, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
        &[0x00, 0xce, 0xf7, 0x85, 0x3c, 0x03, 0x05, 0x00],
        &[0xff; 64],
    ];
    for bytes in garbage.iter().cycle().take(25) {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(bytes);
        }
    }
    let _idle = std::net::TcpStream::connect(("127.0.0.1", port));
    let out = child.output(Duration::from_secs(60));
    assert_success(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("rounds ok")
            .count(),
        2,
        "{}",
        describe(&out)
    );
}

/// Three real torch workers, rank 2 SIGKILLs itself in the first attempt, one restart: every
/// rank must all_reduce correctly in attempt 1.
fn assert_torch_workers_restart(launch_args: &[&str]) {
    let d = tempfile::tempdir().unwrap();
    let s = script("test_script_elastic_torch.py");
    let out_dir = format!("--out-dir={}", d.path().display());
    let mut args = vec!["--nproc-per-node=3", "--max-restarts=1"];
    args.extend_from_slice(launch_args);
    args.extend([s.as_str(), "--kill-rank=2", out_dir.as_str()]);
    let mut cmd = launch_cmd(&args);
    cmd.env("PYTHON_EXEC", torch_python());
    let out = run_with_limit(cmd, Duration::from_secs(180));
    assert_success(&out);
    let expected: std::collections::BTreeSet<String> =
        (0..3).map(|r| format!("ok_1_{r}_of_3")).collect();
    assert_eq!(names(d.path()), expected);
}

/// torch 2.15 workers no longer prefix store keys per attempt, so a store reused across
/// restarts hands them the dead attempt's addresses; torchrun 2.15 fails this way. Each c10d
/// round gets a fresh store here.
#[test]
fn torch_workers_restart_with_a_fresh_store() {
    assert_torch_workers_restart(&["--standalone"]);
}

/// With a static `--master-port` every attempt's workers share one store: the previous
/// attempt's keys are deleted before the restart.
#[test]
fn torch_workers_restart_on_a_static_master_port() {
    let port = format!("--master-port={}", free_port());
    assert_torch_workers_restart(&["--master-addr=localhost", &port]);
}

/// The launcher raises its soft open-files limit to the hard limit (the store host holds
/// connections per node); workers inherit it.
#[test]
fn open_files_limit_is_raised_to_the_hard_limit() {
    let hard = String::from_utf8(
        std::process::Command::new("bash")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let wrapper = format!(
        "ulimit -Sn 256 && exec {} --nproc-per-node=1 --no-python /bin/bash -c 'echo soft=$(ulimit -Sn)'",
        launcher()
    );
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-c", &wrapper]);
    let out = run_with_limit(cmd, Duration::from_secs(30));
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("soft={}", hard.trim())),
        "{}",
        describe(&out)
    );
}
