#!/usr/bin/env bash
# Operator benchmarks on the local cluster (no nodes: pods stay Pending, so only the control
# plane's object creation is measured, not pod start-up):
# 1. a 256-replica ElasticJob: seconds from creating the job until a watch has seen all 256 pods,
#    against a plain kube client creating the same 256 pods (the operator's own pod objects, same
#    concurrency) on the same apiserver, alternating, REPS times; medians and their ratio.
# 2. 500 one-replica jobs: operator RSS and reconcile latency p50/p99 (from its histogram).
# Prints the raw measurements (JSON lines), each part's summary as a markdown table.
# OPERATOR_ARGS adds flags to the operator (e.g. "--concurrency 64").
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
export CARGO_TARGET_DIR="$cache/target"
reps="${REPS:-3}"
replicas="${REPLICAS:-256}"
jobs="${JOBS:-500}"
bin="$(tests/cluster/provision.sh 2>/dev/null | tail -1)"
cargo build --release -q -p local-cluster -p elasticjob-operator -p bench \
  --bin cluster --bin elasticjob-operator --bin operator-bench
rel="$CARGO_TARGET_DIR/release"
work="$(mktemp -d)"
dir="$work/cluster"
op_pid=""
cleanup() {
  if [ -n "$op_pid" ]; then kill "$op_pid" 2>/dev/null || true; fi
  stop_cluster "$rel/cluster" "$dir"
  rm -rf "$work"
}
trap cleanup EXIT
start_cluster_without_nodes "$rel/cluster" "$bin/kubectl" "$dir" "$work/up.log"
port="$(free_port)"
start_operator() {
  # shellcheck disable=SC2086 # OPERATOR_ARGS is a list of flags
  RUST_LOG=warn "$rel/elasticjob-operator" --launcher-image elasticjob/elastic-launch:bench \
    --metrics-addr "127.0.0.1:$port" ${OPERATOR_ARGS:-} >"$work/operator.log" 2>&1 &
  op_pid=$!
  wait_ready "$port" "$op_pid" "$work/operator.log"
}
start_operator
wait_serviceaccount default

echo "== $replicas-replica job vs a plain client, $reps runs each (alternating)"
for i in $(seq "$reps"); do
  "$rel/operator-bench" create-plain --name "plain$i" --replicas "$replicas" | tee -a "$work/create.jsonl"
  "$rel/operator-bench" create-job --name "big$i" --replicas "$replicas" | tee -a "$work/create.jsonl"
  k delete ej "big$i" --wait=true >/dev/null
  until [ "$(k get pods -o name | wc -l)" -eq 0 ]; do sleep 0.5; done
done
python3 - "$work/create.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
runs = {m: [r["pods_per_second"] for r in rows if r["mode"] == m] for m in ("create-plain", "create-job")}
med = {m: statistics.median(v) for m, v in runs.items()}
n = len(runs["create-plain"])
print()
print(f"| {rows[0]['pods']} pods, pods/s | " + " | ".join(f"run {i + 1}" for i in range(n)) + " | median | ratio (goal >= 0.8) |")
print("|---|" + "---:|" * (n + 2))
for m, label, ratio in (("create-plain", "plain client", ""),
                        ("create-job", "operator (job -> all pods seen)", f"{med['create-job'] / med['create-plain']:.2f}")):
    print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in runs[m]) + f" | {med[m]:.1f} | {ratio} |")
print()
PY

echo "== $jobs one-replica jobs: operator memory and reconcile latency"
kill "$op_pid"; wait "$op_pid" 2>/dev/null || true
start_operator
k create namespace many >/dev/null
"$rel/operator-bench" create-jobs --count "$jobs" --namespace many | tee "$work/many.jsonl"
sleep 10
"$rel/operator-bench" quantiles --metrics "http://127.0.0.1:$port/metrics" | tee -a "$work/many.jsonl"
awk '/VmRSS|VmHWM/ {printf "%s %.1f MiB\n", $1, $2/1024}' "/proc/$op_pid/status" | tee "$work/rss"
python3 - "$work/many.jsonl" "$work/rss" <<'PY'
import json, sys
r = {}
for l in open(sys.argv[1]):
    r.update(json.loads(l))
rss = dict(l.split(None, 1) for l in open(sys.argv[2]))
print()
print(f"| {r['jobs']} one-replica jobs created at once | |")
print("|---|---:|")
print(f"| seconds until every job has a status | {r['seconds_to_all_status']:.1f} |")
print(f"| reconcile duration p50 / p99 | {r['p50_ms']:.0f} ms / {r['p99_ms']:.0f} ms |")
print(f"| reconciles observed | {r['reconciles']} |")
print(f"| operator RSS after (VmRSS; VmHWM) | {rss['VmRSS:'].strip()}; {rss['VmHWM:'].strip()} |")
PY
