#!/usr/bin/env bash
# The e2e suite (tests/e2e) against a kind cluster, on a machine with Docker and kind:
#
#   tests/kind/run.sh [TEST-HARNESS-ARGS...]    (e.g. a scenario name filter, or --list)
#
# 1. builds the operator and launcher images (images/*.Dockerfile, `make images`);
# 2. creates a kind cluster: 1 control plane + 3 workers (tests/kind/kind-config.yaml);
# 3. loads the images (and the jobs' trainer image) into its nodes with `kind load`;
# 4. `helm install`s charts/elasticjob-operator (server-side apply is fine on kind);
# 5. runs `cargo test -p elasticjob-e2e --features e2e-tests` with
#    ELASTICJOB_E2E_KUBECONFIG=<the kind kubeconfig> and ELASTICJOB_E2E_FAULTS=tests/kind/faults.sh
#    (kill a pod's processes, cut a pod's network, lose a node: see faults.sh);
# 6. deletes the cluster on exit, whatever happened (after printing the operator's log and the
#    pods on failure).
#
# Needs docker (a running daemon), kind, kubectl, helm (v3.13+ or v4) and cargo on PATH.
# Environment (all optional):
#   KIND_CLUSTER     cluster name (default elasticjob-e2e); it must not exist yet
#   KIND_NODE_IMAGE  the kindest/node image (default: kind's own)
#   VERSION          image tag (default: the workspace version in Cargo.toml, the chart's appVersion)
#   IMAGE_REPO       image name prefix (default ghcr.io/elasticjob)
#   SKIP_BUILD=1     use the images already in the local Docker (e.g. from `make images`)
#   TRAINER_IMAGE    the jobs' image (default: the one in examples/elasticjob.yaml); pulled once
#                    and loaded into the nodes, unless PRELOAD_TRAINER=0 (the nodes pull it)
#   FAKE_GPUS=N      advertise N nvidia.com/gpu on each worker: an extended resource for the
#                    scheduler only (no devices; the jobs run on CPU with gloo). Default 0: the
#                    suite sees nodes without GPUs and drops GPU limits.
#   KEEP_CLUSTER=1   keep the cluster and its kubeconfig instead of deleting them
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

cluster=${KIND_CLUSTER:-elasticjob-e2e}
version=${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)}
repo=${IMAGE_REPO:-ghcr.io/elasticjob}
operator_image=$repo/elasticjob-operator:$version
launcher_image=$repo/elastic-launch:$version
trainer_image=${TRAINER_IMAGE:-$(sed -n 's/^ *image: \([^ ]*pytorch[^ ]*\).*$/\1/p' "$root/examples/elasticjob.yaml" | head -n 1)}
release=elasticjob-operator
namespace=elasticjob-system
fake_gpus=${FAKE_GPUS:-0}

log() {
  printf '[kind-e2e %s] %s\n' "$(date +%T)" "$*" >&2
}
die() {
  log "error: $*"
  exit 1
}

[ -n "$version" ] || die "no version found in $root/Cargo.toml (set VERSION)"
[ -n "$trainer_image" ] || die "no trainer image found in examples/elasticjob.yaml (set TRAINER_IMAGE)"
case $fake_gpus in *[!0-9]* | '') die "FAKE_GPUS must be a number: $fake_gpus" ;; esac
for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH (needs docker, kind, kubectl, helm, cargo)"
done
docker info >/dev/null 2>&1 || die "the Docker daemon does not answer (docker info)"
if kind get clusters 2>/dev/null | grep -qx -- "$cluster"; then
  die "a kind cluster named $cluster exists already: delete it (kind delete cluster --name $cluster) or set KIND_CLUSTER"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/elasticjob-kind.XXXXXX")
kubeconfig=$work/kubeconfig
created=0

diagnostics() {
  log "pods, and the operator's log:"
  kubectl get pods -A -o wide >&2 || true
  kubectl logs -n "$namespace" -l app.kubernetes.io/name=elasticjob-operator --tail=100 --prefix >&2 || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$created" = 1 ]; then
    [ "$rc" = 0 ] || diagnostics
    if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
      log "keeping cluster $cluster: export KUBECONFIG=$kubeconfig; delete it with: kind delete cluster --name $cluster"
    else
      log "deleting cluster $cluster"
      kind delete cluster --name "$cluster" >&2 || log "kind delete cluster --name $cluster failed"
    fi
  fi
  if [ "${KEEP_CLUSTER:-0}" != 1 ] || [ "$created" != 1 ]; then
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export DOCKER_BUILDKIT=1
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building $operator_image and $launcher_image"
  docker build -f "$root/images/operator.Dockerfile" -t "$operator_image" "$root"
  docker build -f "$root/images/launcher.Dockerfile" -t "$launcher_image" "$root"
fi
for image in "$operator_image" "$launcher_image"; do
  docker image inspect "$image" >/dev/null 2>&1 || die "image $image is not in the local Docker (unset SKIP_BUILD)"
done

log "creating kind cluster $cluster"
created=1
create=(kind create cluster --name "$cluster" --config "$here/kind-config.yaml" --kubeconfig "$kubeconfig" --wait 180s)
[ -z "${KIND_NODE_IMAGE:-}" ] || create+=(--image "$KIND_NODE_IMAGE")
"${create[@]}"
export KUBECONFIG=$kubeconfig KIND_CLUSTER=$cluster

log "loading images into the nodes"
kind load docker-image --name "$cluster" "$operator_image" "$launcher_image"
if [ "${PRELOAD_TRAINER:-1}" = 1 ]; then
  if ! docker image inspect "$trainer_image" >/dev/null 2>&1; then
    case "$trainer_image" in
      # The project's own trainer image (images/pytorch.Dockerfile) is built, not pulled.
      "$repo"/pytorch:*) docker build -f "$root/images/pytorch.Dockerfile" -t "$trainer_image" "$root/images" ;;
      *) docker pull "$trainer_image" ;;
    esac
  fi
  kind load docker-image --name "$cluster" "$trainer_image"
fi

if [ "$fake_gpus" -gt 0 ]; then
  for node in $(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o name); do
    log "$node: advertising $fake_gpus nvidia.com/gpu"
    kubectl patch "$node" --subresource=status --type=json \
      -p "[{\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$fake_gpus\"}]"
  done
fi

log "installing the chart"
helm install "$release" "$root/charts/elasticjob-operator" -n "$namespace" --create-namespace \
  --set image.repository="$repo/elasticjob-operator" --set image.tag="$version" \
  --set launcherImage.repository="$repo/elastic-launch" --set launcherImage.tag="$version" \
  --wait --timeout 5m
kubectl rollout status -n "$namespace" "deployment/$release" --timeout=120s

log "running the e2e suite"
cd "$root"
ELASTICJOB_E2E_KUBECONFIG=$kubeconfig \
  ELASTICJOB_E2E_KUBECTL=$(command -v kubectl) \
  ELASTICJOB_E2E_OPERATOR_NAMESPACE=$namespace \
  ELASTICJOB_E2E_OPERATOR_SELECTOR=app.kubernetes.io/name=elasticjob-operator \
  ELASTICJOB_E2E_TRAINER_IMAGE=$trainer_image \
  ELASTICJOB_E2E_FAULTS=$here/faults.sh \
  cargo test -p elasticjob-e2e --features e2e-tests -- "$@"
log "e2e suite passed on kind"
