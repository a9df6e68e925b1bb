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
4. A node lost: 3 agents (`--nnodes=2:3`, default rendezvous settings: no --rdzv-conf), one
   worker each that runs until stopped. Once all 3 run, the agent that does not host the store
   (found by its listening socket) and its whole process tree are SIGKILLed (a lost node) or
   SIGSTOPped (a hung or partitioned one: its connections stay open); measured from the signal
   to both survivors' workers started again in the new round, at most LOST_TIMEOUT s. Since
   the workers never fail, only the launcher can notice the loss: torchrun's agent restarts
   healthy workers only for nodes waiting to join, never for a lost one, and does not recover
   here. "SIGKILL+workers" also SIGKILLs the survivors' workers at the loss, as a collective
   does when its peer's connections reset; that is the case where torchrun's 15 s keep-alive
   and 30 s last call apply.

The workers (`rdzv-worker`, `rdzv_torch_worker.py`) append `<what> <unix time> <restart count>
<group rank> <rank> <pid>` lines to a file; the harness reads the time from the same clock.
Both launchers alternate within each repetition; medians are reported with the min-max range.

    bench/rendezvous.sh        # what `make bench` runs
    usage: rendezvous.py ELASTIC_LAUNCH TORCHRUN RDZV_WORKER PYTHON
    env: REPS (5; at most 3 for 4), TORCH_REPS (5), PROC_AGENTS (64,256,1024: elastic-launch alone),
         PARTS (first,restart,lost,torch), LOST_KINDS (SIGKILL,SIGSTOP,SIGKILL+workers), LOST_TIMEOUT (120)
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
PARTS = os.environ.get("PARTS", "first,restart,lost,torch").split(",")
LOST_KINDS = os.environ.get("LOST_KINDS", "SIGKILL,SIGSTOP,SIGKILL+workers").split(",")
# Per measurement of benchmark 4: to the survivors' workers started again (and to the first starts).
LOST_TIMEOUT = float(os.environ.get("LOST_TIMEOUT", "120"))
# A torch restart run normally takes about 15 s here; torchrun's sometimes hangs instead.
TORCH_TIMEOUT = 60
# Seconds the torch job trains before its worker dies (3b): long enough for --prewarm's
# standbys, started at the round's first step, to have imported torch on a loaded 2-core machine.
TORCH_SETTLE = float(os.environ.get("TORCH_SETTLE", "8"))
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


def agent_env(extra_env=None):
    """The agents' environment: ours without launcher settings, warnings only, plus `extra_env`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "TORCHELASTIC_"))}
    env["LOGLEVEL"] = "WARNING"
    env.update(extra_env or {})
    return env


def start_agents(cmds, tmp, extra_env=None):
    """Starts every command (one per agent) at once, each in its own session, stderr to
    `tmp/agent<i>.err`. Returns t0 (unix time just before the first start), the time the last
    was started, the Popens and their stderr files (see `read_errs`)."""
    env = agent_env(extra_env)
    errs = [open(os.path.join(tmp, f"agent{i}.err"), "w+") for i in range(len(cmds))]
    t0 = time.time()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=e, start_new_session=True) for c, e in zip(cmds, errs)]
    return t0, time.time(), procs, errs


def read_errs(errs):
    """Reads and closes the stderr files of `start_agents`."""
    out = []
    for e in errs:
        e.seek(0)
        out.append(e.read())
        e.close()
    return out


def run_agents(cmds, tmp, timeout, extra_env=None):
    """Starts every command (one per agent) at once and waits for all of them. Returns t0 (unix
    time just before the first start), the time the last was started, the time the last exited,
    exit codes, CPU seconds (agents and everything they reaped) and the agents' stderr."""
    t0, t_spawned, procs, errs = start_agents(cmds, tmp, extra_env)
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
    return {"t0": t0, "t_spawned": t_spawned, "t_end": t_end, "codes": [codes[p.pid] for p in procs], "cpu": cpu,
            "stderr": read_errs(errs), "timed_out": bool(timed_out)}


def stamps(path, pids=False):
    """The lines workers wrote: (what, unix time, restart count, group rank, rank[, pid])."""
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        if not line.endswith("\n"):  # being written
            continue
        what, t, restart, group_rank, rank, pid = line.split()
        out.append((what, float(t), int(restart), int(group_rank), int(rank), *([int(pid)] if pids else [])))
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
            entry = [TORCH_WORKER, path, "1", str(TORCH_SETTLE)]
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


def tree(pid):
    """`pid` and all its descendants, from /proc (workers in sessions of their own included)."""
    children = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo.extend(children.get(out[-1], []))
    return out


def listener(port, pids):
    """The one of `pids` that holds the socket listening on `port` (the store host), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{f[9]}]")
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except OSError:
                pass
    return None


def signal_node(root, pids, sig):
    """Sends `sig` to a lost node: the agent's process group, then every process of its tree."""
    for send, pid in [(os.killpg, root), *((os.kill, p) for p in pids)]:
        try:
            send(pid, sig)
        except OSError:
            pass


def node_lost(launcher, worker, sig, fail_workers=False):
    """3 agents (--nnodes=2:3, default rendezvous settings) x 1 worker that runs until stopped.
    Once all 3 workers run (and 1 s more), the agent that does not host the store (the last
    started such one) and its whole tree get `sig` (SIGKILL: a lost node; SIGSTOP: a hung or
    partitioned one, nothing closes its connections). With `fail_workers`, the survivors' workers
    are SIGKILLed at the same moment (what a collective does when its peer's connections reset).
    Returns seconds from the signal to the later of the survivors' first new worker starts (None
    when that did not happen within LOST_TIMEOUT), and why not."""
    with tempfile.TemporaryDirectory(prefix="rdzvbench") as tmp:
        path = os.path.join(tmp, "stamps")
        port = free_port()
        # No worker has group rank 99, so none fails: each sleeps until its agent stops it.
        args = c10d_args("2:3", port, ["--max-restarts=3", "--no-python", worker, path, "--fail-group-rank", "99", "--wait-starts", "1"])
        t0, _, procs, errs = start_agents([[*launcher, *args]] * 3, tmp)
        out = {"lost": None, "why": None, "host_known": True}
        try:
            deadline = t0 + LOST_TIMEOUT

            def running():  # the workers still alive: those of a round of 3 once there are 3
                return [l for l in stamps(path, pids=True) if os.path.exists(f"/proc/{l[5]}")]

            while (len(up := running()) < 3 or 2 not in {l[3] for l in up}) and time.time() < deadline \
                    and all(p.poll() is None for p in procs):
                time.sleep(0.01)
            if len(up) < 3 or 2 not in {l[3] for l in up}:
                out["why"] = (f"{len(up)}/3 workers running after {LOST_TIMEOUT:.0f} s" if time.time() >= deadline else
                              f"an agent exited before all 3 workers started: codes {[p.poll() for p in procs]}")
                return out
            time.sleep(1)  # the agents settled in monitoring, as in benchmark 3
            trees = [tree(p.pid) for p in procs]
            host = listener(port, [pid for t in trees for pid in t])
            out["host_known"] = host is not None
            lost = max(i for i, t in enumerate(trees) if host not in t)
            survivors_workers = [l[5] for l in running() if l[5] not in trees[lost]]
            t_loss = time.time()
            signal_node(procs[lost].pid, trees[lost], sig)
            if fail_workers:
                for pid in survivors_workers:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            survivors = [p for i, p in enumerate(procs) if i != lost]
            deadline = t_loss + LOST_TIMEOUT
            while time.time() < deadline:
                first = {}
                for what, t, _, group_rank, _ in stamps(path):
                    if what == "start" and t > t_loss:
                        first[group_rank] = min(t, first.get(group_rank, t))
                if len(first) >= 2:
                    out["lost"] = max(sorted(first.values())[:2]) - t_loss
                    return out
                if all(p.poll() is not None for p in survivors):
                    out["why"] = f"the survivors exited: codes {[p.returncode for p in survivors]}"
                    return out
                time.sleep(0.01)
            out["why"] = f"{len(first)}/2 survivors' workers started again in {LOST_TIMEOUT:.0f} s"
            return out
        finally:
            for p in procs:
                signal_node(p.pid, tree(p.pid), signal.SIGKILL)
            kill_strays(tmp)
            for p in procs:
                p.wait()
            out["stderr"] = read_errs(errs)


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
    variants = [("elastic-launch", ours, {}), ("elastic-launch --prewarm=torch", [*ours, "--prewarm=torch"], {}),
                ("torchrun (default: workers share the agent store)", torchrun, {}),
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
        print(f"| {name} / ours | {t / e:.2f}x | {ratio(s_e, s_t)} |" if e and t else f"| {name} / ours | never trained again | {ratio(s_e, s_t)} |")


LOSSES = {"SIGKILL": (signal.SIGKILL, False), "SIGSTOP": (signal.SIGSTOP, False), "SIGKILL+workers": (signal.SIGKILL, True)}
LOSS_LABELS = {"SIGKILL": "SIGKILL", "SIGSTOP": "SIGSTOP", "SIGKILL+workers": "SIGKILL, survivors' workers fail"}


def part_lost(ours, torchrun, worker):
    reps = min(REPS, 3)  # torchrun's runs here take a minute or two each
    print(f"\n### 4. A node lost: 3 agents (--nnodes=2:3, defaults), one SIGKILLed or SIGSTOPped; its loss → both "
          f"survivors' workers started again (REPS={reps})\n")
    res = {(kind, name): [] for kind in LOST_KINDS for name in ("elastic-launch", "torchrun")}
    for _ in range(reps):
        for kind in LOST_KINDS:
            sig, fail = LOSSES[kind]
            res[(kind, "elastic-launch")].append(node_lost(ours, worker, sig, fail))
            res[(kind, "torchrun")].append(node_lost(torchrun, worker, sig, fail))
    print("| loss | launcher | loss → survivors training again, s | runs recovered |")
    print("|---|---|---:|---:|")
    for (kind, name), rs in res.items():
        good = sum(r["lost"] is not None for r in rs)
        print(f"| {LOSS_LABELS[kind]} | {name} | {cell([r['lost'] for r in rs], digits=2)} | {good}/{len(rs)} |")
    note = (f"\nTimes are over the runs that recovered (\"—\": none did; the wait is {LOST_TIMEOUT:.0f} s after the loss). "
            "The workers run until stopped, so only the launcher can notice the loss")
    if "SIGKILL+workers" in LOST_KINDS:
        note += ("; in \"survivors' workers fail\" the survivors' workers are also SIGKILLed at the loss, as a "
                 "collective fails when its peer's connections reset")
    print(note + ". Runs that did not recover:\n")
    missing = [(kind, name, r) for (kind, name), rs in res.items() for r in rs if r["lost"] is None]
    for kind, name, r in missing:
        print(f"- {LOSS_LABELS[kind]}, {name}: {r['why']}")
    if not missing:
        print("- none")
    unknown = sum(not r["host_known"] for rs in res.values() for r in rs)
    if unknown:
        print(f"\n({unknown} runs could not tell which agent hosted the store; the last agent started was lost.)")
    print("\n| loss | ratio (torchrun / ours) |")
    print("|---|---:|")
    for kind in LOST_KINDS:
        e, t = med([r["lost"] for r in res[(kind, "elastic-launch")]]), med([r["lost"] for r in res[(kind, "torchrun")]])
        if e and t:
            print(f"| {LOSS_LABELS[kind]} | {t / e:.1f}x |")
        elif e:
            print(f"| {LOSS_LABELS[kind]} | — (torchrun: not within {LOST_TIMEOUT:.0f} s, > {LOST_TIMEOUT / e:.0f}x) |")
        else:
            print(f"| {LOSS_LABELS[kind]} | — |")


def main():
    ours, torchrun, worker, python = [sys.argv[1]], [sys.argv[2]], sys.argv[3], sys.argv[4]
    load = os.getloadavg()
    print(f"host: {socket.gethostname()}, {os.cpu_count()} CPUs, load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          "medians with (min–max)")
    if "first" in PARTS:
        part_first(ours, torchrun, worker)
    if "restart" in PARTS:
        part_restart(ours, torchrun, worker, python)
    if "lost" in PARTS:
        part_lost(ours, torchrun, worker)
    if "torch" in PARTS:
        part_torch(ours, torchrun, worker, python)
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
