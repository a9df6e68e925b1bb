#!/usr/bin/env bash
# Fault injection into the pods and nodes of a kind cluster: the kind counterpart of the local
# cluster's `cluster fault` CLI, with the same verbs. tests/kind/run.sh hands it to the e2e
# suite as ELASTICJOB_E2E_FAULTS. Usage: see `usage` below (or `faults.sh --help`).
#
# How: a kind node is a Docker container named after the node. `docker exec <node> crictl`
# finds the pod's sandbox by its UID label and its running containers, and their host pids.
# kill-pod signals every process in each container's pid namespace (as the local cluster does);
# cut-net inserts DROP rules (comment elasticjob-cut-net) for everything but loopback into the
# pod's own network namespace (iptables through nsenter), restore-net deletes them; lose-node is
# `docker kill` of the node's container (a power cut: kubelet, containerd and every pod die at
# once, nothing is reported; the API keeps the pods as it last saw them until the node turns
# NotReady, ~20 s with tests/kind/kind-config.yaml). The control plane is never lost.
#
# Exit status 0 when done, 1 with a message on stderr when not (unknown pod, nothing running,
# a node of another cluster), 2 for bad usage.
# Environment: KUBECONFIG (the kind cluster's), KIND_CLUSTER (default elasticjob-e2e).
set -euo pipefail

cluster=${KIND_CLUSTER:-elasticjob-e2e}
cut_mark=elasticjob-cut-net

usage() {
  cat >&2 <<'EOF'
usage: faults.sh kill-pod [NS/]POD [--signal SIG]  signal every process of the pod's running
                                                   containers (default KILL: a crash/OOM kill)
       faults.sh cut-net [NS/]POD                  drop the pod's traffic both ways (all but
                                                   loopback); its processes keep running
       faults.sh restore-net [NS/]POD              undo cut-net
       faults.sh lose-node NODE                    the node's machine is gone (docker kill)
NS defaults to "default". Environment: KUBECONFIG, KIND_CLUSTER (default elasticjob-e2e).
EOF
  exit "${1:-2}"
}

die() {
  echo "faults.sh: $*" >&2
  exit 1
}

# [NS/]POD -> ns, pod
split_pod() {
  case $1 in
    */*) ns=${1%%/*} pod=${1#*/} ;;
    *) ns=default pod=$1 ;;
  esac
  if [ -z "$ns" ] || [ -z "$pod" ]; then usage; fi
}

# Checks that $1 is a node container of this kind cluster; sets node.
use_node() {
  local owner
  owner=$(docker inspect --format '{{ index .Config.Labels "io.x-k8s.kind.cluster" }}' "$1" 2>/dev/null) ||
    die "node $1: no such Docker container (a kind node's container has the node's name)"
  [ "$owner" = "$cluster" ] || die "node $1 is not a node of kind cluster $cluster (KIND_CLUSTER)"
  node=$1
}

on_node() {
  docker exec "$node" "$@"
}

# The pod's node and UID (so a pod recreated under the same name is not mistaken for it).
find_pod() {
  local out
  out=$(kubectl get pod -n "$ns" "$pod" -o 'jsonpath={.spec.nodeName}/{.metadata.uid}' 2>&1) ||
    die "pod $ns/$pod: $out"
  uid=${out#*/}
  [ -n "${out%%/*}" ] || die "pod $ns/$pod is not on a node yet"
  use_node "${out%%/*}"
}

# The pod's ready sandbox on its node.
sandbox_id() {
  local ids
  ids=$(on_node crictl pods --label "io.kubernetes.pod.uid=$uid" --state ready -q) ||
    die "crictl pods on $node failed"
  [ -n "$ids" ] || die "pod $ns/$pod has no running sandbox on $node"
  echo "${ids%%$'\n'*}"
}

kill_pod() {
  local sig=$1 sandbox ids id pid n total=0
  sig=$(printf '%s' "${sig#SIG}" | tr '[:lower:]' '[:upper:]')
  sig=${sig#SIG}
  case $sig in '' | *[!A-Z0-9]*) die "bad signal: $1" ;; esac
  find_pod
  sandbox=$(sandbox_id)
  ids=$(on_node crictl ps --pod "$sandbox" --state running -q)
  [ -n "$ids" ] || die "pod $ns/$pod has no running container to signal"
  for id in $ids; do
    pid=$(on_node crictl inspect --output go-template --template '{{.info.pid}}' "$id")
    # Every process in the container's pid namespace, as seen from the node.
    # shellcheck disable=SC2016 # expanded by the node's sh, not here
    n=$(on_node sh -c '
      target=$(readlink "/proc/$1/ns/pid") || exit 1
      n=0
      for p in /proc/[0-9]*; do
        [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$target" ] || continue
        kill -s "$2" "${p#/proc/}" 2>/dev/null && n=$((n + 1))
      done
      echo "$n"' sh "$pid" "$sig")
    total=$((total + n))
  done
  echo "sent SIG$sig to $total processes of pod $ns/$pod on $node"
}

# iptables inside the pod's network namespace.
pod_iptables() {
  on_node nsenter --target "$netns_pid" --net iptables -w 5 "$@"
}

set_net() {
  local up=$1 chain dir
  find_pod
  netns_pid=$(on_node crictl inspectp --output go-template --template '{{.info.pid}}' "$(sandbox_id)")
  for chain in INPUT OUTPUT; do
    dir=-i
    [ "$chain" = OUTPUT ] && dir=-o
    if [ "$up" = up ]; then
      while pod_iptables -C "$chain" ! "$dir" lo -m comment --comment "$cut_mark" -j DROP 2>/dev/null; do
        pod_iptables -D "$chain" ! "$dir" lo -m comment --comment "$cut_mark" -j DROP
      done
    elif ! pod_iptables -C "$chain" ! "$dir" lo -m comment --comment "$cut_mark" -j DROP 2>/dev/null; then
      pod_iptables -I "$chain" 1 ! "$dir" lo -m comment --comment "$cut_mark" -j DROP
    fi
  done
  if [ "$up" = up ]; then
    echo "restored the network of pod $ns/$pod"
  else
    echo "cut the network of pod $ns/$pod"
  fi
}

lose_node() {
  local role
  use_node "$1"
  role=$(docker inspect --format '{{ index .Config.Labels "io.x-k8s.kind.role" }}' "$node")
  [ "$role" != control-plane ] || die "refusing to lose $node: it is the control plane"
  docker kill "$node" >/dev/null
  echo "lost node $node (its container is killed)"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
  kill-pod)
    [ $# -ge 1 ] || usage
    split_pod "$1"
    shift
    signal=KILL
    while [ $# -gt 0 ]; do
      case $1 in
        --signal) [ $# -ge 2 ] || usage; signal=$2; shift 2 ;;
        --signal=*) signal=${1#*=}; shift ;;
        *) usage ;;
      esac
    done
    kill_pod "$signal"
    ;;
  cut-net | restore-net)
    [ $# -eq 1 ] || usage
    split_pod "$1"
    if [ "$cmd" = cut-net ]; then set_net down; else set_net up; fi
    ;;
  lose-node)
    [ $# -eq 1 ] || usage
    lose_node "$1"
    ;;
  -h | --help | help) usage 0 ;;
  *) usage ;;
esac
