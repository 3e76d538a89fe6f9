#!/usr/bin/env bash
# velocity-bench under stress: N short runs against one velocityd (--cores 2) sharing the 2 CPUs,
# with both CPUs kept busy by spinning loops. A run that reports 0 ops/s for 3 seconds in a row,
# or outlives its deadline, is a hang: its sockets (ss) and threads (gdb) are dumped into
# target/bench-stress/ and it is killed. Exits non-zero if any run hung or failed.
#   scripts/bench-stress.sh [N] [SECONDS] [velocity-bench args ...]    (defaults 200, 3)
set -u
cd "$(dirname "$0")/.."
N=${1:-200}; SECS=${2:-3}; shift 2 2>/dev/null || shift $#
cargo build --release -q --bin velocityd --bin velocity-bench || exit 1
BIN=target/release
OUT=target/bench-stress; rm -rf "$OUT"; mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
d=$(mktemp -d -p target)
echo -n pw | $BIN/velocityd user add admin --password-stdin --data-dir "$d" >/dev/null
$BIN/velocityd --listen 127.0.0.1:$PORT --cores 2 --data-dir "$d" --plaintext --audit off --durability none >"$d/server.log" 2>&1 &
spid=$!
loaders=()
for c in 0 1; do taskset -c $c bash -c 'while :; do :; done' & loaders+=($!); done
trap 'kill $spid "${loaders[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$d"' EXIT
bench() { echo -n pw | $BIN/velocity-bench -p $PORT --plaintext --password-stdin --known-hosts "$d/kh" --accept-new-host --keys 10000 "$@"; }
for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
bench --requests 1 --warmup-s 0 >/dev/null 2>&1   # loads the key space
ok=0; bad=0
for i in $(seq 1 "$N"); do
  log=$OUT/run$i.log
  bench --no-populate --duration-s "$SECS" --warmup-s 0 "$@" >"$log" 2>&1 &
  bpid=$!
  verdict=ok; t=0
  while kill -0 $bpid 2>/dev/null; do
    sleep 0.5; t=$((t + 1))
    if [ "$(grep -c ' 0 ops/s' "$log")" -ge 3 ] || [ $t -gt $(( 4 * SECS + 20 )) ]; then verdict=hung; break; fi
  done
  if [ $verdict = hung ]; then
    bad=$((bad + 1))
    echo "run $i: hung (dumps in $OUT/run$i.*)"
    ss -tnpi "( dport = :$PORT )" >"$OUT/run$i.ss" 2>&1
    gdb -q -batch -p $bpid -ex "thread apply all bt" >"$OUT/run$i.gdb" 2>&1
    kill -9 $bpid 2>/dev/null; wait $bpid 2>/dev/null
  elif wait $bpid; then
    ok=$((ok + 1))
  else
    bad=$((bad + 1)); echo "run $i: failed: $(tail -n 2 "$log" | tr '\n' ' ')"
  fi
done
echo "bench-stress: $N runs of ${SECS} s under CPU load: $ok ok, $bad hung or failed"
[ $bad = 0 ]
