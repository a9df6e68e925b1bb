#!/usr/bin/env bash
# Launch overhead and agent memory: elastic-launch (release) vs torchrun 2.15, same run.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
export CARGO_TARGET_DIR="$cache/target"
python="$(tests/scripts/python-env.sh)"
cargo build --release -q -p elastic-launch
"$python" bench/launch.py "$CARGO_TARGET_DIR/release/elastic-launch" "$(dirname "$python")/torchrun"
