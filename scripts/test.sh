#!/usr/bin/env bash
# The whole test suite: what the README tells a new user to run, and exactly what .ci/run runs.
# Installs what it needs; needs only the Rust toolchain to begin with.
set -euo pipefail
cd "$(dirname "$0")/.."
# End-to-end tests open many sockets; raise the soft open-files limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo test --release --locked
