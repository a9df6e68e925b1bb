#!/usr/bin/env bash
# `make demo`: the whole product on this machine, no Docker needed.
#  1. a local Kubernetes cluster (real etcd, apiserver, scheduler, controller-manager; a kubelet
#     stand-in that runs pods as processes with fake GPUs), provisioned on first use;
#  2. the operator installed with the real helm from charts/elasticjob-operator;
#  3. examples/elasticjob.yaml applied with kubectl: 2 pods x 2 PyTorch workers (DDP, gloo),
#     followed until it Succeeded: pods, conditions, the training loss lines.
# The cluster keeps running afterwards so you can look around; `make demo-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
export CARGO_TARGET_DIR="$cache/target"
dir="$cache/clusters/demo"
version=0.1.0
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Provisioning (cached after the first run: PyTorch venv, Kubernetes binaries, cargo build)"
python="$(tests/scripts/python-env.sh)"
bin="$(tests/cluster/provision.sh | tail -1)"
cargo build -q -p elastic-launch -p elasticjob-operator -p local-cluster --bin elastic-launch \
  --bin elasticjob-operator --bin cluster
target="$CARGO_TARGET_DIR/debug"
export PATH="$bin:$PATH" KUBECONFIG="$dir/kubeconfig"

step "Starting the local cluster in $dir"
"$target/cluster" down --dir "$dir" >/dev/null 2>&1 || true
mkdir -p "$dir"
# Images are not pulled: each image name maps to a binary on this machine, or (the PyTorch image)
# to the cached venv, first on the container's PATH.
images="ghcr.io/elasticjob/elasticjob-operator:$version=$target/elasticjob-operator"
images+=",ghcr.io/elasticjob/elastic-launch:$version=$target/elastic-launch"
images+=",pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime=$(dirname "$python")"
nohup "$target/cluster" up --dir "$dir" --image-map "$images" >"$dir.log" 2>&1 &
until [ -f "$dir/cluster.json" ]; do
  kill -0 $! 2>/dev/null || { tail -20 "$dir.log"; echo "the cluster did not start (log: $dir.log)"; exit 1; }
  sleep 0.5
done
kubectl get nodes

step "Installing the operator with helm"
# --server-side=false: this cluster is Kubernetes 1.20, whose apply cannot type the CRD's CEL
# rules (x-kubernetes-validations); real clusters (>= 1.25) take helm's default.
helm install elasticjob charts/elasticjob-operator -n elasticjob-system --create-namespace \
  --server-side=false --wait --timeout 120s
kubectl -n elasticjob-system get deploy,pods

step "kubectl apply -f examples/elasticjob.yaml"
kubectl apply -f examples/elasticjob.yaml
until kubectl get pod train-worker-0 -o jsonpath='{.status.phase}' 2>/dev/null \
  | grep -qE 'Running|Succeeded|Failed'; do
  sleep 1
done
kubectl get ej train
kubectl get pods -o wide

step "kubectl logs -f train-worker-0   (rank 0's loss, averaged over the 4 workers)"
kubectl logs -f train-worker-0 -c trainer | grep --line-buffered '\[train\]' || true

step "Result"
until kubectl get ej train -o jsonpath='{.status.state}' | grep -qE 'Succeeded|Failed'; do sleep 1; done
kubectl get ej train
kubectl get ej train -o jsonpath='{range .status.conditions[*]}{.type}{"\t"}{.status}{"\t"}{.reason}{"\t"}{.message}{"\n"}{end}' \
  | column -t -s $'\t'
kubectl get events --field-selector involvedObject.kind=ElasticJob

cat <<EOF

The cluster is still running. Look around:
  export KUBECONFIG=$dir/kubeconfig PATH=$bin:\$PATH
  kubectl get ej,pods; kubectl describe ej train; kubectl explain elasticjob.spec
  kubectl delete ej train && kubectl apply -f examples/elasticjob.yaml    # again
  kubectl scale ej train --replicas=3                                     # while it runs
  $target/cluster fault --dir $dir kill-pod train-worker-1               # a pod dies
Stop it: make demo-down   (or: $target/cluster down --dir $dir)
EOF
