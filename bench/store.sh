#!/usr/bin/env bash
# Store throughput and latency, side by side: our store server (bench `store-server`) and
# torch's own TCPStore server (libuv backend, `bench/torch_store_server.py`), driven by the same
# load generator (`store-bench`: N connections, closed loop of SET+GET of 1 KiB values).
# Repetitions alternate between the two servers; the table shows medians and ratios.
#
# Knobs (environment): REPS=3 SECS=5 WARMUP=1 CONNS=1,16,256 VALUE=1024 GEN_THREADS=1
#   SERVER_THREADS= (ours; default: as the launcher runs it, one thread per core up to 8)
#   TARGETS="ours torch"
#   PYTHON= (interpreter with torch; default: tests/scripts/python-env.sh)
#   BIN_DIR= (prebuilt store-server/store-bench; default: cargo build --release -p bench)
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3} SECS=${SECS:-5} WARMUP=${WARMUP:-1} CONNS=${CONNS:-1,16,256} VALUE=${VALUE:-1024}
GEN_THREADS=${GEN_THREADS:-1} SERVER_THREADS=${SERVER_THREADS:-} TARGETS=${TARGETS:-"ours torch"}

if [ -z "${BIN_DIR:-}" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/elasticjob/target}
  cargo build --release -q -p bench
  BIN_DIR=$CARGO_TARGET_DIR/release
fi
case " $TARGETS " in *" torch "*) PYTHON=${PYTHON:-$(tests/scripts/python-env.sh)} ;; esac

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a server whose first stdout line is its port (left in $port); it exits when its stdin
# (a fifo this shell holds open on fd 9) closes. Not to be called in a subshell.
start_server() {
  rm -f "$work/port" "$work/stdin"
  mkfifo "$work/stdin"
  case $1 in
    ours) "$BIN_DIR/store-server" 0 $SERVER_THREADS <"$work/stdin" >"$work/port" & ;;
    torch) "$PYTHON" bench/torch_store_server.py <"$work/stdin" >"$work/port" & ;;
  esac
  server_pid=$!
  exec 9>"$work/stdin"
  for _ in $(seq 600); do [ -s "$work/port" ] && break; sleep 0.1; done
  [ -s "$work/port" ] || { echo "store.sh: $1 server did not start" >&2; exit 1; }
  port=$(head -1 "$work/port")
}

stop_server() {
  exec 9>&-
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

echo "store.sh: $(nproc) cores, REPS=$REPS SECS=$SECS WARMUP=$WARMUP CONNS=$CONNS VALUE=$VALUE GEN_THREADS=$GEN_THREADS SERVER_THREADS=${SERVER_THREADS:-as shipped}" >&2
for rep in $(seq "$REPS"); do
  for target in $TARGETS; do
    start_server "$target"
    "$BIN_DIR/store-bench" --port "$port" --conns "$CONNS" --secs "$SECS" --warmup "$WARMUP" \
      --value "$VALUE" --threads "$GEN_THREADS" | sed "s/^/target=$target rep=$rep /" | tee -a "$work/results" >&2
    stop_server
  done
done

# Medians per (target, conns) and the ratios ours/torch (throughput) and torch/ours (latency).
python3 - "$work/results" <<'EOF'
import collections, statistics, sys

runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split())
    runs[(f["target"], int(f["conns"]))].append(f)

def med(target, n, key):
    vals = [float(r[key]) for r in runs.get((target, n), [])]
    return statistics.median(vals) if vals else None

conns = sorted({n for _, n in runs})
print("| conns | ours ops/s | torch ops/s | ops/s ours/torch | ours p50 µs | torch p50 µs | ours p99 µs | torch p99 µs | p99 torch/ours |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
fmt = lambda v, spec: "-" if v is None else format(v, spec)
for n in conns:
    o, t = med("ours", n, "ops_per_s"), med("torch", n, "ops_per_s")
    op50, tp50 = med("ours", n, "p50_us"), med("torch", n, "p50_us")
    op99, tp99 = med("ours", n, "p99_us"), med("torch", n, "p99_us")
    ratio = lambda a, b: None if a is None or b is None else a / b
    print(f"| {n} | {fmt(o, '.0f')} | {fmt(t, '.0f')} | {fmt(ratio(o, t), '.2f')} | {fmt(op50, '.0f')} | "
          f"{fmt(tp50, '.0f')} | {fmt(op99, '.0f')} | {fmt(tp99, '.0f')} | {fmt(ratio(tp99, op99), '.2f')} |")
EOF
