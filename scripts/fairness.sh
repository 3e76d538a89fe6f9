#!/usr/bin/env bash
# Fairness under heavy statements: a probe client's latency while another connection runs a
# COUNT, a LIKE scan and a DELETE over 1,000,000 keys and a 100,000-row INSERT, on an otherwise
# idle server (scripts/fairness.py). With REV, the build at that git revision runs the same,
# right after, for comparison.
#   scripts/fairness.sh [CORES] [REV]      (default 1 core)
set -euo pipefail
cd "$(dirname "$0")/.."
export CORES=${1:-1}
cargo build --release -q --bin velocityd
if [ ! -x target/pyenv/bin/python ]; then python3 -m venv target/pyenv; fi
target/pyenv/bin/pip install --quiet --disable-pip-version-check -e clients/python
BIN=target/release target/pyenv/bin/python scripts/fairness.py
if [ -n "${2:-}" ]; then
  sha=$(git rev-parse --short "$2"); base=target/ab/$sha
  if [ ! -x "$base/target/release/velocityd" ]; then
    rm -rf "$base"; git worktree prune; git worktree add -f --detach "$base" "$sha" >/dev/null
    (cd "$base" && cargo build --release -q --bin velocityd)
  fi
  BIN=$base/target/release target/pyenv/bin/python scripts/fairness.py
fi
