#!/usr/bin/env bash
# Many crash cycles: a velocityd (--durability sync) under pipelined writes from 4 connections is
# killed with SIGKILL at a random moment, restarted (with 1 or 2 cores, alternately), and every
# key is checked against the last acknowledged write. The test suite runs 3 cycles of this.
#   scripts/crash-test.sh [CYCLES]          (default 50)
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
VELOCITY_CRASH_CYCLES=${1:-50} cargo test --release --locked --test e2e_durability crash_cycles -- --nocapture 2>&1 |
  grep -E "^cycle|^crash test|test result|panicked|acknowledged write .* lost|found"
