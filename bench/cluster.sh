#!/usr/bin/env bash
# Cold start of the local cluster: from `cluster up` to `kubectl get nodes` showing every node
# Ready (etcd, apiserver, controller-manager, scheduler, kubelet stand-in, pod network, DNS),
# REPS times with a fresh state dir each; prints each time and the median. Goal: < 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
export CARGO_TARGET_DIR="$cache/target"
reps="${REPS:-5}"
nodes="${NODES:-3}"
bin="$(tests/cluster/provision.sh 2>/dev/null | tail -1)"
cargo build --release -q -p local-cluster --bin cluster
cluster="$CARGO_TARGET_DIR/release/cluster"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
times=()
for i in $(seq "$reps"); do
  dir="$work/c$i"
  start=$(date +%s.%N)
  "$cluster" up --dir "$dir" --nodes "$nodes" >"$work/up$i.log" 2>&1 &
  pid=$!
  until [ -f "$dir/kubeconfig" ] && [ "$("$bin/kubectl" --kubeconfig "$dir/kubeconfig" get nodes \
      -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
      2>/dev/null | grep -c True)" -eq "$nodes" ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/up$i.log"; exit 1; }
    sleep 0.05
  done
  end=$(date +%s.%N)
  t=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}')
  times+=("$t")
  printf 'run %d: %.2f s to %d Ready nodes\n' "$i" "$t" "$nodes"
  # `up` records its state (read by `down`) right after the nodes registered.
  until [ -f "$dir/cluster.json" ]; do sleep 0.05; done
  RUST_LOG=warn "$cluster" down --dir "$dir" >/dev/null
  wait "$pid"
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median of %d: %.2f s (min %.2f, max %.2f)\n", NR, a[int((NR+1)/2)], a[1], a[NR]}'
