# Shared paths and helpers for the e2e cluster scripts; sourced, never run.
HB_CACHE="${HB_CACHE:-$HOME/.cache/healthbridge}"
HB_BIN="$HB_CACHE/bin"
HB_STATE="${HB_STATE:-/var/lib/healthbridge-e2e}"
HB_KUBECONFIG="$HB_STATE/admin.kubeconfig"
