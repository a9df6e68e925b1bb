#!/usr/bin/env bash
# The operator at scale (issue 16), on the local cluster with no kubelets: kwok
# (tests/cluster/components/kwok/build.sh) keeps NODES fake Nodes Ready and plays the pods'
# lifecycle (Running with a pod IP in 127.64.0.0/10, no containers), and bench/launcher-sim
# answers every pod's launcher status endpoint on those loopback addresses (one socket on
# 0.0.0.0:29401; a fraction SILENT of the pod IPs never answers). The operator is the release
# build, run outside the cluster as bench/operator.sh does.
# 1. JOBS jobs × PODS pods, all Running; then STEADY_SECONDS of steady state: operator CPU and
#    RSS, the apiserver's requests by verb and resource per running job per minute (the
#    apiserver's own apiserver_request_total; the operator is the only client of elasticjobs
#    and the only one listing pods) and the operator's own (its /metrics), reconcile p50/p99
#    within the window.
#    Then the events in namespace scale by reason, reporting controller and involved kind
#    (appended to $work/events.log and printed to stderr; the top reasons in the final tables),
#    to see who writes events at every reconcile.
# 2. FAILURES times, one running pod of one of those jobs is failed (status patched to Failed,
#    exit code 1): seconds until the job's status records it and until its replacement runs.
#    The jobs set failurePolicy.backoff {initialSeconds: 0, maxSeconds: 0} (the default waits
#    10 s before recreating a failed pod, by design), so the replacement time measures the
#    operator's reaction: failure -> status record -> recreate -> kwok Running.
# 3. With BIG>0 (default 1024): the JOBS jobs are deleted, then a BIG-pod job against a plain
#    client creating the same pods (bench/operator-bench create-job / create-plain, REPS runs
#    each), and the operator's RSS after.
# Knobs: JOBS (1000) PODS (64) NODES (JOBS×PODS/1000+2, 1000 pods each) SILENT (0)
# STEADY_SECONDS (120) FAILURES (20) BIG (1024) REPS (2) OPERATOR_ARGS.
# Prints the raw measurements (JSON lines) and markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
export CARGO_TARGET_DIR="$cache/target"
jobs="${JOBS:-1000}"
pods="${PODS:-64}"
per_node=1000
nodes="${NODES:-$(( jobs * pods / per_node + 2 ))}"
silent="${SILENT:-0}"
steady="${STEADY_SECONDS:-120}"
failures="${FAILURES:-20}"
big="${BIG:-1024}"
reps="${REPS:-2}"
status_port=29401
bin="$(tests/cluster/provision.sh 2>/dev/null | tail -1)"
kwok_dir="$(tests/cluster/components/kwok/build.sh | tail -1)"
# Built as tests/cluster/images.sh builds the operator (static, explicit --target): one set of
# release artifacts in the shared target dir instead of two.
triple="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q --target "$triple" -p local-cluster -p elasticjob-operator -p bench \
  --bin cluster --bin elasticjob-operator --bin operator-bench --bin operator-scale --bin launcher-sim
rel="$CARGO_TARGET_DIR/$triple/release"
work="$(mktemp -d)"
dir="$work/cluster"
op_pid="" kwok_pid="" sim_pid=""
cleanup() {
  for p in $op_pid $kwok_pid $sim_pid; do kill "$p" 2>/dev/null || true; done
  stop_cluster "$rel/cluster" "$dir"
  if [ -n "${KEEP_LOGS:-}" ]; then cp -r "$work" "$KEEP_LOGS" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "operator_scale: $*" >&2; }

ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
"$rel/launcher-sim" --port "$status_port" --silent "$silent" 2>"$work/sim.log" &
sim_pid=$!
start_cluster_without_nodes "$rel/cluster" "$bin/kubectl" "$dir" "$work/up.log"

# kwok: nodes renew their Lease every 5 s (duration 20 s; the local cluster's node grace is 12 s).
"$kwok_dir/bin/kwok" --kubeconfig "$KUBECONFIG" --config "$kwok_dir/kwok.yaml" \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr 127.64.0.0/10 --node-ip 127.0.0.1 --node-lease-duration-seconds 20 \
  --server-address 127.0.0.1:0 >"$work/kwok.log" 2>&1 &
kwok_pid=$!
"$rel/operator-scale" nodes --count "$nodes" --pods "$per_node" | tee "$work/nodes.jsonl"
until [ "$(k get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" -ge "$nodes" ]; do
  kill -0 "$kwok_pid" 2>/dev/null || { tail -20 "$work/kwok.log" >&2; exit 1; }
  sleep 1
done
log "$nodes kwok nodes Ready"

port="$(free_port)"
# shellcheck disable=SC2086 # OPERATOR_ARGS is a list of flags
RUST_LOG=warn "$rel/elasticjob-operator" --launcher-image elasticjob/elastic-launch:bench \
  --metrics-addr "127.0.0.1:$port" ${OPERATOR_ARGS:-} >"$work/operator.log" 2>&1 &
op_pid=$!
wait_ready "$port" "$op_pid" "$work/operator.log"
k create namespace scale >/dev/null
wait_serviceaccount scale

echo "== $jobs jobs × $pods pods on $nodes kwok nodes, silent launchers: $silent"
"$rel/operator-scale" create-jobs --count "$jobs" --replicas "$pods" | tee "$work/run.jsonl"
# Let the creation burst settle (statuses written, requeues spread) before measuring.
sleep "${SETTLE_SECONDS:-30}"
steady_start="$(date +%s)"
"$rel/operator-scale" steady --seconds "$steady" --pid "$op_pid" --jobs "$jobs" \
  --metrics "http://127.0.0.1:$port/metrics" --sim "http://127.0.0.1:$status_port/sim-stats" \
  | tee -a "$work/run.jsonl"
# Who writes events in steady state: the events in namespace scale by reason and reporter (all
# of them, creation burst included; "in window" counts those last seen since the window began).
if k get events -n scale -o json >"$work/events.json" 2>>"$work/events.log"; then
  python3 - "$work/events.json" "$steady_start" >"$work/events.jsonl" <<'PY' || log "events: summary failed"
import collections, datetime, json, sys
items = json.load(open(sys.argv[1])).get("items", [])
since = float(sys.argv[2])
def seen(e):
    t = (e.get("series") or {}).get("lastObservedTime") or e.get("lastTimestamp") \
        or e.get("eventTime") or e["metadata"].get("creationTimestamp")
    if not t:
        return 0.0
    t = t.rstrip("Z").split(".")[0]
    return datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
rows = collections.defaultdict(lambda: [0, 0, 0])
for e in items:
    who = e.get("reportingComponent") or e.get("reportingController") \
        or (e.get("source") or {}).get("component") or "?"
    key = (e.get("reason") or "?", who, (e.get("involvedObject") or {}).get("kind") or "?")
    n = (e.get("series") or {}).get("count") or e.get("count") or 1
    r = rows[key]
    r[0] += 1
    r[1] += n
    r[2] += seen(e) >= since
for (reason, who, kind), (objects, count, window) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
    print(json.dumps({"mode": "events", "reason": reason, "reporter": who, "kind": kind,
                      "objects": objects, "count": count, "in_window": window}))
PY
  { echo "== events in namespace scale after the steady window"; cat "$work/events.jsonl"; } \
    | tee -a "$work/events.log" >&2
  cat "$work/events.jsonl" >>"$work/run.jsonl"
else
  log "events: kubectl get events failed (see $work/events.log)"
fi
"$rel/operator-scale" failures --count "$failures" --jobs "$jobs" | tee -a "$work/run.jsonl"

if [ "$big" -gt 0 ]; then
  k delete namespace scale --wait=false >/dev/null
  until [ "$(k get pods -A -o name | wc -l)" -eq 0 ]; do sleep 1; done
  echo "== one $big-pod job vs a plain client, $reps runs each (alternating)"
  for i in $(seq "$reps"); do
    "$rel/operator-bench" create-plain --name "plain$i" --replicas "$big" | tee -a "$work/big.jsonl"
    until [ "$(k get pods -o name | wc -l)" -eq 0 ]; do sleep 0.5; done
    "$rel/operator-bench" create-job --name "big$i" --replicas "$big" | tee -a "$work/big.jsonl"
    awk '/VmRSS/ {printf "{\"mode\":\"rss\",\"rss_mib\":%.1f}\n", $2/1024}' "/proc/$op_pid/status" | tee -a "$work/big.jsonl"
    k delete ej "big$i" --wait=true >/dev/null
    until [ "$(k get pods -o name | wc -l)" -eq 0 ]; do sleep 0.5; done
  done
fi

python3 - "$work/run.jsonl" "$work/big.jsonl" "$silent" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {r["mode"]: r for r in rows}
c, s, f = by["create-jobs"], by["steady"], by["failures"]
jobs, pods = c["jobs"], c["replicas"]
print()
print(f"{jobs} jobs × {pods} pods ({jobs * pods} pods), {sys.argv[3]} of launchers silent, steady state over {s['seconds']:.0f} s:")
print()
print("| measure | value | goal |")
print("|---|---:|---|")
print(f"| all jobs created / all pods Running after | {c['seconds_to_created']:.0f} s / {c['seconds_to_all_running']:.0f} s | |")
print(f"| operator CPU | {s['operator_cpu_percent']:.1f} % of a core | |")
print(f"| operator RSS (max in window) | {s['operator_rss_mib']:.0f} MiB ({s['operator_rss_max_mib']:.0f}) | |")
print(f"| reconciles per job per minute | {s['reconciles_per_job_per_minute']:.2f} | |")
p50, p99 = s["reconcile_p50_ms"], s["reconcile_p99_ms"]
fmt = lambda v: "n/a" if v is None else f"{v:.0f} ms"
print(f"| reconcile p50 / p99 | {fmt(p50)} / {fmt(p99)} | p99 < 1 s |")
print(f"| launcher status requests | {s['launcher_status_requests_per_second']:.0f} /s | |")
req = s["requests"]
writes = {"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "CREATE", "UPDATE", "APPLY"}
ours = ("elasticjobs", "pods", "services", "events")
def per(pred):
    return sum(v["per_job_per_minute"] for k, v in req.items() if pred(*k.split(" ", 1)))
w = per(lambda verb, res: verb in writes and res.split("/")[0] in ("elasticjobs", "services", "events") )
w_pods = per(lambda verb, res: verb in writes and res.split("/")[0] == "pods")
lists = per(lambda verb, res: verb == "LIST" and res.split("/")[0] in ours)
print(f"| writes of elasticjobs, services, events per job per minute | {w:.2f} | ≤ 1 |")
print(f"| writes of pods per job per minute (kwok's status writes count here too) | {w_pods:.2f} | |")
print(f"| LISTs of elasticjobs, pods, services, events per job per minute | {lists:.2f} | 0 |")
# The operator's own count (its elasticjob_operator_api_requests_total), exact where the
# apiserver's mixes in other clients; the leader Lease's renewals left out.
ours_req = s.get("operator_requests")
if ours_req is not None:
    def ours_per(pred):
        return sum(v["per_job_per_minute"] for k, v in ours_req.items()
                   if k.split(" ", 1)[1] != "leases" and pred(k.split(" ", 1)[0]))
    print(f"| the operator's own writes per job per minute (its metrics; Lease renewals left out) | {ours_per(lambda v: v not in ('GET', 'LIST', 'WATCH')):.2f} | ≤ 1 |")
    print(f"| the operator's own LISTs / GETs per job per minute | {ours_per(lambda v: v == 'LIST'):.2f} / {ours_per(lambda v: v == 'GET'):.2f} | 0 |")
print()
print(f"apiserver requests in the window, by verb and resource (all clients; per running job per minute):")
print()
print("| verb resource | total | per job per minute |")
print("|---|---:|---:|")
for k, v in sorted(req.items(), key=lambda kv: -kv[1]["total"]):
    print(f"| {k} | {v['total']:.0f} | {v['per_job_per_minute']:.3f} |")
print()
print(f"{f['failures']} pod failures while the {jobs} jobs run (seconds from the pod's Failed status):")
print()
print("| | p50 | max | goal |")
print("|---|---:|---:|---|")
print(f"| failure in the job's status | {f['recorded_p50_s']:.2f} | {f['recorded_max_s']:.2f} | < 2 s p99 |")
print(f"| replacement pod Running (no backoff) | {f['replaced_p50_s']:.2f} | {f['replaced_max_s']:.2f} | < 2 s p99 |")
events = [r for r in rows if r["mode"] == "events"]
if events:
    print()
    print("events in the scale namespace by reason (top 10 by count; in window: last seen during the steady window):")
    print()
    print("| reason | reporter | involved kind | events | count | in window |")
    print("|---|---|---|---:|---:|---:|")
    for e in events[:10]:
        print(f"| {e['reason']} | {e['reporter']} | {e['kind']} | {e['objects']} | {e['count']} | {e['in_window']} |")
big = sys.argv[2]
if os.path.exists(big):
    rows = [json.loads(l) for l in open(big) if l.startswith("{")]
    runs = {m: [r["pods_per_second"] for r in rows if r["mode"] == m] for m in ("create-plain", "create-job")}
    med = {m: statistics.median(v) for m, v in runs.items()}
    rss = [r["rss_mib"] for r in rows if r["mode"] == "rss"]
    n = len(runs["create-plain"])
    pods = next(r["pods"] for r in rows if r["mode"] == "create-job")
    print()
    print(f"One {pods}-pod job, {sys.argv[3]} of launchers silent:")
    print()
    print(f"| {pods} pods, pods/s | " + " | ".join(f"run {i + 1}" for i in range(n)) + " | median | ratio (goal ≥ 0.9) |")
    print("|---|" + "---:|" * (n + 2))
    for m, label, ratio in (("create-plain", "plain client", ""),
                            ("create-job", "operator (job -> all pods seen)", f"{med['create-job'] / med['create-plain']:.2f}")):
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in runs[m]) + f" | {med[m]:.1f} | {ratio} |")
    print(f"| operator RSS after each run (MiB) | " + " | ".join(f"{v:.0f}" for v in rss) + " | | |")
PY
