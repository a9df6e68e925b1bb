//! `elastic-launch`: parse the command line, run the agent, report the outcome.

use std::process::ExitCode;

use anyhow::Context;
use elastic_launch::agent::{Agent, AgentError, Outcome};
use elastic_launch::config::Config;
use elastic_launch::report::{self, RunFacts};
use elastic_launch::{cli, entrypoint, failures, install, workers, wrap};
use elasticjob_contract::report::{Reason, RunReport};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(workers::GUARDIAN_ARG) {
        return ExitCode::from(workers::guardian_main() as u8);
    }
    if argv.first().map(String::as_str) == Some(elasticjob_contract::install::ARG) {
        return ExitCode::from(install::install_main(&argv[1..]));
    }
    if argv.first().map(String::as_str) == Some(elasticjob_contract::install::WRAP_ARG) {
        return ExitCode::from(wrap::wrap_main(&argv[1..]));
    }
    if let Some(why) = cli::nested_in_a_worker(&|name| std::env::var(name).ok()) {
        eprintln!("{why}");
        return ExitCode::from(2);
    }
    let cfg = match cli::parse(&argv, &|name| std::env::var(name).ok()) {
        Ok(cfg) => cfg,
        Err(e) => {
            if e.exit_code() == 0 {
                print!("{e}");
            } else {
                eprintln!("{e}");
            }
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    init_tracing();
    if cfg.standalone {
        tracing::info!(rdzv_backend = "c10d", rdzv_endpoint = %cfg.rdzv_endpoint, rdzv_id = %cfg.rdzv_id, "standalone: a single node with a private store");
    }
    // One thread: workers are spawned from the thread that lives as long as the launcher, which
    // is what PR_SET_PDEATHSIG ties them to.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(run(cfg));
    // Tee tasks and the store stop with the runtime; workers are already gone.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    ExitCode::from(code)
}

fn init_tracing() {
    // LOGLEVEL is torchrun's knob; RUST_LOG gives full control.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| {
            std::env::var("LOGLEVEL")
                .ok()
                .map(|l| l.to_ascii_lowercase().replace("warning", "warn"))
        })
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

async fn run(cfg: Config) -> u8 {
    let name = entrypoint::entrypoint_name(&cfg);
    let termination_path =
        report::termination_message_path(cfg.termination_message_path.as_deref());
    let max_restarts = cfg.max_restarts;
    let mut agent = match Agent::setup(cfg).await {
        Ok(agent) => agent,
        Err(e) => {
            let host = hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default();
            let facts = RunFacts {
                host: &host,
                restart_count: 0,
                max_restarts,
                round: None,
            };
            return launcher_failure(&e, facts, termination_path.as_deref());
        }
    };
    let host = agent.host().to_string();
    let outcome = agent.run().await;
    let facts = |round| RunFacts {
        host: &host,
        restart_count: agent.restart_count(),
        max_restarts,
        round,
    };
    match outcome {
        Ok(Outcome::Succeeded) => {
            if let Some(path) = &termination_path {
                write_report(path, &facts(agent.progress().round).succeeded());
            }
            0
        }
        Ok(Outcome::AlreadyFinished) => 0,
        Ok(Outcome::WorkersFailed { failures, round }) => {
            eprintln!("{}", failures::format_report(&name, &failures, &host));
            let root = failures::root_cause(&failures).expect("a failed group has failures");
            if let Err(e) = forward_error_file(root) {
                tracing::warn!(error = %e, "cannot write the launcher's TORCHELASTIC_ERROR_FILE");
            }
            if let Some(path) = &termination_path {
                write_report(path, &facts(round).worker_failed(root));
            }
            1
        }
        Ok(Outcome::Signaled(sig)) => {
            let message = format!("launcher received {sig}; workers were stopped");
            if let Some(path) = &termination_path {
                write_report(path, &facts(None).launcher(Reason::Signaled, message));
            }
            1
        }
        Err(e) => launcher_failure(&e, facts(None), termination_path.as_deref()),
    }
}

fn launcher_failure(error: &AgentError, facts: RunFacts, path: Option<&std::path::Path>) -> u8 {
    let message = error.to_string();
    tracing::error!("{message}");
    let reason = error.reason();
    if let Some(path) = path {
        write_report(path, &facts.launcher(reason, message.clone()));
    }
    if let Ok(file) = std::env::var("TORCHELASTIC_ERROR_FILE") {
        let data = serde_json::json!({"message": {"message": format!("{}: {message}", reason.as_str()), "extraInfo": {"py_callstack": "", "timestamp": chrono::Utc::now().timestamp().to_string()}}});
        let _ = std::fs::write(file, data.to_string());
    }
    1
}

fn write_report(path: &std::path::Path, report: &RunReport) {
    if let Err(e) = report::write_report(path, report) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the termination message");
    }
}

/// torchrun's `@record` on main: the root cause's error file goes to the launcher's own
/// `TORCHELASTIC_ERROR_FILE` when a scheduler (or a parent launcher) set one.
fn forward_error_file(root: &failures::ProcessFailure) -> anyhow::Result<()> {
    let Ok(path) = std::env::var("TORCHELASTIC_ERROR_FILE") else {
        return Ok(());
    };
    let Some(data) = failures::forwarded_error(root) else {
        tracing::info!(
            local_rank = root.local_rank,
            "root cause failed with no error file; decorate the entrypoint with @record to get its traceback"
        );
        return Ok(());
    };
    if std::path::Path::new(&path).exists() {
        tracing::warn!(path, "replacing existing error file");
        std::fs::remove_file(&path).with_context(|| format!("removing {path}"))?;
    }
    std::fs::write(&path, serde_json::to_string(&data)?).with_context(|| format!("writing {path}"))
}
