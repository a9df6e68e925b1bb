#!/usr/bin/env bash
# The local cluster, warm (binaries and images cached):
#  1. start: from `cluster up` (a fresh state dir: new PKI, new etcd, new pod network, new nodes)
#     to `kubectl get nodes` showing every node Ready;
#  2. pod start: PODS pods created one after another, each from `kubectl create` to phase
#     Running (the PyTorch image, already on the nodes, running `sleep`).
# REPS starts, each stopped with `cluster down`; the pod starts are measured on the last
# cluster. Prints every time, then the medians as a markdown table. Goals: start < 15 s, pod
# start p50 < 2 s. (The numbers side by side with the former kubelet stand-in, in the git
# history of bench/README.md, were taken with this script at commit c2181bf, where
# `cluster up --runtime stand-in` still existed.)
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
export CARGO_TARGET_DIR="$cache/target"
reps="${REPS:-5}"
nodes="${NODES:-3}"
pods="${PODS:-10}"
bin="$(tests/cluster/provision.sh 2>/dev/null | tail -1)"
images="$(tests/cluster/images.sh 2>/dev/null | tail -1)"
trainer="ghcr.io/elasticjob/pytorch:2.15.0"
cargo build --release -q -p local-cluster --bin cluster
cluster="$CARGO_TARGET_DIR/release/cluster"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
median() {
  sort -n | awk -v what="$1" '{a[NR]=$1} END {printf "| %s | %d | %.2f | %.2f | %.2f |\n", what, NR, a[int((NR+1)/2)], a[1], a[NR]}'
}

starts=()
times=()
for i in $(seq "$reps"); do
  dir="$work/c$i"
  kc="$dir/kubeconfig"
  start=$(now)
  "$cluster" up --dir "$dir" --nodes "$nodes" --images "$images" >"$work/up$i.log" 2>&1 &
  pid=$!
  until [ -f "$kc" ] && [ "$("$bin/kubectl" --kubeconfig "$kc" get nodes \
      -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
      2>/dev/null | grep -c True)" -eq "$nodes" ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/up$i.log"; exit 1; }
    sleep 0.05
  done
  t=$(since "$start")
  starts+=("$t")
  printf 'run %d: %.2f s to %d Ready nodes\n' "$i" "$t" "$nodes"
  until [ -f "$dir/cluster.json" ]; do sleep 0.05; done
  if [ "$i" -eq "$reps" ]; then
    until "$bin/kubectl" --kubeconfig "$kc" get serviceaccount default >/dev/null 2>&1; do sleep 0.1; done
    times=()
    for p in $(seq "$pods"); do
      start=$(now)
      "$bin/kubectl" --kubeconfig "$kc" run "p$p" --image="$trainer" --restart=Never \
        --command -- sleep 3600 >/dev/null
      until [ "$("$bin/kubectl" --kubeconfig "$kc" get pod "p$p" -o jsonpath='{.status.phase}')" = Running ]; do
        sleep 0.05
      done
      times+=("$(since "$start")")
      printf 'pod %d: %.2f s from create to Running\n' "$p" "${times[-1]}"
    done
  fi
  RUST_LOG=warn "$cluster" down --dir "$dir" >/dev/null
  wait "$pid" || true
done
echo
echo "| measured | samples | median s | min s | max s |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${starts[@]}" | median "start to $nodes Ready nodes"
printf '%s\n' "${times[@]}" | median "pod create to Running ($pods pods, last cluster)"
