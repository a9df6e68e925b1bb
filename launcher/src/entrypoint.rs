//! What a worker process is: the program and arguments for each entrypoint kind (Python
//! script, module, binary, `--run-path`), with torchrun's `${local_rank}` macro applied.

use std::collections::BTreeMap;

use crate::config::{Config, EntrypointKind};
use crate::template::safe_substitute;

/// The entrypoint name torchrun prints in its failure report.
pub fn entrypoint_name(cfg: &Config) -> String {
    match cfg.entrypoint_kind {
        EntrypointKind::RunPath => "run_script_path".into(),
        _ => cfg.training_script.clone(),
    }
}

/// Program and arguments of one worker, with `${local_rank}` substituted in every argument.
pub fn worker_command(cfg: &Config, python: &str, local_rank: u32) -> (String, Vec<String>) {
    let (script, script_args) = substituted(cfg, local_rank);
    let script_args = script_args.into_iter();
    match cfg.entrypoint_kind {
        EntrypointKind::Binary => (script, script_args.collect()),
        EntrypointKind::PythonScript => (
            python.into(),
            ["-u".to_string(), script]
                .into_iter()
                .chain(script_args)
                .collect(),
        ),
        EntrypointKind::PythonModule => (
            python.into(),
            ["-u".to_string(), "-m".into(), script]
                .into_iter()
                .chain(script_args)
                .collect(),
        ),
        EntrypointKind::RunPath => (
            python.into(),
            [
                "-u".to_string(),
                "-c".into(),
                RUN_PATH_RUNNER.into(),
                script,
            ]
            .into_iter()
            .chain(script_args)
            .collect(),
        ),
    }
}

/// The script (or module) and its arguments with `${local_rank}` substituted.
fn substituted(cfg: &Config, local_rank: u32) -> (String, Vec<String>) {
    let rank = local_rank.to_string();
    let sub = |a: &String| safe_substitute(a, &[("local_rank", &rank)]);
    (
        sub(&cfg.training_script),
        cfg.training_script_args.iter().map(sub).collect(),
    )
}

/// What a standby interpreter runs ([`crate::prewarm`]): `sys.argv` (the script or module
/// first) and whether it is a module; None for entrypoints that are not a Python script or
/// module.
pub fn prewarmed_argv(cfg: &Config, local_rank: u32) -> Option<(Vec<String>, bool)> {
    let module = match cfg.entrypoint_kind {
        EntrypointKind::PythonScript => false,
        EntrypointKind::PythonModule => true,
        EntrypointKind::Binary | EntrypointKind::RunPath => return None,
    };
    let (script, args) = substituted(cfg, local_rank);
    Some((std::iter::once(script).chain(args).collect(), module))
}

/// `--run-path`: run the script with `runpy.run_path` as torchrun's function entrypoint does,
/// and record an uncaught exception to `TORCHELASTIC_ERROR_FILE` in torch's format.
const RUN_PATH_RUNNER: &str = r#"
import json, os, runpy, sys, time, traceback
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    raise
except BaseException as e:
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w") as f:
            json.dump({"message": {"message": f"{type(e).__name__}: {e}", "extraInfo": {
                "py_callstack": traceback.format_exc(), "timestamp": str(int(time.time()))}}}, f)
    raise
"#;

/// The interpreter for Python entrypoints: `PYTHON_EXEC`, else `python3` on the PATH.
pub fn python_exec(env: &BTreeMap<String, String>) -> String {
    env.get(elasticjob_contract::env::PYTHON_EXEC)
        .cloned()
        .unwrap_or_else(|| "python3".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Config {
        let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        crate::cli::parse(&argv, &|_| None).expect("valid command line")
    }

    #[test]
    fn commands_per_entrypoint_kind() {
        let c = cfg(&["train.py", "--lr=${local_rank}", "$$x"]);
        assert_eq!(
            worker_command(&c, "py", 2),
            (
                "py".into(),
                vec!["-u".into(), "train.py".into(), "--lr=2".into(), "$x".into()]
            )
        );
        let c = cfg(&["-m", "pkg.mod", "a"]);
        assert_eq!(worker_command(&c, "py", 0).1, ["-u", "-m", "pkg.mod", "a"]);
        let c = cfg(&["--no-python", "/bin/echo", "$local_rank"]);
        assert_eq!(
            worker_command(&c, "py", 1),
            ("/bin/echo".into(), vec!["1".into()])
        );
        let c = cfg(&["--run-path", "--no-python", "s.py"]);
        let (program, args) = worker_command(&c, "py", 0);
        assert_eq!(
            (program.as_str(), args[1].as_str(), args[3].as_str()),
            ("py", "-c", "s.py")
        );
        assert_eq!(entrypoint_name(&c), "run_script_path");
        assert_eq!(entrypoint_name(&cfg(&["train.py"])), "train.py");
    }

    #[test]
    fn python_from_env() {
        assert_eq!(python_exec(&BTreeMap::new()), "python3");
        let env = BTreeMap::from([("PYTHON_EXEC".to_string(), "/venv/bin/python".to_string())]);
        assert_eq!(python_exec(&env), "/venv/bin/python");
    }
}
