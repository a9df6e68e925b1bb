#!/usr/bin/env python3
"""One fault schedule against one launcher on a running local cluster (bench/faults.sh runs it
for elastic-launch and for torchrun, each on a fresh cluster).

The job: 3 pods x 1 PyTorch worker (gloo, CPU), min 2, the example's training script
(examples/elasticjob.yaml's ConfigMap) running "forever" with STEP_SLEEP per step.
- elastic: an ElasticJob with the CRD's defaults, the operator installed by the chart's defaults.
- elastic-prewarm: the same with `launcher.prewarm: [torch, torch._dynamo]` (off by default;
  DDP's constructor imports torch._dynamo).
- torchrun: a StatefulSet of the same image behind a headless Service (what a user without an
  operator runs), each pod `torchrun --nnodes=2:3 --rdzv-backend=c10d
  --rdzv-endpoint=tr-0.tr...:29400 --max-restarts=100`, restartPolicy Always (the kubelet
  restarts an exited container, the StatefulSet recreates a deleted pod).

Once the job trains at full size, the schedule starts (offsets from its start, the same for
both; the first 20 s, fault-free, give the job's speed): worker crash (SIGKILL of pod 1's training process), pod 2 killed (SIGKILL of all its
processes), pod 0 killed, pod 2's network cut (restored 30 s later), and the node of a non-zero
pod lost. For each fault: the seconds from just before the fault is made to the first training
step logged after a new round started (on any pod), both by the container runtime's timestamps:
"training again"; "> N" when that did not happen before the next fault. After the window, the
seconds from the node loss to training with 3 workers again (the lost node's pod replaced on
another node), up to 150 s. Goodput: the training steps the job completed in the 240 s window
(rank 0's step lines, every round counted), and that as a share of what it would have
completed at its fault-free speed of the first 20 s.

Prints the per-fault lines, then markdown rows for bench/faults.sh to put in its tables.
"""
import datetime
import json
import os
import re
import subprocess
import sys
import time

KUBECTL = os.environ.get("KUBECTL", "kubectl")
CLUSTER = os.environ.get("CLUSTER", "cluster")
DIR = os.environ.get("CLUSTER_DIR", "")
LAUNCHER = sys.argv[1]  # elastic | elastic-prewarm | torchrun
ELASTIC = LAUNCHER.startswith("elastic")
NS = "bench"
STEP_SLEEP = float(os.environ.get("STEP_SLEEP", "0.1"))
IMAGE = "ghcr.io/elasticjob/pytorch:2.15.0"
# (offset s from the start of the schedule, fault); the window ends at WINDOW.
SCHEDULE = [(20, "worker crash"), (55, "pod killed"), (90, "pod 0 killed"), (125, "partition"), (185, "node lost")]
# How long after the node loss the job may take to train at full size again (a replacement pod
# on another node), measured after the window.
FULL_SIZE_LIMIT = 150.0
RESTORE_NET_AFTER = 30
WINDOW = 240.0


def kubectl(*args, stdin=None, check=True):
    p = subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True)
    if check and p.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def cluster_fault(*args):
    p = subprocess.run([CLUSTER, "fault", "--dir", DIR, *args], capture_output=True, text=True)
    if p.returncode != 0:
        print(f"fault {' '.join(args)} failed: {p.stderr.strip()}", file=sys.stderr)


def pod_name(i):
    return f"ej-worker-{i}" if ELASTIC else f"tr-{i}"


def pods():
    out = json.loads(kubectl("get", "pods", "-n", NS, "-o", "json"))
    return [
        {
            "name": p["metadata"]["name"],
            "uid": p["metadata"]["uid"],
            "node": p["spec"].get("nodeName"),
            "phase": p["status"].get("phase"),
        }
        for p in out["items"]
        if p["metadata"]["name"].startswith(pod_name(0)[:-1])
    ]


def log_time(line):
    """The container runtime's timestamp of a `kubectl logs --timestamps` line, in epoch seconds
    (the same clock as time.time(): the cluster's nodes are this machine)."""
    stamp = line.split(" ", 1)[0]
    day, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(day + "+00:00").timestamp() + float("0." + (frac or "0"))


class LogBook:
    """Every trainer log seen, by pod uid, each line with its runtime timestamp: a killed pod's
    log is gone from the API, not from here. Times come from the timestamps, not from when a
    poll saw a line, so the poll can be slow (a pod on a lost node answers no `kubectl logs`)
    and rare (kubectl's own CPU would slow the workers on a small machine)."""

    def __init__(self):
        self.text = {}

    def poll(self):
        for p in pods():
            if p["phase"] not in ("Running", "Succeeded", "Failed"):
                continue
            r = subprocess.run([KUBECTL, "logs", "--timestamps", "--request-timeout=3s", "-n", NS, p["name"], "-c", "trainer"], capture_output=True, text=True)
            if r.returncode == 0 and len(r.stdout) >= len(self.text.get(p["uid"], "")):
                self.text[p["uid"]] = r.stdout

    def trained_again(self, since, world=None):
        """Seconds from `since` to the first step line logged after a round-start line that was
        logged after `since` (on any pod), of a round of `world` workers if given; None if there
        is none yet."""
        first = None
        for t in self.text.values():
            started = False
            for line in t.splitlines():
                if "[train] " not in line or log_time(line) < since:
                    continue
                if "[train] world_size=" in line:
                    started = world is None or f"[train] world_size={world} " in line
                elif started and "[train] step" in line:
                    took = log_time(line) - since
                    first = took if first is None else min(first, took)
                    break
        return first

    def steps(self):
        """Steps trained in every round: the last step each round's rank 0 logged, plus one."""
        total = 0
        for t in self.text.values():
            for segment in t.split("[train] world_size=")[1:]:
                steps = [int(s) for s in re.findall(r"\[train\] step +(\d+)", segment)]
                if steps:
                    total += steps[-1] + 1
        return total


def manifests():
    script = open("examples/elasticjob.yaml").read().split("\n---\n")[0]
    env = [{"name": "STEPS", "value": "100000000"}, {"name": "STEP_SLEEP", "value": str(STEP_SLEEP)}]
    container = {
        "name": "trainer",
        "image": IMAGE,
        "env": env,
        "volumeMounts": [{"name": "script", "mountPath": "/workspace", "readOnly": True}],
    }
    volumes = [{"name": "script", "configMap": {"name": "train-script"}}]
    if ELASTIC:
        container["command"] = ["python", "/workspace/train.py"]
        job = {
            "apiVersion": "elasticjob.dev/v1alpha1",
            "kind": "ElasticJob",
            "metadata": {"name": "ej", "namespace": NS},
            "spec": {
                "minReplicas": 2,
                "maxReplicas": 3,
                "replicas": 3,
                "nprocPerNode": 1,
                "template": {"spec": {"containers": [container], "volumes": volumes}},
            },
        }
        if LAUNCHER == "elastic-prewarm":
            # The one setting changed: restarted workers are interpreters that imported torch
            # and what DDP imports while the old round trained (spec.launcher.prewarm, off by
            # default).
            job["spec"]["launcher"] = {"prewarm": ["torch", "torch._dynamo"]}
        return [script, json.dumps(job)]
    endpoint = f"tr-0.tr.{NS}.svc.cluster.local:29400"
    container["command"] = [
        "torchrun", "--nnodes=2:3", "--nproc-per-node=1", "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}", "--rdzv-id=bench", "--max-restarts=100", "/workspace/train.py",
    ]
    container["ports"] = [{"containerPort": 29400, "name": "rendezvous"}]
    svc = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "tr", "namespace": NS},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"app": "tr"},
                 "ports": [{"port": 29400, "name": "rendezvous"}]},
    }
    sts = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "tr", "namespace": NS},
        "spec": {
            "serviceName": "tr", "replicas": 3, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "tr"}},
            "template": {"metadata": {"labels": {"app": "tr"}},
                         "spec": {"containers": [container], "volumes": volumes,
                                  "terminationGracePeriodSeconds": 30}},
        },
    }
    return [script, json.dumps(svc), json.dumps(sts)]


def wait_full_size(book, limit):
    """Until the job trains with 3 workers; False after `limit` seconds."""
    start = time.time()
    while time.time() - start < limit:
        book.poll()
        for t in book.text.values():
            rounds = t.split("[train] world_size=")
            if len(rounds) > 1 and rounds[-1].startswith("3 ") and "[train] step" in rounds[-1]:
                return True
        time.sleep(0.5)
    return False


def kill_worker(pod):
    # The training process, not its launcher (elastic-launch or torchrun, whose command lines
    # name the script too) and not this python. A prewarmed worker's command line is the
    # standby's bootstrap (`python -u -c ...recv_fds...`); once it became a worker its stdin is
    # /dev/null, while a standby waiting for the next round still reads its socket.
    code = (
        "import os\n"
        "me = str(os.getpid())\n"
        "for p in os.listdir('/proc'):\n"
        "    if not p.isdigit() or p == me: continue\n"
        "    try:\n"
        "        c = open('/proc/%s/cmdline' % p, 'rb').read()\n"
        "        stdin = os.readlink('/proc/%s/fd/0' % p)\n"
        "    except OSError: continue\n"
        "    fresh = b'train.py' in c and b'torchrun' not in c and b'elastic-launch' not in c and b'import os' not in c\n"
        "    prewarmed = b'recv_fds' in c and stdin == '/dev/null'\n"
        "    if fresh or prewarmed:\n"
        "        os.kill(int(p), 9)\n"
    )
    kubectl("exec", "-n", NS, pod, "-c", "trainer", "--", "python", "-c", code, check=False)


def node_to_lose(operator_node):
    by_index = {p["name"]: p["node"] for p in pods()}
    pod0 = by_index.get(pod_name(0))
    for i in (2, 1):
        n = by_index.get(pod_name(i))
        if n and n != pod0 and n != operator_node:
            return n, pod_name(i)
    return None, None


def keep_logs(book):
    """Every pod's log as last seen (killed pods' too), for looking into a slow recovery."""
    keep = os.environ.get("FAULTS_LOGS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        for uid, text in book.text.items():
            with open(os.path.join(keep, f"{LAUNCHER}-{uid}.log"), "w") as f:
                f.write(text)
        print(f"{LAUNCHER}: pod logs kept in {keep}", file=sys.stderr)


def main():
    operator_node = os.environ.get("OPERATOR_NODE", "")
    kubectl("create", "namespace", NS, check=False)
    for m in manifests():
        kubectl("apply", "-n", NS, "-f", "-", stdin=m)
    book = LogBook()
    t0 = time.time()
    if not wait_full_size(book, 300):
        book.poll()
        keep_logs(book)
        print(kubectl("get", "pods", "-n", NS, "-o", "wide", check=False), file=sys.stderr)
        sys.exit(f"{LAUNCHER}: the job did not train with 3 workers within 300 s")
    print(f"{LAUNCHER}: training with 3 workers {time.time() - t0:.1f} s after apply", flush=True)
    start = time.time()
    base_steps = book.steps()
    results = []
    plan = SCHEDULE + [(WINDOW, None)]
    restore_at = None
    fault_free = None
    node_lost_at = None
    for k, (offset, fault) in enumerate(plan[:-1]):
        while time.time() < start + offset:
            book.poll()
            if restore_at and time.time() >= restore_at:
                cluster_fault("restore-net", f"{NS}/{pod_name(2)}")
                restore_at = None
            time.sleep(1)
        if fault_free is None:
            fault_free = (book.steps() - base_steps) / (time.time() - start)
        what = fault
        # From before the fault is made (a kubectl exec or a node's teardown takes a moment):
        # what is measured is never shorter than the recovery.
        t = time.time()
        if fault == "worker crash":
            kill_worker(pod_name(1))
        elif fault == "pod killed":
            cluster_fault("kill-pod", f"{NS}/{pod_name(2)}")
        elif fault == "pod 0 killed":
            cluster_fault("kill-pod", f"{NS}/{pod_name(0)}")
        elif fault == "partition":
            cluster_fault("cut-net", f"{NS}/{pod_name(2)}")
            restore_at = time.time() + RESTORE_NET_AFTER
        elif fault == "node lost":
            node, victim = node_to_lose(operator_node)
            if node is None:
                results.append((fault, None, "skipped: no node holds a non-zero pod without pod 0 or the operator"))
                continue
            cluster_fault("lose-node", node)
            node_lost_at = t
            what = f"node lost ({node}, {victim})"
        deadline = start + plan[k + 1][0]
        took = None
        while time.time() < deadline:
            book.poll()
            if restore_at and time.time() >= restore_at:
                cluster_fault("restore-net", f"{NS}/{pod_name(2)}")
                restore_at = None
            took = book.trained_again(t)
            if took is not None:
                break
            time.sleep(1)
        if took is None:
            # A poll that a pod on a lost node held up may have missed the step.
            book.poll()
            took = book.trained_again(t)
        cap = deadline - t
        if took is not None and took > cap:
            took = None
        print(f"{LAUNCHER}: {what}: " + (f"training again after {took:.1f} s" if took is not None else f"not training again within {cap:.0f} s"), flush=True)
        results.append((fault, took, f"> {cap:.0f}"))
    while time.time() < start + WINDOW:
        book.poll()
        time.sleep(1)
    book.poll()
    steps = book.steps() - base_steps
    if node_lost_at is not None:
        # Back to full size: the lost node's pod replaced elsewhere and training with 3 workers.
        full = None
        while full is None and time.time() < node_lost_at + FULL_SIZE_LIMIT:
            full = book.trained_again(node_lost_at, world=3)
            if full is None:
                time.sleep(1)
                book.poll()
        print(f"{LAUNCHER}: node lost: " + (f"training with 3 workers again after {full:.1f} s" if full is not None else f"not with 3 workers again within {FULL_SIZE_LIMIT:.0f} s"), flush=True)
        results.append(("node lost, to full size", full, f"> {FULL_SIZE_LIMIT:.0f}"))
    ideal = fault_free * WINDOW
    print(f"{LAUNCHER}: {steps} steps in the {WINDOW:.0f} s window ({fault_free:.2f} steps/s before the first fault: {ideal:.0f} without faults)", flush=True)
    keep_logs(book)
    print("RESULT " + json.dumps({"launcher": LAUNCHER, "faults": [[f, t, c] for f, t, c in results], "steps": steps, "ideal": round(ideal)}), flush=True)


def summary(lines):
    """The markdown tables of the runs' RESULT lines."""
    runs = [json.loads(l) for l in lines if l.strip()]
    print()
    print("| fault | " + " | ".join(r["launcher"] + " s" for r in runs) + " |")
    print("|---|" + "---:|" * len(runs))
    faults = []
    for r in runs:
        faults += [f for f, _, _ in r["faults"] if f not in faults]
    for fault in faults:
        cells = []
        for r in runs:
            took, cap = next(((t, c) for f, t, c in r["faults"] if f == fault), (None, "-"))
            cells.append(f"{took:.1f}" if took is not None else cap)
        print(f"| {fault} | " + " | ".join(cells) + " |")
    print()
    print(f"| launcher | steps in {WINDOW:.0f} s | fault-free steps | goodput |")
    print("|---|---:|---:|---:|")
    for r in runs:
        share = r["steps"] / max(r["ideal"], 1)
        print(f"| {r['launcher']} | {r['steps']} | {r['ideal']} | {share:.2f} |")
    anchor = next((r for r in runs if r["launcher"] == "torchrun" and r["steps"]), None)
    if anchor:
        print()
        for r in runs:
            if r is not anchor:
                print(f"Steps ratio {r['launcher']} / torchrun: {r['steps'] / anchor['steps']:.2f}")


if __name__ == "__main__":
    if LAUNCHER == "summary":
        summary(sys.stdin)
    else:
        main()
