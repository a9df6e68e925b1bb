#!/usr/bin/env bash
# Builds the local cluster's Kubernetes components from their Go modules at the versions pinned
# in go.mod/go.sum next to this script (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, the fake GPU device plugin; CoreDNS from coredns/), the
# pod sandbox image (`pause`, from k8s.io/kubernetes' build/pause/linux/pause.c), and installs
# the node runtime from Debian's packages (containerd, runc, CNI plugins, buildah, iptables).
#
# Everything lands under ${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob/ (override the root with
# ELASTICJOB_CACHE): go/mod and go/build are the Go module and build caches, nodes-<key>/ the
# binaries, where <key> hashes the pinned modules and this script, so a change of pin builds anew.
# Idempotent: a second run finds the marker and takes well under a second.
# The LAST line of stdout is the bin dir; progress and errors go to stderr.
#
# Environment: PROVISION_NICE (niceness of the Go build, default 10).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${ELASTICJOB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob}"
key="$(cat "$0" "$here/go.mod" "$here/go.sum" "$here/coredns/go.mod" "$here/coredns/go.sum" \
  $(find "$here/cmd" "$here/coredns" -name '*.go' | sort) | sha256sum | cut -c1-12)"
bin="$cache/nodes-$key/bin"
marker="$bin/BUILT"
step=""
log() { echo "components: $*" >&2; }
fail() { echo "components: FAILED at step '$step': $*" >&2; exit 1; }

kube_version="$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/go.mod")"
[ -n "$kube_version" ] || fail "no k8s.io/kubernetes version in $here/go.mod"
pause_version=3.10
debian_pkgs=(containerd runc containernetworking-plugins buildah iptables conntrack gcc libc6-dev)

if [ -f "$marker" ]; then echo "$bin"; exit 0; fi
mkdir -p "$bin"
exec 9>"$cache/.nodes.lock"
flock 9
if [ -f "$marker" ]; then echo "$bin"; exit 0; fi
start=$(date +%s)

step="debian packages"
need=()
for p in "${debian_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || fail "need root to install ${need[*]} (run: sudo $0)"
  log "apt-get install ${need[*]}"
  apt-get update -qq >&2 || fail "apt-get update failed: check access to the Debian mirror"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2 \
    || fail "apt-get install ${need[*]} failed"
fi

step="go"
# Go's own installer puts it in /usr/local/go, which a non-login shell may not have on PATH.
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || fail "go not found: install Go >= 1.24 (https://go.dev/dl) and put it on PATH"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" CGO_ENABLED=0 GOFLAGS=-mod=readonly
export GOTOOLCHAIN=local

step="go build of Kubernetes $kube_version components"
ld="-s -w"
minor="${kube_version#v1.}"; minor="${minor%%.*}"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$kube_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=archive"
done
log "building etcd and Kubernetes $kube_version with $(go version | cut -d' ' -f3) (about 6 min cold on 2 cores; log: $bin/../build.log)"
(cd "$here" && nice -n "${PROVISION_NICE:-10}" go build -trimpath -ldflags "$ld" -o "$bin/" ./cmd/...) \
  >"$bin/../build.log" 2>&1 || { tail -n 30 "$bin/../build.log" >&2; fail "see $bin/../build.log"; }
step="go build of CoreDNS"
(cd "$here/coredns" && nice -n "${PROVISION_NICE:-10}" go build -trimpath -ldflags "-s -w" -o "$bin/coredns" .) \
  >>"$bin/../build.log" 2>&1 || { tail -n 30 "$bin/../build.log" >&2; fail "see $bin/../build.log"; }

step="pause image"
src="$(go env GOMODCACHE)/k8s.io/kubernetes@$kube_version/build/pause/linux/pause.c"
[ -f "$src" ] || (cd "$here" && go mod download k8s.io/kubernetes) || fail "cannot fetch k8s.io/kubernetes@$kube_version"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
gcc -Os -static -DVERSION="v$pause_version" -o "$work/pause" "$src" || fail "gcc -static $src"
strip "$work/pause"
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$work/Containerfile"
store=(--root "$cache/buildah/storage" --runroot "$cache/buildah/run" --storage-driver vfs)
buildah "${store[@]}" bud -q --isolation chroot -t "registry.k8s.io/pause:$pause_version" "$work" >&2 \
  || fail "buildah bud of the pause image"
rm -f "$bin/pause.tar"
buildah "${store[@]}" push -q "registry.k8s.io/pause:$pause_version" \
  "oci-archive:$bin/pause.tar:registry.k8s.io/pause:$pause_version" >&2 || fail "buildah push of the pause image"

step="smoke check"
"$bin/kube-apiserver" --version >&2 || fail "$bin/kube-apiserver does not run"
"$bin/kubelet" --version >/dev/null || fail "$bin/kubelet does not run"
"$bin/etcd" --version >/dev/null || fail "$bin/etcd does not run"
"$bin/coredns" -version >/dev/null || fail "$bin/coredns does not run"
{
  echo "kubernetes=$kube_version"
  echo "pause=$pause_version"
  echo "go=$(go version | cut -d' ' -f3)"
  echo "date=$(date -u +%FT%TZ)"
} > "$marker"
# Builds of other pins or recipes are not used any more (half a gigabyte each).
for d in "$cache"/nodes-*; do
  [ "$d" = "$cache/nodes-$key" ] || rm -rf "$d"
done
log "done in $(( $(date +%s) - start ))s"
echo "$bin"
