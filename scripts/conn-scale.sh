#!/usr/bin/env bash
# 10,000 concurrent authenticated connections: server memory per idle connection, then a light
# load spread over all of them. Plain text and TLS, one after the other. The credential is
# derived once (velocity-bench shares it across connections).
#   scripts/conn-scale.sh [CONNECTIONS] [IDLE_S] [LOAD_S]      (defaults 10000 8 10)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}; IDLE=${2:-8}; LOAD=${3:-10}
ulimit -n "$(ulimit -Hn)"
cargo build --release -q --bin velocityd --bin velocity-bench
dir=$(mktemp -d)
trap 'pkill -f "velocityd --data-dir $dir" 2>/dev/null || true; rm -rf "$dir"' EXIT
echo -n bench | target/release/velocityd user add bench --password-stdin --data-dir "$dir/d" >/dev/null
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
rss() { awk '/VmRSS/{print $2*1024}' "/proc/$1/status"; }
for mode in plain tls; do
  sflag=(); cflag=(--accept-new-host --known-hosts "$dir/kh")
  [ $mode = plain ] && { sflag=(--plaintext); cflag+=(--plaintext); }
  taskset -c 0 target/release/velocityd --data-dir "$dir/d" --listen 127.0.0.1:$port --cpu-list 0 --audit off --durability none \
    "${sflag[@]}" 2>/dev/null &
  spid=$!
  for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  sleep 0.5
  base=$(rss $spid)
  log=$dir/bench-$mode.log
  # Each connection sends one GET per second after the idle hold: a light load of N/s.
  echo -n bench | taskset -c 1 target/release/velocity-bench -p $port -u bench --password-stdin "${cflag[@]}" \
    -c "$N" -P 1 --think-ms 1000 --idle-s "$IDLE" --workload get --keys 10000 --duration-s "$LOAD" \
    --warmup-s 1 --json > "$dir/out-$mode.json" 2> "$log" &
  bpid=$!
  until grep -q "established" "$log" 2>/dev/null || ! kill -0 $bpid 2>/dev/null; do sleep 0.2; done
  sleep $(( IDLE / 2 ))
  held=$(rss $spid)
  est=$(grep -o "established [0-9]* connections in [0-9.]*s" "$log" || echo "established ? connections")
  wait $bpid || true
  python3 - "$mode" "$N" "$base" "$held" "$dir/out-$mode.json" "$est" <<'PY'
import json, sys
mode, n, base, held, path, est = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
j = json.load(open(path))
print(f"{mode:5}: {est}; server RSS {base/2**20:.1f} MiB idle-empty, {held/2**20:.1f} MiB with {n} idle connections "
      f"= {(held-base)/n:.0f} bytes per connection; light load {j['ops_per_s']:.0f} ops/s, "
      f"p50 {j['p50_ms']} ms, p99 {j['p99_ms']} ms, p99.9 {j['p99_9_ms']} ms, errors {j['errors']}")
PY
  kill $spid; wait $spid 2>/dev/null || true
done
