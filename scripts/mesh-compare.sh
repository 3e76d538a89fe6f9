#!/usr/bin/env bash
# Cross-core queues under load: velocityd --cores 2 with --mesh glommio and --mesh crossbeam,
# in interleaved rounds, driven by velocity-bench with keys spread over both shards (so about
# half of all requests cross cores). Prints ops/s and p99 per round and the mean ratio.
# Usage: scripts/mesh-compare.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-5}
cargo build --release -q --bin velocityd --bin velocity-bench
dir=$(mktemp -d); trap 'pkill -f "velocityd --data-dir $dir" 2>/dev/null; rm -rf "$dir"' EXIT
echo -n bench | target/release/velocityd user add bench --password-stdin --data-dir "$dir" >/dev/null
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
run() { # mesh conns pipeline workload
  target/release/velocityd --data-dir "$dir" --listen 127.0.0.1:$port --cores 2 --mesh "$1" --plaintext --audit off --durability none 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  echo -n bench | target/release/velocity-bench -p $port -u bench --password-stdin --plaintext --accept-new-host --known-hosts "$dir/kh" -c "$2" -P "$3" \
    --workload "$4" --duration-s "$SECS" --warmup-s 1 --keys 100000 --json 2>/dev/null
  kill $pid; wait $pid 2>/dev/null || true
}
printf "%-10s %-22s %12s %9s\n" mesh case ops/s p99_ms
declare -A sum
for r in $(seq "$ROUNDS"); do
  for case in "50 16 get" "50 1 get" "1 64 set"; do
    for mesh in glommio crossbeam; do
      set -- $case
      j=$(run $mesh "$1" "$2" "$3")
      ops=$(echo "$j" | python3 -c 'import json,sys;print(round(json.load(sys.stdin)["ops_per_s"]))')
      p99=$(echo "$j" | python3 -c 'import json,sys;print(json.load(sys.stdin)["p99_ms"])')
      printf "%-10s %-22s %12s %9s\n" $mesh "${1}c x P${2} $3" "$ops" "$p99"
      sum[$mesh,$case]=$(( ${sum[$mesh,$case]:-0} + ops ))
    done
  done
done
for case in "50 16 get" "50 1 get" "1 64 set"; do
  python3 -c "print(f'crossbeam/glommio ops/s, $case: {${sum[crossbeam,$case]}/${sum[glommio,$case]}:.2f}')"
done
