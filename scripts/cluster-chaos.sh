#!/usr/bin/env bash
# Three cluster nodes in network namespaces (veth pairs on a bridge), faults in turn while six
# clients write and read registers: leader SIGKILL and restart, SIGSTOP/SIGCONT, the leader cut
# off and healed, a follower cut off and healed, a node wiped and replaced by a new one in its
# place (velocityd cluster change), delay and loss on every node-to-node link (netem where the
# kernel has it, else the proxies the links go through).
# The clients' history is checked by velocity::linearizability::check (tests/cluster_chaos.rs).
# Needs root and `ip netns`; otherwise it says it skipped.
#   scripts/cluster-chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! ip netns list >/dev/null 2>&1; then
  echo "cluster-chaos: skipped (needs root and ip netns)"
  exit 0
fi
cargo test --release --locked --test cluster_chaos -- --ignored --nocapture
