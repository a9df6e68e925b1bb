//! The launcher's command line and `PET_*` environment (launcher/src/cli.rs, cli/values.rs) on
//! arbitrary input: `cli::parse` gives a `Config` or a clean usage error (never a panic), a
//! usage error exits 2 and says what is wrong, and a `Config` keeps the invariants the agent
//! relies on, and its `--rdzv-conf` gives c10d settings or an error, never a panic.
//!
//! Input (lossy UTF-8): lines up to the first empty line are the environment (`NAME=VALUE`),
//! the lines after it are argv (without the program name), one argument a line.

#![no_main]

use std::collections::BTreeMap;

use elastic_launch::cli::{self, CliError};
use elastic_launch::config::NprocSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (env_part, argv_part) = text.split_once("\n\n").unwrap_or(("", &text));
    let env: BTreeMap<String, String> = env_part
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let argv: Vec<String> = argv_part.lines().map(String::from).collect();
    let lookup = |name: &str| env.get(name).cloned();

    let _ = cli::nested_in_a_worker(&lookup);
    match cli::parse(&argv, &lookup) {
        Ok(cfg) => {
            assert!(
                0 < cfg.nnodes.min && cfg.nnodes.min <= cfg.nnodes.max,
                "{:?}",
                cfg.nnodes
            );
            if let NprocSpec::Count(n) = cfg.nproc_per_node {
                assert!(n > 0, "nproc_per_node 0");
            }
            assert!(!cfg.monitor_interval.is_zero(), "monitor interval 0");
            // The c10d backend's settings, read from --rdzv-conf when the agent starts.
            if let Ok(conf) = elastic_launch::rendezvous::parse_conf(&cfg.rdzv_conf) {
                assert!(!conf.join.is_zero() && !conf.keep_alive_interval.is_zero());
            }
        }
        Err(e @ CliError::Usage(_)) => {
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("error: "), "{e}");
        }
        Err(e @ CliError::Help(_)) => assert_eq!(e.exit_code(), 0),
    }
});
