#!/usr/bin/env bash
# Rendezvous benchmarks: elastic-launch (release) vs torchrun 2.15 (c10d), same run.
#   rdzv-scale: 16 to 1024 in-process agents completing one round on one store (ours only).
#   rendezvous.py: first worker start with 2 and 8 agents, restart latency, a node lost, training again.
# Env: REPS, TORCH_REPS, PROC_AGENTS, PARTS, LOST_KINDS, LOST_TIMEOUT (see bench/rendezvous.py),
# SCALE_AGENTS, SCALE_REPS.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
export CARGO_TARGET_DIR="$cache/target"
python="$(tests/scripts/python-env.sh)"
# --bin selects binaries across every -p: name elastic-launch too, or it is not rebuilt.
cargo build --release -q -p elastic-launch -p bench --bin elastic-launch --bin rdzv-scale --bin rdzv-worker
bin="$CARGO_TARGET_DIR/release"
# Every agent's connection is a file descriptor in the store's process (two per agent for the
# separate-process runs: rendezvous and membership watcher).
ulimit -n "$(ulimit -Hn)"
echo "elastic-launch at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- launcher/src || echo ' + uncommitted launcher/src changes'); ulimit -n $(ulimit -n)"
echo
echo "### 2. Scale: N agents complete one round (in-process agents, each on its own TCP connection; ours only)"
echo
"$bin/rdzv-scale" --agents "${SCALE_AGENTS:-16,64,256,1024}" --reps "${SCALE_REPS:-5}"
echo
"$python" bench/rendezvous.py "$bin/elastic-launch" "$(dirname "$python")/torchrun" "$bin/rdzv-worker" "$python"
