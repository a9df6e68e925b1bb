#!/usr/bin/env bash
# Builds the project's images from images/*.Dockerfile with buildah (no Docker, nothing pulled)
# and writes each as an OCI archive that the local cluster loads into its nodes:
#   elastic-launch    ghcr.io/elasticjob/elastic-launch:<version>       (launcher.Dockerfile)
#   operator          ghcr.io/elasticjob/elasticjob-operator:<version>  (operator.Dockerfile)
#   pytorch           ghcr.io/elasticjob/pytorch:<torch version>        (pytorch.Dockerfile)
# and lists after them the cluster add-ons' images (Kueue, the coscheduling scheduler and its
# PodGroup controller) that components/addons.sh builds.
# The launcher and operator images take the static binaries cargo builds here
# (BINARIES=prebuilt); the PyTorch image's Python base is Debian bookworm from debootstrap.
#
# Everything is cached under ${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob/images/: the archives,
# buildah's storage (vfs, chroot isolation: what works without Docker or privileges beyond
# root), the debootstrap'ed base. An image is rebuilt only when its inputs change.
# The LAST line of stdout is the comma-separated list of archives (for `cluster up --images`);
# progress and errors go to stderr.
#
# Environment: CARGO_TARGET_DIR (as the Makefile sets it), IMAGES_NICE (default 10).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
out="$cache/images"
target="${CARGO_TARGET_DIR:-$cache/target}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n1)"
torch_version="$(sed -n 's/^ARG TORCH_VERSION=//p' "$repo/images/pytorch.Dockerfile")"
store=(--root "$out/storage" --runroot "$out/run" --storage-driver vfs)
step=""
log() { echo "images: $*" >&2; }
fail() { echo "images: FAILED at step '$step': $*" >&2; exit 1; }
trap 'rc=$?; [ $rc -eq 0 ] || echo "images: FAILED at step '"'"'$step'"'"' (exit $rc)" >&2' EXIT
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

command -v buildah >/dev/null || fail "buildah not found: apt-get install -y buildah (tests/cluster/components/build.sh installs it)"

# key FILE...: a short hash of the inputs of an image.
key() { cat "$@" | sha256sum | cut -c1-16; }

# archive NAME TAG KEY CONTEXT DOCKERFILE [buildah bud args...]: builds and writes
# $out/NAME.tar unless $out/NAME.key already says KEY.
archive() {
  local name=$1 tag=$2 k=$3 context=$4 file=$5
  shift 5
  if [ -f "$out/$name.tar" ] && [ "$(cat "$out/$name.key" 2>/dev/null)" = "$k" ]; then
    return
  fi
  step="buildah bud $name"
  local t0; t0=$(date +%s)
  log "building $tag"
  nice -n "${IMAGES_NICE:-10}" buildah "${store[@]}" bud -q --isolation chroot --layers=false \
    -f "$file" -t "$tag" "$@" "$context" >&2 || fail "buildah bud -f $file"
  step="buildah push $name"
  rm -f "$out/$name.tar.tmp"
  # Uncompressed layers: the archive is only read by the nodes' containerd on this machine,
  # where gzip would cost minutes for the PyTorch image and save nothing.
  buildah "${store[@]}" push -q --disable-compression "$tag" "oci-archive:$out/$name.tar.tmp:$tag" >&2 \
    || fail "buildah push $tag"
  mv -f "$out/$name.tar.tmp" "$out/$name.tar"
  echo "$k" > "$out/$name.key"
  # The archive is what counts: drop the image from buildah's storage (vfs keeps full copies).
  buildah "${store[@]}" rmi -f "$tag" >/dev/null 2>&1 || true
  log "$tag: $(du -h "$out/$name.tar" | cut -f1) in $(( $(date +%s) - t0 ))s"
}

# ------------------------------------------------------------ launcher and operator
step="static binaries"
triple="$(uname -m)-unknown-linux-gnu"
# Called from a test, the environment carries cargo's variables for that test (CARGO_MANIFEST_DIR,
# CARGO_PKG_*): build scripts that watch them would make this build start over every time.
for v in $(compgen -e | grep '^CARGO_'); do
  case "$v" in CARGO_TARGET_DIR | CARGO_HOME) ;; *) unset "$v" ;; esac
done
log "cargo build --release (static, $triple) of elastic-launch and elasticjob-operator"
(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" nice -n "${IMAGES_NICE:-10}" \
  cargo build -q --release --locked --target "$triple" -p elastic-launch -p elasticjob-operator) >&2 \
  || fail "cargo build of the static binaries"
dist="$out/dist"
rm -rf "$dist"; mkdir -p "$dist"
for b in elastic-launch elasticjob-operator; do
  install -m 0755 "$target/$triple/release/$b" "$dist/$b"
  if readelf -d "$dist/$b" | grep -q NEEDED; then fail "$b is not static"; fi
done
ln -s elastic-launch "$dist/torchrun"
archive elastic-launch "ghcr.io/elasticjob/elastic-launch:$version" \
  "$(key "$repo/images/launcher.Dockerfile" "$dist/elastic-launch")" "$repo" \
  "$repo/images/launcher.Dockerfile" --build-arg BINARIES=prebuilt --build-context "dist=$dist"
archive operator "ghcr.io/elasticjob/elasticjob-operator:$version" \
  "$(key "$repo/images/operator.Dockerfile" "$dist/elasticjob-operator")" "$repo" \
  "$repo/images/operator.Dockerfile" --build-arg BINARIES=prebuilt --build-context "dist=$dist"

# ------------------------------------------------------------ PyTorch
base="localhost/elasticjob/debian-python:bookworm"
debootstrap_args=(--variant=minbase --include=python3,python3-venv,ca-certificates bookworm)
# The PyTorch image's inputs: its Dockerfile and the base's recipe (not this script: a change
# elsewhere in it must not rebuild 3 GB).
pytorch_key="$( (cat "$repo/images/pytorch.Dockerfile"; echo "${debootstrap_args[*]}") | sha256sum | cut -c1-16)"
if [ "$(cat "$out/pytorch.key" 2>/dev/null)" != "$pytorch_key" ] \
   || [ ! -f "$out/pytorch.tar" ]; then
  if ! buildah "${store[@]}" inspect --type image "$base" >/dev/null 2>&1; then
    step="debootstrap"
    command -v debootstrap >/dev/null || {
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2 || fail "apt-get install debootstrap"
    }
    rootfs="$out/debian-rootfs"
    if [ ! -f "$rootfs/.done" ]; then
      log "debootstrap bookworm with python3 (first time only, about 2 minutes)"
      rm -rf "$rootfs"
      debootstrap "${debootstrap_args[@]}" "$rootfs" http://deb.debian.org/debian \
        >"$out/debootstrap.log" 2>&1 \
        || { tail -n 20 "$out/debootstrap.log" >&2; fail "debootstrap (log: $out/debootstrap.log)"; }
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
      touch "$rootfs/.done"
    fi
    step="base image"
    ctr="$(buildah "${store[@]}" from scratch)"
    mnt="$(buildah "${store[@]}" mount "$ctr")"
    cp -a "$rootfs/." "$mnt/" && rm -f "$mnt/.done" || fail "copying the debootstrap rootfs"
    buildah "${store[@]}" umount "$ctr" >/dev/null
    buildah "${store[@]}" config --cmd /bin/sh "$ctr" >&2
    buildah "${store[@]}" commit -q --rm "$ctr" "$base" >&2 || fail "buildah commit $base"
  fi
fi
# This machine's trust and pip settings reach pip inside the build (as BuildKit secrets would):
# its CA bundle (PyPI may sit behind a TLS-inspecting proxy) and a pip.conf naming it. They are
# mounted for the build only; nothing of them ends up in the image.
pip_conf="$out/pip.conf"
host_ca=/etc/ssl/certs/ca-certificates.crt
mounts=()
if [ -f "$host_ca" ]; then
  printf '[global]\ncert = %s\n' "$host_ca" > "$pip_conf"
  mounts+=(-v "$host_ca:$host_ca:ro" -v "$pip_conf:/etc/pip.conf:ro")
fi
archive pytorch "ghcr.io/elasticjob/pytorch:$torch_version" "$pytorch_key" "$repo/images" \
  "$repo/images/pytorch.Dockerfile" --build-arg "PYTHON_IMAGE=$base" "${mounts[@]}"

# ------------------------------------------------------------ cluster add-ons
# Kueue and the coscheduling scheduler (components/addons.sh: built from their pinned Go
# modules, cached; about 15 minutes the first time on 2 cores), for Env::install_kueue and
# Env::install_coscheduling.
step="add-ons"
addons="$("$repo/tests/cluster/components/addons.sh" | tail -n1)"
[ -f "$addons/BUILT" ] || fail "components/addons.sh printed no add-ons dir"

step="done"
echo "$out/elastic-launch.tar,$out/operator.tar,$out/pytorch.tar,$addons/kueue.tar,$addons/sp-scheduler.tar,$addons/sp-controller.tar"
