#!/usr/bin/env bash
# Runs one benchmark and records it: bench/record.sh NAME [VAR=value ...]
#
# Runs bench/NAME.sh with the given environment knobs and writes
# bench/results/NAME/<UTC yyyy-mm-ddTHHMMSSZ>-<short commit>.md: a header (the command as typed,
# the commit, the date, CPU model, cores, memory, kernel, load average before and after, wall
# seconds) and the script's full stdout in a fenced block. stdout is also shown on the terminal;
# stderr goes only to the terminal. The script's exit status is propagated, and a failed run
# records nothing. bench/render.py then regenerates bench/README.md from the newest results.
#
#   bench/record.sh launch REPS=10
#   bench/record.sh store TARGETS="ours torch" SECS=3
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  local names=() f
  for f in bench/*.sh; do
    f=${f#bench/}
    [ "$f" = record.sh ] || names+=("${f%.sh}")
  done
  echo "usage: bench/record.sh NAME [VAR=value ...]   NAME: ${names[*]}" >&2
  exit 2
}
[ $# -ge 1 ] || usage
name=$1
shift
case $name in
  "" | record | *[!A-Za-z0-9_-]*) usage ;;
esac
[ -f "bench/$name.sh" ] || usage

# The knobs, and the command as a user would type it (values quoted only where the shell needs it).
knobs=()
typed=""
for kv in "$@"; do
  [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || { echo "record.sh: not VAR=value: $kv" >&2; usage; }
  var=${kv%%=*}
  val=${kv#*=}
  if [[ $val =~ ^[A-Za-z0-9_./:,@%+=-]*$ ]]; then
    typed+="$var=$val "
  else
    typed+="$var='${val//\'/\'\\\'\'}' "
  fi
  knobs+=("$kv")
done
typed+="bench/$name.sh"

# Provenance, taken before the run. Result files of earlier runs (bench/results/) are not a
# change to what is measured, so they do not count as uncommitted changes.
commit=$(git rev-parse --short HEAD)
commit_desc=$commit
if [ -n "$(git status --porcelain -- . ':(exclude)bench/results')" ]; then
  commit_desc="$commit + uncommitted changes"
fi
now=$(date +%s)
stamp=$(date -u -d "@$now" +%Y-%m-%dT%H%M%SZ)
date_utc=$(date -u -d "@$now" +%Y-%m-%dT%H:%M:%SZ)
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
[ -n "$cpu" ] || cpu=$(uname -m)
cores=$(nproc)
mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
mem=$(awk -v kb="$mem_kb" 'BEGIN {printf "%.1f GiB (MemTotal %d kB)", kb / 1048576, kb}')
kernel=$(uname -r)
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

dir="bench/results/$name"
out="$dir/$stamp-$commit.md"
mkdir -p "$dir"
[ ! -e "$out" ] || { echo "record.sh: $out already exists" >&2; exit 1; }
raw=$(mktemp)
tmp=$(mktemp "$dir/.record.XXXXXX")
trap 'rm -f "$raw" "$tmp"; rmdir "$dir" 2>/dev/null || true' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "record.sh: $typed (commit $commit_desc)" >&2
load_before=$(loadavg)
t0=$(date +%s.%N)
set +e
env "${knobs[@]}" "bench/$name.sh" | tee "$raw"
status=${PIPESTATUS[0]}
set -e
t1=$(date +%s.%N)
load_after=$(loadavg)
if [ "$status" -ne 0 ]; then
  echo "record.sh: bench/$name.sh exited with $status; nothing recorded" >&2
  exit "$status"
fi
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')

# A fence longer than any run of backticks in the output.
longest=$({ grep -o '`\+' "$raw" || true; } | awk '{ if (length($0) > m) m = length($0) } END { print m + 0 }')
fence='```'
while [ "${#fence}" -le "$longest" ]; do fence+='`'; done

{
  echo "# Benchmark: $name"
  echo
  echo "- command: \`$typed\`"
  echo "- commit: $commit_desc"
  echo "- date: $date_utc"
  echo "- cpu: $cpu"
  echo "- cores: $cores"
  echo "- memory: $mem"
  echo "- kernel: $kernel"
  echo "- load before: $load_before"
  echo "- load after: $load_after"
  echo "- wall seconds: $wall"
  echo
  echo "## Raw output (stdout)"
  echo
  echo "${fence}text"
  cat "$raw"
  # The block must end on its own line even when the output does not end with a newline.
  if [ -s "$raw" ] && [ -n "$(tail -c 1 "$raw")" ]; then echo; fi
  echo "$fence"
} >"$tmp"
chmod 644 "$tmp"
mv "$tmp" "$out"
echo "record.sh: recorded $out" >&2
