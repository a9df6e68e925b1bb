//! The worker of the rendezvous benchmarks (`bench/rendezvous.py`): a static binary that starts
//! in about a millisecond, so what is measured is the launcher, not the worker.
//!
//! usage: rdzv-worker FILE [--fail-group-rank G --wait-starts N [--settle S]]
//!
//! On start it appends `start <unix time> <restart count> <group rank> <rank> <pid>` to FILE (one
//! O_APPEND write, so lines from concurrent workers never interleave). Then, with
//! --fail-group-rank, while FILE holds no `death` line yet (the first round; torchrun's restart
//! counts cannot tell, they differ between nodes after a restart):
//! - the worker with GROUP_RANK=G and LOCAL_RANK=0 waits until FILE holds N `start` lines
//!   (every worker of the round is up), sleeps S seconds (default 1) so the agents are settled
//!   in monitoring, appends `death <unix time> ...` and exits 1;
//! - every other worker sleeps until its agent stops it.
//!
//! Otherwise it exits 0 at once.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn env_u32(name: &str) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn append(file: &str, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .expect("open stamp file");
    f.write_all(line.as_bytes()).expect("write stamp file");
}

fn main() {
    let started = now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = args
        .first()
        .expect("usage: rdzv-worker FILE [--fail-group-rank G --wait-starts N [--settle S]]")
        .clone();
    let restart = env_u32("TORCHELASTIC_RESTART_COUNT");
    let group_rank = env_u32("GROUP_RANK");
    let rank = env_u32("RANK");
    let ids = format!("{restart} {group_rank} {rank} {}", std::process::id());
    append(&file, &format!("start {started:.6} {ids}\n"));

    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].parse::<f64>().expect("numeric flag"))
    };
    let Some(fail_group_rank) = flag("--fail-group-rank") else {
        return;
    };
    if std::fs::read_to_string(&file)
        .unwrap_or_default()
        .contains("\ndeath ")
    {
        return;
    }
    if group_rank != fail_group_rank as u32 || env_u32("LOCAL_RANK") != 0 {
        // Not the worker that dies: run until the agent stops it for the restart.
        std::thread::sleep(Duration::from_secs(3600));
        return;
    }
    let wait_starts = flag("--wait-starts").expect("--wait-starts N") as usize;
    let settle = flag("--settle").unwrap_or(1.0);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let up = text.lines().filter(|l| l.starts_with("start ")).count();
        if up >= wait_starts {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_secs_f64(settle));
    append(&file, &format!("death {:.6} {ids}\n", now()));
    std::process::exit(1);
}
