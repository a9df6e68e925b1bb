//! Rendezvous at scale: one `StoreServer` and N agents completing one c10d round.
//!
//! Each agent is a tokio task with its OWN `StoreClient` (a real TCP connection) running the
//! real `DynamicRendezvous::next_round` with `--nnodes=N` (min = max = N), so the round seals
//! as soon as the N-th agent joins. The server runs on its own thread with a current-thread
//! runtime, as in the elastic-launch that hosts it; the agents share a multi-thread runtime.
//!
//! Two ways to start, each timed until the last agent holds its `RoundInfo`:
//! - cold: every agent connects, then joins (the store sees N handshakes and N joins at once);
//! - warm: every agent connects first, then all are released together (the round alone).
//!
//! Every round is checked: one round number, group ranks a permutation of 0..N, consistent
//! world sizes, and the ring of heartbeat peers a single cycle through all N.
//!
//! usage: rdzv-scale [--agents 16,64,256,1024] [--reps 5] [--threads 2]
//! Prints a markdown table of medians (and min–max) per N.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use elastic_launch::config::NodeRange;
use elastic_launch::rendezvous::{DynamicRendezvous, NodeDesc, RendezvousConf, RoundInfo};
use elastic_launch::store::{StoreClient, StoreServer};
use tokio::sync::Barrier;

struct Args {
    agents: Vec<u32>,
    reps: usize,
    threads: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        agents: vec![16, 64, 256, 1024],
        reps: 5,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--agents" => {
                a.agents = v
                    .split(',')
                    .map(|n| n.trim().parse().expect("--agents"))
                    .collect()
            }
            "--reps" => a.reps = v.parse().expect("--reps"),
            "--threads" => a.threads = v.parse().expect("--threads"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

/// CPU seconds (user + system) from a `/proc/.../stat` file (clock ticks of 10 ms).
fn cpu_secs(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).expect("read stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A store server on its own thread, driven by a current-thread runtime like the agent's.
struct Server {
    port: u16,
    /// `/proc/self/task/<tid>/stat` of the server thread, for its CPU time.
    stat_path: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let server = StoreServer::bind("127.0.0.1", 0).expect("bind store");
                let task = std::fs::read_link("/proc/thread-self").expect("thread-self");
                let stat_path = format!("/proc/{}/stat", task.display());
                ready_tx
                    .send((server.port(), stat_path))
                    .expect("report port");
                let _ = stop_rx.await;
                server.shutdown().await;
            });
        });
        let (port, stat_path) = ready_rx.recv().expect("server started");
        Server {
            port,
            stat_path,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One agent: connect on its own connection, then (after `gate`, if any) join the round.
async fn agent(
    port: u16,
    run_id: Arc<str>,
    n: u32,
    i: u32,
    gate: Option<Arc<Barrier>>,
) -> (RoundInfo, String, Instant) {
    let store = StoreClient::connect("127.0.0.1", port, Duration::from_secs(60))
        .await
        .expect("connect");
    if let Some(gate) = gate {
        gate.wait().await;
    }
    let id = format!("bench_{i}");
    let me = NodeDesc {
        id: id.clone(),
        host: "127.0.0.1".into(),
        index: None,
        nproc: 1,
        next_restart: 0,
    };
    let mut rdzv = DynamicRendezvous::new(
        &store,
        &run_id,
        NodeRange { min: n, max: n },
        RendezvousConf::default(),
        me,
    );
    let info = rdzv.next_round().await.expect("rendezvous round");
    (info, id, Instant::now())
}

/// Panics unless the N results form one valid round.
fn check_round(n: u32, results: &[(RoundInfo, String, Instant)]) {
    assert_eq!(results.len(), n as usize);
    let round = results[0].0.round;
    let mut ranks: Vec<u32> = results.iter().map(|(r, _, _)| r.group_rank).collect();
    ranks.sort_unstable();
    assert!(
        ranks.iter().copied().eq(0..n),
        "group ranks are not a permutation of 0..{n}"
    );
    let rank_of: HashMap<&str, u32> = results
        .iter()
        .map(|(r, id, _)| (id.as_str(), r.group_rank))
        .collect();
    for (r, _, _) in results {
        assert_eq!(r.round, round, "agents disagree on the round");
        assert_eq!(
            (r.group_world_size, r.world_size),
            (n, n),
            "inconsistent world size"
        );
        assert_eq!(
            r.base_global_rank, r.group_rank,
            "one worker per agent: global rank = group rank"
        );
        assert_eq!(r.restart_count, results[0].0.restart_count);
        if n > 1 {
            let peer = rank_of[r.ring_peer.as_deref().expect("ring peer")];
            assert_eq!(
                peer,
                (r.group_rank + 1) % n,
                "heartbeat ring is not the next rank"
            );
        }
    }
}

struct Sample {
    total: f64,
    connected: f64,
    server_cpu: f64,
    process_cpu: f64,
}

/// One round of `n` agents on a fresh server; cold or warm start.
fn run_once(rt: &tokio::runtime::Runtime, n: u32, warm: bool, rep: usize) -> Sample {
    let server = Server::start();
    let run_id: Arc<str> = Arc::from(format!("scale{n}_{rep}_{warm}"));
    let gate = warm.then(|| Arc::new(Barrier::new(n as usize + 1)));
    let (cpu0, scpu0) = (cpu_secs("/proc/self/stat"), cpu_secs(&server.stat_path));
    let t0 = Instant::now();
    let (results, t_connected, t_start) = rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| tokio::spawn(agent(server.port, run_id.clone(), n, i, gate.clone())))
            .collect();
        let mut t_connected = None;
        let mut t_start = t0;
        if let Some(gate) = &gate {
            gate.wait().await;
            t_start = Instant::now();
            t_connected = Some(t_start);
        }
        let mut results = Vec::with_capacity(n as usize);
        for t in tasks {
            results.push(t.await.expect("agent task"));
        }
        (results, t_connected, t_start)
    });
    let done = results.iter().map(|r| r.2).max().expect("n > 0");
    let sample = Sample {
        total: (done - t_start).as_secs_f64(),
        connected: t_connected.map_or(f64::NAN, |t| (t - t0).as_secs_f64()),
        server_cpu: cpu_secs(&server.stat_path) - scpu0,
        process_cpu: cpu_secs("/proc/self/stat") - cpu0,
    };
    check_round(n, &results);
    sample
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "| agents | start | round complete, ms (median) | min–max ms | all connected first, ms | store server CPU ms | process CPU ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for &n in &args.agents {
        for warm in [false, true] {
            // One unmeasured round first: page in code, warm the allocator and the runtime.
            run_once(&rt, n, warm, usize::MAX);
            let samples: Vec<Sample> = (0..args.reps)
                .map(|rep| run_once(&rt, n, warm, rep))
                .collect();
            let total: Vec<f64> = samples.iter().map(|s| s.total * 1e3).collect();
            let lo = total.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = total.iter().copied().fold(0.0, f64::max);
            let connected = if warm {
                format!(
                    "{:.1}",
                    median(samples.iter().map(|s| s.connected * 1e3).collect())
                )
            } else {
                "—".into()
            };
            println!(
                "| {n} | {} | {:.1} | {lo:.1}–{hi:.1} | {connected} | {:.0} | {:.0} |",
                if warm {
                    "warm (connected, then released together)"
                } else {
                    "cold (connect + join)"
                },
                median(total),
                median(samples.iter().map(|s| s.server_cpu * 1e3).collect()),
                median(samples.iter().map(|s| s.process_cpu * 1e3).collect()),
            );
        }
    }
}
