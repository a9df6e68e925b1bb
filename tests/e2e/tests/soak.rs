//! The chaos soak (issue 14): several ElasticJobs of real PyTorch workers on the local cluster
//! while faults drawn from a seeded PRNG hit them, and invariants checked all along.
//!
//! `cargo test -p elasticjob-e2e --features e2e-tests --test soak` (`make soak DURATION=30m
//! SEED=…`). Knobs: `ELASTICJOB_SOAK_SEED` (default random; printed at the start and in every
//! failure with the command that reproduces the run), `ELASTICJOB_SOAK_DURATION` (how long
//! faults are injected: `300`, `90s`, `5m`, `2h`, `1h30m`; default 5m). The sequence of fault
//! draws (kind, target slot, pick, parameter, gap) is a pure function of the seed; which pod a
//! pick lands on depends on what the cluster looks like at that moment.
//!
//! Jobs: three slots (`a`: 1..3 pods, `b`: 2..3, `c`: 1..2), 1 CPU gloo worker per pod, each a
//! bounded number of steps with a checkpoint, so restarts resume; a slot whose job finished gets
//! the next generation (`a-1`, `a-2`, ...) while faults go on. Plus one job, `doomed`, whose
//! rank 0 always fails at step 3 with budgets of 0 worker restarts and 1 pod recreation: it must
//! end Failed with ApplicationRestartLimitExceeded.
//!
//! The workers report to a ledger, a small HTTP server in this process on the cluster bridge's
//! host address (pods reach it as they reach the apiserver): for every step, (job, pod UID,
//! pid, rank, world size, round, step, time); records a partitioned worker could not send wait
//! in the worker and go out once its network is back. The ledger also holds each job's
//! checkpoint (the last step rank 0 reported), which restarted workers resume from.
//!
//! Faults: a worker crash (SIGKILL to the pod's python worker: its launcher restarts the
//! group), a pod killed (SIGKILL to all its processes), a pod deleted, a pod's network cut and
//! healed, the operator restarted, a scale up or down within min..max, a suspend and resume, a
//! node lost and brought back (never the operator's node; at most one at a time).
//!
//! Invariants, checked continuously and at the end (see `Expect` for the counters):
//! (a) every job ends Succeeded, having trained all its steps (ledger), except `doomed`;
//! (b) its counters stay within what the faults injected into it can explain, and equal it
//!     where a fault maps to exactly one counter; they never go down;
//! (c) no rank trains twice: no two worker processes of a job report steps as the same rank in
//!     overlapping intervals;
//! (d) nothing is left: no pods once a job is deleted; at the end no process in a pod cgroup of
//!     a pod that is gone, no extra network namespace or mount on any node;
//! (e) every status read parses, restartCount = app + infra + worker restarts, a finished job
//!     stays finished, and a job that trains has its status written (resourceVersion moves);
//! (f) the operator never panics (`panicked at` in its log) and its container never restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use elasticjob_e2e::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

const NS: &str = "soak";
/// Steps of every job; 0.2 s of sleep each: a minute of training without faults.
const STEPS: i64 = 300;
const STEP_SLEEP: &str = "0.2";
/// No fault into a job this close to its end: a fault that races the job's success may never
/// be counted (the job is done before the operator sees the failed pod).
const END_MARGIN: i64 = 40;
/// A job gets its next fault only this long after its previous one, and only once it trains
/// again at full size: the operator polls the launchers' worker-restart counts at least every
/// 10 s, so a restart is counted before another fault can take its pod away.
const FAULT_SPACING: f64 = 20.0;
/// How long the jobs may take to finish after the faults stop.
const T_DRAIN: Duration = Duration::from_secs(600);
/// A job whose workers report no new step for this long (and nothing of the soak's is pending
/// on it) is stuck.
const T_STUCK: f64 = 300.0;

const SCRIPT: &str = r#"# The soak's worker: DDP (gloo, CPU) on a synthetic task for STEPS steps, resuming from
# the job's checkpoint (kept by the soak's ledger); every step reported to the ledger.
import json, os, threading, time, urllib.request

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

ledger = os.environ["SOAK_LEDGER"]
job = os.environ["SOAK_JOB"]
steps = int(os.environ.get("STEPS", "300"))
step_sleep = float(os.environ.get("STEP_SLEEP", "0.2"))
fail_at = int(os.environ.get("FAIL_AT_STEP", "-1"))
progress_file = os.environ.get("ELASTICJOB_PROGRESS_FILE")
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
base = {"job": job, "pod": os.environ.get("HOSTNAME", "?"), "uid": os.environ.get("POD_UID", "?"),
        "pid": os.getpid(), "rank": rank, "world": world,
        "round": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))}
pending, lock = [], threading.Lock()


def post(path, body):
    req = urllib.request.Request(ledger + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=2) as r:
        return json.loads(r.read())


def record(e, **kw):
    with lock:
        pending.append(dict(base, e=e, t=time.time(), **kw))


def flush():
    with lock:
        batch = list(pending)
    if batch:
        post("/ledger", batch)
        with lock:
            del pending[:len(batch)]


def sender():
    while True:
        time.sleep(0.5)
        try:
            flush()
        except Exception:
            pass  # cut off: the records wait here until the network is back


threading.Thread(target=sender, daemon=True).start()
record("start")
dist.init_process_group("gloo")
start = torch.zeros(1, dtype=torch.int64)
if rank == 0:
    while True:
        try:
            start[0] = int(post("/ckpt", {"job": job})["step"])
            break
        except Exception:
            time.sleep(1)
dist.broadcast(start, 0)
first = int(start[0])
torch.manual_seed(0)
true_w = torch.randn(16, 1)
model = DDP(torch.nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
if rank == 0:
    print(f"[soak] {job} world_size={world} round={base['round']} from step {first}", flush=True)
gen = torch.Generator().manual_seed(1000 + rank + first)
for step in range(first, steps):
    if step == fail_at and rank == 0:
        print(f"[soak] rank 0 fails at step {step} (FAIL_AT_STEP)", flush=True)
        os._exit(1)
    x = torch.randn(64, 16, generator=gen)
    y = x @ true_w + 0.01 * torch.randn(64, 1, generator=gen)
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    record("hb", step=step + 1)
    if rank == 0 and ((step + 1) % 10 == 0 or step + 1 == steps):
        record("ckpt", step=step + 1)
    if progress_file:
        with open(progress_file, "a") as f:
            f.write(json.dumps({"step": step + 1, "total": steps, "loss": mean.item() / world}) + "\n")
    if step_sleep > 0:
        time.sleep(step_sleep)
record("end", step=steps)
for _ in range(20):
    try:
        flush()
        break
    except Exception:
        time.sleep(0.5)
if rank == 0:
    print(f"[soak] {job} done after {steps} steps on {world} workers", flush=True)
dist.destroy_process_group()
"#;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---- configuration ---------------------------------------------------------------------------

/// `300`, `90s`, `5m`, `2h`, `1h30m`.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
    }
    (num.is_empty() && total > 0).then(|| Duration::from_secs(total))
}

struct Config {
    seed: u64,
    duration: Duration,
    duration_text: String,
}

impl Config {
    fn from_env() -> Config {
        let seed = match std::env::var("ELASTICJOB_SOAK_SEED") {
            Ok(s) if !s.trim().is_empty() => s
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("ELASTICJOB_SOAK_SEED={s:?}: not a u64")),
            _ => rand::random::<u64>() >> 16,
        };
        let duration_text = std::env::var("ELASTICJOB_SOAK_DURATION")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "5m".into());
        let duration = parse_duration(&duration_text).unwrap_or_else(|| {
            panic!("ELASTICJOB_SOAK_DURATION={duration_text:?}: say 300, 90s, 5m, 2h or 1h30m")
        });
        Config {
            seed,
            duration,
            duration_text,
        }
    }

    fn reproduce(&self) -> String {
        format!(
            "make soak SEED={} DURATION={}   (or: ELASTICJOB_SOAK_SEED={} ELASTICJOB_SOAK_DURATION={} cargo test -p elasticjob-e2e --features e2e-tests --test soak)",
            self.seed, self.duration_text, self.seed, self.duration_text
        )
    }
}

// ---- the ledger ------------------------------------------------------------------------------

/// One worker process: a (job, pod UID, pid).
#[derive(Debug, Clone)]
struct Incarnation {
    pod: String,
    rank: i64,
    world: i64,
    round: i64,
    /// Times of its first and last reported step (None: it never trained a step).
    first_step: Option<f64>,
    last_step: f64,
    max_step: i64,
}

#[derive(Default)]
struct Ledger {
    incarnations: BTreeMap<(String, String, i64), Incarnation>,
    /// Per job: the checkpoint (the highest step rank 0 reported).
    ckpt: BTreeMap<String, i64>,
    /// Per job: the highest step reported, and when it was first reported.
    progress: BTreeMap<String, (i64, f64)>,
    /// Per job: workers that reported the end.
    ends: BTreeMap<String, usize>,
    records: u64,
}

impl Ledger {
    fn add(&mut self, r: &Value) {
        let s = |k: &str| r[k].as_str().unwrap_or("?").to_string();
        let i = |k: &str| r[k].as_i64().unwrap_or(-1);
        let (job, t) = (s("job"), r["t"].as_f64().unwrap_or(0.0));
        self.records += 1;
        let inc = self
            .incarnations
            .entry((job.clone(), s("uid"), i("pid")))
            .or_insert_with(|| Incarnation {
                pod: s("pod"),
                rank: i("rank"),
                world: i("world"),
                round: i("round"),
                first_step: None,
                last_step: 0.0,
                max_step: 0,
            });
        match r["e"].as_str() {
            Some("hb") => {
                let step = i("step");
                inc.first_step = Some(inc.first_step.map_or(t, |f| f.min(t)));
                inc.last_step = inc.last_step.max(t);
                inc.max_step = inc.max_step.max(step);
                let p = self.progress.entry(job).or_insert((0, t));
                if step > p.0 {
                    *p = (step, now());
                }
            }
            Some("ckpt") => {
                let c = self.ckpt.entry(job).or_insert(0);
                *c = (*c).max(i("step"));
            }
            Some("end") => *self.ends.entry(job).or_insert(0) += 1,
            _ => {}
        }
    }

    /// Two worker processes of one job that trained as the same rank at the same time.
    fn overlaps(&self) -> Vec<String> {
        let mut out = Vec::new();
        let incs: Vec<(&(String, String, i64), &Incarnation)> = self
            .incarnations
            .iter()
            .filter(|(_, i)| i.first_step.is_some())
            .collect();
        for (n, (ka, a)) in incs.iter().enumerate() {
            for (kb, b) in &incs[n + 1..] {
                if ka.0 != kb.0 || a.rank != b.rank {
                    continue;
                }
                let (af, bf) = (a.first_step.unwrap(), b.first_step.unwrap());
                if af < b.last_step && bf < a.last_step {
                    out.push(format!(
                        "job {}: rank {} trained twice at once: pod {} (uid {}, pid {}, round {}, world {}) stepped from {af:.2} to {:.2}, pod {} (uid {}, pid {}, round {}, world {}) from {bf:.2} to {:.2}",
                        ka.0,
                        a.rank,
                        a.pod,
                        ka.1,
                        ka.2,
                        a.round,
                        a.world,
                        a.last_step,
                        b.pod,
                        kb.1,
                        kb.2,
                        b.round,
                        b.world,
                        b.last_step
                    ));
                }
            }
        }
        out
    }

    /// The job's workers that reported a step after `since`, as (rank, world).
    fn training_since(&self, job: &str, since: f64) -> BTreeSet<(i64, i64)> {
        self.incarnations
            .iter()
            .filter(|((j, _, _), i)| j == job && i.first_step.is_some() && i.last_step > since)
            .map(|(_, i)| (i.rank, i.world))
            .collect()
    }
}

/// Serves the ledger on `ip` (port chosen by the kernel): `POST /ledger` (a JSON array of
/// records), `POST /ckpt` (`{"job": …}` → `{"step": n}`).
fn serve_ledger(ip: Ipv4Addr, ledger: Arc<Mutex<Ledger>>) -> String {
    let listener = TcpListener::bind((ip, 0)).expect("binding the soak ledger");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                let _ = handle(conn, &ledger);
            });
        }
    });
    format!("http://{addr}")
}

fn handle(conn: TcpStream, ledger: &Mutex<Ledger>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len.min(1 << 24)];
    r.read_exact(&mut body)?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = match path.as_str() {
        "/ledger" => {
            let mut l = ledger.lock().unwrap();
            for rec in v.as_array().into_iter().flatten() {
                l.add(rec);
            }
            json!({"ok": true})
        }
        "/ckpt" => {
            let job = v["job"].as_str().unwrap_or("");
            json!({"step": ledger.lock().unwrap().ckpt.get(job).copied().unwrap_or(0)})
        }
        _ => json!({"error": "unknown path"}),
    }
    .to_string();
    let mut w = conn;
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    w.flush()
}

// ---- expected counters -----------------------------------------------------------------------

const APP: usize = 0;
const INFRA: usize = 1;
const DISRUPTIONS: usize = 2;
const WORKER: usize = 3;
/// infrastructureRestarts + disruptions: a pod on a lost node is one or the other (evicted by
/// the taint manager while at least minReplicas others run: a disruption; else charged).
const INFRA_OR_DISRUPTION: usize = 4;
const COUNTER_NAMES: [&str; 5] = [
    "applicationRestarts",
    "infrastructureRestarts",
    "disruptions",
    "workerRestarts",
    "infrastructureRestarts+disruptions",
];

fn counter_values(st: &Value) -> [i64; 5] {
    let c = |k: &str| int(&st[k]);
    [
        c("applicationRestarts"),
        c("infrastructureRestarts"),
        c("disruptions"),
        c("workerRestarts"),
        c("infrastructureRestarts") + c("disruptions"),
    ]
}

/// What the faults injected into a job can explain, per counter: [lo, hi].
#[derive(Debug, Clone, Default)]
struct Expect {
    lo: [i64; 5],
    hi: [i64; 5],
}

impl Expect {
    fn add(&mut self, counter: usize, lo: i64, hi: i64) {
        self.lo[counter] += lo;
        self.hi[counter] += hi;
    }
    fn describe(&self, v: &[i64; 5]) -> String {
        (0..5)
            .map(|i| {
                let want = if self.lo[i] == self.hi[i] {
                    format!("{}", self.lo[i])
                } else {
                    format!("{}..{}", self.lo[i], self.hi[i])
                };
                format!("{}={} (expected {want})", COUNTER_NAMES[i], v[i])
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---- jobs ------------------------------------------------------------------------------------

struct Slot {
    name: &'static str,
    min: i64,
    max: i64,
    replicas: i64,
}

const SLOTS: [Slot; 3] = [
    Slot {
        name: "a",
        min: 1,
        max: 3,
        replicas: 2,
    },
    Slot {
        name: "b",
        min: 2,
        max: 3,
        replicas: 2,
    },
    Slot {
        name: "c",
        min: 1,
        max: 2,
        replicas: 1,
    },
];

struct Job {
    name: String,
    /// None: the doomed job.
    slot: Option<usize>,
    min: i64,
    max: i64,
    /// spec.replicas as the soak last set it.
    replicas: i64,
    expect: Expect,
    created: f64,
    last_fault: f64,
    /// Suspended, partitioned or on a lost node: not a target until undone.
    busy: Option<String>,
    faults: Vec<String>,
    // What the checker saw.
    last: [i64; 5],
    rv: String,
    rv_since: f64,
    step_at_rv: i64,
    state: String,
    /// Set once its end was checked; the job is then deleted.
    done: bool,
    /// A racing fault hit it: a worker restart of an earlier fault may be lost (its pod gone
    /// before the operator polled its launcher), so only the upper bound of workerRestarts
    /// holds.
    raced: bool,
}

impl Job {
    fn doomed(&self) -> bool {
        self.slot.is_none()
    }
}

fn job_doc_for(name: &str, ledger: &str, min: i64, max: i64, replicas: i64, doomed: bool) -> Value {
    let mut job = job_doc(
        name,
        &json!({"minReplicas": min, "maxReplicas": max, "replicas": replicas, "nprocPerNode": 1,
            "maxRestarts": if doomed { 0 } else { 100 },
            "rendezvous": {"lastCallTimeoutSeconds": 3},
            "failurePolicy": {"maxApplicationRestarts": if doomed { 1 } else { 50 },
                "maxInfrastructureRestarts": 100, "backoff": {"initialSeconds": 1},
                "nodeLostTimeoutSeconds": 5, "podTerminationTimeoutSeconds": 5},
            "runPolicy": {"ttlSecondsAfterFinished": null},
            "template": {"spec": {"terminationGracePeriodSeconds": 5}}}),
        &[
            ("STEPS", &STEPS.to_string()),
            ("STEP_SLEEP", STEP_SLEEP),
            ("SOAK_LEDGER", ledger),
            ("SOAK_JOB", name),
            ("FAIL_AT_STEP", if doomed { "3" } else { "-1" }),
        ],
    );
    set_gpus(&mut job, None);
    let spec = job.pointer_mut("/spec/template/spec").unwrap();
    let c = &mut spec["containers"][0];
    c["command"] = json!(["python", "/workspace/soak.py"]);
    c["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}));
    spec["volumes"] = json!([{"name": "script", "configMap": {"name": "soak-script"}}]);
    job
}

// ---- faults ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    WorkerCrash,
    PodKill,
    PodDelete,
    Partition,
    OperatorRestart,
    Scale,
    Suspend,
    NodeLoss,
}

const KINDS: [(Kind, u32); 8] = [
    (Kind::WorkerCrash, 4),
    (Kind::PodKill, 2),
    (Kind::PodDelete, 2),
    (Kind::Partition, 2),
    (Kind::OperatorRestart, 1),
    (Kind::Scale, 3),
    (Kind::Suspend, 1),
    (Kind::NodeLoss, 1),
];

/// One draw of the plan: always the same five numbers, so the plan depends on the seed alone.
#[derive(Debug, Clone, Copy)]
struct Draw {
    kind: Kind,
    slot: u32,
    pick: u32,
    param: u32,
    gap: Duration,
    /// One draw in five races: it goes to a job that need not be settled (recovering from its
    /// previous fault, restarting, pods starting), and only bounds of its counters are checked.
    race: bool,
}

fn draw(rng: &mut StdRng) -> Draw {
    let total: u32 = KINDS.iter().map(|k| k.1).sum();
    let mut x = rng.random_range(0..total);
    let kind = KINDS
        .iter()
        .find(|(_, w)| {
            if x < *w {
                true
            } else {
                x -= w;
                false
            }
        })
        .unwrap()
        .0;
    Draw {
        kind,
        slot: rng.random_range(0..3),
        pick: rng.random(),
        param: rng.random(),
        gap: Duration::from_millis(rng.random_range(3000..9000)),
        race: rng.random_range(0..5) == 0,
    }
}

/// What became of a draw.
enum Outcome {
    /// Injected (or skipped: no target), nothing to undo.
    Done,
    /// Injected; undo after the duration.
    Undo(Duration, Undo),
    /// Not now: draw it again in a second (a node loss waits for the jobs to be quiet).
    Retry,
}

enum Undo {
    Heal { job: String, pod: String },
    Resume { job: String },
    RestoreNode { node: String },
}

struct FaultLog {
    start: Instant,
    lines: Vec<String>,
    counts: BTreeMap<String, usize>,
}

impl FaultLog {
    fn log(&mut self, what: &str, text: String) {
        let line = format!(
            "{:7.1}s {what:<16} {text}",
            self.start.elapsed().as_secs_f64()
        );
        eprintln!("soak: {line}");
        self.lines.push(line);
        *self.counts.entry(what.to_string()).or_insert(0) += 1;
    }
}

// ---- the host: processes, network namespaces, mounts of the nodes' pods ----------------------

struct Proc {
    pid: i32,
    cgroup: String,
    cmdline: String,
}

fn procs() -> Vec<Proc> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            Some(Proc {
                pid,
                cgroup,
                cmdline,
            })
        })
        .collect()
}

/// A soak worker (`python -u /workspace/soak.py`), not its launcher (whose command line holds
/// the script too) nor the launcher's guardian.
fn is_worker(cmdline: &str) -> bool {
    let mut words = cmdline.split_whitespace();
    let exe = words.next().unwrap_or("");
    exe.rsplit('/').next().unwrap_or("").starts_with("python")
        && cmdline.contains("/workspace/soak.py")
}

/// The pod UID in a process's cgroup paths (`…/pod<uid>/…`), if it runs in a pod of this
/// cluster (`/elasticjob/<cluster id>/`).
fn pod_uid_of(p: &Proc, cluster: &str) -> Option<String> {
    let marker = format!("/elasticjob/{cluster}/");
    let line = p.cgroup.lines().find(|l| l.contains(&marker))?;
    line.split('/')
        .find_map(|seg| seg.strip_prefix("pod").filter(|u| u.len() >= 32))
        .map(|u| u.replace('_', "-"))
}

/// What one node holds for its pods, read from its mount namespace (a kubelet's or
/// containerd's `/proc/<pid>/mountinfo`).
#[derive(Debug, Default, Clone, PartialEq)]
struct NodeHoldings {
    /// Pods' network namespaces (CNI's, bound under /run/netns/cni-*).
    netns: usize,
    /// Container and sandbox root filesystems.
    rootfs: usize,
    /// Pod UIDs with a mount under /var/lib/kubelet/pods/.
    pod_mounts: BTreeSet<String>,
}

fn node_holdings(cluster: &str, node: &str, all: &[Proc]) -> Option<NodeHoldings> {
    let marker = format!("/elasticjob/{cluster}/{node}/system");
    let daemon = all.iter().find(|p| {
        p.cgroup.contains(&marker)
            && (p.cmdline.contains("/kubelet") || p.cmdline.contains("containerd "))
            && !p.cmdline.contains("shim")
    })?;
    let mi = std::fs::read_to_string(format!("/proc/{}/mountinfo", daemon.pid)).ok()?;
    let mut h = NodeHoldings::default();
    for l in mi.lines() {
        let Some(mp) = l.split(' ').nth(4) else {
            continue;
        };
        if mp.starts_with("/run/netns/cni-") {
            h.netns += 1;
        } else if mp.contains("io.containerd.runtime.v2.task/") && mp.ends_with("/rootfs") {
            h.rootfs += 1;
        } else if let Some(rest) = mp.strip_prefix("/var/lib/kubelet/pods/")
            && let Some(uid) = rest.split('/').next()
        {
            h.pod_mounts.insert(uid.to_string());
        }
    }
    Some(h)
}

// ---- the soak --------------------------------------------------------------------------------

struct Soak<'a> {
    env: &'a Env,
    cluster: String,
    nodes: Vec<String>,
    ledger: Arc<Mutex<Ledger>>,
    ledger_url: String,
    jobs: Mutex<BTreeMap<String, Job>>,
    violations: Mutex<Vec<String>>,
    log: Mutex<FaultLog>,
    operator_restarted: Mutex<f64>,
    generations: Mutex<[u32; 3]>,
    stop: AtomicBool,
    /// Worker restarts of settled jobs beyond their worker crashes (see `end_of`).
    peer_charged: Mutex<i64>,
    /// Deleted jobs whose pods are not all gone yet, and since when their pods may be gone.
    deleted: Mutex<Vec<(String, Instant)>>,
}

impl Soak<'_> {
    fn violate(&self, v: String) {
        let mut vs = self.violations.lock().unwrap();
        if !vs.contains(&v) {
            eprintln!("soak: VIOLATION: {v}");
            vs.push(v);
        }
    }

    fn fault(&self, what: &str, text: String) {
        self.log.lock().unwrap().log(what, text);
    }

    fn start_job(&self, slot: Option<usize>) {
        let (name, min, max, replicas) = match slot {
            Some(s) => {
                let mut g = self.generations.lock().unwrap();
                let sl = &SLOTS[s];
                let name = format!("{}-{}", sl.name, g[s]);
                g[s] += 1;
                (name, sl.min, sl.max, sl.replicas)
            }
            None => ("doomed".to_string(), 1, 1, 1),
        };
        let doc = job_doc_for(&name, &self.ledger_url, min, max, replicas, slot.is_none());
        apply_all(self.env, NS, &[doc]);
        let mut expect = Expect::default();
        if slot.is_none() {
            // Fails at step 3 in its first pod and in the one pod recreation its budget allows.
            expect.add(APP, 1, 1);
        }
        let t = now();
        self.jobs.lock().unwrap().insert(
            name.clone(),
            Job {
                name: name.clone(),
                slot,
                min,
                max,
                replicas,
                expect,
                created: t,
                last_fault: t,
                busy: None,
                faults: Vec::new(),
                last: [0; 5],
                rv: String::new(),
                rv_since: t,
                step_at_rv: 0,
                state: String::new(),
                done: false,
                raced: false,
            },
        );
        self.fault(
            "job created",
            format!("{name}: {replicas} pods of {min}..{max}"),
        );
    }

    /// One round of the checker: every job's status, the ledger, the operator.
    fn check(&self) {
        let Some(list) = self.env.kubectl.json(&["get", "elasticjobs", "-n", NS]) else {
            return;
        };
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let restarted = *self.operator_restarted.lock().unwrap();
        let progress = self.ledger.lock().unwrap().progress.clone();
        let mut jobs = self.jobs.lock().unwrap();
        for item in &items {
            let name = item["metadata"]["name"].as_str().unwrap_or("?");
            let Some(job) = jobs.get_mut(name) else {
                continue;
            };
            let st = &item["status"];
            let t = now();
            // (e) the status parses.
            if st.is_null() {
                if t - job.created > 60.0 {
                    self.violate(format!("{name}: no status 60 s after creation"));
                }
                continue;
            }
            let state = st["state"].as_str().unwrap_or("");
            if !matches!(
                state,
                "Created" | "Running" | "Restarting" | "Suspended" | "Succeeded" | "Failed"
            ) {
                self.violate(format!(
                    "{name}: status.state {state:?} is no state: {st:#}"
                ));
            }
            for k in [
                "applicationRestarts",
                "infrastructureRestarts",
                "disruptions",
                "workerRestarts",
                "restartCount",
            ] {
                if !st[k].is_null() && st[k].as_i64().is_none_or(|v| v < 0) {
                    self.violate(format!("{name}: status.{k} is {}: {st:#}", st[k]));
                }
            }
            let v = counter_values(st);
            if int(&st["restartCount"]) != v[APP] + v[INFRA] + v[WORKER] {
                self.violate(format!(
                    "{name}: restartCount {} != applicationRestarts + infrastructureRestarts + workerRestarts ({} + {} + {})",
                    int(&st["restartCount"]),
                    v[APP],
                    v[INFRA],
                    v[WORKER]
                ));
            }
            // A finished job stays finished (a lost status update would erase it).
            if matches!(job.state.as_str(), "Succeeded" | "Failed") && state != job.state {
                self.violate(format!(
                    "{name}: was {} and is {state} now: a status update was lost: {st:#}",
                    job.state
                ));
            }
            // (b) counters never go down, and never exceed what the faults can explain.
            for i in 0..5 {
                if v[i] < job.last[i] {
                    self.violate(format!(
                        "{name}: {} went down from {} to {}: a status update was lost",
                        COUNTER_NAMES[i], job.last[i], v[i]
                    ));
                }
                if v[i] > job.expect.hi[i] {
                    self.violate(format!(
                        "{name}: counted more than the faults injected into it explain: {}; its faults: {:?}",
                        job.expect.describe(&v),
                        job.faults
                    ));
                }
            }
            job.last = v;
            if !state.is_empty() {
                job.state = state.to_string();
            }
            // (e) a job that trains gets its status written: its progress changes.
            let rv = item["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let (step, stepped) = progress.get(name).copied().unwrap_or((0, job.created));
            // (a) a job that stops training for minutes is stuck (the drain would only notice
            // after the faults).
            if !matches!(state, "Succeeded" | "Failed" | "Suspended")
                && job.busy.is_none()
                && t - stepped.max(job.created).max(job.last_fault) > T_STUCK
            {
                self.violate(format!(
                    "{name}: stuck: no new step for {:.0} s (last step {step}, state {state}); its faults: {:?}",
                    t - stepped.max(job.created),
                    job.faults
                ));
            }
            if rv != job.rv {
                job.rv = rv;
                job.rv_since = t;
                job.step_at_rv = step;
            } else if state == "Running"
                && t - job.rv_since > 60.0
                && t - restarted > 60.0
                && step - job.step_at_rv >= 30
            {
                self.violate(format!(
                    "{name}: status not written for {:.0} s while its workers trained {} steps (resourceVersion {})",
                    t - job.rv_since,
                    step - job.step_at_rv,
                    job.rv
                ));
            }
        }
        drop(jobs);
        // (c) no rank twice.
        for o in self.ledger.lock().unwrap().overlaps() {
            self.violate(o);
        }
        // (f) the operator's container never restarts (the soak replaces its pod instead).
        for p in self.env.operator_pods() {
            for c in p["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let n = int(&c["restartCount"]);
                if n > 0 {
                    let log = self.env.kubectl.run(
                        &[
                            "logs",
                            "-n",
                            OPERATOR_NAMESPACE,
                            p["metadata"]["name"].as_str().unwrap_or(""),
                            "--previous",
                            "--tail=60",
                        ],
                        None,
                    );
                    self.violate(format!(
                        "operator pod {} restarted its container {n} time(s) (the soak never does that); its previous log:\n{}",
                        p["metadata"]["name"],
                        stdout(&log)
                    ));
                }
            }
        }
    }

    fn operator_panics(&self) {
        let log = self.env.operator_log(200_000);
        if let Some(l) = log.lines().find(|l| l.contains("panicked at")) {
            self.violate(format!("the operator panicked: {l}"));
        }
    }

    /// Pods of the job that run and are not being deleted; all its pods.
    fn pods(&self, job: &str) -> (Vec<Value>, Vec<Value>) {
        let all = self.env.pods(NS, job);
        let running = all
            .iter()
            .filter(|p| phase(p) == "Running" && !is_deleting(p))
            .cloned()
            .collect();
        (running, all)
    }

    /// Whether the job trains at full size, long enough after its last fault, not near its end.
    fn settled(&self, name: &str) -> bool {
        let (replicas, since, busy, state) = {
            let jobs = self.jobs.lock().unwrap();
            let Some(j) = jobs.get(name) else {
                return false;
            };
            if j.doomed() || j.done {
                return false;
            }
            (j.replicas, j.last_fault, j.busy.is_some(), j.state.clone())
        };
        if busy || state != "Running" || now() - since < FAULT_SPACING {
            return false;
        }
        let (running, all) = self.pods(name);
        if running.len() as i64 != replicas || all.len() as i64 != replicas {
            return false;
        }
        let l = self.ledger.lock().unwrap();
        if l.progress.get(name).map(|p| p.0).unwrap_or(0) > STEPS - END_MARGIN {
            return false;
        }
        let recent = l.training_since(name, now() - 3.0);
        (0..replicas).all(|r| recent.contains(&(r, replicas)))
    }

    /// Whether a racing fault may hit the job: it runs (or restarts), nothing of the soak's is
    /// pending on it, it is not near its end, and it has pods.
    fn raceable(&self, name: &str) -> bool {
        {
            let jobs = self.jobs.lock().unwrap();
            let Some(j) = jobs.get(name) else {
                return false;
            };
            if j.doomed()
                || j.done
                || j.busy.is_some()
                || !matches!(j.state.as_str(), "Running" | "Restarting")
            {
                return false;
            }
        }
        let near_end = self
            .ledger
            .lock()
            .unwrap()
            .progress
            .get(name)
            .is_some_and(|p| p.0 > STEPS - END_MARGIN);
        !near_end && !self.pods(name).1.is_empty()
    }

    /// The next job to hit, from slot `slot` on: settled (or, for a racing draw, raceable)
    /// jobs in name order, rotated.
    fn target(&self, slot: u32, race: bool) -> Option<String> {
        let names: Vec<String> = self
            .jobs
            .lock()
            .unwrap()
            .values()
            .filter(|j| !j.doomed() && !j.done)
            .map(|j| j.name.clone())
            .collect();
        if names.is_empty() {
            return None;
        }
        (0..names.len())
            .map(|i| &names[(slot as usize + i) % names.len()])
            .find(|n| {
                if race {
                    self.raceable(n)
                } else {
                    self.settled(n)
                }
            })
            .cloned()
    }

    /// Adds what a fault may count to the job's expectations. A racing fault (`race`: pods of
    /// the job may be starting, failing or going) is a bound only: each counter from 0, worker
    /// restarts up to one per pod (`n`).
    fn charge(&self, job: &str, what: &str, add: &[(usize, i64, i64)], race: Option<i64>) {
        let mut jobs = self.jobs.lock().unwrap();
        if let Some(j) = jobs.get_mut(job) {
            for (c, lo, hi) in add {
                match race {
                    Some(n) if *c == WORKER => j.expect.add(*c, 0, (*hi).max(n)),
                    Some(_) => j.expect.add(*c, 0, *hi),
                    None => j.expect.add(*c, *lo, *hi),
                }
            }
            if race.is_some() {
                j.raced = true;
            }
            j.last_fault = now();
            j.faults.push(what.to_string());
        }
    }

    /// Injects one drawn fault (or says why not); returns the undo to schedule, if any.
    fn inject(&self, d: &Draw) -> Outcome {
        let kind = format!("{:?}{}", d.kind, if d.race { " (race)" } else { "" });
        match d.kind {
            Kind::OperatorRestart => {
                self.operator_panics();
                self.fault(&kind, "deleting the operator's pods".into());
                *self.operator_restarted.lock().unwrap() = now();
                self.env.restart_operator(Duration::from_secs(1));
                *self.operator_restarted.lock().unwrap() = now();
                self.fault("operator back", self.env.operator_pod().unwrap_or_default());
                return Outcome::Done;
            }
            Kind::NodeLoss => return self.lose_node(d),
            _ => {}
        }
        let Some(job) = self.target(d.slot, d.race) else {
            self.fault("skipped", format!("{kind}: no job trains at full size now"));
            return Outcome::Done;
        };
        let (running, all) = self.pods(&job);
        // Pods that exist (a racing deletion may hit a pod that is still starting), else
        // running ones.
        let candidates: Vec<Value> = if d.race && d.kind == Kind::PodDelete {
            all.iter().filter(|p| !is_deleting(p)).cloned().collect()
        } else {
            running.clone()
        };
        if candidates.is_empty() {
            self.fault("skipped", format!("{kind}: {job} has no pod to hit now"));
            return Outcome::Done;
        }
        let n = all.len().max(running.len()) as i64;
        let race = d.race.then_some(n);
        let pod = candidates[d.pick as usize % candidates.len()].clone();
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
        match d.kind {
            Kind::WorkerCrash => {
                let workers: Vec<i32> = procs()
                    .iter()
                    .filter(|p| {
                        pod_uid_of(p, &self.cluster).as_deref() == Some(uid.as_str())
                            && is_worker(&p.cmdline)
                    })
                    .map(|p| p.pid)
                    .collect();
                if workers.is_empty() {
                    self.fault(
                        "skipped",
                        format!("{kind}: no worker process in {pod_name}"),
                    );
                    return Outcome::Done;
                }
                for pid in &workers {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                // The launcher of that pod restarts its worker group: one worker restart. The
                // peers, whose collectives broke with it, re-form without spending theirs.
                self.charge(&job, &format!("{kind} {pod_name}"), &[(WORKER, 1, 1)], race);
                self.fault(
                    &kind,
                    format!("{job}/{pod_name}: SIGKILL to worker {workers:?}"),
                );
            }
            Kind::PodKill | Kind::PodDelete => {
                if d.kind == Kind::PodKill {
                    if let Err(e) = self.env.faults.kill_pod(NS, &pod_name, Signal::SIGKILL) {
                        self.fault("skipped", format!("{kind} {pod_name}: {e}"));
                        return Outcome::Done;
                    }
                } else {
                    self.env
                        .kubectl
                        .ok(&["delete", "pod", &pod_name, "-n", NS, "--wait=false"]);
                }
                // One pod failure, Infrastructure (killed from outside, or deleted by someone
                // else than the operator): exactly one infrastructure restart. The peers'
                // collectives break with it: each of the n - 1 others may or may not have been
                // the first of the round to see its workers fail (then its launcher spends a
                // restart), whence a bound on worker restarts.
                self.charge(
                    &job,
                    &format!("{kind} {pod_name}"),
                    &[
                        (INFRA, 1, 1),
                        (INFRA_OR_DISRUPTION, 1, 1),
                        (WORKER, 0, n - 1),
                    ],
                    race,
                );
                self.fault(&kind, format!("{job}/{pod_name} ({uid})"));
            }
            Kind::Partition => {
                if let Err(e) = self.env.faults.set_pod_network(NS, &pod_name, false) {
                    self.fault("skipped", format!("{kind} {pod_name}: {e}"));
                    return Outcome::Done;
                }
                let secs = 6 + d.param % 15;
                // Healed within 20 s, the pod keeps running: its launcher fences its workers,
                // the others re-form without it (or wait, below minReplicas) and it comes back
                // as a scale-up: no pod fails, nothing is charged to a pod budget (e2e s12,
                // s17). Worker restarts are a bound: a launcher whose workers' collective broke
                // first in the round may spend one (any of the n).
                // Racing (the pod may be starting, its round re-forming), its launcher may also
                // give up while cut off: the pod fails, one infrastructure restart at most.
                let may_fail = if d.race { 1 } else { 0 };
                self.charge(
                    &job,
                    &format!("{kind} {pod_name} {secs}s"),
                    &[
                        (WORKER, 0, n),
                        (INFRA, 0, may_fail),
                        (INFRA_OR_DISRUPTION, 0, may_fail),
                    ],
                    race,
                );
                self.jobs.lock().unwrap().get_mut(&job).unwrap().busy =
                    Some(format!("partitioned {pod_name}"));
                self.fault(&kind, format!("{job}/{pod_name} cut off for {secs}s"));
                return Outcome::Undo(
                    Duration::from_secs(secs as u64),
                    Undo::Heal { job, pod: pod_name },
                );
            }
            Kind::Scale => {
                let (min, max, cur) = {
                    let jobs = self.jobs.lock().unwrap();
                    let j = &jobs[&job];
                    (j.min, j.max, j.replicas)
                };
                if min == max {
                    self.fault("skipped", format!("{kind}: {job} has min = max"));
                    return Outcome::Done;
                }
                let mut to = min + (d.param as i64) % (max - min + 1);
                if to == cur {
                    to = if to < max { to + 1 } else { min };
                }
                self.env.kubectl.ok(&[
                    "scale",
                    &format!("ej/{job}"),
                    &format!("--replicas={to}"),
                    "-n",
                    NS,
                ]);
                // Scaling is no failure: the pods that leave say so and claim the round, the
                // others re-form without spending a restart (e2e s06).
                self.charge(&job, &format!("{kind} {cur}->{to}"), &[], race);
                self.jobs.lock().unwrap().get_mut(&job).unwrap().replicas = to;
                self.fault(&kind, format!("{job}: {cur} -> {to} pods"));
            }
            Kind::Suspend => {
                patch_job(
                    self.env,
                    NS,
                    &job,
                    &json!({"spec": {"runPolicy": {"suspend": true}}}),
                );
                let secs = 5 + d.param % 15;
                // Suspension is no failure (e2e s07).
                self.charge(&job, &format!("{kind} {secs}s"), &[], race);
                self.jobs.lock().unwrap().get_mut(&job).unwrap().busy = Some("suspended".into());
                self.fault(&kind, format!("{job} for {secs}s"));
                return Outcome::Undo(Duration::from_secs(secs as u64), Undo::Resume { job });
            }
            Kind::OperatorRestart | Kind::NodeLoss => unreachable!(),
        }
        Outcome::Done
    }

    fn lose_node(&self, d: &Draw) -> Outcome {
        let busy = self
            .jobs
            .lock()
            .unwrap()
            .values()
            .any(|j| j.busy.as_deref().is_some_and(|b| b.starts_with("node")));
        if busy {
            self.fault("skipped", "NodeLoss: a node is lost already".into());
            return Outcome::Done;
        }
        // As for a fault into one job: the launchers' restart counts of the last fault must
        // have been polled before a node takes pods away.
        let recent = self
            .jobs
            .lock()
            .unwrap()
            .values()
            .any(|j| !j.done && now() - j.last_fault < FAULT_SPACING);
        if recent {
            // Retried every second (no other fault meanwhile) until the jobs are quiet.
            return Outcome::Retry;
        }
        // Never the operator's node: its pod would wait out Kubernetes' default tolerations
        // (300 s) before it is replaced.
        let operator_node = self.env.operator_node().unwrap_or_default();
        let candidates: Vec<&String> = self.nodes.iter().filter(|n| **n != operator_node).collect();
        let node = candidates[d.pick as usize % candidates.len()].clone();
        // No pod lands there from now on: the node lifecycle controller's taint would come only
        // once the node is seen NotReady, and a replacement placed there meanwhile would be
        // lost too, a second count that no fault of that job explains.
        self.env.kubectl.ok(&["cordon", &node]);
        // What each job has there, before the loss.
        let names: Vec<String> = self.jobs.lock().unwrap().keys().cloned().collect();
        let mut hit = Vec::new();
        for name in &names {
            let settled = self.settled(name);
            let (_, all) = self.pods(name);
            let on: Vec<&Value> = all
                .iter()
                .filter(|p| p["spec"]["nodeName"] == node.as_str())
                .collect();
            if on.is_empty() {
                continue;
            }
            let k = on.len() as i64;
            let n = all.len() as i64;
            // Each of its k pods there fails as NodeLost: evicted while minReplicas others run
            // (a disruption) or charged (an infrastructure restart). Exactly k in all when the
            // job was settled (every pod running); a pod that was still starting may be gone
            // before it counts, whence the bound otherwise. Any launcher may spend a worker
            // restart on the broken collectives.
            let lo = if settled { k } else { 0 };
            self.charge(
                name,
                &format!("NodeLoss {node} ({k} pods)"),
                &[
                    (INFRA, 0, k),
                    (DISRUPTIONS, 0, k),
                    (INFRA_OR_DISRUPTION, lo, k),
                    (WORKER, 0, n),
                ],
                None,
            );
            hit.push(format!("{name}: {k}"));
        }
        if let Err(e) = self.env.faults.lose_node(&node) {
            self.violate(format!("losing node {node}: {e}"));
            return Outcome::Done;
        }
        let secs = 40 + d.param % 20;
        for name in &names {
            if let Some(j) = self.jobs.lock().unwrap().get_mut(name)
                && hit.iter().any(|h| h.starts_with(&format!("{name}:")))
                && j.busy.is_none()
            {
                j.busy = Some(format!("node {node} lost"));
            }
        }
        self.fault(
            "NodeLoss",
            format!("{node} for {secs}s (operator on {operator_node}); pods there: {hit:?}"),
        );
        Outcome::Undo(Duration::from_secs(secs as u64), Undo::RestoreNode { node })
    }

    fn undo(&self, u: Undo) {
        match u {
            Undo::Heal { job, pod } => {
                match self.env.faults.set_pod_network(NS, &pod, true) {
                    Ok(()) => self.fault("healed", format!("{job}/{pod}")),
                    // The pod is gone (its job finished, or it was replaced): nothing to heal.
                    Err(e) => self.fault("healed", format!("{job}/{pod}: {e}")),
                }
                self.unbusy(&job);
            }
            Undo::Resume { job } => {
                patch_job(
                    self.env,
                    NS,
                    &job,
                    &json!({"spec": {"runPolicy": {"suspend": false}}}),
                );
                self.fault("resumed", job.clone());
                self.unbusy(&job);
            }
            Undo::RestoreNode { node } => {
                if let Err(e) = self.env.faults.restore_node(&node) {
                    self.violate(format!("restoring node {node}: {e}"));
                }
                self.env.kubectl.ok(&["uncordon", &node]);
                wait_until(
                    &format!("node {node} Ready again"),
                    Duration::from_secs(120),
                    Duration::from_secs(1),
                    || self.node_ready(&node).then_some(()),
                    || format!("{:?}", self.env.kubectl.json(&["get", "node", &node])),
                );
                self.fault("node restored", node.clone());
                let mut jobs = self.jobs.lock().unwrap();
                for j in jobs.values_mut() {
                    if j.busy.as_deref().is_some_and(|b| b.starts_with("node")) {
                        j.busy = None;
                        j.last_fault = now();
                    }
                }
            }
        }
    }

    fn unbusy(&self, job: &str) {
        if let Some(j) = self.jobs.lock().unwrap().get_mut(job) {
            j.busy = None;
            j.last_fault = now();
        }
    }

    /// Checks the end of every finished job, deletes it and, while faults go on, starts the
    /// slot's next generation. Returns the jobs not yet done.
    fn lifecycle(&self, respawn: bool) -> usize {
        let finished: Vec<(String, String)> = self
            .jobs
            .lock()
            .unwrap()
            .values()
            .filter(|j| !j.done && matches!(j.state.as_str(), "Succeeded" | "Failed"))
            .map(|j| (j.name.clone(), j.state.clone()))
            .collect();
        for (name, state) in finished {
            let st = self.env.status(NS, &name);
            self.end_of(&name, &state, &st);
            let slot = {
                let mut jobs = self.jobs.lock().unwrap();
                let j = jobs.get_mut(&name).unwrap();
                j.done = true;
                j.slot
            };
            self.env.kubectl.ok(&[
                "delete",
                "elasticjob",
                &name,
                "-n",
                NS,
                "--wait=true",
                "--timeout=60s",
            ]);
            self.deleted.lock().unwrap().push((name, Instant::now()));
            if respawn && let Some(s) = slot {
                self.start_job(Some(s));
            }
        }
        self.check_deleted();
        let open = self
            .jobs
            .lock()
            .unwrap()
            .values()
            .filter(|j| !j.done)
            .count();
        open + self.deleted.lock().unwrap().len()
    }

    /// (d) for deleted jobs: their pods are gone within 90 s. Not counted while a pod sits on
    /// a lost node: it stays Terminating until its kubelet is back (Kubernetes' behaviour for
    /// every owner; garbage collection deletes gracefully), so the 90 s count from the node's
    /// return. Checked from the fault loop, which must not wait: it restores lost nodes.
    fn check_deleted(&self) {
        let pending = std::mem::take(&mut *self.deleted.lock().unwrap());
        let mut keep = Vec::new();
        for (name, since) in pending {
            let left = self.env.pods(NS, &name);
            if left.is_empty() {
                continue;
            }
            let on_lost_node = left.iter().any(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !self.node_ready(n))
            });
            if on_lost_node {
                keep.push((name, Instant::now()));
            } else if since.elapsed() > Duration::from_secs(90) {
                self.violate(format!(
                    "{name}: pods left 90 s after the job was deleted:\n{}",
                    pod_summary(&left)
                ));
            } else {
                keep.push((name, since));
            }
        }
        self.deleted.lock().unwrap().extend(keep);
    }

    fn node_ready(&self, node: &str) -> bool {
        self.env
            .kubectl
            .json(&["get", "node", node])
            .and_then(|n| {
                n["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")
                    .map(|c| c["status"] == "True")
            })
            .unwrap_or(false)
    }

    /// (a) and (b) at a job's end.
    fn end_of(&self, name: &str, state: &str, st: &Value) {
        let jobs = self.jobs.lock().unwrap();
        let j = &jobs[name];
        let v = counter_values(st);
        let (_, reason, message) = condition_srm(st, state).unwrap_or_default();
        let l = self.ledger.lock().unwrap();
        let step = l.progress.get(name).map(|p| p.0).unwrap_or(0);
        let ckpt = l.ckpt.get(name).copied().unwrap_or(0);
        drop(l);
        if j.doomed() {
            if state != "Failed" || reason != "ApplicationRestartLimitExceeded" {
                self.violate(format!(
                    "{name}: expected Failed/ApplicationRestartLimitExceeded (its budget), got {state}/{reason}: {message}"
                ));
            }
        } else if state != "Succeeded" {
            self.violate(format!(
                "{name}: ended {state} ({reason}: {message}); its faults: {:?}; {}",
                j.faults,
                j.expect.describe(&v)
            ));
        } else if ckpt != STEPS {
            self.violate(format!(
                "{name}: Succeeded, but its workers reported step {step} and checkpoint {ckpt} of {STEPS}"
            ));
        }
        let lo = |i: usize| {
            if i == WORKER && j.raced {
                0
            } else {
                j.expect.lo[i]
            }
        };
        let within = (0..5).all(|i| (lo(i)..=j.expect.hi[i]).contains(&v[i]));
        if !within {
            self.violate(format!(
                "{name}: its counters do not match the faults injected into it: {}; its faults: {:?}",
                j.expect.describe(&v),
                j.faults
            ));
        }
        // Worker restarts beyond the worker crashes: charged to a survivor's launcher when a
        // peer pod was killed or lost (its launcher cannot claim the round; see the report in
        // tests/e2e/README.md, "Soak"). Within the bounds, but counted for the summary.
        let extra = if j.raced {
            0
        } else {
            (v[WORKER] - j.expect.lo[WORKER]).max(0)
        };
        if extra > 0 {
            *self.peer_charged.lock().unwrap() += extra;
        }
        self.fault(
            "job ended",
            format!(
                "{name}: {state} ({reason}); {}{}",
                j.expect.describe(&v),
                if extra > 0 {
                    format!("; {extra} worker restart(s) beyond its worker crashes")
                } else {
                    String::new()
                }
            ),
        );
    }

    /// What every node holds for pods, with the live pods' UIDs.
    fn holdings(&self) -> (BTreeMap<String, NodeHoldings>, BTreeSet<String>, Vec<Value>) {
        let all = procs();
        let pods = self
            .env
            .kubectl
            .json(&["get", "pods", "-A"])
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default();
        let uids: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        let h = self
            .nodes
            .iter()
            .filter_map(|n| Some((n.clone(), node_holdings(&self.cluster, n, &all)?)))
            .collect();
        (h, uids, pods)
    }

    /// (d) at the end: no process of a pod that is gone, no pod mount of a pod that is gone,
    /// and as many network namespaces and root filesystems as at the start, net of the pods
    /// that exist (the operator's moved around).
    fn leaks(&self, baseline: &(usize, usize, usize)) -> Vec<String> {
        let (h, uids, pods) = self.holdings();
        let mut out = Vec::new();
        for p in procs() {
            match pod_uid_of(&p, &self.cluster) {
                Some(uid) if !uids.contains(&uid) => out.push(format!(
                    "process {} of pod {uid}, which is gone: {}",
                    p.pid, p.cmdline
                )),
                // A soak worker or its launcher outside any pod of the cluster (escaped its
                // pod's cgroup, or left by a node that is gone).
                None if p.cmdline.contains("/workspace/soak.py") => {
                    out.push(format!("process {} outside any pod: {}", p.pid, p.cmdline))
                }
                _ => {}
            }
        }
        for (node, nh) in &h {
            for uid in nh.pod_mounts.difference(&uids) {
                out.push(format!(
                    "node {node}: mounts under /var/lib/kubelet/pods/{uid}, a pod that is gone"
                ));
            }
        }
        let now = sums(&h, &pods);
        if now.0 > baseline.0 {
            out.push(format!(
                "network namespaces: {} more than pods, {} at the start",
                now.0, baseline.0
            ));
        }
        if now.1 > baseline.1 {
            out.push(format!(
                "container root filesystems: {} more than containers, {} at the start",
                now.1, baseline.1
            ));
        }
        out
    }
}

/// (netns - pods with a sandbox, rootfs mounts - (running containers + sandboxes), pods)
/// over all nodes.
fn sums(h: &BTreeMap<String, NodeHoldings>, pods: &[Value]) -> (usize, usize, usize) {
    let live: Vec<&Value> = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .collect();
    let containers: usize = live
        .iter()
        .map(|p| {
            p["status"]["containerStatuses"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter(|c| c["state"]["running"].is_object())
                        .count()
                })
                .unwrap_or(0)
        })
        .sum();
    let netns: usize = h.values().map(|n| n.netns).sum();
    let rootfs: usize = h.values().map(|n| n.rootfs).sum();
    (
        netns.saturating_sub(live.len()),
        rootfs.saturating_sub(containers + live.len()),
        live.len(),
    )
}

fn run(env: &Env, cfg: &Config, soak: &Soak) {
    env.create_namespace(NS);
    env.kubectl.apply_in(
        NS,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "soak-script"},
            "data": {"soak.py": SCRIPT}}),
    );
    let baseline = {
        let (h, _, pods) = soak.holdings();
        let b = sums(&h, &pods);
        eprintln!(
            "soak: nodes hold {h:?} (baseline excess netns {}, rootfs {})",
            b.0, b.1
        );
        b
    };
    soak.start_job(None);
    for s in 0..SLOTS.len() {
        soak.start_job(Some(s));
    }

    std::thread::scope(|scope| {
        let checker = scope.spawn(|| {
            while !soak.stop.load(Ordering::Relaxed) {
                if let Err(e) = catch_unwind(AssertUnwindSafe(|| soak.check())) {
                    soak.violate(format!("the checker: {}", panic_message(&*e)));
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        let result = catch_unwind(AssertUnwindSafe(|| faults_and_drain(cfg, soak)));
        soak.stop.store(true, Ordering::Relaxed);
        let _ = checker.join();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    });
    soak.check();
    fail_on_violations(soak);

    // (d) nothing left behind.
    let left = wait_until_quiet(soak, &baseline);
    for l in &left {
        soak.violate(format!("leak: {l}"));
    }
    // (f) the operator never panicked.
    soak.operator_panics();
    fail_on_violations(soak);
}

fn wait_until_quiet(soak: &Soak, baseline: &(usize, usize, usize)) -> Vec<String> {
    let t = Instant::now();
    loop {
        let left = soak.leaks(baseline);
        if left.is_empty() || t.elapsed() > Duration::from_secs(90) {
            return left;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

fn fail_on_violations(soak: &Soak) {
    let vs = soak.violations.lock().unwrap().clone();
    if !vs.is_empty() {
        panic!("{} invariant(s) violated:\n- {}", vs.len(), vs.join("\n- "));
    }
}

fn faults_and_drain(cfg: &Config, soak: &Soak) {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let start = Instant::now();
    let mut undos: Vec<(Instant, Undo)> = Vec::new();
    // The first fault once the jobs had time to start training.
    let mut next = Instant::now() + Duration::from_secs(30);
    let mut draws = 0;
    // A draw that waits for its moment, and since when.
    let mut retry: Option<Draw> = None;
    let mut retry_since: Option<Instant> = None;
    while start.elapsed() < cfg.duration {
        fail_on_violations(soak);
        let due: Vec<Undo> = {
            let (due, keep): (Vec<_>, Vec<_>) =
                undos.drain(..).partition(|(at, _)| *at <= Instant::now());
            undos = keep;
            due.into_iter().map(|(_, u)| u).collect()
        };
        for u in due {
            soak.undo(u);
        }
        soak.lifecycle(true);
        if Instant::now() >= next {
            let d = match retry.take() {
                Some(d) => d,
                None => {
                    draws += 1;
                    draw(&mut rng)
                }
            };
            match soak.inject(&d) {
                Outcome::Done => next = Instant::now() + d.gap,
                Outcome::Undo(after, u) => {
                    undos.push((Instant::now() + after, u));
                    next = Instant::now() + d.gap;
                }
                Outcome::Retry => {
                    let since = retry_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(60) {
                        soak.fault(
                            "skipped",
                            format!("{:?}: the jobs were not quiet for 60 s", d.kind),
                        );
                        next = Instant::now() + d.gap;
                    } else {
                        retry = Some(d);
                        next = Instant::now() + Duration::from_secs(1);
                        continue;
                    }
                }
            }
            retry_since = None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    soak.fault(
        "faults over",
        format!(
            "{draws} draws in {:.0}s; undoing what is pending, then waiting for the jobs to finish",
            start.elapsed().as_secs_f64()
        ),
    );
    undos.sort_by_key(|(at, _)| *at);
    for (_, u) in undos {
        soak.undo(u);
    }
    let t = Instant::now();
    loop {
        fail_on_violations(soak);
        if soak.lifecycle(false) == 0 {
            break;
        }
        if t.elapsed() > T_DRAIN {
            let open: Vec<String> = soak
                .jobs
                .lock()
                .unwrap()
                .values()
                .filter(|j| !j.done)
                .map(|j| format!("{} ({}; faults {:?})", j.name, j.state, j.faults))
                .collect();
            panic!("jobs not finished {T_DRAIN:?} after the faults stopped: {open:?}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("soak: test");
        return;
    }
    // libtest's name filters, as `cargo test … -- FILTER` or `--skip FILTER` pass them to every
    // test binary: run unless they leave this one out.
    let (mut filters, mut skips, mut it) = (Vec::new(), Vec::new(), args.iter());
    while let Some(a) = it.next() {
        if a == "--skip" {
            skips.extend(it.next().cloned());
        } else if !a.starts_with('-') {
            filters.push(a.clone());
        }
    }
    if (!filters.is_empty() && !filters.iter().any(|f| "soak".contains(f.as_str())))
        || skips.iter().any(|s| "soak".contains(s.as_str()))
    {
        eprintln!("soak: skipped (filters {filters:?}, skips {skips:?})");
        return;
    }
    self_check();
    let cfg = Config::from_env();
    eprintln!(
        "soak: seed {} ({} of faults); reproduce with: {}",
        cfg.seed,
        cfg.duration_text,
        cfg.reproduce()
    );
    let t0 = Instant::now();
    let env = Env::start();
    assert!(
        env.is_local(),
        "the soak runs on the local cluster (it checks the nodes' processes, network namespaces and mounts on this machine): unset ELASTICJOB_E2E_KUBECONFIG"
    );
    let local = env.local.as_ref().unwrap();
    let cluster = local.cluster.as_ref().unwrap();
    let (bridge, host_ip, _) = cluster.network().expect("the cluster's network");
    let nodes = cluster.nodes().expect("nodes").names();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let ledger_url = serve_ledger(host_ip, ledger.clone());
    eprintln!("soak: ledger at {ledger_url}; nodes {nodes:?}");
    let soak = Soak {
        env: &env,
        cluster: bridge.trim_start_matches("ejbr").to_string(),
        nodes,
        ledger,
        ledger_url,
        jobs: Mutex::new(BTreeMap::new()),
        violations: Mutex::new(Vec::new()),
        log: Mutex::new(FaultLog {
            start: Instant::now(),
            lines: Vec::new(),
            counts: BTreeMap::new(),
        }),
        operator_restarted: Mutex::new(0.0),
        generations: Mutex::new([0; 3]),
        stop: AtomicBool::new(false),
        peer_charged: Mutex::new(0),
        deleted: Mutex::new(Vec::new()),
    };
    let result = catch_unwind(AssertUnwindSafe(|| run(&env, &cfg, &soak)));
    let log = soak.log.lock().unwrap();
    let mut summary = String::new();
    let _ = writeln!(summary, "soak: faults and events by kind: {:?}", log.counts);
    let _ = writeln!(
        summary,
        "soak: worker restarts charged beyond the worker crashes (a peer pod killed or lost): {}",
        soak.peer_charged.lock().unwrap()
    );
    {
        let l = soak.ledger.lock().unwrap();
        let _ = writeln!(
            summary,
            "soak: ledger: {} records from {} worker processes",
            l.records,
            l.incarnations.len()
        );
    }
    let _ = writeln!(
        summary,
        "soak: seed {}, {} of faults, {:.0}s in all",
        cfg.seed,
        cfg.duration_text,
        t0.elapsed().as_secs_f64()
    );
    match result {
        Ok(()) => {
            eprint!("{summary}");
            eprintln!("soak: passed");
            drop(log);
            env.shutdown();
        }
        Err(e) => {
            let msg = panic_message(&*e);
            eprintln!(
                "soak FAILED (seed {}): {msg}\n======== reproduce: {}\n======== fault log\n{}\n{summary}======== diagnostics of namespace {NS}\n{}",
                cfg.seed,
                cfg.reproduce(),
                log.lines.join("\n"),
                env.diagnostics(NS)
            );
            eprintln!(
                "soak FAILED (seed {}): {msg}\nreproduce: {}",
                cfg.seed,
                cfg.reproduce()
            );
            drop(log);
            env.shutdown();
            std::process::exit(1);
        }
    }
}

/// The soak's pure parts, checked before anything starts (this target has no unit tests: it
/// is its own harness).
fn self_check() {
    assert_eq!(parse_duration("300"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("5x"), None);
    assert_eq!(parse_duration("m"), None);
    let (mut a, mut b) = (StdRng::seed_from_u64(7), StdRng::seed_from_u64(7));
    for _ in 0..20 {
        let (x, y) = (draw(&mut a), draw(&mut b));
        assert_eq!(
            (x.kind, x.slot, x.pick, x.param, x.gap, x.race),
            (y.kind, y.slot, y.pick, y.param, y.gap, y.race),
            "the plan is a function of the seed"
        );
    }
    assert!(is_worker("python -u /workspace/soak.py"));
    assert!(!is_worker(
        "/elasticjob/bin/elastic-launch python /workspace/soak.py"
    ));
    let mut l = Ledger::default();
    let hb = |uid: &str, pid: i64, rank: i64, t: f64| {
        json!({"e": "hb", "job": "j", "pod": "p", "uid": uid, "pid": pid, "rank": rank,
            "world": 2, "round": 0, "step": 1, "t": t})
    };
    for r in [
        hb("u1", 10, 0, 1.0),
        hb("u1", 10, 0, 5.0),
        hb("u2", 10, 0, 6.0),
    ] {
        l.add(&r);
    }
    assert!(l.overlaps().is_empty(), "one after the other");
    l.add(&hb("u3", 11, 0, 5.5));
    l.add(&hb("u3", 11, 0, 7.0));
    assert_eq!(
        l.overlaps().len(),
        1,
        "u2 and u3 at once: {:?}",
        l.overlaps()
    );
    l.add(&hb("u4", 12, 1, 5.5));
    assert_eq!(l.overlaps().len(), 1, "another rank");
}
