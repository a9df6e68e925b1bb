"""Rendezvous benchmarks, side by side: elastic-launch vs torchrun's c10d, same machine, same run.
(Benchmark 2, the scale of one round, is the `rdzv-scale` binary; see bench/rendezvous.sh.)

1. First worker start: N = 2 and 8 agents (`--nnodes=N --rdzv-backend=c10d`, min = max = N,
   one `--no-python` worker each) started at once. Measured from just before the first agent
   process is started to (a) the start of the LAST agent's first worker, as that worker records
   it, and (b) the exit of the last agent. Then N = 64, 256 and 1024 separate elastic-launch
   processes, alone (torchrun would need minutes of CPU per run here).
3. Restart: 2 agents x 1 worker, `--max-restarts=1`. In the first round the worker of group rank
   1 dies (exit 1) once both workers run; measured from its death to every worker started again
   (a static worker). 3b: the same with torch workers, to every rank through its first
   `all_reduce` in the new round ("training again"); torchrun both as shipped and with
   TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, since its restart of torch 2.15 gloo workers is
   unreliable as shipped (the restarted workers can read the dead round's addresses from the
   reused store).

The workers (`rdzv-worker`, `rdzv_torch_worker.py`) append `<what> <unix time> <restart count>
<group rank> <rank> <pid>` lines to a file; the harness reads the time from the same clock.
Both launchers alternate within each repetition; medians are reported with the min-max range.

    bench/rendezvous.sh        # what `make bench` runs
    usage: rendezvous.py ELASTIC_LAUNCH TORCHRUN RDZV_WORKER PYTHON
    env: REPS (5), TORCH_REPS (5), PROC_AGENTS (64,256,1024: elastic-launch alone), PARTS (first,restart,torch)
"""
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPS = int(os.environ.get("REPS", "5"))
TORCH_REPS = int(os.environ.get("TORCH_REPS", "5"))
PROC_AGENTS = [int(n) for n in os.environ.get("PROC_AGENTS", "64,256,1024").split(",") if n]
PARTS = os.environ.get("PARTS", "first,restart,torch").split(",")
# A torch restart run normally takes about 15 s here; torchrun's sometimes hangs instead.
TORCH_TIMEOUT = 60
TORCH_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rdzv_torch_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_strays(tag):
    """SIGKILLs, by pid, every process whose command line names `tag` (our unique temp dir):
    torchrun starts workers in their own sessions, so they survive a killed torchrun."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if tag.encode() in f.read() and int(pid) != os.getpid():
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def run_agents(cmds, tmp, timeout, extra_env=None):
    """Starts every command (one per agent) at once and waits for all of them. Returns t0 (unix
    time just before the first start), the time the last was started, the time the last exited,
    exit codes, CPU seconds (agents and everything they reaped) and the agents' stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "TORCHELASTIC_"))}
    env["LOGLEVEL"] = "WARNING"
    env.update(extra_env or {})
    errs = [open(os.path.join(tmp, f"agent{i}.err"), "w+") for i in range(len(cmds))]
    t0 = time.time()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=e, start_new_session=True) for c, e in zip(cmds, errs)]
    t_spawned = time.time()
    timed_out = []

    def on_timeout():
        timed_out.append(True)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        kill_strays(tmp)

    timer = threading.Timer(timeout, on_timeout)
    timer.start()
    codes, cpu = {}, 0.0
    while len(codes) < len(procs):
        pid, status, usage = os.wait4(-1, 0)
        codes[pid] = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
    t_end = time.time()
    timer.cancel()
    for p in procs:
        p.returncode = codes[p.pid]
    kill_strays(tmp)
    stderr = []
    for e in errs:
        e.seek(0)
        stderr.append(e.read())
        e.close()
    return {"t0": t0, "t_spawned": t_spawned, "t_end": t_end, "codes": [codes[p.pid] for p in procs], "cpu": cpu,
            "stderr": stderr, "timed_out": bool(timed_out)}


def stamps(path):
    """The lines workers wrote: (what, unix time, restart count, group rank, rank)."""
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        what, t, restart, group_rank, rank, _pid = line.split()
        out.append((what, float(t), int(restart), int(group_rank), int(rank)))
    return out


def c10d_args(n, port, extra=()):
    return [f"--nnodes={n}", "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}", f"--rdzv-id=rdzv{port}",
            "--nproc-per-node=1", *extra]


def first_start(launcher, worker, n):
    """N agents, one static worker each: seconds to the last agent's first worker start, to
    the last agent's exit, and CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="rdzvbench") as tmp:
        path = os.path.join(tmp, "stamps")
        args = c10d_args(n, free_port(), ["--no-python", worker, path])
        r = run_agents([[*launcher, *args]] * n, tmp, timeout=600)
        starts = [t for what, t, *_ in stamps(path) if what == "start"]
        if r["codes"] != [0] * n or len(starts) != n:
            sys.exit(f"{launcher[0]} with {n} agents failed: codes {r['codes']}, {len(starts)} worker starts\n{r['stderr'][0][-3000:]}")
        return {"first": max(starts) - r["t0"], "wall": r["t_end"] - r["t0"], "cpu": r["cpu"], "spawn": r["t_spawned"] - r["t0"]}


def restart(launcher, worker, python, torch_worker=False, extra_env=None, timeout=300):
    """2 agents x 1 worker, --max-restarts=1, the worker of group rank 1 dies in the first
    round. Returns seconds from the death to the last new worker start (and, for torch workers,
    to the last `import torch` and the last first `all_reduce`), the new round's restart counts,
    the agents' exit codes, and the stderr of the agents when something went wrong."""
    with tempfile.TemporaryDirectory(prefix="rdzvbench") as tmp:
        path = os.path.join(tmp, "stamps")
        if torch_worker:
            entry = [TORCH_WORKER, path, "1"]
        else:
            entry = ["--no-python", worker, path, "--fail-group-rank", "1", "--wait-starts", "2"]
        args = c10d_args(2, free_port(), ["--max-restarts=1", *entry])
        env = {"PYTHON_EXEC": python, **(extra_env or {})}
        r = run_agents([[*launcher, *args]] * 2, tmp, timeout=timeout, extra_env=env)
        lines = stamps(path)
        deaths = [t for what, t, *_ in lines if what == "death"]
        if len(deaths) != 1:
            sys.exit(f"{launcher[0]}: expected one worker death, got {len(deaths)}; codes {r['codes']}\n{r['stderr'][0][-3000:]}")
        death = deaths[0]
        after = [l for l in lines if l[1] > death]

        def last(what):
            ts = [t for w, t, *_ in after if w == what]
            return max(ts) - death if len(ts) == 2 else None

        return {"restart": last("start"), "imported": last("imported"), "reduced": last("reduced"),
                "restart_counts": sorted({rc for w, _, rc, *_ in after if w == "start"}), "codes": r["codes"],
                "timed_out": r["timed_out"], "stderr": r["stderr"], "wall": r["t_end"] - r["t0"]}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def cell(xs, scale=1.0, digits=3):
    xs = [x * scale for x in xs if x is not None]
    if not xs:
        return "—"
    return f"{statistics.median(xs):.{digits}f} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"


def ratio(a, b):
    return f"{b / a:.0f}x" if a and b else "—"


def part_first(ours, torchrun, worker):
    print(f"\n### 1. Rendezvous to first worker start (c10d, `--nnodes=N`, 1 `--no-python` worker per agent; REPS={REPS})\n")
    print("| agents | launcher | last agent's first worker start, ms | all agents exited, ms | CPU s (agents + workers) |")
    print("|---:|---|---:|---:|---:|")
    ratios = []
    for n in (2, 8):
        res = {"elastic-launch": [], "torchrun": []}
        for _ in range(REPS):
            res["elastic-launch"].append(first_start(ours, worker, n))
            res["torchrun"].append(first_start(torchrun, worker, n))
        for name, rs in res.items():
            print(f"| {n} | {name} | {cell([r['first'] for r in rs], 1e3, 1)} | {cell([r['wall'] for r in rs], 1e3, 1)} | {med([r['cpu'] for r in rs]):.3f} |")
        e, t = res["elastic-launch"], res["torchrun"]
        ratios.append((n, med([r["first"] for r in e]), med([r["first"] for r in t]), med([r["wall"] for r in e]), med([r["wall"] for r in t])))
    print("\n| agents | first-worker-start ratio (torchrun / ours) | all-exited ratio | goal ≥ 20x |")
    print("|---:|---:|---:|---|")
    for n, fe, ft, we, wt in ratios:
        print(f"| {n} | {ratio(fe, ft)} | {ratio(we, wt)} | {'met' if ft / fe >= 20 and wt / we >= 20 else 'NOT met'} |")
    if PROC_AGENTS:
        reps = min(REPS, 3)
        print(f"\nelastic-launch alone, N agents as separate processes (REPS={reps}); 'spawn' is the time the harness "
              "itself takes to start them all, one after the other:\n")
        print("| agents | last agent's first worker start, ms | all agents exited, ms | spawn, ms | CPU s |")
        print("|---:|---:|---:|---:|---:|")
        for n in PROC_AGENTS:
            rs = [first_start(ours, worker, n) for _ in range(reps)]
            print(f"| {n} | {cell([r['first'] for r in rs], 1e3, 0)} | {cell([r['wall'] for r in rs], 1e3, 0)} | "
                  f"{med([r['spawn'] for r in rs]) * 1e3:.0f} | {med([r['cpu'] for r in rs]):.2f} |")


def part_restart(ours, torchrun, worker, python):
    print(f"\n### 3. Restart latency: 2 agents x 1 `--no-python` worker, `--max-restarts=1` (REPS={REPS})\n")
    print("| launcher | worker death → every worker started again, ms | restart counts in the new round | agent exit codes |")
    print("|---|---:|---|---|")
    res = {"elastic-launch": [], "torchrun": []}
    for _ in range(REPS):
        res["elastic-launch"].append(restart(ours, worker, python))
        res["torchrun"].append(restart(torchrun, worker, python))
    for name, rs in res.items():
        counts = sorted({tuple(r["restart_counts"]) for r in rs})
        codes = sorted({tuple(r["codes"]) for r in rs})
        print(f"| {name} | {cell([r['restart'] for r in rs], 1e3, 1)} | {counts} | {codes} |")
    e, t = med([r["restart"] for r in res["elastic-launch"]]), med([r["restart"] for r in res["torchrun"]])
    met = e < 0.5 and t / e >= 5
    print("\n| restart ratio (torchrun / ours) | goal < 0.5 s and ≥ 5x |")
    print("|---:|---|")
    print(f"| {ratio(e, t)} | {'met' if met else 'NOT met'} |")


def gloo_error(r):
    """The first gloo connection error in the agents' stderr (what breaks torchrun's restart)."""
    for err in r["stderr"]:
        for line in err.splitlines():
            if "connectFullMesh failed" in line:
                return line.strip()[line.find("Gloo connectFullMesh"):][:200]
    return None


def part_torch(ours, torchrun, worker, python):
    print(f"\n### 3b. Training again: 2 agents x 1 torch worker (gloo), `--max-restarts=1` (REPS={TORCH_REPS})\n")
    variants = [("elastic-launch", ours, {}), ("torchrun (default: workers share the agent store)", torchrun, {}),
                ("torchrun, TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1", torchrun, {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})]
    res = {name: [] for name, _, _ in variants}
    for _ in range(TORCH_REPS):
        for name, launcher, env in variants:
            res[name].append(restart(launcher, worker, python, torch_worker=True, extra_env=env, timeout=TORCH_TIMEOUT))
    print("| launcher | death → all started, s | → all imported torch, s | → all through first all_reduce (training again), s | runs that trained again |")
    print("|---|---:|---:|---:|---:|")
    for name, rs in res.items():
        good = sum(r["reduced"] is not None for r in rs)
        print(f"| {name} | {cell([r['restart'] for r in rs])} | {cell([r['imported'] for r in rs])} | {cell([r['reduced'] for r in rs])} | {good}/{len(rs)} |")
    print("\nTimes are over the runs that trained again. Runs that did not:\n")
    for name, rs in res.items():
        for r in rs:
            if r["reduced"] is None:
                how = f"hung, killed after {TORCH_TIMEOUT} s" if r["timed_out"] else f"agent exit codes {r['codes']}"
                print(f"- {name}: {how}; {gloo_error(r) or 'no gloo error in the agents stderr'}")
    e = med([r["reduced"] for r in res["elastic-launch"]])
    s_e = med([r["restart"] for r in res["elastic-launch"]])
    print("\nRatios of the medians above:\n")
    print("| launchers | training again | workers started again |")
    print("|---|---:|---:|")
    for name in list(res)[1:]:
        t, s_t = med([r["reduced"] for r in res[name]]), med([r["restart"] for r in res[name]])
        print(f"| {name} / ours | {t / e:.1f}x | {ratio(s_e, s_t)} |" if e and t else f"| {name} / ours | never trained again | {ratio(s_e, s_t)} |")


def main():
    ours, torchrun, worker, python = [sys.argv[1]], [sys.argv[2]], sys.argv[3], sys.argv[4]
    load = os.getloadavg()
    print(f"host: {socket.gethostname()}, {os.cpu_count()} CPUs, load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          "medians with (min–max)")
    if "first" in PARTS:
        part_first(ours, torchrun, worker)
    if "restart" in PARTS:
        part_restart(ours, torchrun, worker, python)
    if "torch" in PARTS:
        part_torch(ours, torchrun, worker, python)
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
