//! Several agents on one machine forming elastic c10d rounds over real TCP: scale-up, loss of a
//! node, loss of the store host, too few nodes, restarts across nodes, and real torch workers.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Common arguments of every agent of one job.
fn job_args(port: u16, nnodes: &str, extra_conf: &str) -> Vec<String> {
    vec![
        format!("--nnodes={nnodes}"),
        "--rdzv-backend=c10d".into(),
        format!("--rdzv-endpoint=localhost:{port}"),
        format!("--rdzv-id=job{port}"),
        format!("--rdzv-conf=last_call_timeout=0.5{extra_conf}"),
        "--nproc-per-node=1".into(),
        "--monitor-interval=0.05".into(),
    ]
}

fn agent(port: u16, nnodes: &str, extra_conf: &str, worker: &[String]) -> Running {
    agent_with_env(port, nnodes, extra_conf, worker, &[])
}

/// An agent whose environment (and so its workers') also has `env`.
fn agent_with_env(
    port: u16,
    nnodes: &str,
    extra_conf: &str,
    worker: &[String],
    env: &[(&str, &str)],
) -> Running {
    let mut args = job_args(port, nnodes, extra_conf);
    args.extend_from_slice(worker);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = launch_cmd(&refs);
    cmd.envs(env.iter().copied());
    Running::spawn(cmd)
}

/// The first agent hosts the store; wait for it so the others are clients.
fn host_agent(port: u16, nnodes: &str, extra_conf: &str, worker: &[String]) -> Running {
    listening(agent(port, nnodes, extra_conf, worker), port)
}

/// Waits for `host` to listen on `port`; if it does not, fails with what the agent printed.
fn listening(host: Running, port: u16) -> Running {
    let limit = Duration::from_secs(10);
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > limit {
            let out = host.output(Duration::from_secs(1));
            panic!(
                "the host agent did not listen on {port} within {limit:?}:\n{}",
                describe(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    host
}

/// Waits for agents `a` and `b` to exit, asserts both succeeded, and returns what both said.
fn both_succeed(a: Running, b: Running) -> String {
    let (out_a, out_b) = (
        a.output(Duration::from_secs(60)),
        b.output(Duration::from_secs(60)),
    );
    let both = format!(
        "agent a:\n{}\nagent b:\n{}",
        describe(&out_a),
        describe(&out_b)
    );
    assert!(out_a.status.success() && out_b.status.success(), "{both}");
    both
}

/// Heartbeats fast enough that a lost node is noticed in about two seconds.
const FAST_HEARTBEAT: &str = ",keep_alive_interval=0.25,keep_alive_max_attempt=8";

fn bash(script: String) -> Vec<String> {
    vec![
        "--no-python".into(),
        "/bin/bash".into(),
        "-c".into(),
        script,
    ]
}

fn files(d: &tempfile::TempDir, prefix: &str) -> BTreeSet<String> {
    names(d.path())
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A node whose workers finished waits at the exit barrier without counting as lost, though it
/// beats no more: the other node's worker, still busy (rank 0 writing a final checkpoint for
/// longer than the 2 s after which a silent node is lost), is not stopped.
#[test]
fn a_finished_node_is_not_lost_while_another_finishes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"[ "$RANK" = 0 ] && sleep 5; touch {dir}/done_${{RANK}}_$TORCHELASTIC_RESTART_COUNT"#
    ));
    let port = free_port();
    let a = host_agent(port, "2", "", &worker);
    let b = agent(port, "2", "", &worker);
    let both = both_succeed(a, b);
    assert_eq!(files(&d, "done_"), set(&["done_0_0", "done_1_0"]), "{both}");
    assert!(!both.contains("stopped heartbeating"), "{both}");
}

/// The launchers of a job share `ELASTICJOB_STORE_TOKEN` (the operator sets it per job) and
/// their workers never see it; a launcher with another token is refused by the job's store with
/// a message that names the variable, and the job carries on without it.
#[test]
fn launchers_share_the_store_token_and_keep_it_from_their_workers() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"[ -z "$ELASTICJOB_STORE_TOKEN" ] || exit 3; touch {dir}/done_${{RANK}}"#
    ));
    let port = free_port();
    let token = [("ELASTICJOB_STORE_TOKEN", "uid-1")];
    let a = listening(
        agent_with_env(port, "2", ",join_timeout=20", &worker, &token),
        port,
    );
    let stranger = agent_with_env(
        port,
        "2",
        ",join_timeout=3",
        &worker,
        &[("ELASTICJOB_STORE_TOKEN", "uid-2")],
    );
    let out = stranger.output(Duration::from_secs(30));
    let log = describe(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("ELASTICJOB_STORE_TOKEN"), "{log}");
    let b = agent_with_env(port, "2", ",join_timeout=20", &worker, &token);
    let both = both_succeed(a, b);
    assert_eq!(files(&d, "done_"), set(&["done_0", "done_1"]), "{both}");
}

/// In an ElasticJob pod the operator sets `ELASTICJOB_POD_IP`: the group rank 0 gives its
/// workers' store that address as `MASTER_ADDR`, not its host name, which a recreated pod's
/// peers may still resolve to the pod it replaced. An IPv6 one is bracketed.
#[test]
fn the_workers_store_is_at_the_pod_ip() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(r#"echo "$MASTER_ADDR" > {dir}/master_${{RANK}}"#));
    for (pod_ip, master_addr) in [("127.0.0.5", "127.0.0.5"), ("::1", "[::1]")] {
        let port = free_port();
        let env = [("ELASTICJOB_POD_IP", pod_ip)];
        let a = listening(agent_with_env(port, "2", "", &worker, &env), port);
        let b = agent_with_env(port, "2", "", &worker, &env);
        let both = both_succeed(a, b);
        for rank in 0..2 {
            let master = std::fs::read_to_string(d.path().join(format!("master_{rank}"))).unwrap();
            assert_eq!(master.trim(), master_addr, "rank {rank}:\n{both}");
        }
    }
}

/// 1:3 with two agents running; a third joins: everyone restarts into a round of three
/// (not counted against --max-restarts=0), WORLD_SIZE grows from 2 to 3.
#[test]
fn scale_up_when_a_third_node_joins() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"touch {dir}/ws_${{WORLD_SIZE}}_rank_$RANK; [ "$WORLD_SIZE" = 3 ] && exit 0; exec sleep 60"#
    ));
    let port = free_port();
    let a = host_agent(port, "1:3", "", &worker);
    let b = agent(port, "1:3", "", &worker);
    wait_until(Duration::from_secs(20), "a round of two", || {
        files(&d, "ws_2").len() == 2
    });
    let c = agent(port, "1:3", "", &worker);
    for (name, agent) in [("a", a), ("b", b), ("c", c)] {
        let out = agent.output(Duration::from_secs(30));
        assert!(out.status.success(), "agent {name}:\n{}", describe(&out));
    }
    assert_eq!(
        files(&d, "ws_3"),
        set(&["ws_3_rank_0", "ws_3_rank_1", "ws_3_rank_2"])
    );
}

/// 2:3 with three agents; SIGKILL one that does not host the store: the survivors notice its
/// heartbeat stop, re-form with two nodes, and finish.
#[test]
fn survivors_reform_after_a_node_is_killed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"touch {dir}/ws_${{WORLD_SIZE}}_rank_$RANK; [ "$WORLD_SIZE" = 2 ] && exit 0; exec sleep 60"#
    ));
    let port = free_port();
    let a = host_agent(port, "2:3", FAST_HEARTBEAT, &worker);
    let b = agent(port, "2:3", FAST_HEARTBEAT, &worker);
    let mut c = agent(port, "2:3", FAST_HEARTBEAT, &worker);
    wait_until(Duration::from_secs(20), "a round of three", || {
        files(&d, "ws_3").len() == 3
    });
    c.kill();
    for (name, agent) in [("a", a), ("b", b)] {
        let out = agent.output(Duration::from_secs(30));
        assert!(out.status.success(), "agent {name}:\n{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("re-forming without it")
                || String::from_utf8_lossy(&out.stderr).contains("waiting to join"),
            "{}",
            describe(&out)
        );
    }
    assert_eq!(files(&d, "ws_2"), set(&["ws_2_rank_0", "ws_2_rank_1"]));
}

/// The re-form after a lost node closes as soon as both survivors are in: with a 120 s last
/// call, a round of two still forms in seconds, because the node that noticed the loss said
/// the peer is gone and the round needs no one else.
#[test]
fn a_reform_after_a_loss_does_not_wait_out_the_last_call() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"touch {dir}/ws_${{WORLD_SIZE}}_rank_$RANK; [ "$WORLD_SIZE" = 2 ] && exit 0; exec sleep 300"#
    ));
    let conf = ",last_call_timeout=120,expected_nodes=3";
    let port = free_port();
    let a = host_agent(port, "2:4", conf, &worker);
    let b = agent(port, "2:4", conf, &worker);
    let mut c = agent(port, "2:4", conf, &worker);
    // expected_nodes=3 closes the first round at three of at most four, without a last call.
    wait_until(Duration::from_secs(20), "a round of three", || {
        files(&d, "ws_3").len() == 3
    });
    c.kill();
    let mut logs = String::new();
    for (name, agent) in [("a", a), ("b", b)] {
        let out = agent.output(Duration::from_secs(40));
        assert!(out.status.success(), "agent {name}:\n{}", describe(&out));
        logs += &describe(&out);
    }
    // Whichever survivor joined last closed the round.
    assert!(logs.contains("round closed without a last call"), "{logs}");
    assert_eq!(files(&d, "ws_2"), set(&["ws_2_rank_0", "ws_2_rank_1"]));
}

/// A node that crashes (SIGKILL) while its peers' workers fail at once, as a collective does
/// when a peer's connections reset: the survivors re-join before any heartbeat noticed the
/// loss, and the first of them finds the crashed node's store connection closed, counts it
/// gone and the round closes, instead of waiting out the 120 s last call.
#[test]
fn a_crashed_node_whose_peers_failed_first_is_not_waited_for() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let mut worker = vec!["--max-restarts=3".to_string()];
    worker.extend(bash(format!(
        r#"[ "$WORLD_SIZE" = 2 ] && {{ touch {dir}/ws_2_rank_$RANK; exit 0; }}; touch {dir}/up_$RANK; while [ ! -e {dir}/crashed ]; do sleep 0.02; done; exit 1"#
    )));
    let conf = ",last_call_timeout=120,expected_nodes=3";
    let port = free_port();
    let a = host_agent(port, "2:3", conf, &worker);
    let b = agent(port, "2:3", conf, &worker);
    let mut c = agent(port, "2:3", conf, &worker);
    wait_until(Duration::from_secs(20), "a round of three", || {
        files(&d, "up_").len() == 3
    });
    c.kill();
    std::fs::write(d.path().join("crashed"), b"").unwrap();
    let mut logs = String::new();
    for (name, agent) in [("a", a), ("b", b)] {
        let out = agent.output(Duration::from_secs(40));
        assert!(out.status.success(), "agent {name}:\n{}", describe(&out));
        logs += &describe(&out);
    }
    assert!(logs.contains("its store connection closed"), "{logs}");
    assert_eq!(files(&d, "ws_2"), set(&["ws_2_rank_0", "ws_2_rank_1"]));
}

/// A node that leaves (SIGTERM: its pod is scaled away or preempted) says so on its way out:
/// the two that stay re-form at once, though their workers carry on (as torch workers can,
/// hung on the missing peer). Heartbeats are slowed to minutes and the last call is 120 s, so
/// only the departing node's word can stop them and close the round in time.
#[test]
fn a_node_that_leaves_is_not_waited_for() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"[ "$WORLD_SIZE" = 2 ] && {{ touch {dir}/ws_2_rank_$RANK; exit 0; }}; touch {dir}/up_$RANK; if [ -n "$LEAVER" ]; then trap "touch {dir}/left; exit 143" TERM; while true; do sleep 0.05; done; fi; exec sleep 600"#
    ));
    let conf = ",last_call_timeout=120,expected_nodes=3,keep_alive_interval=60";
    let port = free_port();
    let a = host_agent(port, "2:3", conf, &worker);
    let b = agent(port, "2:3", conf, &worker);
    let c = agent_with_env(port, "2:3", conf, &worker, &[("LEAVER", "1")]);
    wait_until(Duration::from_secs(20), "a round of three", || {
        files(&d, "up_").len() == 3
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out_c = c.output(Duration::from_secs(40));
    assert!(
        !out_c.status.success(),
        "c was stopped:\n{}",
        describe(&out_c)
    );
    for (name, agent) in [("a", a), ("b", b)] {
        let out = agent.output(Duration::from_secs(40));
        assert!(out.status.success(), "agent {name}:\n{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("a node of this round left the job"),
            "agent {name}:\n{}",
            describe(&out)
        );
    }
    assert_eq!(files(&d, "ws_2"), set(&["ws_2_rank_0", "ws_2_rank_1"]));
}

/// An HTTP/1.0 request to the launcher's status endpoint on `port`: the whole reply.
fn http(port: u16, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Posts `body` to the launcher's status endpoint on `port`; the HTTP status line.
fn post(port: u16, path: &str, body: &str) -> String {
    let reply = http(port, "POST", path, body);
    reply.lines().next().unwrap_or_default().to_string()
}

/// Workers read why they are stopped, before their SIGTERM, from $ELASTICJOB_STOP_REASON_FILE:
/// a node joining (a scale-up); then what the operator posted before stopping the pod
/// (ScaleDown), with the grace they have (--shutdown-timeout). A new round starts without one.
#[test]
fn workers_learn_why_they_are_stopped() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    // Each worker's notice is named after its agent (WHO), whatever its rank.
    let worker = bash(format!(
        r#"n={dir}/notice_${{WORLD_SIZE}}_$WHO; [ -e "$ELASTICJOB_STOP_REASON_FILE" ] && touch {dir}/stale; trap 'cp "$ELASTICJOB_STOP_REASON_FILE" $n; exit 143' TERM; touch {dir}/up_${{WORLD_SIZE}}_$WHO; while true; do sleep 0.05; done"#
    ));
    let port = free_port();
    let status_port = free_port();
    let mut a_args = vec![
        format!("--status-port={status_port}"),
        "--shutdown-timeout=7".into(),
    ];
    a_args.extend(worker.iter().cloned());
    let a = listening(
        agent_with_env(port, "1:2", "", &a_args, &[("WHO", "a")]),
        port,
    );
    wait_until(Duration::from_secs(20), "a round of one", || {
        files(&d, "up_1_").len() == 1
    });
    let b = agent_with_env(port, "1:2", "", &worker, &[("WHO", "b")]);
    wait_until(Duration::from_secs(20), "a round of two", || {
        files(&d, "up_2_").len() == 2
    });
    let notice = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(d.path().join(name)).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
    };
    let n = notice("notice_1_a");
    assert_eq!(n["reason"], "MembershipChanged", "{n}");
    assert_eq!(n["round"], 0, "{n}");
    let reply = post(
        status_port,
        "/stop",
        r#"{"reason": "ScaleDown", "message": "the job is scaled from 2 to 1 pods"}"#,
    );
    assert!(reply.contains(" 204"), "{reply}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = a.output(Duration::from_secs(30));
    assert!(!out.status.success(), "{}", describe(&out));
    let n = notice("notice_2_a");
    assert_eq!(
        (&n["reason"], &n["message"], &n["graceSeconds"], &n["round"]),
        (
            &json!("ScaleDown"),
            &json!("the job is scaled from 2 to 1 pods"),
            &json!(7.0),
            &json!(1)
        ),
        "{n}"
    );
    assert!(
        files(&d, "stale").is_empty(),
        "a new round must start without a notice"
    );
    drop(b);
}

/// Workers report progress by appending JSON lines to $ELASTICJOB_PROGRESS_FILE: `/status`
/// shows the step, total, metrics and rate; a rank that reported and then falls silent for
/// --stall-timeout stalls the group, which is restarted (counted) and the stall is reported.
#[test]
fn progress_is_served_and_a_silent_rank_restarts_the_group() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let port = free_port();
    let status_port = free_port();
    let mut args = vec![
        format!("--status-port={status_port}"),
        "--stall-timeout=2".into(),
        "--max-restarts=1".into(),
        format!("--termination-message-path={dir}/term"),
    ];
    args.extend(bash(format!(
        r#"for s in 1 2 3; do echo "{{\"step\": $s, \"total\": 10, \"loss\": 0.5}}" >> "$ELASTICJOB_PROGRESS_FILE"; sleep 0.7; done; [ "$TORCHELASTIC_RESTART_COUNT" = 1 ] && exit 0; touch {dir}/hung; exec sleep 60"#
    )));
    let a = host_agent(port, "1", "", &args);
    let status = || -> serde_json::Value {
        let reply = http(status_port, "GET", "/status", "");
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_default()
    };
    wait_until(Duration::from_secs(20), "step 3 in /status", || {
        files(&d, "hung").len() == 1 && status()["training"]["step"] == 3
    });
    let s = status();
    assert_eq!(s["training"]["total"], 10, "{s}");
    assert_eq!(s["training"]["metrics"]["loss"], 0.5, "{s}");
    assert!(
        s["training"]["stepsPerSecond"].as_f64().unwrap() > 0.0,
        "{s}"
    );
    let out = a.output(Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    let log = describe(&out);
    assert!(log.contains("ranks stopped reporting progress"), "{log}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("term")).unwrap()).unwrap();
    assert_eq!(report["restartCount"], 1, "{report}");
}

/// SIGKILL of the agent that hosts the store; the other notices at once, keeps trying the
/// endpoint, and when a new agent comes up there the job re-forms and finishes. Nobody exits
/// 0 because of the loss itself: the survivor finishes only after the new round ran.
#[test]
fn job_reforms_after_the_store_host_is_killed_and_replaced() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"touch {dir}/attempt_${{TORCHELASTIC_RESTART_COUNT}}_rank_$RANK; [ "$TORCHELASTIC_RESTART_COUNT" -gt 0 ] && exit 0; exec sleep 60"#
    ));
    let port = free_port();
    let mut a = host_agent(port, "2", ",join_timeout=30", &worker);
    let b = agent(port, "2", ",join_timeout=30", &worker);
    wait_until(Duration::from_secs(20), "the first round", || {
        files(&d, "attempt_0").len() == 2
    });
    a.kill();
    // Not `host_agent`: the replacement may host, form the round with b and finish before a
    // poll for its port sees it listen.
    let a2 = agent(port, "2", ",join_timeout=30", &worker);
    let out_b = b.output(Duration::from_secs(40));
    let out_a2 = a2.output(Duration::from_secs(40));
    assert!(
        out_b.status.success(),
        "surviving agent:\n{}",
        describe(&out_b)
    );
    assert!(
        out_a2.status.success(),
        "replacement host:\n{}",
        describe(&out_a2)
    );
    assert!(
        String::from_utf8_lossy(&out_b.stderr).contains("lost the rendezvous store"),
        "{}",
        describe(&out_b)
    );
    assert_eq!(
        files(&d, "attempt_1"),
        set(&["attempt_1_rank_0", "attempt_1_rank_1"])
    );
}

/// An agent of a job whose store can move (`store_hosts`): node `index` at 127.0.1.<index>.
fn movable_store_agent(port: u16, index: u32, nnodes: &str, worker: &[String]) -> Running {
    let expected = nnodes.rsplit(':').next().unwrap();
    let conf = format!(
        ",last_call_timeout=120,expected_nodes={expected},store_hosts=127.0.1.{{}},is_host={}",
        u8::from(index == 0)
    );
    let mut args = job_args(port, nnodes, &conf);
    args.retain(|a| !a.starts_with("--rdzv-endpoint"));
    args.push(format!("--rdzv-endpoint=127.0.1.0:{port}"));
    args.extend_from_slice(worker);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = launch_cmd(&refs);
    cmd.env("ELASTICJOB_NODE_INDEX", index.to_string());
    Running::spawn(cmd)
}

/// SIGKILL of the agent hosting the store, with `store_hosts`: the survivors move the store to
/// the lowest of them and re-form at once (the last call is 120 s, and no new host comes); the
/// replacement of the lost node then finds the moved store and joins as a scale-up.
#[test]
fn the_store_moves_to_a_survivor_when_its_host_is_lost() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"touch {dir}/ws${{WORLD_SIZE}}_rank$RANK; [ -e {dir}/replaced ] && [ "$WORLD_SIZE" = 3 ] && exit 0; exec sleep 60"#
    ));
    let port = free_port();
    let mut a = movable_store_agent(port, 0, "2:3", &worker);
    let b = movable_store_agent(port, 1, "2:3", &worker);
    let c = movable_store_agent(port, 2, "2:3", &worker);
    wait_until(Duration::from_secs(20), "a round of three", || {
        files(&d, "ws3").len() == 3
    });
    for f in files(&d, "ws3") {
        std::fs::remove_file(d.path().join(f)).unwrap();
    }
    a.kill();
    let lost = std::time::Instant::now();
    wait_until(
        Duration::from_secs(30),
        "the survivors' round of two",
        || files(&d, "ws2").len() == 2,
    );
    eprintln!(
        "survivors trained again {:?} after the store host was killed",
        lost.elapsed()
    );
    std::fs::write(d.path().join("replaced"), b"").unwrap();
    let a2 = movable_store_agent(port, 0, "2:3", &worker);
    let mut logs = String::new();
    for (name, agent) in [("b", b), ("c", c), ("a2", a2)] {
        let out = agent.output(Duration::from_secs(40));
        assert!(out.status.success(), "agent {name}:\n{}", describe(&out));
        logs += &describe(&out);
    }
    assert!(logs.contains("this node hosts it now"), "{logs}");
    assert_eq!(
        files(&d, "ws3").len(),
        3,
        "the replacement scaled the job back up"
    );
}

/// A job of two loses the agent hosting the store: the survivor alone is no majority, so it
/// waits. The replacement (pod 0, which hosts first at a job's start) finds a member of a round
/// alive and leaves the store to it; with the replacement alive the survivor is a majority, so
/// it hosts the store, seeded with its last round, and the replacement joins it.
#[test]
fn a_job_of_two_waits_for_the_store_hosts_replacement() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"touch {dir}/attempt_${{TORCHELASTIC_RESTART_COUNT}}_rank_$RANK; [ -e {dir}/replaced ] && exit 0; exec sleep 60"#
    ));
    let port = free_port();
    let mut a = movable_store_agent(port, 0, "2", &worker);
    let b = movable_store_agent(port, 1, "2", &worker);
    wait_until(Duration::from_secs(20), "the first round", || {
        files(&d, "attempt_").len() == 2
    });
    a.kill();
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(d.path().join("replaced"), b"").unwrap();
    let a2 = movable_store_agent(port, 0, "2", &worker);
    let b = b.output(Duration::from_secs(40));
    let a2 = a2.output(Duration::from_secs(40));
    for (name, out) in [("b", &b), ("a2", &a2)] {
        assert!(out.status.success(), "agent {name}:\n{}", describe(out));
    }
    assert!(
        describe(&b).contains("this node hosts it now"),
        "the survivor hosts the store:\n{}",
        describe(&b)
    );
    assert!(
        !describe(&a2).contains("hosting the rendezvous store"),
        "the replacement started no store of its own:\n{}",
        describe(&a2)
    );
    assert_eq!(files(&d, "attempt_").len(), 4, "a second round of two");
}

/// The agent hosting the store freezes (SIGSTOP: no RST, as a lost node or a partition): the
/// other two see their store operations time out, move the store and re-form. When the frozen
/// agent resumes, its store is older than theirs: it closes it, finds theirs, and joins as a
/// scale-up. Never two rounds at once.
#[test]
fn a_store_host_that_comes_back_joins_the_store_the_others_moved_to() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"touch {dir}/ws${{WORLD_SIZE}}_rank$RANK; [ -e {dir}/healed ] && [ "$WORLD_SIZE" = 3 ] && exit 0; exec sleep 60"#
    ));
    let port = free_port();
    let a = movable_store_agent(port, 0, "2:3", &worker);
    let b = movable_store_agent(port, 1, "2:3", &worker);
    let c = movable_store_agent(port, 2, "2:3", &worker);
    wait_until(Duration::from_secs(20), "a round of three", || {
        files(&d, "ws3").len() == 3
    });
    for f in files(&d, "ws3") {
        std::fs::remove_file(d.path().join(f)).unwrap();
    }
    let pid = Pid::from_raw(a.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let frozen = std::time::Instant::now();
    wait_until(Duration::from_secs(30), "the other two's round", || {
        files(&d, "ws2").len() == 2
    });
    eprintln!(
        "the other two trained again {:?} after the store host froze",
        frozen.elapsed()
    );
    std::fs::write(d.path().join("healed"), b"").unwrap();
    kill(pid, Signal::SIGCONT).unwrap();
    let mut logs = String::new();
    for (name, agent) in [("a", a), ("b", b), ("c", c)] {
        let out = agent.output(Duration::from_secs(60));
        assert!(out.status.success(), "agent {name}:\n{}", describe(&out));
        logs += &describe(&out);
    }
    assert!(
        logs.contains("a newer rendezvous store is active"),
        "{logs}"
    );
    assert_eq!(
        files(&d, "ws3").len(),
        3,
        "the resumed agent joined the others"
    );
    assert!(!files(&d, "ws1").iter().any(|_| true), "no round of one");
}

/// Fencing: a node that cannot renew its heartbeat lease (here its store froze, as in a
/// partition: no RST, no answer) has its workers gone before the lease ends, when its peers may
/// count it lost and re-form without it, even a worker that ignores SIGTERM and would
/// otherwise get the 30 s between rounds. Two copies of a rank never run at once.
#[test]
fn a_node_that_cannot_renew_its_lease_stops_its_workers_before_the_lease_ends() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    // Each worker says it is alive every 50 ms, under its node's name, and ignores SIGTERM.
    let worker = bash(format!(
        r#"trap "" TERM; while true; do date +%s.%N > {dir}/alive_$NODE.tmp; mv {dir}/alive_$NODE.tmp {dir}/alive_$NODE; sleep 0.05; done"#
    ));
    let port = free_port();
    let a = listening(
        agent_with_env(port, "2", "", &worker, &[("NODE", "a")]),
        port,
    );
    let b = agent_with_env(port, "2", "", &worker, &[("NODE", "b")]);
    let alive = |node: &str| -> Option<f64> {
        std::fs::read_to_string(d.path().join(format!("alive_{node}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    wait_until(Duration::from_secs(20), "both workers up", || {
        alive("a").is_some() && alive("b").is_some()
    });
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    // The store (in agent a) freezes: b can no longer renew its lease.
    let pid = Pid::from_raw(a.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let frozen = now();
    // Until b's worker has stopped saying it is alive (half a second without a word), or
    // long enough that it plainly did not stop.
    let mut last = alive("b").unwrap();
    while now() - frozen < 10.0 {
        std::thread::sleep(Duration::from_millis(100));
        let seen = alive("b").unwrap();
        if seen == last && now() - seen > 0.5 {
            break;
        }
        last = seen;
    }
    kill(pid, Signal::SIGCONT).unwrap();
    drop(a);
    // b is trying to re-join by now; stop it to read what it said.
    kill(Pid::from_raw(b.id() as i32), Signal::SIGTERM).unwrap();
    let out = b.output(Duration::from_secs(30));
    // The lease is 2 s from b's last beat that got through, which was before the freeze.
    assert!(
        last - frozen < 2.5,
        "b's worker was still alive {:.1}s after its store froze:\n{}",
        last - frozen,
        describe(&out)
    );
    assert!(
        describe(&out).contains("stopping workers before this node's heartbeat lease ends"),
        "{}",
        describe(&out)
    );
}

/// A partition leaves the store host with the smaller side (here: the two other nodes of the
/// round freeze, so they fall silent without leaving, as across a cut network). The host's
/// heartbeat sees them lost, but one node of three is no quorum: it must not train alone
/// (minReplicas 1 would let it) while the larger side may be training. When the others come
/// back, the round forms again with all three.
#[test]
fn the_store_host_cut_off_from_most_of_its_round_does_not_train_alone() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"echo >> {dir}/ws_${{WORLD_SIZE}}_rank_$RANK; exec sleep 120"#
    ));
    let port = free_port();
    let a = host_agent(port, "1:3", FAST_HEARTBEAT, &worker);
    let b = agent(port, "1:3", FAST_HEARTBEAT, &worker);
    let c = agent(port, "1:3", FAST_HEARTBEAT, &worker);
    wait_until(Duration::from_secs(20), "a round of three", || {
        files(&d, "ws_3").len() == 3
    });
    let frozen = [b.id(), c.id()].map(|pid| Pid::from_raw(pid as i32));
    for pid in frozen {
        kill(pid, Signal::SIGSTOP).unwrap();
    }
    // The heartbeat notices in 2 s; the last call is 0.5 s. Long enough to have re-formed.
    std::thread::sleep(Duration::from_secs(6));
    let alone = files(&d, "ws_1");
    for pid in frozen {
        kill(pid, Signal::SIGCONT).unwrap();
    }
    let starts = |f: &str| {
        std::fs::read_to_string(d.path().join(f))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    // Back: their leases ran out, they stop their workers and re-join the host's round.
    let reformed = std::time::Instant::now();
    // Every rank of the new 3-node round, not only rank 0: they start one after the other, and
    // on a loaded machine the others may not have yet when rank 0 has.
    while (0..3).any(|r| starts(&format!("ws_3_rank_{r}")) < 2)
        && reformed.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    kill(Pid::from_raw(a.id() as i32), Signal::SIGTERM).unwrap();
    let out = a.output(Duration::from_secs(30));
    drop((b, c));
    assert_eq!(
        alone,
        BTreeSet::new(),
        "the host trained alone while the others were cut off:\n{}",
        describe(&out)
    );
    assert!(
        describe(&out).contains("waiting for a quorum for round 1: 1 of the 3 nodes of round 0"),
        "{}",
        describe(&out)
    );
    assert!(
        (0..3).all(|r| starts(&format!("ws_3_rank_{r}")) == 2),
        "the three nodes formed a round again: {:?}\n{}",
        files(&d, "ws_"),
        describe(&out)
    );
}

/// The store host is gone and its pod is being deleted: SIGTERM ends the survivor's wait for a
/// new host at once (exit 1, "received signal"), not after join_timeout.
#[test]
fn sigterm_ends_the_wait_for_a_lost_store_host() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!("touch {dir}/started_$RANK; exec sleep 60"));
    let port = free_port();
    let mut a = host_agent(port, "2", ",join_timeout=120", &worker);
    let b = agent(port, "2", ",join_timeout=120", &worker);
    wait_until(Duration::from_secs(20), "the first round", || {
        files(&d, "started_").len() == 2
    });
    a.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let t = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = b.output(Duration::from_secs(20));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("received signal"),
        "{}",
        describe(&out)
    );
}

/// Fewer nodes than MIN: a clear failure after join_timeout, naming what it waited for.
#[test]
fn below_min_fails_after_join_timeout() {
    let d = tempfile::tempdir().unwrap();
    let term = d.path().join("termination-log");
    let mut worker = vec![format!("--termination-message-path={}", term.display())];
    worker.extend(bash("exit 0".into()));
    let port = free_port();
    let a = agent(port, "2:3", ",join_timeout=1.5", &worker);
    let out = a.output(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rendezvous timed out")
            && stderr.contains("join_timeout")
            && stderr.contains("2 nodes to join round 0"),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(summary["reason"], "RendezvousFailed");
    assert!(
        summary["message"]
            .as_str()
            .unwrap()
            .contains("join_timeout")
    );
}

/// A worker on one node fails twice with --max-restarts=2: every node restarts each time, and
/// all nodes agree on TORCHELASTIC_RESTART_COUNT (0, 1, 2) in every round.
#[test]
fn worker_failure_restarts_every_node_with_consistent_counts() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"touch {dir}/attempt_${{TORCHELASTIC_RESTART_COUNT}}_rank_$RANK; c=$TORCHELASTIC_RESTART_COUNT; if [ "$c" -ge 2 ]; then exit 0; fi; if [ "$RANK" = 1 ]; then while [ ! -e {dir}/attempt_${{c}}_rank_0 ]; do sleep 0.01; done; exit 3; fi; exec sleep 60"#
    ));
    let mut args_worker = vec!["--max-restarts=2".to_string()];
    args_worker.extend(worker);
    let port = free_port();
    let a = host_agent(port, "2", "", &args_worker);
    let b = agent(port, "2", "", &args_worker);
    for (name, agent) in [("a", a), ("b", b)] {
        let out = agent.output(Duration::from_secs(40));
        assert!(out.status.success(), "agent {name}:\n{}", describe(&out));
    }
    let expected: BTreeSet<String> = (0..3)
        .flat_map(|a| (0..2).map(move |r| format!("attempt_{a}_rank_{r}")))
        .collect();
    assert_eq!(names(d.path()), expected);
}

/// A node killed outright (its pod SIGKILLed, its node lost) cannot claim the failure its loss
/// causes; its store connection closed, so the survivor whose collective broke is not charged
/// either. With --max-restarts=0 the survivor would otherwise fail; it re-forms alone (1:2)
/// and succeeds, and reports no restart.
#[test]
fn a_failure_caused_by_a_killed_peer_is_not_charged() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let port = free_port();
    let worker = |name: &str| {
        let mut args = vec![
            "--max-restarts=0".to_string(),
            format!("--termination-message-path={dir}/term_{name}"),
        ];
        // a's worker fails once b is killed, as a broken collective would; b's ends with its
        // agent.
        args.extend(bash(format!(
            r#"[ "$WORLD_SIZE" = 1 ] && exit 0; touch {dir}/up_$RANK; if [ -n "$VICTIM" ]; then while kill -0 $PPID 2>/dev/null; do sleep 0.05; done; exit 0; fi; while [ ! -e {dir}/killed ]; do sleep 0.01; done; exit 1"#
        )));
        args
    };
    let conf = ",last_call_timeout=3";
    let a = host_agent(port, "1:2", conf, &worker("a"));
    let mut b = agent_with_env(port, "1:2", conf, &worker("b"), &[("VICTIM", "1")]);
    wait_until(Duration::from_secs(20), "both workers up", || {
        files(&d, "up_").len() == 2
    });
    b.kill();
    std::fs::write(d.path().join("killed"), "").unwrap();
    let out_a = a.output(Duration::from_secs(60));
    assert!(
        out_a.status.success(),
        "a is not charged for b's loss:\n{}",
        describe(&out_a)
    );
    let text = std::fs::read_to_string(d.path().join("term_a")).unwrap();
    let sa: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&sa["reason"], &sa["restartCount"]),
        (&json!("Succeeded"), &json!(0)),
        "{sa}"
    );
    assert!(
        describe(&out_a).contains("a node of this round is gone (its store connection closed)"),
        "{}",
        describe(&out_a)
    );
}

/// Agent b's worker crashes in every round; agent a's fails only because of it, a moment
/// later, as a worker whose collective broke would. Only b is charged: with --max-restarts=1 b
/// gives up after its second crash (restart count 1), while a never spends its budget, re-forms
/// alone (1:2) and succeeds. torchrun would charge and fail both.
#[test]
fn a_failure_caused_by_a_peers_crash_is_not_charged() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let port = free_port();
    let worker = |name: &str| {
        let mut args = vec![
            "--max-restarts=1".to_string(),
            format!("--termination-message-path={dir}/term_{name}"),
        ];
        args.extend(bash(format!(
            r#"c=$TORCHELASTIC_RESTART_COUNT; [ "$WORLD_SIZE" = 1 ] && exit 0; if [ -n "$CRASHER" ]; then touch {dir}/crashed_$c; exit 3; fi; while [ ! -e {dir}/crashed_$c ]; do sleep 0.01; done; sleep 0.3; exit 1"#
        )));
        args
    };
    let conf = ",last_call_timeout=3";
    let a = host_agent(port, "1:2", conf, &worker("a"));
    let b = agent_with_env(port, "1:2", conf, &worker("b"), &[("CRASHER", "1")]);
    let out_b = b.output(Duration::from_secs(60));
    let out_a = a.output(Duration::from_secs(60));
    assert_eq!(
        out_b.status.code(),
        Some(1),
        "b gives up:\n{}",
        describe(&out_b)
    );
    assert!(
        out_a.status.success(),
        "a is never charged:\n{}",
        describe(&out_a)
    );
    let summary = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(d.path().join(format!("term_{name}"))).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let (sa, sb) = (summary("a"), summary("b"));
    assert_eq!(
        (&sb["reason"], &sb["exitCode"], &sb["restartCount"]),
        (&json!("WorkerFailed"), &json!(3), &json!(1)),
        "{sb}"
    );
    assert_eq!(
        (&sa["reason"], &sa["restartCount"]),
        (&json!("Succeeded"), &json!(0)),
        "{sa}"
    );
    assert!(
        String::from_utf8_lossy(&out_a.stderr).contains("another node's workers failed first"),
        "{}",
        describe(&out_a)
    );
}

/// Agent b is stopped (SIGTERM: its pod is scaled away); agent a's worker fails because of
/// it. With --max-restarts=0, a is not charged: b claimed the round on its way out, so a
/// re-forms alone and succeeds.
#[test]
fn a_failure_caused_by_a_departing_peer_is_not_charged() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let port = free_port();
    let mut worker = vec!["--max-restarts=0".to_string()];
    worker.extend(bash(format!(
        r#"[ "$WORLD_SIZE" = 1 ] && exit 0; touch {dir}/up_$RANK; if [ -n "$LEAVER" ]; then trap "touch {dir}/left; exit 143" TERM; while true; do sleep 0.05; done; fi; while [ ! -e {dir}/left ]; do sleep 0.01; done; sleep 0.3; exit 1"#
    )));
    let conf = ",last_call_timeout=3";
    let a = host_agent(port, "1:2", conf, &worker);
    let b = agent_with_env(port, "1:2", conf, &worker, &[("LEAVER", "1")]);
    wait_until(Duration::from_secs(30), "a round of two", || {
        files(&d, "up_").len() == 2
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out_b = b.output(Duration::from_secs(60));
    let out_a = a.output(Duration::from_secs(60));
    assert_eq!(
        out_b.status.code(),
        Some(1),
        "b was stopped:\n{}",
        describe(&out_b)
    );
    assert!(
        out_a.status.success(),
        "a is not charged for b's departure:\n{}",
        describe(&out_a)
    );
}

/// 2 agents × 2 real torch workers (gloo): all_reduce, a worker SIGKILLed, the whole job
/// restarts and all_reduce is right again with all four ranks. Over IPv6: the rendezvous
/// endpoint is `[::1]`, and so is the workers' MASTER_ADDR (the agent store).
#[test]
fn torch_workers_all_reduce_across_agents_and_a_restart_over_ipv6() {
    let _ = torch_job_with_a_restart(&["--rdzv-endpoint=[::1]"], 0.0);
}

/// The same with `--prewarm=torch`: the restarted workers are standbys that imported torch
/// while the first round trained (20 s, time enough for the import on a loaded machine). The
/// first round never waits for its standbys: it starts them fresh when they are not ready yet.
#[test]
fn prewarmed_torch_workers_all_reduce_across_agents_and_a_restart() {
    for out in torch_job_with_a_restart(&["--prewarm=torch"], 20.0) {
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        let restarted = log
            .lines()
            .find(|l| l.contains("started workers") && l.contains("restart_count=1 "))
            .unwrap_or_else(|| panic!("no restart:\n{log}"));
        assert!(restarted.contains("workers=2 prewarmed=2"), "{log}");
    }
}

fn torch_job_with_a_restart(extra: &[&str], kill_after_s: f64) -> [std::process::Output; 2] {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut args = job_args(port, "2", ",join_timeout=60");
    args.retain(|a| a != "--nproc-per-node=1");
    for arg in extra {
        match arg.strip_prefix("--rdzv-endpoint=") {
            // Another host, the same port.
            Some(host) => {
                args.retain(|a| !a.starts_with("--rdzv-endpoint="));
                args.push(format!("--rdzv-endpoint={host}:{port}"));
            }
            None => args.push(arg.to_string()),
        }
    }
    args.extend([
        "--nproc-per-node=2".into(),
        "--max-restarts=1".into(),
        script("test_script_elastic_torch.py"),
        "--kill-rank=3".into(),
        format!("--kill-after={kill_after_s}"),
        format!("--out-dir={}", d.path().display()),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let spawn = || {
        let mut cmd = launch_cmd(&refs);
        cmd.env("PYTHON_EXEC", torch_python());
        Running::spawn(cmd)
    };
    let a = listening(spawn(), port);
    let b = spawn();
    let outs = [
        a.output(Duration::from_secs(180)),
        b.output(Duration::from_secs(180)),
    ];
    for out in &outs {
        assert!(
            out.status.success(),
            "agent a:\n{}\nagent b:\n{}",
            describe(&outs[0]),
            describe(&outs[1])
        );
    }
    assert_eq!(
        names(d.path()),
        set(&["ok_1_0_of_4", "ok_1_1_of_4", "ok_1_2_of_4", "ok_1_3_of_4"])
    );
    outs
}

/// Static rendezvous across two agents: `--node-rank` 0 and 1 of `--nnodes=2`, ranks 0..7.
#[test]
fn static_two_nodes() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = |rank: u32| -> Vec<String> {
        vec![
            "--nnodes=2".into(),
            "--nproc-per-node=4".into(),
            format!("--node-rank={rank}"),
            "--master-addr=localhost".into(),
            format!("--master-port={port}"),
            script("test_script.py"),
            format!("--touch-file-dir={}", d.path().display()),
        ]
    };
    let spawn = |rank| {
        let a = args(rank);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        Running::spawn(launch_cmd(&refs))
    };
    let node1 = spawn(1);
    let node0 = spawn(0);
    for (name, agent) in [("node 0", node0), ("node 1", node1)] {
        let out = agent.output(Duration::from_secs(60));
        assert!(out.status.success(), "{name}:\n{}", describe(&out));
    }
    assert_eq!(names(d.path()), ranks(8));
}

/// One node's workers succeed while the other node's fail for good: the successful node says
/// what it waits for at the exit barrier and learns of the failure at once, without waiting
/// for the barrier's timeout.
#[test]
fn exit_barrier_learns_of_a_failed_peer() {
    let worker = bash(r#"[ "$GROUP_RANK" = 1 ] && { sleep 0.5; exit 4; }; exit 0"#.into());
    let port = free_port();
    let mut args = vec!["--exit-barrier-timeout=120".to_string()];
    args.extend(worker);
    let a = host_agent(port, "2", "", &args);
    let b = agent(port, "2", "", &args);
    let started = std::time::Instant::now();
    let out_a = a.output(Duration::from_secs(60));
    let out_b = b.output(Duration::from_secs(60));
    let (ok, failed) = if out_a.status.success() {
        (out_a, out_b)
    } else {
        (out_b, out_a)
    };
    assert!(ok.status.success(), "{}", describe(&ok));
    assert_eq!(failed.status.code(), Some(1), "{}", describe(&failed));
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(
        stderr.contains("waiting at the exit barrier for the other nodes")
            && stderr.contains("another node failed for good"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the barrier waited for its timeout"
    );
}

/// 1:2 with three agents: the third waits in reserve; when a member is killed the survivor
/// re-forms with the reserve node.
#[test]
fn reserve_node_replaces_a_lost_member() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let worker = bash(format!(
        r#"touch {dir}/ws_${{WORLD_SIZE}}_attempt_${{TORCHELASTIC_RESTART_COUNT}}_pid_$$$$; [ "$TORCHELASTIC_RESTART_COUNT" -gt 0 ] && exit 0; exec sleep 60"#
    ));
    let port = free_port();
    let a = host_agent(port, "1:2", FAST_HEARTBEAT, &worker);
    let mut b = agent(port, "1:2", FAST_HEARTBEAT, &worker);
    wait_until(Duration::from_secs(20), "a full round of two", || {
        files(&d, "ws_2_attempt_0").len() == 2
    });
    let c = agent(port, "1:2", FAST_HEARTBEAT, &worker);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        files(&d, "ws_").len(),
        2,
        "the reserve node must not disturb a full round"
    );
    b.kill();
    let out_a = a.output(Duration::from_secs(30));
    let out_c = c.output(Duration::from_secs(30));
    assert!(out_a.status.success(), "{}", describe(&out_a));
    assert!(out_c.status.success(), "{}", describe(&out_c));
    assert!(
        String::from_utf8_lossy(&out_c.stderr).contains("waiting in reserve"),
        "{}",
        describe(&out_c)
    );
    assert_eq!(
        files(&d, "ws_2_attempt_1").len(),
        2,
        "{:?}",
        names(d.path())
    );
}

/// A node waiting in reserve when the job finishes is told so and exits 0 without running
/// anything.
#[test]
fn reserve_node_exits_when_the_job_finishes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let go = d.path().join("go");
    let worker = bash(format!(
        r#"touch {dir}/ran_$$$$; while [ ! -e {go} ]; do sleep 0.02; done"#,
        go = go.display()
    ));
    let port = free_port();
    let a = host_agent(port, "1:2", "", &worker);
    let b = agent(port, "1:2", "", &worker);
    wait_until(Duration::from_secs(20), "a full round of two", || {
        files(&d, "ran_").len() == 2
    });
    let c = agent(port, "1:2", "", &worker);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&go, "").unwrap();
    for (name, agent) in [("a", a), ("b", b), ("c", c)] {
        let out = agent.output(Duration::from_secs(30));
        assert!(out.status.success(), "agent {name}:\n{}", describe(&out));
        if name == "c" {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("the job already finished"),
                "{}",
                describe(&out)
            );
        }
    }
    assert_eq!(files(&d, "ran_").len(), 2);
}
