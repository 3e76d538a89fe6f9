#!/usr/bin/env bash
# The whole test suite: what the README tells a new user to run, and exactly what .ci/run runs.
# Installs what it needs; needs only the Rust toolchain, python3 and node/npm to begin with.
set -euo pipefail
cd "$(dirname "$0")/.."
# End-to-end tests open many sockets; raise the soft open-files limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== Rust: library, server, CLI, end-to-end =="
cargo test --release --locked
# The client suites below start the velocityd that `cargo test --release` just built.
export VELOCITYD="$PWD/target/release/velocityd"

echo "== Python client (clients/python) =="
# A virtual environment under target/ keeps the machine's Python untouched.
if [ ! -x target/pyenv/bin/pytest ]; then
    python3 -m venv target/pyenv
fi
target/pyenv/bin/pip install --quiet --disable-pip-version-check -e 'clients/python[test]'
target/pyenv/bin/pytest -q clients/python/tests

echo "== Node.js client (clients/node) =="
(cd clients/node && npm ci --no-audit --no-fund --loglevel=error && npm test --silent)
