"""Launch overhead, side by side: elastic-launch vs torchrun, same machine, same run.

Each scenario runs both launchers alternately REPS times and reports medians of wall time, CPU
time (user+sys of the launcher and everything it started) and peak RSS (largest single process
in the launcher's tree, from wait4), plus the torchrun/elastic-launch ratio.

    bench/launch.sh            # what `make bench` runs
"""
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPS = int(os.environ.get("REPS", "10"))


def run_once(cmds):
    """Starts every command at once (one per node), waits for all; returns wall, cpu, peak rss."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PET_")}
    env["LOGLEVEL"] = "WARNING"
    t0 = time.perf_counter()
    rss_files = [tempfile.NamedTemporaryFile(prefix="rss") for _ in cmds]
    procs = [
        subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", f.name, *c], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for c, f in zip(cmds, rss_files)
    ]
    cpu, rss = 0.0, 0
    for p, f in zip(procs, rss_files):
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        err = p.stderr.read().decode(errors="replace")
        if p.returncode != 0:
            sys.exit(f"command failed ({p.returncode}): {' '.join(p.args)}\n{err}")
        cpu += usage.ru_utime + usage.ru_stime
        rss = max(rss, int(open(f.name).read().strip().splitlines()[-1]))
    wall = time.perf_counter() - t0
    return wall, cpu, rss / 1024.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scenarios(launcher):
    yield "standalone, 4 workers of /bin/true", lambda: [[*launcher, "--standalone", "--nproc-per-node=4", "--no-python", "/bin/true"]]

    def two_nodes():
        port = free_port()
        args = ["--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}", f"--rdzv-id=bench{port}",
                "--nproc-per-node=1", "--no-python", "/bin/true"]
        return [[*launcher, *args], [*launcher, *args]]

    yield "2 agents, c10d on localhost, 1 worker each", two_nodes


def main():
    ours = [sys.argv[1]]
    torchrun = [sys.argv[2]]
    print(f"host: {socket.gethostname()}, {os.cpu_count()} CPUs, REPS={REPS} (medians)\n")
    print("| scenario | launcher | wall s | CPU s | peak RSS MiB |")
    print("|---|---|---:|---:|---:|")
    ratios = []
    for (name, make_ours), (_, make_torch) in zip(scenarios(ours), scenarios(torchrun)):
        results = {"elastic-launch": [], "torchrun": []}
        for _ in range(REPS):
            results["elastic-launch"].append(run_once(make_ours()))
            results["torchrun"].append(run_once(make_torch()))
        med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in results.items()}
        for k, (wall, cpu, rss) in med.items():
            print(f"| {name} | {k} | {wall:.3f} | {cpu:.3f} | {rss:.1f} |")
        e, t = med["elastic-launch"], med["torchrun"]
        ratios.append((name, t[0] / e[0], t[1] / e[1], t[2] / e[2]))
    print("\n| scenario | wall ratio (torchrun / ours) | CPU ratio | peak RSS ratio |")
    print("|---|---:|---:|---:|")
    for name, w, c, r in ratios:
        print(f"| {name} | {w:.0f}x | {c:.0f}x | {r:.0f}x |")


if __name__ == "__main__":
    main()
