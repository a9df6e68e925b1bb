#!/usr/bin/env bash
# Builds the fuzz targets on stable Rust and runs each for a bounded time.
#
#   fuzz/run.sh build                  build every target
#   fuzz/run.sh run SECONDS [TARGET..] build, then run each target (default: all) for SECONDS
#   fuzz/run.sh repro TARGET FILE      run one input once (a crash reproducer, a corpus file)
#
# Stable Rust has no -Zsanitizer, which cargo-fuzz uses by default; the coverage that guides
# libFuzzer comes from LLVM's SanitizerCoverage pass, which stable rustc runs when asked with
# -Cpasses and -Cllvm-args (the flags below are those cargo-fuzz passes, less the nightly-only
# ones). --target keeps them off build scripts and proc macros. The build goes to its own
# target directory, never the workspace's, so the flags rebuild nothing of anyone else's.
#
# Crashes (and timeouts, out-of-memory inputs) are saved under $FUZZ_HOME/artifacts/TARGET/;
# the growing corpus under $FUZZ_HOME/corpus/TARGET/ (the seeds in fuzz/corpus/TARGET/ are read,
# never written). The script exits 1, naming the reproducer, when a target fails.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob
FUZZ_HOME=${FUZZ_HOME:-$cache/fuzz}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$cache/fuzz-target}
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$CARGO_TARGET_DIR/$triple/release
targets=(store_codec store_server launcher_cli operator_termination operator_status)

usage() {
  sed -n '2,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

build() {
  local flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
  )
  echo "fuzz: building ${targets[*]} into $CARGO_TARGET_DIR" >&2
  (cd "$here" && RUSTFLAGS="${flags[*]}" cargo build --locked --quiet --release \
    --target "$triple" --bins)
}

# Options for one target: its dictionary, and a longer input limit for the text targets.
options() {
  local target=$1
  local opts=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  if [[ -f $here/dicts/$target.dict ]]; then
    opts+=("-dict=$here/dicts/$target.dict")
  fi
  case $target in
    store_codec | store_server) opts+=(-max_len=4096) ;;
    *) opts+=(-max_len=8192) ;;
  esac
  printf '%s\n' "${opts[@]}"
}

run_one() {
  local target=$1 seconds=$2
  local corpus=$FUZZ_HOME/corpus/$target artifacts=$FUZZ_HOME/artifacts/$target/
  local log=$FUZZ_HOME/logs/$target.log
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  local opts
  mapfile -t opts < <(options "$target")
  echo "fuzz: $target for ${seconds}s (log: $log)" >&2
  local status=0
  "$bin_dir/$target" "${opts[@]}" -max_total_time="$seconds" \
    -artifact_prefix="$artifacts" "$corpus" "$here/corpus/$target" >"$log" 2>&1 || status=$?
  # The last status line: executions, coverage, corpus.
  grep -E '^#[0-9]+' "$log" | tail -n 1 | sed "s/^/fuzz: $target: /" >&2 || true
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$log" |
    sed "s/^/fuzz: $target: /" >&2 || true
  if ((status != 0)); then
    local crash
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    tail -n 40 "$log" >&2
    echo "fuzz: $target FAILED (status $status); reproducer: ${crash:-see $log}" >&2
    echo "fuzz: reproduce with: fuzz/run.sh repro $target ${crash:-<file>}" >&2
    return 1
  fi
}

cmd=${1:-}
case $cmd in
  build)
    build
    ;;
  run)
    (($# >= 2)) || usage
    seconds=$2
    shift 2
    if (($# > 0)); then targets=("$@"); fi
    build
    failed=()
    for t in "${targets[@]}"; do
      run_one "$t" "$seconds" || failed+=("$t")
    done
    echo "fuzz: crashes are saved under $FUZZ_HOME/artifacts/<target>/" >&2
    if ((${#failed[@]} > 0)); then
      echo "fuzz: FAILED: ${failed[*]}" >&2
      exit 1
    fi
    ;;
  repro)
    (($# == 3)) || usage
    targets=("$2")
    build
    exec "$bin_dir/$2" "$3"
    ;;
  *) usage ;;
esac
