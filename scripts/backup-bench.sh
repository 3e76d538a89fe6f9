#!/usr/bin/env bash
# What `velocityd backup` costs a running workload: the same velocity-bench run with and
# without backups copying the data directory over and over meanwhile, interleaved round by
# round. One server core (CPU 0, --durability sync, the default), the load on CPU 1, the
# backups one after another for the whole run (the worst case) on BACKUP_CPU (default 1, the
# load's: a 2-CPU machine has no third); KEYS keys of 100 B loaded first, so that each backup
# copies a real data set.
#   scripts/backup-bench.sh [ROUNDS] [SECONDS] [KEYS]      (defaults: 3 rounds of 10 s, 1,000,000 keys)
#   WORKLOAD=mixed:90 CONNS=50 PIPELINE=1 BACKUP_CPU=1 to change the workload.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-10}; KEYS=${3:-1000000}; VALUE=100
WORKLOAD=${WORKLOAD:-mixed:90}; CONNS=${CONNS:-50}; PIPELINE=${PIPELINE:-1}; BACKUP_CPU=${BACKUP_CPU:-1}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -q --bin velocityd --bin velocity-bench
dir=$(mktemp -d -p "$PWD/target"); out=$dir/results.tsv
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
echo -n bench | target/release/velocityd user add bench --password-stdin --data-dir "$dir/d" >/dev/null
taskset -c 0 target/release/velocityd --data-dir "$dir/d" --listen 127.0.0.1:$port --cpu-list 0 --plaintext --audit off 2>"$dir/server.log" &
pid=$!
for _ in $(seq 400); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
bench() { # extra velocity-bench flags
  echo -n bench | taskset -c 1 target/release/velocity-bench -p $port -u bench --password-stdin --plaintext --accept-new-host \
    --known-hosts "$dir/kh" --key-prefix key: --keys $KEYS --value-bytes $VALUE --json "$@" 2>/dev/null
}
bench -c 1 -P 1 --requests 1 --warmup-s 0 >/dev/null   # loads the keys
row() { # round mode json backups
  python3 - "$@" <<'PY'
import json, sys
r, mode, j, n = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
print(f'{r}\t{mode}\t{j["ops_per_s"]:.0f}\t{j["p50_ms"]}\t{j["p99_ms"]}\t{j["p99_9_ms"]}\t{n}\t{j["errors"] + j["wrong_replies"]}')
PY
}
printf "round\tmode\tops/s\tp50_ms\tp99_ms\tp99.9_ms\tbackups\terrors\n" | tee "$out"
for r in $(seq "$ROUNDS"); do
  j=$(bench -c $CONNS -P $PIPELINE --workload $WORKLOAD --duration-s $SECS --warmup-s 1 --no-populate)
  row "$r" quiet "$j" 0 | tee -a "$out"
  bench -c $CONNS -P $PIPELINE --workload $WORKLOAD --duration-s $SECS --warmup-s 1 --no-populate > "$dir/bench.json" &
  bpid=$!
  n=0
  while kill -0 $bpid 2>/dev/null; do
    rm -rf "$dir/b"
    taskset -c $BACKUP_CPU target/release/velocityd backup --data-dir "$dir/d" --to "$dir/b" >> "$dir/backup.log" && n=$((n + 1))
  done
  wait $bpid
  row "$r" backup "$(cat "$dir/bench.json")" $n | tee -a "$out"
done
echo
tail -1 "$dir/backup.log"
python3 - "$out" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
m = lambda mode, k: statistics.median(float(r[k]) for r in rows if r["mode"] == mode)
print("medians: mode\tops/s\tp50_ms\tp99_ms\tp99.9_ms")
for mode in ("quiet", "backup"):
    print(f'{mode}\t{m(mode, "ops/s"):.0f}\t{m(mode, "p50_ms")}\t{m(mode, "p99_ms")}\t{m(mode, "p99.9_ms")}')
print(f'backup/quiet ops/s {m("backup", "ops/s") / m("quiet", "ops/s"):.2f}, p99 {m("backup", "p99_ms") / m("quiet", "p99_ms"):.2f}x')
PY
