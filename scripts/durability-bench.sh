#!/usr/bin/env bash
# Write throughput per durability mode, next to Redis with appendfsync always and everysec, in
# one run; then recovery speed. Each server pinned to CPU 0, the load generator to CPU 1; SET at
# 50 connections x pipeline 16 over 100,000 keys with 16-byte values (redis-benchmark for Redis,
# velocity-bench for Velocity, --plaintext --audit off as Redis has neither). Data directories
# live under target/ (a real disk, not tmpfs, so fdatasync means something).
#   scripts/durability-bench.sh [ROUNDS] [SECONDS] [RECOVERY_KEYS]   (defaults 3, 5, 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-5}; RKEYS=${3:-1000000}
KEYS=100000; VALUE=16; CONNS=50; PIPE=16
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release -q --bin velocityd --bin velocity-bench
mkdir -p target/bench
dir=$(mktemp -d -p "$PWD/target/bench"); out=$dir/results.tsv
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 400); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
echo -n bench | target/release/velocityd user add bench --password-stdin --data-dir "$dir/users" >/dev/null

run_velocity() { # mode
  local port d pid
  port=$(freeport); d="$dir/v-$1"; rm -rf "$d"; cp -r "$dir/users" "$d"
  local extra=(--durability "$1")
  [ "$1" = periodic ] && extra+=(--fsync-interval-ms 1000)
  taskset -c 0 target/release/velocityd --data-dir "$d" --listen 127.0.0.1:$port --cpu-list 0 --plaintext --audit off "${extra[@]}" 2>/dev/null &
  pid=$!; waitport "$port"
  echo -n bench | taskset -c 1 target/release/velocity-bench -p "$port" -u bench --password-stdin --plaintext --accept-new-host \
      --known-hosts "$d.kh" -c $CONNS -P $PIPE --workload set --duration-s "$SECS" --warmup-s 1 --keys $KEYS \
      --value-bytes $VALUE --json 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print("%.0f\t%s\t%s\t%d" % (j["ops_per_s"], j["p50_ms"], j["p99_ms"], j["errors"] + j["wrong_replies"]))'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run_redis() { # always|everysec
  local port d pid n txt
  port=$(freeport); d="$dir/r-$1"; rm -rf "$d"; mkdir -p "$d"
  taskset -c 0 redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly yes --appendfsync "$1" --dir "$d" >/dev/null &
  pid=$!; waitport "$port"
  n=$(( 150000 * SECS ))
  [ "$1" = always ] && n=$(( 40000 * SECS ))
  txt=$(taskset -c 1 redis-benchmark -p "$port" -c $CONNS -P $PIPE -n $n -r $KEYS -d $VALUE -t set 2>/dev/null | tr '\r' '\n')
  python3 - "$txt" <<'PY'
import re, sys
txt = sys.argv[1]
rps = float(re.findall(r"throughput summary: ([0-9.]+) requests per second", txt)[-1])
pct = {float(p): float(v) for p, v in re.findall(r"([0-9.]+)% <= ([0-9.]+) milliseconds", txt)}
at = lambda q: pct[min(k for k in pct if k >= q)] if any(k >= q for k in pct) else max(pct.values())
print(f"{rps:.0f}\t{at(50)}\t{at(99)}\t0")
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

printf "round\tserver\tmode\tops/s\tp50_ms\tp99_ms\terrors\n" | tee "$out"
for r in $(seq "$ROUNDS"); do
  for m in always everysec; do printf "%s\tredis\t%s\t%s\n" "$r" "$m" "$(run_redis $m)" | tee -a "$out"; done
  for m in sync periodic none; do printf "%s\tvelocity\t%s\t%s\n" "$r" "$m" "$(run_velocity $m)" | tee -a "$out"; done
done
echo
echo "Medians over $ROUNDS rounds (SET, $CONNS connections x pipeline $PIPE, one server core):"
python3 - "$out" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = {}
for (srv, mode) in sorted({(r["server"], r["mode"]) for r in rows}):
    rs = [r for r in rows if r["server"] == srv and r["mode"] == mode]
    med[(srv, mode)] = statistics.median(float(r["ops/s"]) for r in rs)
    print(f"  {srv:9s} {mode:9s} {med[(srv, mode)]:>10,.0f} ops/s  p99 {statistics.median(float(r['p99_ms']) for r in rs):.2f} ms  errors {sum(int(r['errors']) for r in rs)}")
a = med[("redis", "always")]; e = med[("redis", "everysec")]
print(f"  velocity sync / redis always:       {med[('velocity', 'sync')] / a:.2f}x")
print(f"  velocity periodic / redis everysec: {med[('velocity', 'periodic')] / e:.2f}x")
PY

echo
echo "Recovery: $RKEYS keys written with --durability sync, then SIGKILL and a restart"
port=$(freeport); d="$dir/recovery"; cp -r "$dir/users" "$d"
target/release/velocityd --data-dir "$d" --listen 127.0.0.1:$port --cores 2 --plaintext --audit off 2>"$d.log" &
pid=$!; pids+=($pid); waitport "$port"
echo -n bench | target/release/velocity-bench -p "$port" -u bench --password-stdin --plaintext --accept-new-host --known-hosts "$d.kh" \
  -c 50 -P 64 --workload set --requests "$RKEYS" --warmup-s 0 --keys "$RKEYS" --key-dist uniform --value-bytes $VALUE --no-populate --json >/dev/null 2>&1
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
du -sh "$d/wal"
target/release/velocityd --data-dir "$d" --listen 127.0.0.1:$port --cores 2 --plaintext --audit off 2>"$d.log2" &
pid=$!; pids+=($pid); waitport "$port"
grep -o 'recovered.*' "$d.log2" | sed 's/\x1b\[[0-9;]*m//g'
kill "$pid"; wait "$pid" 2>/dev/null || true
