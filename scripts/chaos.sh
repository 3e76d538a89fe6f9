#!/usr/bin/env bash
# Chaos: one velocityd under a mixed pipelined load and a well-behaved latency probe, through
# phases that each do one bad thing to it — kill -9 restart cycles, 100 never-reading and 20
# slow-reading clients, 260 handshake tricklers, a range DELETE of 1,000,000 keys, a disk-full
# period (the server's file-size limit pinned with prlimit) — printing per phase the probe's p99,
# the server's peak RSS, and the acknowledged writes checked and lost (must be 0: the script
# fails otherwise). See scripts/chaos.py.
#   scripts/chaos.sh [PHASE_SECONDS]     (default 8)
set -euo pipefail
cd "$(dirname "$0")/.."
export PHASE_S=${1:-8}
cargo build --release -q --bin velocityd --bin velocity-bench
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ ! -x target/pyenv/bin/python ]; then python3 -m venv target/pyenv; fi
target/pyenv/bin/pip install --quiet --disable-pip-version-check -e clients/python
exec target/pyenv/bin/python scripts/chaos.py
