#!/usr/bin/env bash
# The whole test suite: installs the prerequisites, checks formatting and
# lints, runs every test (unit, integration, namespace and VM tiers) and the
# benchmark. Run as root: the namespace and VM tests need it, and under
# CI=true they fail rather than skip when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test
cargo bench --bench converge
