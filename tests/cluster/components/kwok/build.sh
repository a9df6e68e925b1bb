#!/usr/bin/env bash
# Builds kwok (sigs.k8s.io/kwok's cmd/kwok, at the version pinned in go.mod/go.sum next to this
# script) for the operator's scale benchmark (bench/operator_scale.sh): it keeps fake Nodes
# Ready and plays fake pods' lifecycle (Pending -> Running with a pod IP, deletion) with no
# kubelet and no containers. Next to the binary, kwok.yaml: kwok's own "fast" stages, taken from
# the same module version (node-initialize, node-heartbeat-with-lease, pod-ready, pod-complete,
# pod-delete), for `kwok --config`.
#
# Its own builder module (kwok pins its own Kubernetes libraries and needs Go >= 1.26). Lands
# under ${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob/kwok-<key>/ (override the root with
# ELASTICJOB_CACHE), <key> hashing the pins and this script; the Go caches are build.sh's
# (../build.sh). About 10 min cold on 2 busy cores; idempotent: a second run takes well under a
# second. Not part of `make test` (only bench/operator_scale.sh needs it).
# The LAST line of stdout is the kwok dir (bin/kwok, kwok.yaml); progress and errors on stderr.
#
# Environment: PROVISION_NICE (niceness of the Go build, default 10).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${ELASTICJOB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob}"
key="$(cd "$here" && cat build.sh go.mod go.sum | sha256sum | cut -c1-12)"
out="$cache/kwok-$key"
marker="$out/BUILT"
step=""
log() { echo "kwok: $*" >&2; }
fail() { echo "kwok: FAILED at step '$step': $*" >&2; exit 1; }

version="$(sed -n 's|^[[:space:]]*sigs.k8s.io/kwok \(v[0-9.]*\)\( // indirect\)\{0,1\}$|\1|p' "$here/go.mod")"
[ -n "$version" ] || fail "no pinned sigs.k8s.io/kwok version in $here/go.mod"

if [ -f "$marker" ]; then echo "$out"; exit 0; fi
mkdir -p "$out/bin"
exec 9>"$cache/.kwok.lock"
flock 9
if [ -f "$marker" ]; then echo "$out"; exit 0; fi
start=$(date +%s)

step="go"
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || fail "go not found: install Go >= 1.26 (https://go.dev/dl) and put it on PATH"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" CGO_ENABLED=0 GOFLAGS=-mod=readonly
export GOTOOLCHAIN=local

step="go build of kwok $version"
log "building kwok $version (about 10 min cold on 2 cores; log: $out/build.log)"
(cd "$here" && nice -n "${PROVISION_NICE:-10}" go build -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${version#v}" \
  -o "$out/bin/kwok" sigs.k8s.io/kwok/cmd/kwok) >"$out/build.log" 2>&1 \
  || { tail -n 30 "$out/build.log" >&2; fail "see $out/build.log"; }

step="stages"
src="$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
{
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [ -f "$src/kustomize/stage/$f" ] || fail "no $f in kwok $version"
    echo "---"
    cat "$src/kustomize/stage/$f"
  done
} > "$out/kwok.yaml"

step="smoke check"
"$out/bin/kwok" --help >/dev/null 2>&1 || fail "$out/bin/kwok does not run"
{
  echo "kwok=$version"
  echo "go=$(go version | cut -d' ' -f3)"
  echo "date=$(date -u +%FT%TZ)"
} > "$marker"
for d in "$cache"/kwok-*; do
  [ "$d" = "$out" ] || rm -rf "$d"
done
log "done in $(( $(date +%s) - start ))s"
echo "$out"
