# shellcheck shell=bash
# Sourced by bench/operator.sh, bench/failover.sh and bench/operator_scale.sh (from the repository
# root): the local cluster without nodes, with the ElasticJob CRD established, and small helpers.

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# kubectl of the cluster started by start_cluster_without_nodes.
k() { "${KUBECTL:?start_cluster_without_nodes first}" "$@"; }

# start_cluster_without_nodes CLUSTER KUBECTL DIR LOG: starts the local cluster (the `cluster`
# binary CLUSTER) in DIR with no nodes, in the background (its output in LOG); waits until it is
# up, exports KUBECONFIG, sets KUBECTL for k, applies crds/elasticjob.yaml and waits until the CRD
# is Established. Exits with LOG on stderr if the cluster stops first. Bring it down with
# stop_cluster CLUSTER DIR (in the caller's EXIT trap).
start_cluster_without_nodes() {
  local cluster="$1" dir="$3" log="$4" pid
  KUBECTL="$2"
  "$cluster" up --dir "$dir" --nodes 0 >"$log" 2>&1 &
  pid=$!
  until [ -f "$dir/cluster.json" ]; do
    kill -0 "$pid" 2>/dev/null || [ -f "$dir/cluster.json" ] || { echo "cluster up stopped:" >&2; tail -20 "$log" >&2; exit 1; }
    sleep 0.2
  done
  export KUBECONFIG="$dir/kubeconfig"
  k apply --validate=false -f crds/elasticjob.yaml >/dev/null
  until [ "$(k get crd elasticjobs.elasticjob.dev \
    -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null)" = True ]; do sleep 0.2; done
}

# stop_cluster CLUSTER DIR: brings the local cluster in DIR down; never fails (for EXIT traps).
stop_cluster() {
  "$1" down --dir "$2" >/dev/null 2>&1 || true
}

# wait_serviceaccount [NS]: waits until namespace NS (default: default) has its default service
# account, without which pods cannot be created.
wait_serviceaccount() {
  until k get serviceaccount default -n "${1:-default}" >/dev/null 2>&1; do sleep 0.2; done
}

# wait_ready PORT PID LOG: waits until the operator PID answers /readyz on 127.0.0.1:PORT; exits
# with LOG on stderr if it stops first.
wait_ready() {
  until curl -sf "127.0.0.1:$1/readyz" >/dev/null; do
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; exit 1; }
    sleep 0.1
  done
}
