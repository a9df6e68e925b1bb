#!/usr/bin/env bash
# `make demo`: the whole product on this machine, no Docker needed.
#  1. a local Kubernetes 1.34 cluster (etcd, apiserver, scheduler, controller-manager, CoreDNS;
#     3 nodes, each a real kubelet with containerd, runc, kube-proxy and 4 fake GPUs), built from
#     source and the project's images built with buildah on first use;
#  2. the operator installed with the real helm from charts/elasticjob-operator;
#  3. examples/elasticjob.yaml applied with kubectl: 2 pods x 2 PyTorch workers (DDP, gloo),
#     followed until it Succeeded: pods, conditions, the training loss lines.
# The cluster keeps running afterwards so you can look around; `make demo-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
export CARGO_TARGET_DIR="$cache/target"
dir="$cache/clusters/demo"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Provisioning (cached after the first run: Kubernetes binaries, images, cargo build)"
bin="$(tests/cluster/provision.sh | tail -1)"
images="$(tests/cluster/images.sh | tail -1)"
cargo build -q -p local-cluster --bin cluster
target="$CARGO_TARGET_DIR/debug"
export PATH="$bin:$PATH" KUBECONFIG="$dir/kubeconfig"

step "Starting the local cluster in $dir"
"$target/cluster" down --dir "$dir" >/dev/null 2>&1 || true
mkdir -p "$dir"
# Nothing is pulled: the nodes are loaded with the images built from images/*.Dockerfile.
nohup "$target/cluster" up --dir "$dir" --images "$images" >"$dir.log" 2>&1 &
until [ -f "$dir/cluster.json" ]; do
  kill -0 $! 2>/dev/null || { tail -20 "$dir.log"; echo "the cluster did not start (log: $dir.log)"; exit 1; }
  sleep 0.5
done
kubectl get nodes

step "Installing the operator with helm"
helm install elasticjob charts/elasticjob-operator -n elasticjob-system --create-namespace \
  --wait --timeout 180s
kubectl -n elasticjob-system get deploy,pods
# The job runs where Pod Security's `restricted` level is enforced, as on a careful platform.
kubectl label namespace default pod-security.kubernetes.io/enforce=restricted --overwrite

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
