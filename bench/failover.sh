#!/usr/bin/env bash
# Leader failover on the local cluster (no nodes): two operators with --leader-elect, the
# release build outside the cluster. REPS times each: stop the leader, at once create a
# one-replica ElasticJob, and time until the job has a status (the first reconcile of the
# replica that took over). Stopped two ways: SIGKILL (a crash: the Lease lapses) and SIGTERM
# (a clean shutdown: the Lease is released). The stopped one comes back as the next standby,
# under a new identity. Knobs: REPS (5), LEASE (seconds, 15), GRACE (seconds, 5), and JOBS (0)
# jobs of PODS (8) pods that stay Pending (no nodes) present throughout: the pods the replica
# that takes over must have cached, and the jobs it reconciles before the new one.
# Prints every time (JSON lines), then medians as a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
export CARGO_TARGET_DIR="$cache/target"
reps="${REPS:-5}"
lease="${LEASE:-15}"
grace="${GRACE:-5}"
jobs="${JOBS:-0}"
pods="${PODS:-8}"
bin="$(tests/cluster/provision.sh 2>/dev/null | tail -1)"
# Built as tests/cluster/images.sh builds the operator (static, explicit --target): the release
# artifacts the other benchmarks and the cluster images use, not a second set.
triple="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q --target "$triple" \
  -p local-cluster -p elasticjob-operator --bin cluster --bin elasticjob-operator
rel="$CARGO_TARGET_DIR/$triple/release"
work="$(mktemp -d)"
dir="$work/cluster"
declare -A pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  stop_cluster "$rel/cluster" "$dir"
  rm -rf "$work"
}
trap cleanup EXIT
start_cluster_without_nodes "$rel/cluster" "$bin/kubectl" "$dir" "$work/up.log"
wait_serviceaccount default

now() { date +%s.%N; }
generation=0
# Starts an operator under a new identity; prints the identity.
start_operator() {
  generation=$((generation + 1))
  local id="op-$generation" port
  port="$(free_port)"
  RUST_LOG=warn "$rel/elasticjob-operator" --launcher-image elasticjob/elastic-launch:bench \
    --metrics-addr "127.0.0.1:$port" --leader-elect --lease-namespace default --identity "$id" \
    --leader-elect-lease-duration "$lease" --leader-elect-renew-grace "$grace" \
    >"$work/$id.log" 2>&1 &
  pids[$id]=$!
  wait_ready "$port" "${pids[$id]}" "$work/$id.log"
  echo "$id"
}
holder() { k get lease elasticjob-operator -n default -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true; }
# job NAME [REPLICAS]
job() {
  cat <<EOF
apiVersion: elasticjob.dev/v1alpha1
kind: ElasticJob
metadata: {name: $1, namespace: default}
spec:
  minReplicas: ${2:-1}
  maxReplicas: ${2:-1}
  template:
    spec:
      containers: [{name: trainer, image: busybox, command: [sleep, "3600"]}]
EOF
}

start_operator >/dev/null
start_operator >/dev/null
until [ -n "$(holder)" ]; do sleep 0.2; done
# The first leader has reconciled once before it is stopped.
job warmup | k apply -f - >/dev/null
until [ -n "$(k get ej warmup -o jsonpath='{.status.state}')" ]; do sleep 0.1; done
if [ "$jobs" -gt 0 ]; then
  for i in $(seq "$jobs"); do job "load-$i" "$pods"; echo ---; done | k apply -f - >/dev/null
  want=$((jobs * pods + 1))
  until [ "$(k get pods -l elasticjob.dev/job-name --no-headers 2>/dev/null | wc -l)" -ge "$want" ]; do sleep 2; done
  echo "{\"load\": \"$jobs jobs of $pods pods\", \"pods\": $want}" >&2
fi

n=0
for _ in $(seq "$reps"); do
  for signal in KILL TERM; do
    n=$((n + 1))
    leader="$(holder)"
    # Renewals land at a random point of the lease: wait a random part of it, as a crash would.
    sleep "$(python3 -c "import random; print(round(random.uniform(0, $lease), 2))")"
    t0="$(now)"
    kill -s "$signal" "${pids[$leader]}"
    job "f$n" | k apply -f - >/dev/null
    until [ -n "$(k get ej "f$n" -o jsonpath='{.status.state}' 2>/dev/null)" ]; do sleep 0.05; done
    t1="$(now)"
    wait "${pids[$leader]}" 2>/dev/null || true
    unset "pids[$leader]"
    echo "{\"stop\": \"SIG$signal\", \"seconds_to_first_reconcile\": $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}'), \"new_leader\": \"$(holder)\"}" | tee -a "$work/failover.jsonl"
    start_operator >/dev/null
  done
done
python3 - "$work/failover.jsonl" "$lease" "$grace" "$jobs" "$pods" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
load = f", {sys.argv[4]} jobs of {sys.argv[5]} pods present" if sys.argv[4] != "0" else ""
print(f"| leader stopped by (lease {sys.argv[2]} s, renewed {sys.argv[3]} s before it lapses{load}) | runs | median s | min s | max s |")
print("|---|---:|---:|---:|---:|")
for stop, label in (("SIGKILL", "SIGKILL (crash)"), ("SIGTERM", "SIGTERM (clean shutdown)")):
    v = [r["seconds_to_first_reconcile"] for r in rows if r["stop"] == stop]
    print(f"| {label} | {len(v)} | {statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f} |")
PY
