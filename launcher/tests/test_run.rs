//! PyTorch's launcher test suite (test/distributed/launcher/test_run.py), re-expressed as
//! subprocess tests against the real `elastic-launch` binary, one test per original, named
//! after it. Worker scripts are our own, under tests/bin. Torch's tests call `main()` in
//! process; here "returns normally" is exit 0 and "raises" is a non-zero exit.

mod common;

use std::time::Duration;

use common::*;

fn touch_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn dir_arg(d: &tempfile::TempDir) -> String {
    format!("--touch-file-dir={}", d.path().display())
}

#[test]
fn test_launch_user_script_python() {
    let d = touch_dir();
    let out = run(&[
        "--nnodes=1",
        "--nproc-per-node=4",
        "--rdzv-id=test-run",
        "--monitor-interval=1",
        "--start-method=spawn",
        &script("test_script.py"),
        &dir_arg(&d),
    ]);
    assert_success(&out);
    assert_eq!(names(d.path()), ranks(4));
}

#[test]
fn test_launch_user_script_python_caffe2_bc() {
    let d = touch_dir();
    let port = free_port().to_string();
    let out = run(&[
        "--nnodes=1",
        "--nproc-per-node=4",
        "--monitor-interval=1",
        "--start-method=spawn",
        "--master-addr=localhost",
        &format!("--master-port={port}"),
        "--node-rank=0",
        &script("test_script.py"),
        &dir_arg(&d),
    ]);
    assert_success(&out);
    assert_eq!(names(d.path()), ranks(4));
}

#[test]
fn test_launch_user_script_bash() {
    let d = touch_dir();
    let dir = d.path().display().to_string();
    let out = run(&[
        "--nnodes=1",
        "--nproc-per-node=4",
        "--no-python",
        "--module",
        &script("test_script.sh"),
        &dir,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "Don't use both the '--no-python' flag and the '--module' flag at the same time."
        ),
        "{}",
        describe(&out)
    );
    assert!(
        names(d.path()).is_empty(),
        "nothing may start on a usage error"
    );
    let out = run(&[
        "--nnodes=1",
        "--nproc-per-node=4",
        "--no-python",
        &script("test_script.sh"),
        &dir,
    ]);
    assert_success(&out);
    assert_eq!(names(d.path()), ranks(4));
}

#[test]
fn test_launch_user_script_default_nproc() {
    let d = touch_dir();
    let out = run(&[
        "--nnodes=1",
        "--no-python",
        "--module",
        &script("test_script.sh"),
        &d.path().display().to_string(),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    let out = run(&["--nnodes=1", &script("test_script.py"), &dir_arg(&d)]);
    assert_success(&out);
    assert_eq!(names(d.path()), ranks(1));
}

#[test]
fn test_launch_with_env_vars() {
    let d = touch_dir();
    let with_env = |module: &str| {
        let mut cmd = launch_cmd(&[&script("test_script.sh"), &d.path().display().to_string()]);
        cmd.env("PET_NNODES", "1")
            .env("PET_NPROC_PER_NODE", "4")
            .env("PET_RDZV_ID", "env-run")
            .env("PET_MONITOR_INTERVAL", "1")
            .env("PET_START_METHOD", "spawn")
            .env("PET_NO_PYTHON", "1")
            .env("PET_MODULE", module);
        run_with_limit(cmd, Duration::from_secs(60))
    };
    let out = with_env("1");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--module"),
        "{}",
        describe(&out)
    );
    assert!(names(d.path()).is_empty());
    let out = with_env("0");
    assert_success(&out);
    assert_eq!(names(d.path()), ranks(4));
}

fn nproc_files(nproc: &str, env: &[(&str, &str)]) -> std::collections::BTreeSet<String> {
    let d = touch_dir();
    let mut cmd = launch_cmd(&[
        &format!("--nproc-per-node={nproc}"),
        "--no-python",
        &script("test_script.sh"),
        &d.path().display().to_string(),
    ]);
    cmd.env_remove("CUDA_VISIBLE_DEVICES")
        .env_remove("NVIDIA_VISIBLE_DEVICES")
        .env_remove("ZE_AFFINITY_MASK")
        .env_remove("ROCR_VISIBLE_DEVICES")
        .env_remove("HIP_VISIBLE_DEVICES")
        .env_remove("HABANA_VISIBLE_DEVICES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    assert_success(&run_with_limit(cmd, Duration::from_secs(60)));
    names(d.path())
}

/// "Accelerator unavailable" is made real by hiding every GPU with an empty CUDA_VISIBLE_DEVICES.
#[test]
fn test_nproc_launch_auto_configurations() {
    let cpus = elastic_launch::devices::usable_cpus() as u32;
    assert_eq!(
        nproc_files("auto", &[("CUDA_VISIBLE_DEVICES", "")]),
        ranks(cpus)
    );
}

#[test]
fn test_nproc_launch_number_configurations() {
    assert_eq!(nproc_files("4", &[]), ranks(4));
}

#[test]
fn test_nproc_launch_unknown_configurations() {
    let out = run(&["--nproc-per-node=unknown", "--no-python", "/bin/true"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unsupported nproc_per_node value: unknown")
    );
}

/// Torch mocks "cuda available, 3 devices"; here the device plugin's variable says so.
#[test]
fn test_nproc_gpu_launch_configurations() {
    assert_eq!(
        nproc_files("auto", &[("CUDA_VISIBLE_DEVICES", "0,1,2")]),
        ranks(3)
    );
    assert_eq!(
        nproc_files("gpu", &[("CUDA_VISIBLE_DEVICES", "0,1,2")]),
        ranks(3)
    );
    assert_eq!(
        nproc_files("gpu", &[("NVIDIA_VISIBLE_DEVICES", "GPU-a,GPU-b,GPU-c")]),
        ranks(3)
    );
}

#[test]
fn test_nproc_xpu_launch_configurations() {
    assert_eq!(
        nproc_files(
            "auto",
            &[("CUDA_VISIBLE_DEVICES", ""), ("ZE_AFFINITY_MASK", "0,1,2")]
        ),
        ranks(3)
    );
    assert_eq!(
        nproc_files("xpu", &[("ZE_AFFINITY_MASK", "0,1,2")]),
        ranks(3)
    );
}

/// torch.cuda on ROCm counts AMD GPUs (ROCm's variables narrow them); `auto` takes Habana's.
#[test]
fn test_nproc_amd_and_gaudi_launch_configurations() {
    assert_eq!(
        nproc_files("gpu", &[("ROCR_VISIBLE_DEVICES", "0,1")]),
        ranks(2)
    );
    assert_eq!(
        nproc_files(
            "auto",
            &[
                ("ROCR_VISIBLE_DEVICES", "0,1,2"),
                ("HIP_VISIBLE_DEVICES", "1")
            ]
        ),
        ranks(1)
    );
    assert_eq!(
        nproc_files("auto", &[("HABANA_VISIBLE_DEVICES", "0,3")]),
        ranks(2)
    );
}

fn elastic_args(port: u16) -> Vec<String> {
    vec![
        "--nnodes=1:2".into(),
        "--nproc-per-node=4".into(),
        "--rdzv-backend=c10d".into(),
        format!("--rdzv-endpoint=localhost:{port}"),
        "--rdzv-conf='join_timeout=5,last_call_timeout=1,timeout=5'".into(),
        "--rdzv-id=elastic-test".into(),
        "--max-restarts=0".into(),
        "--monitor-interval=1".into(),
        "--start-method=spawn".into(),
    ]
}

#[test]
fn test_launch_elastic() {
    let d = touch_dir();
    let envd = touch_dir();
    let mut args = elastic_args(free_port());
    args.extend([
        script("test_script.py"),
        dir_arg(&d),
        format!("--env-dump-dir={}", envd.path().display()),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    assert_success(&out);
    assert_eq!(names(d.path()), ranks(4));
    let env0 = std::fs::read_to_string(envd.path().join("env_0")).unwrap();
    assert!(
        env0.contains("WORLD_SIZE=4\n") && env0.contains("GROUP_WORLD_SIZE=1\n"),
        "{env0}"
    );
}

#[test]
fn test_launch_elastic_worker_raise_exception() {
    let d = touch_dir();
    let logs = touch_dir();
    let mut args = elastic_args(free_port());
    args.extend([
        format!("--log-dir={}", logs.path().display()),
        script("test_script.py"),
        "--fail".into(),
        dir_arg(&d),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FAILED") && stderr.contains("Root Cause (first observed failure):"),
        "{stderr}"
    );
    assert!(
        stderr.contains("RuntimeError: raising exception since --fail flag was set"),
        "{stderr}"
    );
    // No restart: exactly one attempt.
    let run_dir = std::fs::read_dir(logs.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(names(&run_dir), ["attempt_0".to_string()].into());
}

/// Torch mocks the agent's `run` to raise; the real counterpart is an agent that cannot do its
/// job: the static store port is held by someone else. The error propagates: exit 1, printed.
#[test]
fn test_launch_elastic_agent_raise_exception() {
    let holder = std::net::TcpListener::bind("[::]:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let out = run(&[
        "--nproc-per-node=1",
        "--master-addr=localhost",
        &format!("--master-port={port}"),
        "--no-python",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("port {port}")),
        "{}",
        describe(&out)
    );
}

#[test]
fn test_launch_standalone() {
    let d = touch_dir();
    let out = run(&[
        "--standalone",
        "--nproc-per-node=4",
        "--monitor-interval=1",
        &script("test_script.py"),
        &dir_arg(&d),
    ]);
    assert_success(&out);
    assert_eq!(names(d.path()), ranks(4));
}

#[test]
fn test_launch_run_path() {
    let d = touch_dir();
    let out = run(&[
        "--run-path",
        "--nnodes=1",
        "--nproc-per-node=4",
        "--monitor-interval=1",
        &script("test_script.py"),
        &dir_arg(&d),
    ]);
    assert_success(&out);
    assert_eq!(names(d.path()), ranks(4));
}

#[test]
fn test_launch_elastic_multiple_agents() {
    let d = touch_dir();
    let port = free_port();
    let mut args = vec![
        "--nnodes=1:2".to_string(),
        "--nproc-per-node=4".into(),
        "--rdzv-backend=c10d".into(),
        format!("--rdzv-endpoint=localhost:{port}"),
        "--rdzv_conf=timeout=5".into(),
        "--rdzv-id=multi".into(),
        "--max-restarts=0".into(),
        "--monitor-interval=1".into(),
        "--start-method=spawn".into(),
    ];
    args.extend([script("test_script.py"), dir_arg(&d)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = Running::spawn(launch_cmd(&args));
    let out = run(&args);
    let child_out = child.output(Duration::from_secs(60));
    assert_success(&out);
    assert_success(&child_out);
    assert_eq!(names(d.path()), ranks(8));
}

#[test]
fn test_min_max_nodes_parse() {
    use elastic_launch::cli::values::parse_min_max_nnodes;
    let r = parse_min_max_nnodes("1").unwrap();
    assert_eq!((r.min, r.max), (1, 1));
    let r = parse_min_max_nnodes("2:20").unwrap();
    assert_eq!((r.min, r.max), (2, 20));
    assert!(parse_min_max_nnodes("2:20:30").is_err());
    let out = run(&["--nnodes=2:20:30", "/bin/true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("nnodes=2:20:30 is not in \"MIN:MAX\" format"),
        "{}",
        describe(&out)
    );
}

/// Torch checks that the rendezvous handler is shut down exactly once after success. The
/// observable equivalent: the run ends with exit 0, the rendezvous is closed, and the store
/// port is free again.
#[test]
fn test_launch_shutdown() {
    let port = free_port();
    let out = run(&[
        "--nnodes=1:2",
        "--rdzv-backend=c10d",
        &format!("--rdzv-endpoint=localhost:{port}"),
        "--rdzv-conf=last_call_timeout=0.2",
        "--nproc-per-node=2",
        "--no-python",
        "/bin/true",
    ]);
    assert_success(&out);
    std::net::TcpListener::bind(("::", port)).expect("store port released after shutdown");
}

fn is_launched_file(extra: &[&str]) -> String {
    let d = touch_dir();
    let out_file = d.path().join("out");
    let mut args = vec![
        "--run-path",
        "--nnodes=1",
        "--nproc-per-node=1",
        "--monitor-interval=1",
    ];
    args.extend_from_slice(extra);
    let out_arg = format!("--out-file={}", out_file.display());
    let s = script("test_script_is_torchelastic_launched.py");
    args.extend([s.as_str(), out_arg.as_str()]);
    let mut cmd = launch_cmd(&args);
    cmd.env("PYTHON_EXEC", torch_python());
    assert_success(&run_with_limit(cmd, Duration::from_secs(120)));
    std::fs::read_to_string(out_file).unwrap()
}

#[test]
fn test_is_torchelastic_launched() {
    assert_eq!(is_launched_file(&[]), "True");
}

#[test]
fn test_is_torchelastic_launched_with_logs_spec_defined() {
    assert_eq!(is_launched_file(&["--logs_specs=default"]), "True");
}

#[test]
fn test_logs_logs_spec_entrypoint_must_be_defined() {
    let d = touch_dir();
    let out = run(&[
        "--logs_specs=DOESNOT_EXIST",
        "--nproc-per-node=1",
        "--no-python",
        &script("test_script.sh"),
        &d.path().display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Could not find entrypoint under 'torchrun.logs_specs[DOESNOT_EXIST]' key")
    );
    assert!(names(d.path()).is_empty());
}

#[test]
fn test_is_not_torchelastic_launched() {
    let d = touch_dir();
    let out_file = d.path().join("out");
    let status = std::process::Command::new(torch_python())
        .env_remove("TORCHELASTIC_RUN_ID")
        .args([
            &script("test_script_is_torchelastic_launched.py"),
            &format!("--out-file={}", out_file.display()),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(out_file).unwrap(), "False");
}

fn init_method(method_for_port: impl Fn(u16) -> String) {
    let port = free_port();
    let method = format!("--init-method={}", method_for_port(port));
    let port_arg = format!("--master-port={port}");
    let s = script("test_script_init_method.py");
    let mut cmd = launch_cmd(&[
        "--run-path",
        "--nnodes=1",
        "--nproc-per-node=4",
        "--master-addr=localhost",
        &port_arg,
        "--monitor-interval=1",
        &s,
        &method,
    ]);
    cmd.env("PYTHON_EXEC", torch_python());
    let out = run_with_limit(cmd, Duration::from_secs(180));
    assert_success(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("all_reduce ok (10.0)")
            .count(),
        4,
        "{}",
        describe(&out)
    );
}

#[test]
fn test_init_method_tcp_with_torchelastic() {
    init_method(|port| format!("tcp://localhost:{port}"));
}

#[test]
fn test_init_method_env_with_torchelastic() {
    init_method(|_| "env://".into());
}

#[test]
fn test_capture_logs_using_default_logs_specs() {
    let d = touch_dir();
    let mut cmd = launch_cmd(&[
        "--nnodes=1",
        "--nproc-per-node=4",
        "--redirect=3",
        "--tee=3",
        "--no-python",
        &script("test_script.sh"),
        &d.path().display().to_string(),
    ]);
    cmd.env("TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE", "[rank${rank}]: ");
    let out = run_with_limit(cmd, Duration::from_secs(60));
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for i in 0..4 {
        assert!(
            stdout.contains(&format!("[rank{i}]: creating ")),
            "{}",
            describe(&out)
        );
    }
}

/// Torch's version needs two GPUs and compares inductor output; the contract it pins is the
/// environment and the tee prefix, which need no GPU: without the flag each worker has its own
/// LOCAL_RANK and sees all devices; with it every worker is LOCAL_RANK=0 and sees only its own.
#[test]
fn test_virtual_local_rank() {
    let lines = |extra: &[&str]| {
        let mut args = vec!["--nproc-per-node=2", "--redirect=3", "--tee=3"];
        args.extend_from_slice(extra);
        let s = script("test_script_virtual_local_rank.py");
        args.push(&s);
        let mut cmd = launch_cmd(&args);
        cmd.env("CUDA_VISIBLE_DEVICES", "4,7");
        let out = run_with_limit(cmd, Duration::from_secs(60));
        assert_success(&out);
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("[default"))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(
        lines(&[]),
        [
            "[default0]:LOCAL_RANK=0 CUDA_VISIBLE_DEVICES=4,7",
            "[default1]:LOCAL_RANK=1 CUDA_VISIBLE_DEVICES=4,7"
        ]
    );
    assert_eq!(
        lines(&["--virtual-local-rank"]),
        [
            "[default0]:LOCAL_RANK=0 CUDA_VISIBLE_DEVICES=4",
            "[default1]:LOCAL_RANK=0 CUDA_VISIBLE_DEVICES=7"
        ]
    );
}
