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

# The cluster's own address ranges: pods on the local bridge, services virtual.
HB_NODE=healthbridge-e2e
HB_BRIDGE=cni0
HB_POD_CIDR=10.244.0.0/24
HB_SERVICE_CIDR=10.96.0.0/24
HB_FIRST_SERVICE_IP=10.96.0.1
# The bridge's gateway address is the node address and the apiserver's: pods reach
# it without leaving the bridge, and nothing listens on the machine's other networks.
HB_NODE_IP=10.244.0.1
HB_APISERVER="https://$HB_NODE_IP:6443"
HB_CONTAINERD_SOCK=/run/containerd/containerd.sock
HB_PAUSE_IMAGE=docker.io/healthbridge/pause:local
HB_EGRESS_CHAIN=HB-E2E-EGRESS

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
hb_start() {
  local name="$1"; shift
  mkdir -p "$HB_LOGS" "$HB_PIDS"
  hb_log "starting $name"
  setsid nohup "$@" >> "$HB_LOGS/$name.log" 2>&1 < /dev/null &
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
