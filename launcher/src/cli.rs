//! The torchrun-compatible command line: argv plus the `PET_*` environment → [`Config`].
//!
//! clap does the tokenizing (`--opt=value`/`--opt value`, short clusters, `--`, help), the
//! unambiguous-prefix abbreviations (`infer_long_args`, which counts a prefix matching both
//! spellings of one option as one candidate, so `--nproc=4` works) and the REMAINDER
//! positional. Everything else is done here, by hand, for reasons given where it happens:
//! * the `PET_*` fallbacks, because `parse` takes an injected environment and clap's `env`
//!   reads the process environment (and gives no say over the error messages);
//! * every type conversion, so that a value from the command line and one from `PET_*` go
//!   through the same function and the error names where the value came from;
//! * clap's errors are rewritten into argparse's wording (`ambiguous option: ...`,
//!   `the following arguments are required: training_script`);
//! * an abbreviation that names exactly one torchrun option keeps that meaning even where it
//!   also abbreviates one of our own options (`--te=3` is `--tee`, not ambiguous with
//!   `--termination-message-path`), so every torchrun command line parses as in torchrun.

pub mod values;

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::{Config, EntrypointKind, NodeRange, NprocSpec, RdzvBackend, StdSpec};
use crate::store::AgentToken;

pub use values::{
    C10D_DEFAULT_PORT, DEFAULT_MASTER_PORT, DEFAULT_SIGNALS, parse_comma_list, parse_endpoint,
    parse_local_ranks_filter, parse_min_max_nnodes, parse_nproc_per_node, parse_rdzv_backend,
    parse_rendezvous_config, parse_signals, parse_std_spec, split_endpoint,
};
use values::{py_float, py_int};

const PROG: &str = "elastic-launch";
/// The usage line of errors and help, argparse style.
pub const USAGE: &str = "elastic-launch [options] TRAINING_SCRIPT ...";
/// Default of `--exit-barrier-timeout` (seconds), as in torchrun's hard-coded exit barrier.
pub const DEFAULT_EXIT_BARRIER_TIMEOUT_S: f64 = 300.0;
/// Default of `--shutdown-timeout` (seconds) when neither it nor its env is set.
pub const DEFAULT_SHUTDOWN_TIMEOUT_S: u64 = 30;

/// Why no [`Config`] came out of [`parse`]. `Display` is what to print (help on stdout, a
/// usage error on stderr), [`CliError::exit_code`] the process exit status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// `-h/--help`: the help text; exit 0.
    #[error("{0}")]
    Help(String),
    /// A usage error: the message alone (Display adds the usage line); exit 2.
    #[error("usage: {USAGE}\n{PROG}: error: {0}")]
    Usage(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Help(_) => 0,
            CliError::Usage(_) => 2,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Takes one value.
    Value,
    /// A boolean flag (argparse `check_env`): present → true, else `PET_X` as an integer.
    Flag,
}

/// One launcher option. `dest` is argparse's dest: the clap id, the underscore spelling
/// (when it differs from `long`) and, upper-cased, the `PET_` variable.
struct Opt {
    dest: &'static str,
    long: &'static str,
    short: Option<char>,
    kind: Kind,
    /// Has a `PET_<DEST>` fallback (all but `--logs-specs` and `--numa-binding`).
    env: bool,
    /// Our addition, not a torchrun option (see [`torchrun_abbreviation`]).
    ours: bool,
    /// argparse `choices`; checked on the command line only, as argparse does.
    choices: &'static [&'static str],
    value_name: &'static str,
    help: &'static str,
}

const fn value(
    dest: &'static str,
    long: &'static str,
    value_name: &'static str,
    help: &'static str,
) -> Opt {
    Opt {
        dest,
        long,
        short: None,
        kind: Kind::Value,
        env: true,
        ours: false,
        choices: &[],
        value_name,
        help,
    }
}

const fn flag(dest: &'static str, long: &'static str, help: &'static str) -> Opt {
    Opt {
        dest,
        long,
        short: None,
        kind: Kind::Flag,
        env: true,
        ours: false,
        choices: &[],
        value_name: "",
        help,
    }
}

impl Opt {
    const fn short(self, c: char) -> Opt {
        Opt {
            short: Some(c),
            ..self
        }
    }
    const fn ours(self) -> Opt {
        Opt { ours: true, ..self }
    }
    const fn no_env(self) -> Opt {
        Opt { env: false, ..self }
    }
    const fn choices(self, choices: &'static [&'static str]) -> Opt {
        Opt { choices, ..self }
    }

    fn env_var(&self) -> Option<String> {
        self.env
            .then(|| format!("PET_{}", self.dest.to_uppercase()))
    }

    /// Every long spelling: `--nproc-per-node`, `--nproc_per_node`.
    fn longs(&self) -> Vec<&'static str> {
        if self.dest == self.long {
            vec![self.long]
        } else {
            vec![self.long, self.dest]
        }
    }

    /// How argparse names the option in errors: `-r/--redirects`, `--log-dir/--log_dir`.
    fn spellings(&self) -> String {
        let shorts = self.short.map(|c| format!("-{c}"));
        let longs = self.longs().into_iter().map(|l| format!("--{l}"));
        shorts
            .into_iter()
            .chain(longs)
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// The options, in torchrun's order, then ours. Help lines say what each does.
#[rustfmt::skip]
const OPTS: &[Opt] = &[
    value("nnodes", "nnodes", "N|MIN:MAX", "Number of nodes, or the elastic range MIN:MAX (default: 1:1)"),
    value("nproc_per_node", "nproc-per-node", "N|auto|cpu|gpu|xpu", "Workers per node: a number, or auto|cpu|gpu|xpu to count devices (default: 1)"),
    value("rdzv_backend", "rdzv-backend", "BACKEND", "Rendezvous backend: static or c10d (etcd is not supported) (default: static)"),
    value("rdzv_endpoint", "rdzv-endpoint", "HOST[:PORT]", "Rendezvous endpoint, HOST[:PORT]; c10d's default port is 29400"),
    value("rdzv_id", "rdzv-id", "ID", "Run id shared by all nodes of one job (default: none)"),
    value("rdzv_conf", "rdzv-conf", "K=V,...", "Extra rendezvous settings, e.g. join_timeout=600,last_call_timeout=30"),
    flag("standalone", "standalone", "Single node: private c10d store on a free port, random run id; overrides --rdzv-backend/-endpoint/-id"),
    value("max_restarts", "max-restarts", "N", "Worker group restarts allowed on failure before giving up (default: 0)"),
    value("monitor_interval", "monitor-interval", "SECONDS", "Seconds between checks of the workers' state (default: 0.1)"),
    value("start_method", "start-method", "METHOD", "Accepted for torchrun compatibility; no effect, workers are always exec'd (default: spawn)")
        .choices(&["spawn", "fork", "forkserver"]),
    value("event_log_handler", "event-log-handler", "NAME", "Accepted for torchrun compatibility; events go to the launcher's log (default: null)"),
    value("role", "role", "ROLE", "Role name of the workers: ROLE_NAME and the tee prefix [<role><local_rank>]: (default: default)"),
    flag("module", "module", "Run the script as a Python module, like 'python -m'").short('m'),
    flag("no_python", "no-python", "Execute the training script directly instead of through python"),
    flag("run_path", "run-path", "Run the script with runpy.run_path in a Python worker; wins over --no-python and -m"),
    value("log_dir", "log-dir", "DIR", "Base directory for worker logs (default: a fresh temporary directory)"),
    value("redirects", "redirects", "STD", "Send worker stdout/stderr to log files: 0 none, 1 out, 2 err, 3 both, or per rank 0:1,1:2 (default: 0)").short('r'),
    value("tee", "tee", "STD", "Like --redirects, and also copy the streams to the console with a prefix (default: 0)").short('t'),
    value("log_line_prefix_template", "log-line-prefix-template", "TEMPLATE", "Prefix of tee'd console lines; macros ${role_name} ${rank} ${local_rank} ${hostname}"),
    value("local_ranks_filter", "local-ranks-filter", "RANKS", "Only these local ranks (e.g. 0,1,2) reach the console; log files are unaffected"),
    value("duplicate_stdout_filters", "duplicate-stdout-filters", "NEEDLES", "Also copy tee'd stdout lines containing any needle (comma list, ',,' = comma) to filtered_stdout.log"),
    value("duplicate_stderr_filters", "duplicate-stderr-filters", "NEEDLES", "Also copy tee'd stderr lines containing any needle (comma list, ',,' = comma) to filtered_stderr.log"),
    value("node_rank", "node-rank", "RANK", "Rank of this node; static rendezvous only (default: 0)"),
    value("master_addr", "master-addr", "ADDR", "Static rendezvous: address of the rank 0 node; bracket IPv6, [::1] (default: 127.0.0.1)"),
    value("master_port", "master-port", "PORT", "Static rendezvous: port of the store on the rank 0 node (default: 29500)"),
    value("local_addr", "local-addr", "ADDR", "Address of this node for rendezvous (default: its fully qualified host name)"),
    value("logs_specs", "logs-specs", "NAME", "Log layout plugin; only the built-in 'default' exists").no_env(),
    value("numa_binding", "numa-binding", "MODE", "Accepted for torchrun compatibility; NUMA binding is not applied")
        .no_env()
        .choices(&["node", "socket", "exclusive", "core-complex"]),
    value("signals_to_handle", "signals-to-handle", "SIGNALS", "Signals forwarded to the workers, comma list (default: SIGTERM,SIGINT,SIGHUP,SIGQUIT)"),
    value("shutdown_timeout", "shutdown-timeout", "SECONDS", "Grace between SIGTERM and SIGKILL when stopping workers (default: $TORCH_ELASTIC_SHUTDOWN_TIMEOUT or 30)"),
    flag("virtual_local_rank", "virtual-local-rank", "Give every worker LOCAL_RANK=0 and narrow CUDA_VISIBLE_DEVICES to its own GPU"),
    value("exit_barrier_timeout", "exit-barrier-timeout", "SECONDS", "How long a finished node waits for the others before exiting (default: $TORCH_ELASTIC_EXIT_BARRIER_TIMEOUT or 300)")
        .ours(),
    value("termination_message_path", "termination-message-path", "FILE", "Write a failure summary here for Kubernetes (default: decided by the launcher)")
        .ours(),
    value("status_port", "status-port", "PORT", "Serve the launcher's progress read-only on this port of every address: GET /status (JSON), GET /metrics (default: off)")
        .ours(),
    value("prewarm", "prewarm", "MODULES", "Keep standby Python interpreters with these modules imported (comma list, e.g. torch), so restarted workers skip the import (default: off)")
        .ours(),
    value("stall_timeout", "stall-timeout", "SECONDS", "Restart the worker group (counted against --max-restarts) when ranks that reported progress to $ELASTICJOB_PROGRESS_FILE stay silent this long (default: off)")
        .ours(),
];

const ABOUT: &str = "Torch Distributed Elastic Training Launcher, in Rust: a torchrun-compatible \
launcher (same options, PET_* variables, worker environment and exit codes) with its own c10d TCPStore.";

const AFTER_HELP: &str = "\
Every option except --logs-specs and --numa-binding may also be set through PET_<NAME> (shown as \
[env: ...]); the command line wins. Flags read PET_<NAME> as an integer: 0 is off, anything else on. \
Options must come before TRAINING_SCRIPT; everything after it goes to the script unchanged. Long \
options may be abbreviated to any unambiguous prefix (--nproc=4).";

fn command() -> Command {
    let mut cmd = Command::new(PROG)
        .about(ABOUT)
        .after_help(AFTER_HELP)
        .override_usage(USAGE)
        .infer_long_args(true)
        // argparse: a repeated option takes the last value.
        .args_override_self(true);
    for o in OPTS {
        let help = match o.env_var() {
            Some(var) => format!("{} [env: {var}]", o.help),
            None => o.help.to_string(),
        };
        let mut arg = Arg::new(o.dest).long(o.long).help(help);
        if o.dest != o.long {
            arg = arg.visible_alias(o.dest);
        }
        if let Some(c) = o.short {
            arg = arg.short(c);
        }
        arg = match o.kind {
            Kind::Flag => arg.action(ArgAction::SetTrue),
            // Negative numbers are values, as in argparse (`--shutdown-timeout -5` is then
            // refused by our own check, with the message torchrun gives).
            Kind::Value => arg
                .action(ArgAction::Set)
                .value_name(o.value_name)
                .allow_negative_numbers(true),
        };
        if !o.choices.is_empty() {
            arg = arg.value_parser(PossibleValuesParser::new(o.choices));
        }
        cmd = cmd.arg(arg);
    }
    // One positional taking the script and everything after it: with `trailing_var_arg`, clap
    // stops option parsing at the first value, exactly argparse's REMAINDER. (A separate
    // `training_script` positional would let clap keep parsing options after the script.)
    cmd.arg(
        Arg::new("training_script")
            .value_name("TRAINING_SCRIPT")
            .help("The training script, module or program, followed by its own arguments")
            .required(true)
            .num_args(1..)
            .trailing_var_arg(true),
    )
}

/// Parse the launcher's command line (`argv` without the program name) with `PET_*` and the
/// other variables looked up through `env`.
/// Why this launcher must not run: in an ElasticJob pod (`ELASTICJOB_NODE_INDEX`), started by
/// a worker of the pod's own launcher (`TORCHELASTIC_RUN_ID`): the pod's command, which runs
/// once per local rank, calls torchrun, so every worker would start a launcher of its own.
pub fn nested_in_a_worker(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let in_a_pod = env(elasticjob_contract::env::NODE_INDEX).is_some();
    let in_a_worker = env("TORCHELASTIC_RUN_ID").is_some();
    (in_a_pod && in_a_worker).then(|| {
        "elastic-launch (torchrun) was started by a worker of this pod's launcher: the pod's command runs once per local rank, so each would start a launcher. Start the container's command with torchrun itself, or write it as a shell command (sh -c \"... && torchrun ...\"), which runs once per pod".to_string()
    })
}

pub fn parse(argv: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, CliError> {
    let mut cmd = command();
    let mut argv = argv.to_vec();
    let matches = loop {
        let full = std::iter::once(PROG.to_string()).chain(argv.iter().cloned());
        match cmd.try_get_matches_from_mut(full) {
            Ok(matches) => break matches,
            Err(e) => match expand_torchrun_abbreviation(&e, &argv) {
                // Each round spells out one more option, so this ends.
                Some(expanded) => argv = expanded,
                None => return Err(translate_clap_error(e, &mut cmd)),
            },
        }
    };
    build_config(&Inputs { matches, env })
}

/// Our additions must not break a command line torchrun accepts: `--te=3` is `--tee` there,
/// though it is also a prefix of our `--termination-message-path`, which makes clap call it
/// unknown. So an abbreviation that names exactly one torchrun option means that option.
fn torchrun_abbreviation(prefix: &str) -> Option<&'static Opt> {
    let mut owners = OPTS
        .iter()
        .filter(|o| !o.ours && o.longs().iter().any(|l| l.starts_with(prefix)));
    let only = owners.next()?;
    (owners.next().is_none() && !"help".starts_with(prefix)).then_some(only)
}

/// When clap refused an abbreviation that [`torchrun_abbreviation`] resolves, `argv` with that
/// token spelled out. The first token equal to it is the one clap saw: launcher options come
/// before the script's arguments, and clap takes no value that starts with `--`.
fn expand_torchrun_abbreviation(e: &clap::Error, argv: &[String]) -> Option<Vec<String>> {
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let prefix = arg.strip_prefix("--")?;
    let o = torchrun_abbreviation(prefix)?;
    let at = argv
        .iter()
        .position(|a| a == arg || a.starts_with(&format!("{arg}=")))?;
    let mut expanded = argv.to_vec();
    expanded[at] = format!("--{}{}", o.long, &argv[at][arg.len()..]);
    Some(expanded)
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

fn opt(dest: &str) -> &'static Opt {
    OPTS.iter().find(|o| o.dest == dest).expect("known option")
}

/// The option named by a clap error's `InvalidArg` (`--start-method <METHOD>`, `-r`).
fn opt_named(arg: &str) -> Option<&'static Opt> {
    let name = arg.split_whitespace().next()?;
    OPTS.iter().find(|o| {
        o.longs()
            .iter()
            .any(|l| name.strip_prefix("--") == Some(*l))
            || o.short.is_some_and(|c| name == format!("-{c}"))
    })
}

/// Rewrite a clap error in argparse's words, naming the option.
fn translate_clap_error(e: clap::Error, cmd: &mut Command) -> CliError {
    let text = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.join(", "),
        _ => String::new(),
    };
    let invalid_arg = text(ContextKind::InvalidArg);
    let named = || opt_named(&invalid_arg).map_or(invalid_arg.clone(), Opt::spellings);
    match e.kind() {
        ErrorKind::DisplayHelp => CliError::Help(cmd.render_help().to_string()),
        ErrorKind::MissingRequiredArgument => {
            usage("the following arguments are required: training_script")
        }
        ErrorKind::UnknownArgument => {
            let matches = prefix_matches(&invalid_arg);
            if matches.len() > 1 {
                return usage(format!(
                    "ambiguous option: {invalid_arg} could match {}",
                    matches.join(", ")
                ));
            }
            let mut msg = format!("unrecognized arguments: {invalid_arg}");
            if let Some(ContextValue::String(s)) = e.get(ContextKind::SuggestedArg) {
                msg += &format!(" (did you mean {s}?)");
            }
            usage(msg)
        }
        ErrorKind::InvalidValue => {
            let value = text(ContextKind::InvalidValue);
            let valid = match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) => v.clone(),
                _ => Vec::new(),
            };
            if valid.is_empty() {
                // clap's way of saying the value is missing (`--role` last, or `--role --`).
                usage(format!("argument {}: expected one argument", named()))
            } else {
                let choices = valid.iter().map(|v| format!("'{v}'")).collect::<Vec<_>>();
                usage(format!(
                    "argument {}: invalid choice: '{value}' (choose from {})",
                    named(),
                    choices.join(", ")
                ))
            }
        }
        ErrorKind::TooManyValues => usage(format!(
            "argument {}: ignoring explicit argument '{}'",
            named(),
            text(ContextKind::InvalidValue)
        )),
        _ => {
            // Anything rarer: clap's own first line, without its "error: " prefix.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            usage(first.trim_start_matches("error: "))
        }
    }
}

/// Long spellings that `arg` (`--r`, `--r=3`) is a prefix of, when they belong to more than
/// one option; clap only reports such an ambiguous prefix as unknown.
fn prefix_matches(arg: &str) -> Vec<String> {
    let Some(prefix) = arg.split('=').next().and_then(|a| a.strip_prefix("--")) else {
        return Vec::new();
    };
    let mut owners = 0;
    let mut spellings = Vec::new();
    for longs in OPTS.iter().map(Opt::longs).chain([vec!["help"]]) {
        let hits: Vec<String> = longs
            .iter()
            .filter(|l| l.starts_with(prefix))
            .map(|l| format!("--{l}"))
            .collect();
        owners += usize::from(!hits.is_empty());
        spellings.extend(hits);
    }
    if owners > 1 { spellings } else { Vec::new() }
}

/// Where a value came from, for error messages.
enum Origin {
    Cli(&'static Opt),
    Env(String),
}

impl Origin {
    fn name(&self) -> String {
        match self {
            Origin::Cli(o) => format!("argument {}", o.spellings()),
            Origin::Env(var) => format!("environment variable {var}"),
        }
    }
}

struct Given {
    value: String,
    origin: Origin,
}

impl Given {
    fn error(&self, msg: impl std::fmt::Display) -> CliError {
        usage(format!("{}: {msg}", self.origin.name()))
    }

    /// Convert with `f`; its error is prefixed with the option or variable.
    fn parse<T>(&self, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, CliError> {
        f(&self.value).map_err(|msg| self.error(msg))
    }
}

struct Inputs<'a> {
    matches: ArgMatches,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Inputs<'_> {
    /// The command-line value, else `PET_<DEST>` (argparse's `env` action).
    fn given(&self, dest: &str) -> Option<Given> {
        let o = opt(dest);
        if let Some(v) = self.matches.get_one::<String>(dest) {
            return Some(Given {
                value: v.clone(),
                origin: Origin::Cli(o),
            });
        }
        let var = o.env_var()?;
        (self.env)(&var).map(|value| Given {
            value,
            origin: Origin::Env(var),
        })
    }

    /// A string option: its value, or `default`.
    fn string(&self, dest: &str, default: &str) -> String {
        self.given(dest)
            .map_or_else(|| default.to_string(), |g| g.value)
    }

    /// A string option where empty means unset.
    fn non_empty(&self, dest: &str) -> Option<String> {
        self.given(dest).map(|g| g.value).filter(|v| !v.is_empty())
    }

    /// A converted option, or `default` when neither the command line nor `PET_` has it.
    fn parsed<T>(
        &self,
        dest: &str,
        default: T,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, CliError> {
        self.given(dest).map_or(Ok(default), |g| g.parse(f))
    }

    /// A flag (argparse's `check_env`): on the command line → true; else
    /// `bool(int(PET_<DEST>))`, where torchrun crashes on a non-integer and we refuse it.
    fn flag(&self, dest: &str) -> Result<bool, CliError> {
        if self.matches.get_flag(dest) {
            return Ok(true);
        }
        let Some(var) = opt(dest).env_var() else {
            return Ok(false);
        };
        match (self.env)(&var) {
            None => Ok(false),
            Some(v) => py_int(&v).map(|i| i != 0).ok_or_else(|| {
                usage(format!(
                    "environment variable {var}: invalid int value: '{v}' \
                     (use 1 to turn {} on, 0 for off)",
                    opt(dest).spellings()
                ))
            }),
        }
    }

    /// An environment variable outside the `PET_` scheme (`TORCH_ELASTIC_*`).
    fn env_var(&self, var: &str) -> Option<Given> {
        (self.env)(var).map(|value| Given {
            value,
            origin: Origin::Env(var.to_string()),
        })
    }
}

fn int_in<T: TryFrom<i64>>(s: &str, what: &str) -> Result<T, String> {
    let i = py_int(s).ok_or_else(|| format!("invalid int value: '{s}'"))?;
    T::try_from(i).map_err(|_| format!("{what}, got {i}"))
}

fn seconds(s: &str, what: &str, positive: bool) -> Result<Duration, String> {
    let f = py_float(s).ok_or_else(|| format!("invalid float value: '{s}'"))?;
    if f < 0.0 {
        return Err(format!("{what}, got {s}"));
    }
    // A finite float can still be more than a Duration holds (1e300, found with fuzz/), and a
    // positive one can round to zero nanoseconds (1e-300).
    let d = crate::config::duration_from_secs(f).ok_or_else(|| {
        format!(
            "{what}, got {s}: too long (at most {} seconds)",
            crate::config::MAX_SECONDS
        )
    })?;
    if positive && d.is_zero() {
        return Err(format!("{what}, got {s}"));
    }
    Ok(d)
}

/// The rendezvous settings after `--standalone`, the automatic single-node switch and the
/// static endpoint default (torchrun's `run` and `get_rdzv_endpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    pub backend: RdzvBackend,
    pub endpoint: String,
    pub id: String,
    pub master_port: u16,
}

/// What the rendezvous derivation starts from (`None` = not given at all).
#[derive(Debug, Clone, Default)]
pub struct RendezvousInput {
    pub standalone: bool,
    pub backend: Option<RdzvBackend>,
    pub endpoint: String,
    pub id: Option<String>,
    pub master_addr: String,
    pub master_port: Option<u16>,
    pub nnodes: Option<NodeRange>,
}

/// Pure: the effective backend, endpoint, run id and master port (`new_id` makes a run id).
pub fn resolve_rendezvous(input: RendezvousInput, new_id: impl FnOnce() -> String) -> Rendezvous {
    let master_port = input.master_port.unwrap_or(DEFAULT_MASTER_PORT);
    let backend = input.backend.unwrap_or(RdzvBackend::Static);
    let max_nodes = input.nnodes.map_or(1, |n| n.max);
    if input.standalone {
        // Explicit --rdzv-backend/-endpoint/-id are overridden, as torchrun does.
        return Rendezvous {
            backend: RdzvBackend::C10d,
            endpoint: "localhost:0".into(),
            id: new_id(),
            master_port,
        };
    }
    if backend == RdzvBackend::Static
        && input.endpoint.is_empty()
        && input.master_port.is_none()
        && max_nodes == 1
    {
        // Newest torchrun: a single-node static run without a master port becomes a private
        // c10d rendezvous on a free port (no clash on 29500 between jobs sharing a host).
        // Deliberate deviation: torchrun also replaces an explicit --rdzv-id with a random
        // one here; we keep the user's, since an operator-provided PET_RDZV_ID names the job.
        let id = input.id.unwrap_or_else(new_id);
        return Rendezvous {
            backend: RdzvBackend::C10d,
            endpoint: "localhost:0".into(),
            id,
            master_port,
        };
    }
    let endpoint = if backend == RdzvBackend::Static && input.endpoint.is_empty() {
        format!("{}:{master_port}", input.master_addr)
    } else {
        input.endpoint
    };
    Rendezvous {
        backend,
        endpoint,
        id: input.id.unwrap_or_else(|| "none".into()),
        master_port,
    }
}

/// `torch`, `torch.distributed`, `_private.mod2`.
fn is_module_name(name: &str) -> bool {
    name.split('.').all(|part| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Pure: how workers are started (`config_from_args`' command construction).
pub fn entrypoint_kind(
    run_path: bool,
    no_python: bool,
    module: bool,
) -> Result<EntrypointKind, String> {
    Ok(match (run_path, no_python, module) {
        (true, _, _) => EntrypointKind::RunPath,
        (false, true, true) => {
            return Err(
                "Don't use both the '--no-python' flag and the '--module' flag at the same time."
                    .to_string(),
            );
        }
        (false, true, false) => EntrypointKind::Binary,
        (false, false, true) => EntrypointKind::PythonModule,
        (false, false, false) => EntrypointKind::PythonScript,
    })
}

fn build_config(inp: &Inputs) -> Result<Config, CliError> {
    let nnodes = inp.parsed("nnodes", NodeRange { min: 1, max: 1 }, parse_min_max_nnodes)?;
    let nproc_per_node = inp.parsed("nproc_per_node", NprocSpec::Count(1), parse_nproc_per_node)?;
    let standalone = inp.flag("standalone")?;

    // The backend is only interpreted when --standalone does not override it.
    let backend = match inp.given("rdzv_backend") {
        Some(g) if !standalone => Some(g.parse(parse_rdzv_backend)?),
        _ => None,
    };
    let master_port = inp
        .given("master_port")
        .map(|g| g.parse(|s| int_in::<u16>(s, "port must be between 0 and 65535")))
        .transpose()?;
    let rdzv = resolve_rendezvous(
        RendezvousInput {
            standalone,
            backend,
            endpoint: inp.string("rdzv_endpoint", ""),
            id: inp.given("rdzv_id").map(|g| g.value),
            master_addr: inp.string("master_addr", "127.0.0.1"),
            master_port,
            nnodes: Some(nnodes),
        },
        || uuid::Uuid::new_v4().to_string(),
    );
    check_endpoint(inp, &rdzv)?;

    let node_rank = inp.parsed("node_rank", 0u32, |s| int_in(s, "node rank must be >= 0"))?;
    if rdzv.backend == RdzvBackend::Static && node_rank >= nnodes.max {
        // torchrun would wait for a store rank that can never exist; say so instead.
        let msg = format!(
            "node rank {node_rank} must be less than the number of nodes ({}) with the static \
             rendezvous; node ranks are 0 to {}",
            nnodes.max,
            nnodes.max - 1
        );
        return Err(match inp.given("node_rank") {
            Some(g) => g.error(msg),
            None => usage(msg),
        });
    }

    let entrypoint_kind = entrypoint_kind(
        inp.flag("run_path")?,
        inp.flag("no_python")?,
        inp.flag("module")?,
    )
    .map_err(usage)?;
    let prewarm: Vec<String> = inp
        .given("prewarm")
        .map(|g| {
            g.value
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if let Some(bad) = prewarm.iter().find(|m| !is_module_name(m)) {
        return Err(inp
            .given("prewarm")
            .expect("prewarm was given")
            .error(format!(
                "'{bad}' is not a Python module name (e.g. torch or torch.distributed)"
            )));
    }
    if !prewarm.is_empty()
        && !matches!(
            entrypoint_kind,
            EntrypointKind::PythonScript | EntrypointKind::PythonModule
        )
    {
        return Err(inp.given("prewarm").expect("prewarm was given").error(
            "--prewarm needs a Python entrypoint (a script or -m module); it cannot be used with --no-python or --run-path",
        ));
    }

    let logs_specs = match inp.given("logs_specs") {
        Some(g) if g.value != "default" => {
            return Err(g.error(format!(
                "Could not find entrypoint under 'torchrun.logs_specs[{}]' key \
                 (elastic-launch has only the built-in 'default' log layout)",
                g.value
            )));
        }
        g => g.map(|g| g.value),
    };

    let shutdown_timeout = match inp.given("shutdown_timeout") {
        Some(g) => g.parse(|s| {
            let secs = py_int(s).ok_or_else(|| format!("invalid int value: '{s}'"))?;
            u64::try_from(secs)
                .map_err(|_| format!("shutdown_timeout must be non-negative, got {secs}"))
        })?,
        None => match inp.env_var("TORCH_ELASTIC_SHUTDOWN_TIMEOUT") {
            Some(g) => g.parse(|s| int_in(s, "shutdown_timeout must be non-negative"))?,
            None => DEFAULT_SHUTDOWN_TIMEOUT_S,
        },
    };

    let exit_barrier = |s: &str| seconds(s, "exit barrier timeout must be >= 0 seconds", false);
    let exit_barrier_timeout = match inp.given("exit_barrier_timeout") {
        Some(g) => g.parse(exit_barrier)?,
        // The name of upstream's proposal (pytorch/pytorch#195543), for scripts that set it.
        None => match inp.env_var("TORCH_ELASTIC_EXIT_BARRIER_TIMEOUT") {
            Some(g) => g.parse(exit_barrier)?,
            None => Duration::from_secs_f64(DEFAULT_EXIT_BARRIER_TIMEOUT_S),
        },
    };

    let log_line_prefix_template = inp
        .non_empty("log_line_prefix_template")
        .or_else(|| (inp.env)("TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE").filter(|t| !t.is_empty()));

    let mut script = inp
        .matches
        .get_many::<String>("training_script")
        .expect("required")
        .cloned();
    let training_script = script.next().expect("at least one value");

    Ok(Config {
        nnodes,
        nproc_per_node,
        rdzv_backend: rdzv.backend,
        rdzv_endpoint: rdzv.endpoint,
        rdzv_id: rdzv.id,
        rdzv_conf: inp.parsed("rdzv_conf", Default::default(), parse_rendezvous_config)?,
        standalone,
        max_restarts: inp.parsed("max_restarts", 0, |s| {
            int_in(s, "max_restarts must be >= 0")
        })?,
        monitor_interval: inp.parsed("monitor_interval", Duration::from_millis(100), |s| {
            seconds(s, "monitor interval must be > 0 seconds", true)
        })?,
        // Not checked against the choices when it comes from PET_START_METHOD, as in
        // argparse; harmless, since the value is never interpreted.
        start_method: inp.string("start_method", "spawn"),
        event_log_handler: inp.string("event_log_handler", "null"),
        role: inp.string("role", "default"),
        entrypoint_kind,
        log_dir: inp.non_empty("log_dir").map(PathBuf::from),
        redirects: inp.parsed("redirects", StdSpec::none(), parse_std_spec)?,
        tee: inp.parsed("tee", StdSpec::none(), parse_std_spec)?,
        log_line_prefix_template,
        local_ranks_filter: inp.parsed("local_ranks_filter", None, parse_local_ranks_filter)?,
        duplicate_stdout_filters: parse_comma_list(&inp.string("duplicate_stdout_filters", "")),
        duplicate_stderr_filters: parse_comma_list(&inp.string("duplicate_stderr_filters", "")),
        node_rank,
        master_addr: inp.string("master_addr", "127.0.0.1"),
        master_port: rdzv.master_port,
        local_addr: inp.non_empty("local_addr"),
        logs_specs,
        numa_binding: inp.given("numa_binding").map(|g| g.value),
        signals_to_handle: inp.parsed(
            "signals_to_handle",
            parse_signals(DEFAULT_SIGNALS).expect("valid default"),
            parse_signals,
        )?,
        shutdown_timeout: Duration::from_secs(shutdown_timeout),
        exit_barrier_timeout,
        virtual_local_rank: inp.flag("virtual_local_rank")?,
        termination_message_path: inp.non_empty("termination_message_path").map(PathBuf::from),
        prewarm,
        stall_timeout: inp
            .given("stall_timeout")
            .filter(|g| !g.value.is_empty())
            .map(|g| g.parse(|s| seconds(s, "stall timeout must be >= 0 seconds (0: off)", false)))
            .transpose()?
            .filter(|d| !d.is_zero()),
        status_port: inp
            .given("status_port")
            .filter(|g| !g.value.is_empty())
            .map(|g| g.parse(|s| int_in::<u16>(s, "port must be between 1 and 65535")))
            .transpose()?
            .filter(|&p| p != 0),
        training_script,
        store_token: AgentToken::from_env(
            (inp.env)(elasticjob_contract::env::STORE_TOKEN).as_deref(),
        ),
        training_script_args: script.collect(),
    })
}

/// Validate the effective endpoint now (torchrun fails only when the rendezvous starts), and
/// name the option it came from.
fn check_endpoint(inp: &Inputs, rdzv: &Rendezvous) -> Result<(), CliError> {
    let from_user = inp
        .given("rdzv_endpoint")
        .filter(|g| g.value == rdzv.endpoint && !g.value.is_empty());
    // Otherwise the endpoint was made from --master-addr (the port is a checked u16).
    let master_addr = inp.given("master_addr");
    let blame = |msg: String| match from_user.as_ref().or(master_addr.as_ref()) {
        Some(g) => g.error(msg),
        None => usage(msg),
    };
    match rdzv.backend {
        RdzvBackend::C10d => parse_endpoint(&rdzv.endpoint, C10D_DEFAULT_PORT)
            .map(|_| ())
            .map_err(blame),
        RdzvBackend::Static => match split_endpoint(&rdzv.endpoint).map_err(blame)? {
            (_, Some(_)) => Ok(()),
            (_, None) => Err(blame(format!(
                "port is missing in endpoint: {}. Try to specify --master-port",
                rdzv.endpoint
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use nix::sys::signal::Signal;

    use super::*;
    use crate::config::Std;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    /// Parse with the given environment only.
    fn parse_env(args: &[&str], env: &[(&str, &str)]) -> Result<Config, CliError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&argv(args), &|k| env.get(k).cloned())
    }

    /// The operator configures the launcher only through options' `PET_*` variables.
    #[test]
    fn every_variable_the_operator_sets_is_a_launcher_option() {
        for name in elasticjob_contract::env::LAUNCHER_OPTIONS {
            assert!(
                OPTS.iter().any(|o| o.env_var().as_deref() == Some(name)),
                "{name} is not a launcher option's variable"
            );
        }
    }

    fn ok(args: &[&str]) -> Config {
        parse_env(args, &[]).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn ok_env(args: &[&str], env: &[(&str, &str)]) -> Config {
        parse_env(args, env).unwrap_or_else(|e| panic!("{args:?} {env:?}: {e}"))
    }

    /// The usage error's message (without the usage line).
    fn err(args: &[&str], env: &[(&str, &str)]) -> String {
        match parse_env(args, env) {
            Err(CliError::Usage(msg)) => msg,
            other => panic!("{args:?} {env:?}: expected a usage error, got {other:?}"),
        }
    }

    fn is_uuid4(id: &str) -> bool {
        uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 4) && id.len() == 36
    }

    #[test]
    fn defaults() {
        let c = ok(&["train.py"]);
        assert_eq!(c.nnodes, NodeRange { min: 1, max: 1 });
        assert_eq!(c.nproc_per_node, NprocSpec::Count(1));
        assert_eq!(c.rdzv_conf, BTreeMap::new());
        assert!(!c.standalone);
        assert_eq!(c.max_restarts, 0);
        assert_eq!(c.monitor_interval, Duration::from_millis(100));
        assert_eq!(c.start_method, "spawn");
        assert_eq!(c.event_log_handler, "null");
        assert_eq!(c.role, "default");
        assert_eq!(c.entrypoint_kind, EntrypointKind::PythonScript);
        assert_eq!(c.log_dir, None);
        assert_eq!(c.redirects, StdSpec::none());
        assert_eq!(c.tee, StdSpec::none());
        assert_eq!(c.log_line_prefix_template, None);
        assert_eq!(c.local_ranks_filter, None);
        assert!(c.duplicate_stdout_filters.is_empty() && c.duplicate_stderr_filters.is_empty());
        assert_eq!(c.node_rank, 0);
        assert_eq!(c.master_addr, "127.0.0.1");
        assert_eq!(c.master_port, 29500);
        assert_eq!(c.local_addr, None);
        assert_eq!(c.logs_specs, None);
        assert_eq!(c.numa_binding, None);
        assert_eq!(
            c.signals_to_handle,
            [
                Signal::SIGTERM,
                Signal::SIGINT,
                Signal::SIGHUP,
                Signal::SIGQUIT
            ]
        );
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.exit_barrier_timeout, Duration::from_secs(300));
        assert!(!c.virtual_local_rank);
        assert_eq!(c.termination_message_path, None);
        assert_eq!(c.training_script, "train.py");
        assert!(c.training_script_args.is_empty());
        // A single node without --master-port: the automatic private c10d rendezvous.
        assert_eq!(c.rdzv_backend, RdzvBackend::C10d);
        assert_eq!(c.rdzv_endpoint, "localhost:0");
        assert!(is_uuid4(&c.rdzv_id), "{}", c.rdzv_id);
    }

    /// A valid sample value for every option, for the table-driven tests.
    fn sample(o: &Opt) -> &'static str {
        match o.dest {
            _ if !o.choices.is_empty() => o.choices[0],
            "nnodes"
            | "nproc_per_node"
            | "max_restarts"
            | "monitor_interval"
            | "shutdown_timeout"
            | "stall_timeout"
            | "exit_barrier_timeout"
            | "node_rank" => "1",
            "redirects" | "tee" => "3",
            "rdzv_backend" => "c10d",
            "rdzv_conf" => "a=b",
            "rdzv_endpoint" => "h:1",
            "logs_specs" => "default",
            "signals_to_handle" => "SIGUSR1",
            "local_ranks_filter" => "0",
            "master_port" | "status_port" => "1234",
            _ => "x",
        }
    }

    fn cli_matches(args: &[&str]) -> ArgMatches {
        let full = std::iter::once(PROG)
            .chain(args.iter().copied())
            .chain(["s"]);
        command()
            .try_get_matches_from(full)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn every_option_has_both_spellings_and_both_value_forms() {
        for o in OPTS {
            let expected = if o.dest == o.long { 1 } else { 2 };
            assert_eq!(o.longs().len(), expected, "{}", o.long);
            for long in o.longs() {
                match o.kind {
                    Kind::Flag => {
                        assert!(
                            cli_matches(&[&format!("--{long}")]).get_flag(o.dest),
                            "--{long}"
                        );
                    }
                    Kind::Value => {
                        let v = sample(o);
                        let eq = cli_matches(&[&format!("--{long}={v}")]);
                        let sep = cli_matches(&[&format!("--{long}"), v]);
                        for m in [eq, sep] {
                            assert_eq!(
                                m.get_one::<String>(o.dest).map(String::as_str),
                                Some(v),
                                "--{long}"
                            );
                        }
                    }
                }
            }
        }
        // And the whole parse accepts each of them.
        for o in OPTS {
            let arg = match o.kind {
                Kind::Flag => format!("--{}", o.dest),
                Kind::Value => format!("--{}={}", o.dest, sample(o)),
            };
            if o.dest != "no_python" {
                ok(&[&arg, "s"]);
            }
        }
    }

    #[test]
    fn single_spelling_options() {
        for long in ["nnodes", "standalone", "role", "module", "redirects", "tee"] {
            let o = OPTS.iter().find(|o| o.long == long).unwrap();
            assert_eq!(o.longs(), [long]);
        }
        for dest in ["standalone", "role"] {
            assert!(parse_env(&[&format!("--{dest}_x"), "s"], &[]).is_err());
        }
    }

    #[test]
    fn short_options() {
        let c = ok(&["-m", "-r", "3", "-t1", "pkg.mod"]);
        assert_eq!(c.entrypoint_kind, EntrypointKind::PythonModule);
        assert_eq!(
            c.redirects,
            StdSpec::All(Std {
                out: true,
                err: true
            })
        );
        assert_eq!(
            c.tee,
            StdSpec::All(Std {
                out: true,
                err: false
            })
        );
        let c = ok(&["-mr3", "-t=0:3", "pkg.mod"]);
        assert_eq!(c.entrypoint_kind, EntrypointKind::PythonModule);
        assert_eq!(
            c.redirects,
            StdSpec::All(Std {
                out: true,
                err: true
            })
        );
        assert_eq!(
            c.tee.for_rank(0),
            Std {
                out: true,
                err: true
            }
        );
    }

    #[test]
    fn unambiguous_prefixes() {
        // torchrun's own test uses --redirect=3 --tee=3.
        let c = ok(&["--redirect=3", "--te=3", "s"]);
        assert_eq!(
            c.redirects,
            StdSpec::All(Std {
                out: true,
                err: true
            })
        );
        assert_eq!(
            c.tee,
            StdSpec::All(Std {
                out: true,
                err: true
            })
        );
        // A prefix of the two spellings of one option is not ambiguous.
        assert_eq!(ok(&["--nproc=4", "s"]).nproc_per_node, NprocSpec::Count(4));
        assert_eq!(
            ok(&["--nproc", "4", "s"]).nproc_per_node,
            NprocSpec::Count(4)
        );
        assert_eq!(
            ok(&["--nproc_per=4", "s"]).nproc_per_node,
            NprocSpec::Count(4)
        );
        assert_eq!(
            ok(&["--no-py", "s"]).entrypoint_kind,
            EntrypointKind::Binary
        );
        assert_eq!(ok(&["--stand", "s"]).rdzv_backend, RdzvBackend::C10d);
        // Abbreviations torchrun accepts keep their meaning next to our own options.
        assert_eq!(
            ok(&["--t", "0:3", "s"]).tee.for_rank(0),
            Std {
                out: true,
                err: true
            }
        );
        assert_eq!(
            ok(&["--e=console", "s", "--e"]).event_log_handler,
            "console"
        );
        assert_eq!(
            ok(&["--exit=5", "s"]).exit_barrier_timeout,
            Duration::from_secs(5)
        );
        assert_eq!(
            ok(&["--term=/t", "s"]).termination_message_path,
            Some(PathBuf::from("/t"))
        );
        assert_eq!(ok(&["--stat=29401", "s"]).status_port, Some(29401));
        assert_eq!(ok(&["--status-port=0", "s"]).status_port, None);
        assert_eq!(
            parse_env(&["s"], &[("PET_STATUS_PORT", "7")])
                .unwrap()
                .status_port,
            Some(7)
        );
        assert!(parse_env(&["--status-port=70000", "s"], &[]).is_err());
        let c = ok(&["--rdzv-e=h:1", "--rdzv-b", "c10d", "s"]);
        assert_eq!(c.rdzv_endpoint, "h:1");
        assert!(matches!(parse_env(&["--he"], &[]), Err(CliError::Help(_))));
    }

    #[test]
    fn ambiguous_prefixes_list_the_candidates() {
        let e = err(&["--r=3", "s"], &[]);
        assert!(
            e.starts_with("ambiguous option: --r could match --rdzv-backend, --rdzv_backend"),
            "{e}"
        );
        for candidate in [
            "--redirects",
            "--role",
            "--run-path",
            "--run_path",
            "--rdzv-conf",
        ] {
            assert!(e.contains(candidate), "{e}");
        }
        let e = err(&["--no", "s"], &[]);
        assert_eq!(
            e,
            "ambiguous option: --no could match --no-python, --no_python, --node-rank, --node_rank"
        );
        let e = err(&["--rdzv", "x", "s"], &[]);
        assert!(e.starts_with("ambiguous option: --rdzv could match"), "{e}");
        assert!(!e.contains("--role"), "{e}");
    }

    #[test]
    fn unknown_options_and_bad_values_name_the_option() {
        assert!(err(&["--foo", "s"], &[]).starts_with("unrecognized arguments: --foo"));
        assert!(err(&["-x", "s"], &[]).starts_with("unrecognized arguments: -x"));
        assert_eq!(
            err(&["--start-method=thread", "s"], &[]),
            "argument --start-method/--start_method: invalid choice: 'thread' \
             (choose from 'spawn', 'fork', 'forkserver')"
        );
        assert!(
            err(&["--numa-binding", "all", "s"], &[])
                .starts_with("argument --numa-binding/--numa_binding: invalid choice: 'all'")
        );
        assert_eq!(
            err(&["--role"], &[]),
            "argument --role: expected one argument"
        );
        assert_eq!(
            err(&["-r"], &[]),
            "argument -r/--redirects: expected one argument"
        );
        assert_eq!(
            err(&["--module=1", "s"], &[]),
            "argument -m/--module: ignoring explicit argument '1'"
        );
        assert_eq!(
            err(&["--max-restarts=x", "s"], &[]),
            "argument --max-restarts/--max_restarts: invalid int value: 'x'"
        );
        assert!(err(&["--max-restarts=-1", "s"], &[]).contains("max_restarts must be >= 0"));
        assert!(err(&["--monitor-interval=0", "s"], &[]).contains("monitor interval must be > 0"));
        assert!(err(&["--monitor-interval=nan", "s"], &[]).contains("invalid float value"));
        assert!(
            err(&["--node-rank=-1", "s"], &[]).starts_with("argument --node-rank/--node_rank: ")
        );
        assert!(
            err(&["--master-port=70000", "--nnodes=2", "s"], &[])
                .starts_with("argument --master-port/--master_port: ")
        );
    }

    #[test]
    fn missing_script() {
        assert_eq!(
            err(&[], &[]),
            "the following arguments are required: training_script"
        );
        assert_eq!(
            err(&["--nnodes=2", "--"], &[]),
            "the following arguments are required: training_script"
        );
    }

    #[test]
    fn script_args_pass_through_verbatim() {
        let c = ok(&[
            "--nproc-per-node=2",
            "train.py",
            "--nproc-per-node=9",
            "-m",
            "--foo",
            "-h",
            "--",
            "x",
        ]);
        assert_eq!(c.nproc_per_node, NprocSpec::Count(2));
        assert_eq!(c.entrypoint_kind, EntrypointKind::PythonScript);
        assert_eq!(c.training_script, "train.py");
        assert_eq!(
            c.training_script_args,
            ["--nproc-per-node=9", "-m", "--foo", "-h", "--", "x"]
        );
        // torchrun's own test: --touch-file-dir goes to the script.
        let c = ok(&[
            "--nnodes=1",
            "bin/test_script.py",
            "--touch-file-dir=/tmp/d",
        ]);
        assert_eq!(c.training_script_args, ["--touch-file-dir=/tmp/d"]);
    }

    #[test]
    fn double_dash_ends_launcher_options() {
        let c = ok(&["--standalone", "-m", "--", "pkg.mod", "--x"]);
        assert!(c.standalone);
        assert_eq!(c.entrypoint_kind, EntrypointKind::PythonModule);
        assert_eq!(c.training_script, "pkg.mod");
        assert_eq!(c.training_script_args, ["--x"]);
        let c = ok(&["--", "--weird-name", "-m"]);
        assert_eq!(c.training_script, "--weird-name");
        assert_eq!(c.training_script_args, ["-m"]);
    }

    #[test]
    fn repeated_option_takes_the_last_value() {
        assert_eq!(ok(&["--role=a", "--role", "b", "s"]).role, "b");
    }

    #[test]
    fn env_fallbacks_go_through_the_type_conversion() {
        let c = ok_env(
            &["s"],
            &[
                ("PET_NNODES", "1:2"),
                ("PET_NPROC_PER_NODE", "4"),
                ("PET_RDZV_BACKEND", "c10d"),
                ("PET_RDZV_ENDPOINT", "pod-0.svc:29400"),
                ("PET_RDZV_ID", "job-uid"),
                ("PET_RDZV_CONF", "join_timeout=5"),
                ("PET_MAX_RESTARTS", "3"),
                ("PET_MONITOR_INTERVAL", "1"),
                ("PET_START_METHOD", "spawn"),
                ("PET_EVENT_LOG_HANDLER", "console"),
                ("PET_ROLE", "trainer"),
                ("PET_LOG_DIR", "/tmp/logs"),
                ("PET_REDIRECTS", "3"),
                ("PET_TEE", "0:1"),
                ("PET_LOG_LINE_PREFIX_TEMPLATE", "[${rank}]"),
                ("PET_LOCAL_RANKS_FILTER", "0,1"),
                ("PET_DUPLICATE_STDOUT_FILTERS", "loss"),
                ("PET_DUPLICATE_STDERR_FILTERS", "err,,or"),
                ("PET_NODE_RANK", "1"),
                ("PET_MASTER_ADDR", "10.0.0.1"),
                ("PET_MASTER_PORT", "1234"),
                ("PET_LOCAL_ADDR", "me"),
                ("PET_SIGNALS_TO_HANDLE", "SIGUSR1"),
                ("PET_SHUTDOWN_TIMEOUT", "60"),
                ("PET_VIRTUAL_LOCAL_RANK", "1"),
                ("PET_EXIT_BARRIER_TIMEOUT", "10"),
                ("PET_TERMINATION_MESSAGE_PATH", "/dev/termination-log"),
            ],
        );
        assert_eq!(c.nnodes, NodeRange { min: 1, max: 2 });
        assert_eq!(c.nproc_per_node, NprocSpec::Count(4));
        assert_eq!(c.rdzv_backend, RdzvBackend::C10d);
        assert_eq!(c.rdzv_endpoint, "pod-0.svc:29400");
        assert_eq!(c.rdzv_id, "job-uid");
        assert_eq!(c.rdzv_conf["join_timeout"], "5");
        assert_eq!(c.max_restarts, 3);
        assert_eq!(c.monitor_interval, Duration::from_secs(1));
        assert_eq!(c.event_log_handler, "console");
        assert_eq!(c.role, "trainer");
        assert_eq!(c.log_dir, Some(PathBuf::from("/tmp/logs")));
        assert_eq!(
            c.redirects,
            StdSpec::All(Std {
                out: true,
                err: true
            })
        );
        assert_eq!(
            c.tee.for_rank(0),
            Std {
                out: true,
                err: false
            }
        );
        assert_eq!(c.log_line_prefix_template.as_deref(), Some("[${rank}]"));
        assert_eq!(c.local_ranks_filter, Some(BTreeSet::from([0, 1])));
        assert_eq!(c.duplicate_stdout_filters, ["loss"]);
        assert_eq!(c.duplicate_stderr_filters, ["err,or"]);
        assert_eq!(c.node_rank, 1);
        assert_eq!(c.master_addr, "10.0.0.1");
        assert_eq!(c.master_port, 1234);
        assert_eq!(c.local_addr.as_deref(), Some("me"));
        assert_eq!(c.signals_to_handle, [Signal::SIGUSR1]);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(60));
        assert!(c.virtual_local_rank);
        assert_eq!(c.exit_barrier_timeout, Duration::from_secs(10));
        assert_eq!(
            c.termination_message_path,
            Some(PathBuf::from("/dev/termination-log"))
        );
    }

    #[test]
    fn every_env_option_reads_its_pet_variable() {
        for o in OPTS.iter().filter(|o| o.env) {
            let var = o.env_var().unwrap();
            assert_eq!(var, format!("PET_{}", o.dest.to_uppercase()));
            let inputs = Inputs {
                matches: cli_matches(&[]),
                env: &|k| (k == var).then(|| "1".to_string()),
            };
            match o.kind {
                Kind::Flag => assert!(inputs.flag(o.dest).unwrap(), "{var}"),
                Kind::Value => assert_eq!(
                    inputs.given(o.dest).map(|g| g.value).as_deref(),
                    Some("1"),
                    "{var}"
                ),
            }
        }
        // No PET_ variable for --logs-specs and --numa-binding.
        let c = ok_env(
            &["s"],
            &[("PET_LOGS_SPECS", "nope"), ("PET_NUMA_BINDING", "bogus")],
        );
        assert_eq!((c.logs_specs, c.numa_binding), (None, None));
    }

    #[test]
    fn command_line_wins_over_env() {
        let env = [
            ("PET_NPROC_PER_NODE", "4"),
            ("PET_MAX_RESTARTS", "bogus"),
            ("PET_ROLE", "env"),
        ];
        let c = ok_env(
            &["--nproc-per-node=2", "--max-restarts=1", "--role=cli", "s"],
            &env,
        );
        assert_eq!(c.nproc_per_node, NprocSpec::Count(2));
        assert_eq!(c.max_restarts, 1);
        assert_eq!(c.role, "cli");
        // A flag given on the command line ignores a bogus PET_ value.
        assert!(ok_env(&["--standalone", "s"], &[("PET_STANDALONE", "yes")]).standalone);
    }

    #[test]
    fn boolean_env_flags() {
        for (value, expected) in [
            ("0", false),
            ("1", true),
            ("2", true),
            ("-1", true),
            (" 1 ", true),
        ] {
            let c = ok_env(&["s"], &[("PET_VIRTUAL_LOCAL_RANK", value)]);
            assert_eq!(c.virtual_local_rank, expected, "{value:?}");
        }
        for value in ["true", "", "yes"] {
            let e = err(&["s"], &[("PET_STANDALONE", value)]);
            assert!(
                e.starts_with(&format!(
                    "environment variable PET_STANDALONE: invalid int value: '{value}'"
                )),
                "{e}"
            );
        }
        assert_eq!(
            ok_env(&["s"], &[("PET_MODULE", "1")]).entrypoint_kind,
            EntrypointKind::PythonModule
        );
        assert_eq!(
            ok_env(&["s"], &[("PET_NO_PYTHON", "1")]).entrypoint_kind,
            EntrypointKind::Binary
        );
        assert_eq!(
            ok_env(&["s"], &[("PET_RUN_PATH", "1")]).entrypoint_kind,
            EntrypointKind::RunPath
        );
        // torchrun's test_launch_with_env_vars: PET_MODULE=1 with PET_NO_PYTHON=1 fails, =0 runs.
        let e = err(&["s"], &[("PET_NO_PYTHON", "1"), ("PET_MODULE", "1")]);
        assert!(e.starts_with("Don't use both"), "{e}");
        let c = ok_env(&["s"], &[("PET_NO_PYTHON", "1"), ("PET_MODULE", "0")]);
        assert_eq!(c.entrypoint_kind, EntrypointKind::Binary);
    }

    #[test]
    fn invalid_env_values_name_the_variable() {
        let cases = [
            (
                "PET_NPROC_PER_NODE",
                "abc",
                "Unsupported nproc_per_node value: abc",
            ),
            ("PET_MAX_RESTARTS", "x", "invalid int value: 'x'"),
            (
                "PET_NNODES",
                "1:2:3",
                r#"nnodes=1:2:3 is not in "MIN:MAX" format"#,
            ),
            ("PET_REDIRECTS", "4", "4 does not match"),
            (
                "PET_RDZV_BACKEND",
                "etcd",
                "not supported by elastic-launch",
            ),
            ("PET_RDZV_CONF", "timeout", "must have a value specified"),
            ("PET_MONITOR_INTERVAL", "-1", "monitor interval must be > 0"),
            (
                "PET_SIGNALS_TO_HANDLE",
                "SIGNOPE",
                "unknown signal 'SIGNOPE'",
            ),
            (
                "PET_SHUTDOWN_TIMEOUT",
                "-3",
                "shutdown_timeout must be non-negative, got -3",
            ),
            (
                "PET_LOCAL_RANKS_FILTER",
                "a",
                "--local_ranks_filter must be",
            ),
            (
                "PET_EXIT_BARRIER_TIMEOUT",
                "soon",
                "invalid float value: 'soon'",
            ),
        ];
        for (var, value, msg) in cases {
            let e = err(&["s"], &[(var, value)]);
            assert!(
                e.starts_with(&format!("environment variable {var}: ")),
                "{e}"
            );
            assert!(e.contains(msg), "{var}: {e}");
        }
        let e = err(
            &["--nnodes=2", "s"],
            &[("PET_RDZV_ENDPOINT", "h:x"), ("PET_RDZV_BACKEND", "c10d")],
        );
        assert!(
            e.starts_with("environment variable PET_RDZV_ENDPOINT: The port number"),
            "{e}"
        );
    }

    #[test]
    fn env_choices_are_not_checked() {
        // argparse does not check choices of env-provided defaults; the value is never used.
        assert_eq!(
            ok_env(&["s"], &[("PET_START_METHOD", "thread")]).start_method,
            "thread"
        );
    }

    #[test]
    fn standalone_overrides_rendezvous_options() {
        let c = ok(&[
            "--standalone",
            "--rdzv-backend=static",
            "--rdzv-endpoint=h:1",
            "--rdzv-id=mine",
            "s",
        ]);
        assert!(c.standalone);
        assert_eq!(c.rdzv_backend, RdzvBackend::C10d);
        assert_eq!(c.rdzv_endpoint, "localhost:0");
        assert!(is_uuid4(&c.rdzv_id), "{}", c.rdzv_id);
        // Even an unsupported backend is irrelevant then, as in torchrun.
        assert!(ok(&["--standalone", "--rdzv-backend=etcd", "s"]).standalone);
        assert_ne!(
            ok(&["--standalone", "s"]).rdzv_id,
            ok(&["--standalone", "s"]).rdzv_id
        );
    }

    #[test]
    fn automatic_single_node_rendezvous() {
        // Kept: the user's run id (deliberate deviation from torchrun).
        let c = ok(&["--rdzv-id=job", "s"]);
        assert_eq!(
            (c.rdzv_backend, c.rdzv_endpoint.as_str(), c.rdzv_id.as_str()),
            (RdzvBackend::C10d, "localhost:0", "job")
        );
        let c = ok_env(&["s"], &[("PET_RDZV_ID", "job")]);
        assert_eq!(c.rdzv_id, "job");
        assert!(!c.standalone);
        // Not when a master port is given (command line or env): torchrun's caffe2_bc test.
        let c = ok(&[
            "--master-addr=localhost",
            "--master-port=29511",
            "--node-rank=0",
            "s",
        ]);
        assert_eq!(
            (c.rdzv_backend, c.rdzv_endpoint.as_str(), c.rdzv_id.as_str()),
            (RdzvBackend::Static, "localhost:29511", "none")
        );
        let c = ok_env(&["s"], &[("PET_MASTER_PORT", "29511")]);
        assert_eq!(
            (c.rdzv_backend, c.rdzv_endpoint.as_str()),
            (RdzvBackend::Static, "127.0.0.1:29511")
        );
        // Not with more than one node, an endpoint, or another backend.
        let c = ok(&["--nnodes=1:2", "s"]);
        assert_eq!(
            (c.rdzv_backend, c.rdzv_endpoint.as_str()),
            (RdzvBackend::Static, "127.0.0.1:29500")
        );
        let c = ok(&["--rdzv-endpoint=h:5", "s"]);
        assert_eq!(
            (c.rdzv_backend, c.rdzv_endpoint.as_str()),
            (RdzvBackend::Static, "h:5")
        );
        let c = ok(&["--rdzv-backend=c10d", "s"]);
        assert_eq!(
            (c.rdzv_backend, c.rdzv_endpoint.as_str(), c.rdzv_id.as_str()),
            (RdzvBackend::C10d, "", "none")
        );
    }

    #[test]
    fn resolve_rendezvous_is_pure() {
        let input = RendezvousInput {
            master_addr: "[::1]".into(),
            nnodes: Some(NodeRange { min: 2, max: 2 }),
            ..Default::default()
        };
        let r = resolve_rendezvous(input.clone(), || unreachable!());
        assert_eq!(
            r,
            Rendezvous {
                backend: RdzvBackend::Static,
                endpoint: "[::1]:29500".into(),
                id: "none".into(),
                master_port: 29500
            }
        );
        let r = resolve_rendezvous(
            RendezvousInput {
                standalone: true,
                id: Some("x".into()),
                ..input
            },
            || "new".into(),
        );
        assert_eq!(
            (r.backend, r.endpoint.as_str(), r.id.as_str()),
            (RdzvBackend::C10d, "localhost:0", "new")
        );
        let r = resolve_rendezvous(RendezvousInput::default(), || "new".into());
        assert_eq!(
            (r.backend, r.endpoint.as_str(), r.id.as_str()),
            (RdzvBackend::C10d, "localhost:0", "new")
        );
    }

    #[test]
    fn endpoints_are_validated_at_parse_time() {
        let c = ok(&[
            "--nnodes=1:2",
            "--rdzv-backend=c10d",
            "--rdzv-endpoint=[::1]:29400",
            "s",
        ]);
        assert_eq!(
            parse_endpoint(&c.rdzv_endpoint, C10D_DEFAULT_PORT).unwrap(),
            ("::1".into(), 29400)
        );
        let e = err(
            &["--rdzv-backend=c10d", "--rdzv-endpoint=h:65536", "s"],
            &[],
        );
        assert_eq!(
            e,
            "argument --rdzv-endpoint/--rdzv_endpoint: The port number of the rendezvous \
             endpoint 'h:65536' must be an integer between 0 and 65536."
        );
        let e = err(&["--rdzv-endpoint=h", "s"], &[]);
        assert_eq!(
            e,
            "argument --rdzv-endpoint/--rdzv_endpoint: port is missing in endpoint: h. Try to specify --master-port"
        );
        let e = err(&["--nnodes=2", "--master-addr=bad host", "s"], &[]);
        assert!(e.starts_with("argument --master-addr/--master_addr: The hostname of the rendezvous endpoint 'bad host:29500'"), "{e}");
        ok(&["--nnodes=2", "--master-addr=[::1]", "s"]);
    }

    #[test]
    fn static_node_rank_must_fit_nnodes() {
        ok(&["--nnodes=2", "--node-rank=1", "s"]);
        let e = err(&["--nnodes=2", "--node-rank=2", "s"], &[]);
        assert!(e.starts_with("argument --node-rank/--node_rank: node rank 2 must be less than the number of nodes (2)"), "{e}");
        // Ignored by c10d, as in torchrun.
        ok(&["--nnodes=2", "--rdzv-backend=c10d", "--node-rank=5", "s"]);
    }

    #[test]
    fn entrypoint_kinds() {
        assert_eq!(
            entrypoint_kind(false, false, false),
            Ok(EntrypointKind::PythonScript)
        );
        assert_eq!(
            entrypoint_kind(false, false, true),
            Ok(EntrypointKind::PythonModule)
        );
        assert_eq!(
            entrypoint_kind(false, true, false),
            Ok(EntrypointKind::Binary)
        );
        for (no_python, module) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(
                entrypoint_kind(true, no_python, module),
                Ok(EntrypointKind::RunPath)
            );
        }
        assert_eq!(
            err(&["--no-python", "--module", "bin/test_script.sh"], &[]),
            "Don't use both the '--no-python' flag and the '--module' flag at the same time."
        );
        assert_eq!(
            ok(&["--run-path", "--no-python", "-m", "s"]).entrypoint_kind,
            EntrypointKind::RunPath
        );
    }

    #[test]
    fn logs_specs_and_numa_binding() {
        assert_eq!(
            ok(&["--logs_specs=default", "s"]).logs_specs.as_deref(),
            Some("default")
        );
        assert_eq!(
            err(&["--logs_specs=DOESNOT_EXIST", "s"], &[]),
            "argument --logs-specs/--logs_specs: Could not find entrypoint under \
             'torchrun.logs_specs[DOESNOT_EXIST]' key (elastic-launch has only the built-in \
             'default' log layout)"
        );
        for mode in ["node", "socket", "exclusive", "core-complex"] {
            assert_eq!(
                ok(&["--numa-binding", mode, "s"]).numa_binding.as_deref(),
                Some(mode)
            );
        }
    }

    #[test]
    fn parsed_values_reach_the_config() {
        let c = ok(&[
            "--nnodes=2:4",
            "--nproc-per-node=gpu",
            "--rdzv-backend=c10d",
            "--rdzv-endpoint=pod-0:29400",
            "--rdzv-conf='join_timeout=5,last_call_timeout=1,timeout=5'",
            "--local-ranks-filter=0,2",
            "--duplicate-stdout-filters=a,,b,c",
            "--signals-to-handle=SIGTERM,SIGUSR1",
            "--log-dir=",
            "--local-addr=",
            "s",
        ]);
        assert_eq!(c.nnodes, NodeRange { min: 2, max: 4 });
        assert_eq!(c.nproc_per_node, NprocSpec::Gpu);
        assert_eq!(
            c.rdzv_conf.get("'join_timeout").map(String::as_str),
            Some("5")
        );
        assert_eq!(c.local_ranks_filter, Some(BTreeSet::from([0, 2])));
        assert_eq!(c.duplicate_stdout_filters, ["a,b", "c"]);
        assert_eq!(c.signals_to_handle, [Signal::SIGTERM, Signal::SIGUSR1]);
        // Empty strings mean "not set" for these, as in torchrun.
        assert_eq!((c.log_dir, c.local_addr), (None, None));
        let e = err(&["--nnodes=2:20:30", "s"], &[]);
        assert_eq!(
            e,
            r#"argument --nnodes: nnodes=2:20:30 is not in "MIN:MAX" format"#
        );
        let e = err(&["--nproc-per-node=unknown", "s"], &[]);
        assert!(e.starts_with("argument --nproc-per-node/--nproc_per_node: Unsupported nproc_per_node value: unknown"), "{e}");
        let e = err(&["--local-ranks-filter=0,x", "s"], &[]);
        assert!(e.ends_with("--local_ranks_filter must be a comma-separated list of integers e.g. --local_ranks_filter=0,1,2"), "{e}");
        let e = err(&["--signals-to-handle=SIGTERM,SIGFOO", "s"], &[]);
        assert!(
            e.starts_with(
                "argument --signals-to-handle/--signals_to_handle: unknown signal 'SIGFOO'"
            ),
            "{e}"
        );
        let e = err(&["-t", "9", "s"], &[]);
        assert!(
            e.starts_with(
                r"argument -t/--tee: 9 does not match: <^[0123]$> or <^(\d:[0123],)*(\d:[0123])$>"
            ),
            "{e}"
        );
    }

    #[test]
    fn shutdown_timeout_resolution() {
        assert_eq!(
            ok(&["--shutdown-timeout=5", "s"]).shutdown_timeout,
            Duration::from_secs(5)
        );
        let env = [("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "600")];
        assert_eq!(
            ok_env(&["s"], &env).shutdown_timeout,
            Duration::from_secs(600)
        );
        assert_eq!(
            ok_env(&["--shutdown-timeout=0", "s"], &env).shutdown_timeout,
            Duration::ZERO
        );
        assert_eq!(
            err(&["--shutdown-timeout", "-5", "s"], &[]),
            "argument --shutdown-timeout/--shutdown_timeout: shutdown_timeout must be non-negative, got -5"
        );
        let e = err(&["s"], &[("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "abc")]);
        assert!(
            e.starts_with("environment variable TORCH_ELASTIC_SHUTDOWN_TIMEOUT: invalid int value"),
            "{e}"
        );
    }

    #[test]
    fn exit_barrier_timeout_resolution() {
        assert_eq!(
            ok(&["--exit-barrier-timeout=1.5", "s"]).exit_barrier_timeout,
            Duration::from_millis(1500)
        );
        let env = [
            ("TORCH_ELASTIC_EXIT_BARRIER_TIMEOUT", "60"),
            ("PET_EXIT_BARRIER_TIMEOUT", "30"),
        ];
        assert_eq!(
            ok_env(&["s"], &env[..1]).exit_barrier_timeout,
            Duration::from_secs(60)
        );
        assert_eq!(
            ok_env(&["s"], &env).exit_barrier_timeout,
            Duration::from_secs(30)
        );
        assert_eq!(
            ok_env(&["--exit-barrier-timeout=0", "s"], &env).exit_barrier_timeout,
            Duration::ZERO
        );
        assert!(err(&["--exit-barrier-timeout=-1", "s"], &[]).contains("must be >= 0"));
    }

    #[test]
    fn a_launcher_started_by_a_worker_in_an_elasticjob_pod_is_refused() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let why = nested_in_a_worker(&env(&[
            ("ELASTICJOB_NODE_INDEX", "0"),
            ("TORCHELASTIC_RUN_ID", "uid"),
        ]))
        .unwrap();
        assert!(why.contains("runs once per pod"), "{why}");
        // The pod's own launcher, and torchrun anywhere else, run.
        assert_eq!(
            nested_in_a_worker(&env(&[("ELASTICJOB_NODE_INDEX", "0")])),
            None
        );
        assert_eq!(
            nested_in_a_worker(&env(&[("TORCHELASTIC_RUN_ID", "uid")])),
            None
        );
    }

    #[test]
    fn log_line_prefix_template_resolution() {
        let env = [("TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE", "[rank${rank}]: ")];
        assert_eq!(
            ok_env(&["s"], &env).log_line_prefix_template.as_deref(),
            Some("[rank${rank}]: ")
        );
        let c = ok_env(&["--log-line-prefix-template=${hostname}:", "s"], &env);
        assert_eq!(c.log_line_prefix_template.as_deref(), Some("${hostname}:"));
        let c = ok_env(&["s"], &[("PET_LOG_LINE_PREFIX_TEMPLATE", "pet"), env[0]]);
        assert_eq!(c.log_line_prefix_template.as_deref(), Some("pet"));
    }

    #[test]
    fn help_and_error_display() {
        let help = match parse_env(&["--help"], &[]) {
            Err(e @ CliError::Help(_)) => {
                assert_eq!(e.exit_code(), 0);
                e.to_string()
            }
            other => panic!("{other:?}"),
        };
        assert!(help.contains("torchrun-compatible"), "{help}");
        for o in OPTS {
            assert!(
                help.contains(&format!("--{}", o.long)),
                "--{} missing from help",
                o.long
            );
        }
        assert!(matches!(
            parse_env(&["-h", "s"], &[]),
            Err(CliError::Help(_))
        ));
        let e = parse_env(&["--foo", "s"], &[]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            "usage: elastic-launch [options] TRAINING_SCRIPT ...\n\
             elastic-launch: error: unrecognized arguments: --foo"
        );
    }

    /// Found with fuzz/ (launcher_cli): a finite duration past what a `Duration` holds panicked
    /// in `Duration::from_secs_f64`; one that rounds to 0 ns passed the `> 0` check.
    #[test]
    fn durations_too_long_or_rounding_to_zero_are_usage_errors() {
        for (opt, value) in [
            ("--monitor-interval", "1e300"),
            ("--exit-barrier-timeout", "1e20"),
            ("--stall-timeout", "1.9e19"),
            ("--monitor-interval", "1e-300"),
        ] {
            let msg = err(&[&format!("{opt}={value}"), "train.py"], &[]);
            assert!(msg.contains(opt) && msg.contains(value), "{msg}");
        }
        let msg = err(
            &["train.py"],
            &[("TORCH_ELASTIC_EXIT_BARRIER_TIMEOUT", "1e300")],
        );
        assert!(msg.contains("TORCH_ELASTIC_EXIT_BARRIER_TIMEOUT"), "{msg}");
        assert_eq!(
            ok(&["--stall-timeout=1e-300", "train.py"]).stall_timeout,
            None,
            "a stall timeout that rounds to 0 is off, as 0 is"
        );
    }
}
