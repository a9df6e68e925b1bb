#!/usr/bin/env bash
# Faults on the local cluster, elastic-launch (an ElasticJob, the chart's and the CRD's defaults)
# side by side with torchrun as the pods' entrypoint (a StatefulSet of the same image behind a
# headless Service), each on a fresh 3-node cluster, the same fault schedule for both:
# worker crash, pod killed, pod 0 killed, partition, node lost (bench/faults.py says how each
# is made and measured). Prints each run's lines, then two markdown tables: seconds from each
# fault to training again, and the steps trained in the 240 s window (goodput).
# LAUNCHERS="elastic elastic-prewarm torchrun" (default) picks what runs (elastic-prewarm: the
# same ElasticJob with launcher.prewarm [torch]); STEP_SLEEP (0.1) the per-step sleep.
# Every pod's log is kept under ~/.cache/elasticjob/bench-faults/<time>/ (killed pods' too).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
export CARGO_TARGET_DIR="$cache/target"
launchers="${LAUNCHERS:-elastic elastic-prewarm torchrun}"
bin="$(tests/cluster/provision.sh 2>/dev/null | tail -1)"
images="$(tests/cluster/images.sh 2>/dev/null | tail -1)"
cargo build --release -q -p local-cluster --bin cluster
export CLUSTER="$CARGO_TARGET_DIR/release/cluster" KUBECTL="$bin/kubectl"
work="$(mktemp -d)"
dir=""
cleanup() {
  [ -z "$dir" ] || RUST_LOG=warn "$CLUSTER" down --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The pods' logs of each run (stderr names the folder): what a slow recovery waited for.
logs="$cache/bench-faults/$(date -u +%Y%m%dT%H%M%SZ)"
results=()
for launcher in $launchers; do
  dir="$work/$launcher"
  export CLUSTER_DIR="$dir" KUBECONFIG="$dir/kubeconfig"
  "$CLUSTER" up --dir "$dir" --images "$images" >"$work/$launcher-up.log" 2>&1 &
  pid=$!
  until [ -f "$dir/cluster.json" ]; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$work/$launcher-up.log" >&2; exit 1; }
    sleep 0.5
  done
  operator_node=""
  if [ "$launcher" != torchrun ]; then
    "$bin/helm" install elasticjob charts/elasticjob-operator -n elasticjob-system \
      --create-namespace --wait --timeout 180s >/dev/null
    operator_node=$("$KUBECTL" get pods -n elasticjob-system -o jsonpath='{.items[0].spec.nodeName}')
  fi
  OPERATOR_NODE="$operator_node" FAULTS_LOGS="$logs" python3 bench/faults.py "$launcher" \
    | tee "$work/$launcher.out"
  results+=("$(sed -n 's/^RESULT //p' "$work/$launcher.out")")
  RUST_LOG=warn "$CLUSTER" down --dir "$dir" >/dev/null
  wait "$pid" || true
  dir=""
done

printf '%s\n' "${results[@]}" | python3 bench/faults.py summary
