#!/usr/bin/env bash
# What TLS and the audit log cost: velocityd (one core on CPU 0) under velocity-bench (CPU 1) in
# four configurations, interleaved in rounds in one run: plain/TLS × audit off/on. Prints
# ops/s and p99 per round and the median ratios against plain text with the audit log off.
#   scripts/security-overhead.sh [ROUNDS] [SECONDS]      (defaults 3 rounds of 5 s)
#   CASES="50:16:get 50:16:set 50:1:get" to choose cases (conns:pipeline:workload)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-5}
CASES=${CASES:-"50:16:get 50:16:set 50:1:get"}
cargo build --release -q --bin velocityd --bin velocity-bench
dir=$(mktemp -d); out=$dir/results.tsv
trap 'pkill -f "velocityd --data-dir $dir" 2>/dev/null || true; rm -rf "$dir"' EXIT
echo -n bench | target/release/velocityd user add bench --password-stdin --data-dir "$dir/d" >/dev/null
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
run() { # transport audit conns pipeline workload
  local tflag=() bflag=(--accept-new-host --known-hosts "$dir/kh")
  if [ "$1" = plain ]; then tflag=(--plaintext); bflag+=(--plaintext); fi
  rm -rf "$dir/d/audit"
  taskset -c 0 target/release/velocityd --data-dir "$dir/d" --listen 127.0.0.1:$port --cpu-list 0 \
    --audit "$2" --durability none "${tflag[@]}" 2>/dev/null &
  local pid=$!
  for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  echo -n bench | taskset -c 1 target/release/velocity-bench -p $port -u bench --password-stdin "${bflag[@]}" \
    -c "$3" -P "$4" --workload "$5" --duration-s "$SECS" --warmup-s 1 --keys 100000 --json 2>/dev/null
  kill $pid; wait $pid 2>/dev/null || true
}
printf "round\tconfig\tcase\tops/s\tp99_ms\n" | tee "$out"
for r in $(seq "$ROUNDS"); do
  for c in $CASES; do
    IFS=: read -r conns pipe wl <<< "$c"
    for t in plain tls; do
      for a in off on; do
        j=$(run $t $a "$conns" "$pipe" "$wl")
        printf "%s\t%s\t%s\t%s\n" "$r" "$t+audit_$a" "$c" \
          "$(echo "$j" | python3 -c 'import json,sys;j=json.load(sys.stdin);assert j["errors"]==0 and j["wrong_replies"]==0, j;print("%.0f\t%s" % (j["ops_per_s"], j["p99_ms"]))')" | tee -a "$out"
      done
    done
  done
done
echo
echo "Medians over $ROUNDS rounds; ratios against plain+audit_off"
python3 - "$out" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
cases = list(dict.fromkeys(r["case"] for r in rows)); cfgs = list(dict.fromkeys(r["config"] for r in rows))
print(f'{"case":<14}{"config":<18}{"ops/s":>10}{"ratio":>7}{"p99 ms":>9}')
for c in cases:
    m = lambda cfg, k: statistics.median(float(r[k]) for r in rows if r["case"] == c and r["config"] == cfg)
    base = m("plain+audit_off", "ops/s")
    for cfg in cfgs:
        print(f'{c:<14}{cfg:<18}{m(cfg, "ops/s"):>10.0f}{m(cfg, "ops/s") / base:>7.2f}{m(cfg, "p99_ms"):>9.3f}')
PY
