#!/usr/bin/env bash
# A 3-node cluster against a single node, interleaved, in one run: SET and GET throughput and p99
# through node 1, then the failover and catch-up figures (tests/e2e_cluster.rs,
# measure_failover_and_catch_up). This machine has 2 CPUs: every server (the single node, or all
# three cluster nodes) is pinned to CPU 0 with 1 core each, the load generator to CPU 1, so both
# configurations get the same server CPU; the cluster's three nodes split it. Plaintext, audit
# off, --durability sync for both (a cluster acknowledges a write once a majority has it synced).
# 50 connections x pipeline 16 over 100,000 keys of 16 bytes. Data under target/ (a real disk).
#   scripts/cluster-bench.sh [ROUNDS] [SECONDS] [KILLS]   (defaults 3, 5, 20)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-5}; KILLS=${3:-20}
KEYS=100000; VALUE=16; CONNS=50; PIPE=16; RANGES=12
cargo build --release -q --bin velocityd --bin velocity-bench
mkdir -p target/bench
dir=$(mktemp -d -p "$PWD/target/bench"); out=$dir/results.tsv
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 400); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
V=target/release/velocityd
start() { # data-dir port -> pid
  taskset -c 0 $V --data-dir "$1" --listen 127.0.0.1:$2 --cores 1 --cpu-list 0 --plaintext --audit off --durability sync >/dev/null 2>>"$dir/servers.log" &
  echo $!
}
bench() { # port workload known-hosts
  echo -n bench | taskset -c 1 target/release/velocity-bench -p "$1" -u bench --password-stdin --plaintext --accept-new-host \
      --known-hosts "$3" -c $CONNS -P $PIPE --workload "$2" --duration-s "$SECS" --warmup-s 1 --keys $KEYS \
      --value-bytes $VALUE --json 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print("%.0f\t%s\t%s\t%d" % (j["ops_per_s"], j["p50_ms"], j["p99_ms"], j["errors"] + j["wrong_replies"]))'
}
single() { # workload
  local d=$dir/single port pid; rm -rf "$d"; mkdir -p "$d"
  echo -n bench | $V user add bench --password-stdin --data-dir "$d" >/dev/null
  port=$(freeport); pid=$(start "$d" "$port"); pids+=("$pid"); waitport "$port"
  bench "$port" "$1" "$d.kh"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
cluster() { # workload
  local i d file=$dir/cluster.conf port ports=() cpids=()
  { echo "ranges $RANGES"; echo "replication 3"; } > "$file"
  for i in 1 2 3; do
    d=$dir/node$i; rm -rf "$d"; mkdir -p "$d"
    echo -n bench | $V user add bench --password-stdin --data-dir "$d" >/dev/null
    echo "node $i 127.0.0.1:$(freeport) cores=1 $($V fingerprint --data-dir "$d" | awk '{print $NF}')" >> "$file"
  done
  for i in 1 2 3; do
    $V cluster init --node-id $i --cluster-file "$file" --data-dir "$dir/node$i" >/dev/null
    port=$(freeport); ports+=("$port"); cpids+=("$(start "$dir/node$i" "$port")")
  done
  pids+=("${cpids[@]}")
  for p in "${ports[@]}"; do waitport "$p"; done
  # Until every range has a leader (the first writes would otherwise wait out the elections).
  for _ in $(seq 200); do
    [ "$($V cluster status --data-dir "$dir/node1" | grep -c 'leader  *[0-9]')" = $RANGES ] && break; sleep 0.05
  done
  bench "${ports[0]}" "$1" "$dir/node1.kh"
  for p in "${cpids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
}
printf "round\tservers\tworkload\tops/s\tp50_ms\tp99_ms\terrors\n" | tee "$out"
for r in $(seq "$ROUNDS"); do
  for w in set get; do
    printf "%s\tsingle\t%s\t%s\n" "$r" "$w" "$(single $w)" | tee -a "$out"
    printf "%s\tcluster\t%s\t%s\n" "$r" "$w" "$(cluster $w)" | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
for w in ("set", "get"):
    def med(s, k): return statistics.median(float(r[k]) for r in rows if r["servers"] == s and r["workload"] == w)
    print(f"{w}: cluster/single ops/s {med('cluster','ops/s')/med('single','ops/s'):.2f}  "
          f"p99 single {med('single','p99_ms')} ms, cluster {med('cluster','p99_ms')} ms (medians of the rounds)")
PY
VELOCITY_FAILOVER_KILLS=$KILLS cargo test --release -q --test e2e_cluster measure_failover -- --ignored --nocapture 2>&1 |
  grep -E "^(failover|catch-up)"
# A replica rebuilt from snapshots: the logs compacted past the restarted node's (64 KiB).
VELOCITY_FAILOVER_KILLS=0 VELOCITY_SNAPSHOT_LOG_BYTES=65536 cargo test --release -q --test e2e_cluster measure_failover -- --ignored --nocapture 2>&1 |
  grep -E "^catch-up"
