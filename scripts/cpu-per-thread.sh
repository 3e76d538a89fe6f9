#!/usr/bin/env bash
# Where the server's CPU goes, per thread: velocityd (one core, CPU 0) under velocity-bench
# (CPU 1), in plain text or TLS with the audit log off or on. Prints ops/s, p99, the CPU-µs per
# operation of each velocityd thread that worked (the core's executor, the audit writer, ...)
# and of the whole machine (both CPUs: the client's share included), from /proc.
#   scripts/cpu-per-thread.sh [SECONDS]                 (default 5 s a configuration)
#   CONFIGS="plain off,plain on,tls off,tls on"  CASE="50 16 get"  (conns pipeline workload)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
CONFIGS=${CONFIGS:-"plain off,plain on,tls off,tls on"}
read -r conns pipeline workload <<< "${CASE:-50 16 get}"
cargo build --release -q --bin velocityd --bin velocity-bench
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
hz=$(getconf CLK_TCK)
dir=$(mktemp -d)
trap 'pkill -f "velocityd --data-dir $dir" 2>/dev/null || true; rm -rf "$dir"' EXIT
echo -n bench | target/release/velocityd user add bench --password-stdin --data-dir "$dir/d" >/dev/null
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
busy() { awk '/^cpu /{print $2+$3+$4+$6+$7+$8}' /proc/stat; }
IFS=, read -ra configs <<< "$CONFIGS"
echo "case: $conns connections x $pipeline pipelined $workload, $SECS s; CPU-us per operation"
for config in "${configs[@]}"; do
  read -r transport audit <<< "$config"
  sflag=(); bflag=(--accept-new-host --known-hosts "$dir/kh")
  if [ "$transport" = plain ]; then sflag=(--plaintext); bflag+=(--plaintext); fi
  rm -rf "$dir/d/audit"
  taskset -c 0 target/release/velocityd --data-dir "$dir/d" --listen 127.0.0.1:$port --cpu-list 0 \
    --audit "$audit" --durability none "${sflag[@]}" 2>/dev/null &
  pid=$!
  for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  bench() { echo -n bench | taskset -c 1 target/release/velocity-bench -p $port -u bench --password-stdin "${bflag[@]}" --keys 100000 "$@"; }
  bench -c 1 -P 1 --requests 1 --warmup-s 0 >/dev/null 2>&1   # populates the keys
  declare -A before=()
  for t in /proc/$pid/task/*; do before[${t##*/}]=$(awk '{print $14+$15}' "$t/stat"); done
  machine0=$(busy)
  json=$(bench -c "$conns" -P "$pipeline" --workload "$workload" --duration-s "$SECS" --warmup-s 0 --no-populate --json 2>/dev/null)
  machine1=$(busy)
  read -r ops rate p99 < <(echo "$json" | python3 -c 'import json,sys;j=json.load(sys.stdin);print(int(j["ops_per_s"]*j["seconds"]), int(j["ops_per_s"]), j["p99_ms"])')
  line="$transport/$audit: $rate ops/s, p99 $p99 ms;"
  for t in /proc/$pid/task/*; do
    ticks=$(( $(awk '{print $14+$15}' "$t/stat") - ${before[${t##*/}]:-0} ))
    [ "$ticks" -gt 2 ] && line+=" $(cat "$t/comm")=$(python3 -c "print(f'{$ticks*1e6/$hz/$ops:.3f}')")"
  done
  line+=" machine=$(python3 -c "print(f'{($machine1-$machine0)*1e6/$hz/$ops:.3f}')")"
  echo "$line"
  unset before
  kill $pid; wait $pid 2>/dev/null || true
done
