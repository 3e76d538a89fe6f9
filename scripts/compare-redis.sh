#!/usr/bin/env bash
# Velocity against Redis, side by side in one run: interleaved rounds, each server pinned to CPU 0
# and its load generator to CPU 1 (taskset), same connections, pipeline depth, key space (100,000
# keys "key:%012d"), value size (16 B) and command. Redis is driven by redis-benchmark, Velocity
# by velocity-bench; Velocity runs with --plaintext --audit off --durability none, as this Redis has
# no TLS, no audit log and no persistence (scripts/durability-bench.sh compares persistence). Server CPU time per operation comes from /proc/PID/stat (utime + stime).
# Installs redis-server from Debian's package when missing.
#   scripts/compare-redis.sh [ROUNDS] [SECONDS]        (defaults: 3 rounds of 5 s per case)
#   CASES="50:16:get 50:16:set 50:1:get 50:1:set 1:64:get 1:64:set" to choose cases.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-5}
CASES=${CASES:-"50:16:get 50:16:set 50:1:get 50:1:set 1:64:get 1:64:set"}
KEYS=100000; VALUE=16
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release -q --bin velocityd --bin velocity-bench
dir=$(mktemp -d); out=$dir/results.tsv
cleanup() { pkill -f "velocityd --data-dir $dir" 2>/dev/null || true; pkill -f "redis-server 127.0.0.1:$rport" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
vport=$(freeport); rport=$(freeport)
echo -n bench | target/release/velocityd user add bench --password-stdin --data-dir "$dir/v" >/dev/null
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
waitport() { for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; }

# Start both servers once; the key space is loaded once per server.
taskset -c 0 target/release/velocityd --data-dir "$dir/v" --listen 127.0.0.1:$vport --cpu-list 0 --plaintext --audit off --durability none 2>/dev/null &
vpid=$!
taskset -c 0 redis-server --bind 127.0.0.1 --port $rport --save '' --appendonly no --dir "$dir" >/dev/null &
rpid=$!
waitport $vport; waitport $rport
echo -n bench | taskset -c 1 target/release/velocity-bench -p $vport -u bench --password-stdin --plaintext --accept-new-host --known-hosts "$dir/kh" --key-prefix key: -c 1 -P 1 \
  --requests 1 --warmup-s 0 --keys $KEYS --value-bytes $VALUE --json >/dev/null 2>&1
taskset -c 1 redis-benchmark -p $rport -c 50 -P 64 -n $((KEYS * 4)) -r $KEYS -d $VALUE -t set -q >/dev/null 2>&1

run_velocity() { # conns pipeline op
  local a b j
  a=$(ticks $vpid)
  j=$(echo -n bench | taskset -c 1 target/release/velocity-bench -p $vport -u bench --password-stdin --plaintext --accept-new-host --known-hosts "$dir/kh" --key-prefix key: -c "$1" -P "$2" \
      --workload "$3" --duration-s "$SECS" --warmup-s 1 --keys $KEYS --value-bytes $VALUE --no-populate --json 2>/dev/null)
  b=$(ticks $vpid)
  python3 - "$j" "$((b - a))" "$hz" <<'PY'
import json, sys
j = json.loads(sys.argv[1]); t = int(sys.argv[2]) / int(sys.argv[3])
# CPU time covers warm-up too: scale requests by the measured rate over the whole run.
ops = j["ops_per_s"]; total = ops * (j["seconds"] + 1)
print(f'{ops:.0f}\t{j["p50_ms"]}\t{j["p99_ms"]}\t{j["p99_9_ms"]}\t{t * 1e6 / total:.2f}\t{j["errors"] + j["wrong_replies"]}')
PY
}

run_redis() { # conns pipeline op
  local n a b txt
  n=$(( $2 > 1 ? 300000 * SECS : 60000 * SECS ))
  a=$(ticks $rpid)
  txt=$(taskset -c 1 redis-benchmark -p $rport -c "$1" -P "$2" -n $n -r $KEYS -d $VALUE -t "$3" 2>/dev/null | tr '\r' '\n')
  b=$(ticks $rpid)
  python3 - "$txt" "$((b - a))" "$hz" "$n" <<'PY'
import re, sys
txt, t, hz, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rps = float(re.findall(r"throughput summary: ([0-9.]+) requests per second", txt)[-1])
pct = {float(p): float(v) for p, v in re.findall(r"([0-9.]+)% <= ([0-9.]+) milliseconds", txt)}
def at(q):
    ks = sorted(k for k in pct if k >= q)
    return pct[ks[0]] if ks else max(pct.values())
print(f"{rps:.0f}\t{at(50)}\t{at(99)}\t{at(99.9)}\t{t / hz * 1e6 / n:.2f}\t0")
PY
}

printf "round\tserver\tcase\tops/s\tp50_ms\tp99_ms\tp99.9_ms\tcpu_us/op\terrors\n" | tee "$out"
for r in $(seq "$ROUNDS"); do
  for c in $CASES; do
    IFS=: read -r conns pipe op <<< "$c"
    printf "%s\tredis\t%s\t%s\n" "$r" "$c" "$(run_redis "$conns" "$pipe" "$op")" | tee -a "$out"
    printf "%s\tvelocity\t%s\t%s\n" "$r" "$c" "$(run_velocity "$conns" "$pipe" "$op")" | tee -a "$out"
  done
done
echo
echo "Medians over $ROUNDS rounds; ratio = Velocity / Redis (ops/s: higher is better; CPU-µs/op and p99: lower is better)"
python3 - "$out" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
cases = list(dict.fromkeys(r["case"] for r in rows))
print(f'{"case (conns:pipeline:op)":<26}{"redis ops/s":>12}{"velo ops/s":>12}{"ratio":>7}{"redis p99":>10}{"velo p99":>10}{"redis µs/op":>12}{"velo µs/op":>11}{"ratio":>7}')
for c in cases:
    m = lambda s, k: statistics.median(float(r[k]) for r in rows if r["case"] == c and r["server"] == s)
    ro, vo = m("redis", "ops/s"), m("velocity", "ops/s")
    rc, vc = m("redis", "cpu_us/op"), m("velocity", "cpu_us/op")
    print(f'{c:<26}{ro:>12.0f}{vo:>12.0f}{vo/ro:>7.2f}{m("redis","p99_ms"):>10.3f}{m("velocity","p99_ms"):>10.3f}{rc:>12.2f}{vc:>11.2f}{vc/rc:>7.2f}')
PY
