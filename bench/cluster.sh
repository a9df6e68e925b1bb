#!/usr/bin/env bash
# The local cluster, warm (binaries and images cached):
#  1. start: from `cluster up` (a fresh state dir: new PKI, new etcd, new pod network, new nodes)
#     to `kubectl get nodes` showing every node Ready;
#  2. pod start: PODS pods created one after another, each from `kubectl create` to phase
#     Running (the PyTorch image, already on the nodes, running `sleep`).
# REPS starts per runtime (RUNTIMES, default: containerd), each stopped with `cluster down`; the
# pod starts are measured on the last cluster of each runtime. Prints every time and the medians.
# Goals (real nodes): start < 15 s, pod start p50 < 2 s.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
export CARGO_TARGET_DIR="$cache/target"
reps="${REPS:-5}"
nodes="${NODES:-3}"
pods="${PODS:-10}"
runtimes="${RUNTIMES:-containerd}"
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
  sort -n | awk -v what="$1" '{a[NR]=$1} END {printf "%s: median of %d: %.2f s (min %.2f, max %.2f)\n", what, NR, a[int((NR+1)/2)], a[1], a[NR]}'
}

for runtime in $runtimes; do
  args=(--runtime "$runtime" --nodes "$nodes")
  case "$runtime" in
    containerd) args+=(--images "$images") ;;
    # The kubelet stand-in maps the image to the PyTorch venv on the host.
    stand-in) args+=(--image-map "$trainer=$cache/venv/bin") ;;
  esac
  starts=()
  for i in $(seq "$reps"); do
    dir="$work/$runtime$i"
    kc="$dir/kubeconfig"
    start=$(now)
    "$cluster" up --dir "$dir" "${args[@]}" >"$work/up-$runtime$i.log" 2>&1 &
    pid=$!
    until [ -f "$kc" ] && [ "$("$bin/kubectl" --kubeconfig "$kc" get nodes \
        -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
        2>/dev/null | grep -c True)" -eq "$nodes" ]; do
      kill -0 "$pid" 2>/dev/null || { cat "$work/up-$runtime$i.log"; exit 1; }
      sleep 0.05
    done
    t=$(since "$start")
    starts+=("$t")
    printf '%s run %d: %.2f s to %d Ready nodes\n' "$runtime" "$i" "$t" "$nodes"
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
      done
      printf '%s\n' "${times[@]}" | median "$runtime pod create to Running ($pods pods)"
    fi
    RUST_LOG=warn "$cluster" down --dir "$dir" >/dev/null
    wait "$pid" || true
  done
  printf '%s\n' "${starts[@]}" | median "$runtime start to $nodes Ready nodes"
done
