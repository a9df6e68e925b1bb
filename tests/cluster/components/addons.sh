#!/usr/bin/env bash
# Builds the cluster add-ons that queue and gang-schedule jobs, from their Go modules at the
# versions pinned next to this script, and their images as their charts name them:
#   Kueue v0.17 (kueue/go.mod: sigs.k8s.io/kueue's cmd/kueue)
#     registry.k8s.io/kueue/kueue:v0.17.0                        kueue.tar       /manager
#   scheduler-plugins v0.32 (scheduler-plugins/go.mod: its cmd/scheduler and cmd/controller)
#     registry.k8s.io/scheduler-plugins/kube-scheduler:v0.32.7   sp-scheduler.tar  /bin/kube-scheduler
#     registry.k8s.io/scheduler-plugins/controller:v0.32.7       sp-controller.tar /bin/controller
# Each image is FROM scratch with the static binary, user 65532 (as their distroless images),
# written as an OCI archive for the nodes (`cluster up --images`, tests/cluster/images.sh).
# Next to them, from the same module versions: charts/kueue (Kueue's Helm chart),
# charts/scheduler-plugins (scheduler-plugins' as-a-second-scheduler chart) and crds/ (its
# PodGroup and ElasticQuota CRDs, which the Go module's copy of that chart lacks).
#
# Separate builder modules, separate from ../go.mod: each pins its own Kubernetes libraries
# (Kueue v0.35, scheduler-plugins v1.32). Everything lands under
# ${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob/addons-<key>/ (override the root with
# ELASTICJOB_CACHE), <key> hashing the pins and this script; the Go caches are build.sh's.
# Idempotent: a second run finds the marker and takes well under a second.
# The LAST line of stdout is the add-ons dir; progress and errors go to stderr.
#
# Environment: PROVISION_NICE (niceness of the Go build, default 10).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${ELASTICJOB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob}"
mods=(kueue/go.mod kueue/go.sum scheduler-plugins/go.mod scheduler-plugins/go.sum)
key="$(cd "$here" && cat addons.sh "${mods[@]}" | sha256sum | cut -c1-12)"
out="$cache/addons-$key"
marker="$out/BUILT"
step=""
log() { echo "addons: $*" >&2; }
fail() { echo "addons: FAILED at step '$step': $*" >&2; exit 1; }

version_of() { sed -n "s|^\(require \)\{0,1\}[[:space:]]*$1 \(v[0-9.]*\)\( // indirect\)\{0,1\}$|\2|p" "$here/$2/go.mod"; }
kueue_version="$(version_of sigs.k8s.io/kueue kueue)"
sp_version="$(version_of sigs.k8s.io/scheduler-plugins scheduler-plugins)"
{ [ -n "$kueue_version" ] && [ -n "$sp_version" ]; } || fail "no pinned version in kueue/go.mod or scheduler-plugins/go.mod"

if [ -f "$marker" ]; then echo "$out"; exit 0; fi
mkdir -p "$out/bin"
exec 9>"$cache/.addons.lock"
flock 9
if [ -f "$marker" ]; then echo "$out"; exit 0; fi
start=$(date +%s)

step="go"
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || fail "go not found: install Go >= 1.25 (https://go.dev/dl) and put it on PATH"
command -v buildah >/dev/null || fail "buildah not found: run tests/cluster/components/build.sh first (it installs it)"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" CGO_ENABLED=0 GOFLAGS=-mod=readonly
export GOTOOLCHAIN=local
build_log="$out/build.log"
: > "$build_log"

# gobuild DIR ARGS...: a nice'd, static, stripped go build in the builder module DIR.
gobuild() {
  local dir=$1
  shift
  (cd "$here/$dir" && nice -n "${PROVISION_NICE:-10}" go build -trimpath "$@") >>"$build_log" 2>&1 \
    || { tail -n 30 "$build_log" >&2; fail "see $build_log"; }
}

step="go build of Kueue $kueue_version"
log "building Kueue $kueue_version (about 9 min cold on 2 cores; log: $build_log)"
t=$(date +%s)
gobuild kueue -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$kueue_version" \
  -o "$out/bin/manager" sigs.k8s.io/kueue/cmd/kueue
log "Kueue built in $(( $(date +%s) - t ))s"

step="go build of scheduler-plugins $sp_version"
log "building scheduler-plugins $sp_version: kube-scheduler and controller (about 7 min cold)"
t=$(date +%s)
gobuild scheduler-plugins -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$sp_version" \
  -o "$out/bin/kube-scheduler" sigs.k8s.io/scheduler-plugins/cmd/scheduler
gobuild scheduler-plugins -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$sp_version" \
  -o "$out/bin/controller" sigs.k8s.io/scheduler-plugins/cmd/controller
log "scheduler-plugins built in $(( $(date +%s) - t ))s"

step="charts and CRDs"
kueue_src="$(cd "$here/kueue" && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)"
sp_src="$(cd "$here/scheduler-plugins" && go list -m -f '{{.Dir}}' sigs.k8s.io/scheduler-plugins)"
rm -rf "$out/charts" "$out/crds"
mkdir -p "$out/charts" "$out/crds"
cp -r "$kueue_src/charts/kueue" "$out/charts/kueue"
cp -r "$sp_src/manifests/install/charts/as-a-second-scheduler" "$out/charts/scheduler-plugins"
cp "$sp_src/config/crd/bases/scheduling.x-k8s.io_podgroups.yaml" \
  "$sp_src/config/crd/bases/scheduling.x-k8s.io_elasticquotas.yaml" "$out/crds/"
chmod -R u+w "$out/charts" "$out/crds"

step="images"
store=(--root "$cache/buildah/storage" --runroot "$cache/buildah/run" --storage-driver vfs)
# image NAME TAG DIR-IN-IMAGE BINARY: a FROM scratch image of one static binary.
image() {
  local name=$1 tag=$2 dir=$3 binary=$4 ctx
  step="image $tag"
  ctx="$(mktemp -d)"
  cp "$out/bin/$binary" "$ctx/$binary"
  printf 'FROM scratch\nCOPY %s %s/%s\nWORKDIR %s\nUSER 65532:65532\nENTRYPOINT ["%s/%s"]\n' \
    "$binary" "${dir%/}" "$binary" "$dir" "${dir%/}" "$binary" > "$ctx/Containerfile"
  buildah "${store[@]}" bud -q --isolation chroot --layers=false -t "$tag" "$ctx" >&2 \
    || fail "buildah bud of $tag"
  rm -f "$out/$name.tar"
  buildah "${store[@]}" push -q --disable-compression "$tag" "oci-archive:$out/$name.tar:$tag" >&2 \
    || fail "buildah push of $tag"
  buildah "${store[@]}" rmi -f "$tag" >/dev/null 2>&1 || true
  rm -rf "$ctx"
}
image kueue "registry.k8s.io/kueue/kueue:$kueue_version" / manager
image sp-scheduler "registry.k8s.io/scheduler-plugins/kube-scheduler:$sp_version" /bin kube-scheduler
image sp-controller "registry.k8s.io/scheduler-plugins/controller:$sp_version" /bin controller

step="smoke check"
for b in manager kube-scheduler controller; do
  if readelf -d "$out/bin/$b" 2>/dev/null | grep -q NEEDED; then fail "$b is not static"; fi
done
"$out/bin/kube-scheduler" --version >&2 || fail "$out/bin/kube-scheduler does not run"
{
  echo "kueue=$kueue_version"
  echo "scheduler-plugins=$sp_version"
  echo "go=$(go version | cut -d' ' -f3)"
  echo "date=$(date -u +%FT%TZ)"
} > "$marker"
for d in "$cache"/addons-*; do
  [ "$d" = "$out" ] || rm -rf "$d"
done
log "done in $(( $(date +%s) - start ))s"
echo "$out"
