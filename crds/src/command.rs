//! How the trainer container's command runs under the launcher.
//!
//! The user writes the command they would run on one node: either `torchrun [options] script
//! [args]` (also `python -m torch.distributed.run ...` or `elastic-launch ...`), in which case
//! the launcher takes torchrun's place and keeps the options; or a shell command that calls
//! torchrun itself (`sh -c "pip install -r req.txt && torchrun train.py"`), which runs once per
//! pod with the launcher as the `torchrun` it calls; or any other program (`python train.py`, a
//! venv's python), which the launcher runs with `--no-python` once per local rank, so the
//! user's own interpreter is used.

use elasticjob_contract::install::WRAP_ARG;

/// What the launcher is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// The command was a torchrun: the launcher gets the rest of it (options, script, args).
    Torchrun { args: Vec<String> },
    /// A shell command that calls torchrun: runs once per pod under `elastic-launch __wrap`,
    /// which puts itself on the command's PATH as `torchrun`.
    Wrapper { argv: Vec<String> },
    /// Any other program: the launcher runs `argv` as is (`--no-python`) for every local rank.
    Program { argv: Vec<String> },
    /// A command the launcher cannot stand in for; the text says why and what to write instead.
    Unsupported(String),
}

impl Invocation {
    /// The launcher's arguments: the torchrun options and script, or `--no-python` and the
    /// program.
    pub fn launcher_args(&self) -> Vec<String> {
        match self {
            Invocation::Torchrun { args } => args.clone(),
            Invocation::Wrapper { argv } => std::iter::once(WRAP_ARG.to_string())
                .chain(argv.iter().cloned())
                .collect(),
            Invocation::Program { argv } => std::iter::once("--no-python".to_string())
                .chain(argv.iter().cloned())
                .collect(),
            Invocation::Unsupported(_) => Vec::new(),
        }
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `python`, `python3`, `python3.11`.
fn is_python(program: &str) -> bool {
    basename(program)
        .strip_prefix("python")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// The script of `sh -c SCRIPT ...` (any POSIX shell, any option cluster holding `c`).
fn shell_script(argv: &[String]) -> Option<&str> {
    let shell = matches!(
        basename(argv.first()?),
        "sh" | "bash" | "dash" | "ash" | "ksh" | "zsh"
    );
    if !shell {
        return None;
    }
    let mut rest = argv[1..].iter();
    for arg in rest.by_ref() {
        if !arg.starts_with('-') || arg == "--" {
            return None;
        }
        if !arg.starts_with("--") && arg.contains('c') {
            break;
        }
    }
    rest.next().map(String::as_str)
}

/// The words of a shell script, split at blanks and operators (enough to spot a command name).
fn script_words(script: &str) -> impl Iterator<Item = &str> + '_ {
    script
        .split(|c: char| c.is_whitespace() || ";&|()`'\"".contains(c))
        .filter(|w| !w.is_empty())
}

/// Classifies a shell command: a wrapper when it calls torchrun, refused when it calls torch's
/// own launcher module, else None (a plain program).
fn classify_shell(argv: &[String]) -> Option<Invocation> {
    let script = shell_script(argv)?;
    if script_words(script)
        .any(|w| w.contains("torch.distributed.run") || w.contains("torch.distributed.launch"))
    {
        return Some(Invocation::Unsupported(
            "the shell command starts torch's own launcher (python -m torch.distributed.run or .launch): call torchrun instead, which the operator's launcher stands in for (sh -c \"... && torchrun [options] train.py\")".into(),
        ));
    }
    script_words(script)
        .any(|w| matches!(basename(w), "torchrun" | "elastic-launch"))
        .then(|| Invocation::Wrapper {
            argv: argv.to_vec(),
        })
}

/// Classifies the full command line of the trainer container (`command` followed by `args`).
pub fn invocation(argv: &[String]) -> Invocation {
    let Some(program) = argv.first() else {
        return Invocation::Unsupported("the container has no command".into());
    };
    if matches!(basename(program), "torchrun" | "elastic-launch") {
        return Invocation::Torchrun {
            args: argv[1..].to_vec(),
        };
    }
    if let Some(shell) = classify_shell(argv) {
        return shell;
    }
    if is_python(program) {
        // python [interpreter flags] -m torch.distributed.run ...
        let mut i = 1;
        while i < argv.len() && argv[i].starts_with('-') && argv[i] != "-m" {
            i += 1;
        }
        if argv.get(i).map(String::as_str) == Some("-m") {
            match argv.get(i + 1).map(String::as_str) {
                Some("torch.distributed.run") => {
                    return Invocation::Torchrun {
                        args: argv[i + 2..].to_vec(),
                    };
                }
                Some("torch.distributed.launch") => {
                    return Invocation::Unsupported(
                        "python -m torch.distributed.launch is deprecated and passes --local-rank to the script; write the command as torchrun [options] script [args] and read LOCAL_RANK from the environment".into(),
                    );
                }
                _ => {}
            }
        }
    }
    Invocation::Program {
        argv: argv.to_vec(),
    }
}

/// A `python [-u] script [args]` or `python [-u] -m module [args]` command as the interpreter
/// and the launcher's Python entrypoint (`script [args]`, `-m module [args]`): how a program
/// command runs when the launcher must start the interpreter itself (`--prewarm`). None for
/// other programs, and for interpreter flags the launcher does not pass (it runs `python -u`).
pub fn python_entrypoint(argv: &[String]) -> Option<(String, Vec<String>)> {
    let program = argv.first().filter(|p| is_python(p))?;
    let rest = match argv.get(1).map(String::as_str) {
        Some("-u") => &argv[2..],
        _ => &argv[1..],
    };
    let entry = match rest.first().map(String::as_str) {
        Some("-m") if rest.len() >= 2 => rest.to_vec(),
        Some(script) if !script.starts_with('-') => rest.to_vec(),
        _ => return None,
    };
    Some((program.clone(), entry))
}

/// Why `spec.launcher.prewarm` cannot be used with a program command that
/// [`python_entrypoint`] does not take.
pub const PREWARM_NEEDS_PYTHON: &str = "spec.launcher.prewarm needs a Python command the launcher can start itself: python [-u] script.py [args], python [-u] -m module [args], or torchrun script.py [args]";

/// torchrun options that take a value (every spelling is normalized to dashes).
const VALUE_OPTIONS: &[&str] = &[
    "nnodes",
    "nproc-per-node",
    "rdzv-backend",
    "rdzv-endpoint",
    "rdzv-id",
    "rdzv-conf",
    "max-restarts",
    "monitor-interval",
    "start-method",
    "event-log-handler",
    "role",
    "log-dir",
    "redirects",
    "tee",
    "log-line-prefix-template",
    "local-ranks-filter",
    "duplicate-stdout-filters",
    "duplicate-stderr-filters",
    "node-rank",
    "master-addr",
    "master-port",
    "local-addr",
    "logs-specs",
    "numa-binding",
    "signals-to-handle",
    "shutdown-timeout",
    "exit-barrier-timeout",
    "termination-message-path",
    "status-port",
];

/// Launcher options the operator sets from the spec, and the spec field to use instead (or
/// why they cannot be used).
pub const OWNED_OPTIONS: &[(&str, &str)] = &[
    ("nnodes", "set spec.minReplicas and spec.maxReplicas"),
    ("nproc-per-node", "set spec.nprocPerNode"),
    ("rdzv-backend", "the operator uses the c10d backend"),
    ("rdzv-endpoint", "the operator points every pod at pod 0"),
    ("rdzv-id", "the operator uses the job's UID"),
    ("rdzv-conf", "set spec.rendezvous"),
    (
        "standalone",
        "an ElasticJob spans pods; set minReplicas and maxReplicas to 1 for one node",
    ),
    ("max-restarts", "set spec.maxRestarts"),
    ("node-rank", "ranks follow the pod index"),
    ("master-addr", "the operator uses the c10d rendezvous"),
    ("master-port", "the operator uses the c10d rendezvous"),
    (
        "termination-message-path",
        "the operator sets it from the container",
    ),
    ("status-port", "set spec.launcher.statusPort"),
];

/// The operator-owned options found among torchrun's options (before the training script),
/// with the advice for each. Abbreviations are not recognised.
pub fn owned_options(torchrun_args: &[String]) -> Vec<(String, &'static str)> {
    scan(torchrun_args).0
}

/// Where the training script is among torchrun's arguments, if there is one.
pub fn script_index(torchrun_args: &[String]) -> Option<usize> {
    scan(torchrun_args).1
}

/// Walks torchrun's options up to the training script: the owned options seen, and the index
/// of the script.
fn scan(args: &[String]) -> (Vec<(String, &'static str)>, Option<usize>) {
    let mut found = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            return (found, (i + 1 < args.len()).then_some(i + 1));
        }
        if !arg.starts_with('-') || arg == "-" {
            return (found, Some(i));
        }
        i += 1;
        if let Some(long) = arg.strip_prefix("--") {
            let (name, has_value) = match long.split_once('=') {
                Some((name, _)) => (name.replace('_', "-"), true),
                None => (long.replace('_', "-"), false),
            };
            if let Some((_, advice)) = OWNED_OPTIONS.iter().find(|(o, _)| *o == name) {
                found.push((format!("--{name}"), *advice));
            }
            if !has_value && VALUE_OPTIONS.contains(&name.as_str()) {
                i += 1;
            }
        } else if matches!(arg.as_str(), "-r" | "-t") {
            i += 1; // -r/--redirects and -t/--tee take a value
        }
    }
    (found, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_python_command_splits_into_interpreter_and_entrypoint() {
        assert_eq!(
            python_entrypoint(&v(&[
                "/opt/venv/bin/python",
                "/workspace/train.py",
                "--lr",
                "1"
            ])),
            Some((
                "/opt/venv/bin/python".into(),
                v(&["/workspace/train.py", "--lr", "1"])
            ))
        );
        assert_eq!(
            python_entrypoint(&v(&["python3", "-u", "-m", "pkg.train"])),
            Some(("python3".into(), v(&["-m", "pkg.train"])))
        );
        for other in [
            v(&["bash", "run.sh"]),
            v(&["python", "-O", "train.py"]),
            v(&["python", "-c", "print(1)"]),
            v(&["python", "-m"]),
            v(&["python"]),
        ] {
            assert_eq!(python_entrypoint(&other), None, "{other:?}");
        }
    }

    #[test]
    fn torchrun_is_replaced_keeping_its_options() {
        let inv = invocation(&v(&["torchrun", "--tee", "3", "train.py", "--lr", "0.1"]));
        assert_eq!(
            inv.launcher_args(),
            v(&["--tee", "3", "train.py", "--lr", "0.1"])
        );
        let inv = invocation(&v(&["/opt/venv/bin/torchrun", "train.py"]));
        assert_eq!(inv.launcher_args(), v(&["train.py"]));
        let inv = invocation(&v(&["elastic-launch", "-m", "pkg.train"]));
        assert_eq!(inv.launcher_args(), v(&["-m", "pkg.train"]));
    }

    #[test]
    fn python_module_torch_distributed_run_is_torchrun() {
        let inv = invocation(&v(&[
            "python3",
            "-u",
            "-m",
            "torch.distributed.run",
            "--redirects=3",
            "train.py",
        ]));
        assert_eq!(inv.launcher_args(), v(&["--redirects=3", "train.py"]));
        let inv = invocation(&v(&[
            "/usr/bin/python3.11",
            "-m",
            "torch.distributed.run",
            "t.py",
        ]));
        assert_eq!(inv.launcher_args(), v(&["t.py"]));
    }

    #[test]
    fn other_programs_run_with_no_python() {
        let inv = invocation(&v(&["python", "/workspace/train.py", "--steps", "5"]));
        assert_eq!(
            inv.launcher_args(),
            v(&[
                "--no-python",
                "python",
                "/workspace/train.py",
                "--steps",
                "5"
            ])
        );
        let inv = invocation(&v(&["python", "-m", "mypkg.train"]));
        assert_eq!(
            inv.launcher_args(),
            v(&["--no-python", "python", "-m", "mypkg.train"])
        );
        let inv = invocation(&v(&["/bin/sh", "-c", "exec ./train"]));
        assert!(matches!(inv, Invocation::Program { .. }));
        // A script naming torchrun only as text is still a program.
        let inv = invocation(&v(&["bash", "-c", "echo torchrun_is_not_called"]));
        assert!(matches!(inv, Invocation::Program { .. }));
        // Not a python: `pythonista` is just a program.
        assert!(matches!(
            invocation(&v(&["pythonista", "-m", "torch.distributed.run"])),
            Invocation::Program { .. }
        ));
    }

    #[test]
    fn deprecated_launch_and_empty_commands_are_unsupported() {
        assert!(matches!(
            invocation(&v(&["python", "-m", "torch.distributed.launch", "t.py"])),
            Invocation::Unsupported(m) if m.contains("torchrun")
        ));
        assert!(matches!(invocation(&[]), Invocation::Unsupported(_)));
    }

    #[test]
    fn finds_operator_owned_options_before_the_script() {
        let found = owned_options(&v(&[
            "--nnodes=2",
            "--tee",
            "3",
            "--nproc_per_node",
            "4",
            "-r",
            "1",
            "--standalone",
            "train.py",
            "--nnodes",
            "9",
        ]));
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["--nnodes", "--nproc-per-node", "--standalone"]);
        // The value of a value option is skipped, even when it looks like an option name.
        assert!(owned_options(&v(&["--role", "--nnodes", "train.py"])).is_empty());
        assert!(owned_options(&v(&["train.py", "--max-restarts=3"])).is_empty());
    }

    #[test]
    fn finds_the_training_script() {
        assert_eq!(script_index(&v(&["--tee", "3", "train.py"])), Some(2));
        assert_eq!(script_index(&v(&["--tee=3", "-m", "pkg"])), Some(2));
        assert_eq!(script_index(&v(&["--", "train.py"])), Some(1));
        assert_eq!(script_index(&v(&["--tee", "3"])), None);
        assert_eq!(script_index(&v(&["--standalone"])), None);
    }

    #[test]
    fn a_shell_command_that_calls_torchrun_runs_once_under_the_wrapper() {
        for argv in [
            v(&[
                "bash",
                "-c",
                "pip install -r req.txt && torchrun --nproc-per-node=2 train.py",
            ]),
            v(&["/bin/sh", "-ec", "cd /work; exec torchrun train.py"]),
            v(&[
                "sh",
                "-x",
                "-c",
                "setup;/opt/venv/bin/torchrun train.py",
                "arg0",
            ]),
            v(&["bash", "-lc", "(torchrun train.py)"]),
        ] {
            let inv = invocation(&argv);
            assert_eq!(inv, Invocation::Wrapper { argv: argv.clone() }, "{argv:?}");
            let mut expected = v(&["__wrap"]);
            expected.extend(argv.clone());
            assert_eq!(inv.launcher_args(), expected);
        }
        // torch's own launcher inside a shell is refused, saying what to write.
        let Invocation::Unsupported(why) = invocation(&v(&[
            "bash",
            "-c",
            "pip install x && python -m torch.distributed.run train.py",
        ])) else {
            panic!("not refused");
        };
        assert!(why.contains("call torchrun instead"), "{why}");
        // A shell running a script file is a program: its content cannot be seen.
        assert!(matches!(
            invocation(&v(&["bash", "run.sh"])),
            Invocation::Program { .. }
        ));
    }
}
