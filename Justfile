# healthbridge workflows. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TERM_COLOR := "never"

# Nodes of the local cluster: `NODES=2 just up` adds node-b (its own network namespace,
# containerd, kubelet, kube-proxy); the end-to-end suite always runs on 2.
nodes := env_var_or_default("NODES", "1")

default:
    @just --list

# Everything CI runs: fmt, lints, unit/integration tests, arm64 smoke, monitoring checks, short fuzzing, then e2e on a real cluster.
test: check unit smoke-arm64 monitoring fuzz-ci e2e

# Formatting and lints (warnings are errors).
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Unit and integration tests (no cluster needed).
unit:
    cargo test --workspace --exclude healthbridge-e2e

# The arm64 agent image's binary under qemu-user-static: serve answers /health, probe exits as it should.
smoke-arm64: images
    scripts/smoke-arm64

# promtool on the chart's alerts (and their unit tests) and dashboard queries; their metrics exist in the real binaries' /metrics.
monitoring: images
    scripts/monitoring

# Every cargo-fuzz target for 20 s on the seeds in fuzz/corpus/ (nightly); fails on a crash.
fuzz-ci:
    scripts/fuzz 20

# Every cargo-fuzz target for longer (SECONDS each, default 10 minutes).
fuzz SECONDS="600":
    scripts/fuzz {{SECONDS}}

# Builds the release binaries of this commit in a second, fresh checkout and compares them byte for byte.
repro: deps
    scripts/repro

# Benchmarks: criterion and load runs; prints the figures the issues ask for.
bench:
    bench/run

# Install the tools a fresh machine lacks (Debian packages, Rust targets, cargo tools).
deps:
    scripts/deps

# Build the images for linux/amd64 and linux/arm64 (no Docker engine) into target/images/: per-arch archives, one OCI index each.
images: deps
    scripts/images

# Render manifests/healthbridge.yaml from the chart with default values.
manifests:
    scripts/manifests

# Fail when manifests/healthbridge.yaml is not what the chart renders (helm comes with cluster-up).
manifests-check n=nodes: (cluster-up n)
    scripts/manifests
    git diff --exit-code -- manifests/ || (echo "manifests/ is out of date with charts/: run 'just manifests' and commit" >&2; exit 1)

# Build the pinned Kubernetes binaries (cached outside the repo) and start the local cluster with n nodes (1 or 2).
cluster-up n=nodes: deps
    HB_NODES={{n}} e2e/cluster/up

# Stop the local cluster and remove its state.
down:
    e2e/cluster/down

# End-to-end tests on the local real cluster with two nodes (starts it if needed).
e2e: images (cluster-up "2") (manifests-check "2")
    e2e/run

# The end-to-end suite on the oldest supported Kubernetes minor (1.30) and on 1.34, each on its own two-node
# cluster (built once per release, cached), then a pass/fail line per test and release; HB_MATRIX_VERSIONS
# overrides the releases. Not in `test`: a release not built yet takes 30-60 minutes.
e2e-matrix: images deps
    e2e/matrix

# The main job: a local real cluster with healthbridge installed and a demo workload.
up: images cluster-up
    e2e/demo-up
