#!/usr/bin/env bash
# The whole test suite: installs the prerequisites, checks formatting and
# lints, runs every test (unit, integration, namespace, container and VM
# tiers) and the benchmark. Run as root: the namespace, Docker and VM tests
# need it, and under CI=true they fail rather than skip when something is
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh

# A real dockerd for the container tests. When none answers, start one for
# this run and stop it when done.
if ! docker -H unix:///var/run/docker.sock version >/dev/null 2>&1; then
    tests/docker/ensure-dockerd.sh
    trap 'kill "$(cat /var/run/docker.pid 2>/dev/null)" 2>/dev/null || true' EXIT
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test
cargo bench --bench converge
cargo bench --bench probes
