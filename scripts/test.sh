#!/usr/bin/env bash
# The whole test suite: what the README tells a new user to run, and exactly what .ci/run runs.
# Installs what a fresh machine lacks: the Rust toolchain (rustup, stable), and python3 with
# venv, Node.js with npm and Prometheus with promtool (Debian/Ubuntu packages, through apt-get);
# the Go and Java suites (scripts/test-go.sh, scripts/test-java.sh) install Go with
# golang.org/x/crypto, a JDK, Maven and the Java libraries the same way, and build offline from
# Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    command -v apt-get >/dev/null || { echo "please install: $*" >&2; exit 1; }
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! command -v cargo >/dev/null; then
    [ -x "$HOME/.cargo/bin/cargo" ] || {
        command -v curl >/dev/null || apt_install curl ca-certificates
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    }
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3 python3-venv
fi
if ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
# Prometheus's server and promtool (Debian's prometheus package), for tests/e2e_metrics.rs: a real
# Prometheus scrapes velocityd's --metrics-listen, and promtool checks what it serves.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    apt_install --no-install-recommends prometheus
fi
# End-to-end tests open many sockets; raise the soft open-files limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== Rust: formatting and lints =="
if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
fi
cargo fmt --check
cargo clippy --release --all-targets --locked -- -D warnings

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

scripts/test-go.sh

echo "== Java client (clients/java) =="
scripts/test-java.sh

echo "== The five clients agree byte for byte (tests/cross) =="
scripts/test-cross.sh

echo "== Client packages: packed, installed outside the repository, examples run =="
scripts/test-packages.sh

echo "== A cluster in network namespaces under kills, pauses and partitions (root only) =="
scripts/cluster-chaos.sh
