//! `elastic-launch __wrap COMMAND`: a shell command that calls `torchrun` runs once, with the
//! launcher standing in as that `torchrun` (what the operator does with `sh -c "... &&
//! torchrun ..."` commands).

mod common;

use std::time::Duration;

use common::*;

fn wrap(script: &str) -> std::process::Command {
    launch_cmd(&["__wrap", "sh", "-c", script])
}

#[test]
fn the_command_runs_once_and_its_torchrun_is_the_launcher() {
    let out = run_with_limit(
        wrap(
            r#"echo setup; torchrun --standalone --nproc-per-node=2 --no-python sh -c 'echo "worker $LOCAL_RANK of $WORLD_SIZE"'"#,
        ),
        Duration::from_secs(60),
    );
    let log = describe(&out);
    assert!(out.status.success(), "{log}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("setup").count(), 1, "{log}");
    for rank in ["worker 0 of 2", "worker 1 of 2"] {
        assert_eq!(stdout.matches(rank).count(), 1, "{log}");
    }
    // torchrun was this launcher: its log, not torch's.
    assert!(log.contains("started workers"), "{log}");
}

#[test]
fn the_commands_status_is_the_exit_status() {
    for (script, code) in [("exit 3", 3), ("kill -9 $$", 137), ("exit 0", 0)] {
        let out = run_with_limit(wrap(script), Duration::from_secs(30));
        assert_eq!(
            out.status.code(),
            Some(code),
            "{script}: {}",
            describe(&out)
        );
    }
    let out = run_with_limit(
        launch_cmd(&["__wrap", "/nonexistent/setup"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot run `/nonexistent/setup`"),
        "{}",
        describe(&out)
    );
}

/// SIGTERM (the kubelet stopping the pod) reaches the launcher inside although the shell dies
/// of it at once: the workers get their SIGTERM and nothing is left behind.
#[test]
fn sigterm_reaches_the_launcher_and_its_workers_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    // A sleep only this test runs, to look for afterwards.
    let sleep = format!("sleep 60.{}", std::process::id());
    let script = format!(
        r#"torchrun --standalone --nproc-per-node=2 --no-python sh -c 'trap "touch {dir}/term_$LOCAL_RANK; exit 0" TERM; touch {dir}/up_$LOCAL_RANK; {sleep} & wait'"#,
        dir = d.path().display()
    );
    let wrapper = Running::spawn(wrap(&script));
    let up = |rank: u32| d.path().join(format!("up_{rank}")).exists();
    wait_until(Duration::from_secs(30), "both workers up", || {
        up(0) && up(1)
    });
    std::process::Command::new("kill")
        .args(["-TERM", &wrapper.id().to_string()])
        .status()
        .unwrap();
    let out = wrapper.output(Duration::from_secs(60));
    let log = describe(&out);
    assert!(log.contains("received death signal"), "{log}");
    for rank in [0, 1] {
        assert!(d.path().join(format!("term_{rank}")).exists(), "{log}");
    }
    let left = std::process::Command::new("pgrep")
        .args(["-f", &sleep])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left behind: {}\n{log}",
        String::from_utf8_lossy(&left.stdout)
    );
}
