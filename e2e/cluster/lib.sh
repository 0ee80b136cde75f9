# Shared names, paths and helpers of the e2e cluster scripts; sourced, never run.
# shellcheck shell=bash

HB_CACHE="${HB_CACHE:-$HOME/.cache/healthbridge}"
HB_BIN="$HB_CACHE/bin"
# Everything the cluster writes lives here and under HB_RUN, never in the repo.
HB_STATE="${HB_STATE:-/var/lib/healthbridge-e2e}"
HB_RUN=/run/healthbridge-e2e
HB_KUBECONFIG="$HB_STATE/admin.kubeconfig"
HB_PKI="$HB_STATE/pki"
HB_LOGS="$HB_STATE/logs"
HB_PIDS="$HB_RUN/pids"

# The cluster's own address ranges: pods on the nodes' bridges (one /24 per node), services virtual.
HB_CLUSTER_CIDR=10.244.0.0/16
HB_SERVICE_CIDR=10.96.0.0/24
HB_FIRST_SERVICE_IP=10.96.0.1
HB_BRIDGE=cni0
HB_CONTAINERD_SOCK=/run/containerd/containerd.sock
HB_PAUSE_IMAGE=docker.io/healthbridge/pause:local
HB_EGRESS_CHAIN=HB-E2E-EGRESS

# Every node's InternalIP is on the small node range HB_NODES_CIDR, which exists only between
# this machine and the namespaces below (the bridge hb-nodes, veth pairs into each namespace).
HB_NODES_BRIDGE=hb-nodes
HB_NODES_CIDR=10.245.0.0/29

# Node A runs in this machine's own network namespace, beside the control plane. The gateway
# of its pod bridge is the apiserver's address: pods reach it without leaving the bridge, and
# nothing listens on the machine's other networks. Node A's InternalIP is the host end of hb-nodes.
HB_NODE=node-a
HB_NODE_IP=10.245.0.1
HB_POD_CIDR=10.244.0.0/24
HB_APISERVER_IP=10.244.0.1
HB_APISERVER="https://$HB_APISERVER_IP:6443"

# Node B (HB_NODES=2) runs in the network namespace hb-node-b with its own containerd, kubelet
# and kube-proxy.
HB_NODE_B=node-b
HB_NETNS_B=hb-node-b
HB_VETH_B=hb-veth-b
HB_NODE_B_IP=10.245.0.2
HB_POD_CIDR_B=10.244.1.0/24
HB_POD_GATEWAY_B=10.244.1.1
HB_STATE_B="$HB_STATE/node-b"
HB_RUN_B="$HB_RUN/node-b"
HB_CONTAINERD_SOCK_B="$HB_RUN_B/containerd.sock"
# The kubelets' pod cgroups (cgroupfs driver): node A's under /kubepods, node B's under this.
HB_CGROUP_ROOT_B=/hb-node-b

# The outside: a network namespace that is no node, for the load balancer of the tests. From a
# node itself (or a pod) kube-proxy sends a Local NodePort's traffic to every endpoint, so only
# a client outside the nodes sees each node answer for its own pods, as a real load balancer does.
HB_NETNS_OUTSIDE=hb-outside
HB_VETH_OUTSIDE=hb-veth-out
HB_OUTSIDE_IP=10.245.0.6

# The containerd sockets of the nodes that are up (node B's only while its containerd runs).
hb_containerd_sockets() {
  echo "$HB_CONTAINERD_SOCK"
  [[ -S "$HB_CONTAINERD_SOCK_B" ]] && echo "$HB_CONTAINERD_SOCK_B"
  return 0
}

hb_log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
hb_die() { echo "error: $*" >&2; exit 1; }

hb_repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

# hb_running NAME: true if the daemon NAME that we started is still alive.
hb_running() {
  local pid
  pid="$(cat "$HB_PIDS/$1.pid" 2>/dev/null)" || return 1
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  # A recycled PID belongs to someone else: the command line must name our binary.
  [[ "$(tr '\0' ' ' < "/proc/$pid/cmdline")" == *"$1"* ]] || return 1
}

# hb_start NAME BINARY ARGS...: starts a daemon detached from this shell, logging to a file.
# NAME may have a directory (node-b/kubelet): it must then appear in the command line too.
hb_start() {
  local name="$1"; shift
  mkdir -p "$(dirname "$HB_LOGS/$name")" "$(dirname "$HB_PIDS/$name")"
  hb_log "starting $name"
  # The daemon outlives this shell: it must not keep the caller's other descriptors (a lock held with flock, the
  # pipe of a CI log reader), or the lock is never released and the reader never sees end-of-file.
  (
    for fd in /proc/self/fd/*; do
      fd="${fd##*/}"
      ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
    done
    exec setsid nohup "$@" >> "$HB_LOGS/$name.log" 2>&1 < /dev/null
  ) &
  echo $! > "$HB_PIDS/$name.pid"
}

# hb_stop NAME: TERM, then KILL after a grace period, the daemon NAME we started.
hb_stop() {
  local name="$1" pid i
  if ! hb_running "$name"; then
    rm -f "$HB_PIDS/$name.pid"
    return 0
  fi
  pid="$(cat "$HB_PIDS/$name.pid")"
  hb_log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    [[ -e "/proc/$pid" ]] || break
    sleep 0.1
  done
  [[ -e "/proc/$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$HB_PIDS/$name.pid"
}

# hb_wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: polls COMMAND with backoff.
hb_wait_for() {
  local what="$1" timeout="$2" delay=0.1 started=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - started >= timeout)); then
      hb_log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep "$delay"
    delay="$(awk -v d="$delay" 'BEGIN { d *= 2; if (d > 2) d = 2; print d }')"
  done
}

hb_kubectl() { "$HB_BIN/kubectl" --kubeconfig "$HB_KUBECONFIG" "$@"; }
