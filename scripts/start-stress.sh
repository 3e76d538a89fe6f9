#!/usr/bin/env bash
# Start-up under stress: N starts of velocityd --cores 2, each checked with a login and a write
# to a key of each shard (one of the two is forwarded to the other core, whichever core the
# connection lands on), within a deadline. `load` keeps both CPUs busy with spinning loops (the
# condition under which glommio 0.9.0 could park an executor with runnable tasks, vendor/);
# `restart` kills the server with SIGKILL after each check and starts the next on the same data
# directory (--durability sync) without waiting. A failed start is dumped (kernel stacks, gdb)
# into target/start-stress/ and counted; the script exits non-zero if any failed.
#   scripts/start-stress.sh [N] [load|noload|restart] [DEADLINE_S]     (defaults 200, load, 10)
set -u
cd "$(dirname "$0")/.."
N=${1:-200}; MODE=${2:-load}; DEADLINE=${3:-10}
cargo build --release -q --bin velocityd --bin velocity-cli || exit 1
BIN=target/release
OUT=target/start-stress; rm -rf "$OUT"; mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
tmpl=$(mktemp -d)
echo -n pw | $BIN/velocityd user add alice --password-stdin --data-dir "$tmpl" >/dev/null
loaders=()
if [ "$MODE" = load ]; then
  for c in 0 1; do taskset -c $c bash -c 'while :; do :; done' & loaders+=($!); done
fi
pid=
cleanup() { kill "${loaders[@]}" $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$tmpl"; }
trap cleanup EXIT
writes="INSERT INTO kv (key, value) VALUES ('k0','x'); INSERT INTO kv (key, value) VALUES ('k1','y')"
cli() { echo -n pw | timeout "$1" $BIN/velocity-cli --plaintext -p $PORT -u alice --password-stdin \
  --known-hosts "$kh" --accept-new-host -c "$writes" 2>&1; }
d=$(mktemp -d -p target); cp -a "$tmpl/." "$d/"; kh=$d/known_hosts
ok=0; failed=0
for i in $(seq 1 "$N"); do
  if [ "$MODE" != restart ]; then rm -rf "$d"; d=$(mktemp -d -p target); cp -a "$tmpl/." "$d/"; kh=$d/known_hosts; fi
  extra=(--durability none); [ "$MODE" = restart ] && extra=(--durability sync)
  $BIN/velocityd --listen 127.0.0.1:$PORT --cores 2 --data-dir "$d" --plaintext --audit off "${extra[@]}" >"$d/log" 2>&1 &
  pid=$!
  # Killed with SIGKILL later and, in restart mode, never waited for: no job notices.
  disown $pid
  t0=$(date +%s%N); state=""
  while [ -z "$state" ]; do
    left=$(( DEADLINE * 1000 - ($(date +%s%N) - t0) / 1000000 ))
    [ $left -le 0 ] && { state="no answer within ${DEADLINE} s"; break; }
    res=$(cli "$(awk "BEGIN{print $left/1000}")"); rc=$?
    case $rc in
      0) state=ok;;
      124) state="writes unanswered within ${DEADLINE} s";;
      *) case "$res" in *"cannot connect"*) sleep 0.01;; *) state="error: $res";; esac;;
    esac
  done
  if [ "$state" = ok ] && ! grep -q panicked "$d/log"; then
    ok=$((ok + 1))
  else
    failed=$((failed + 1))
    echo "start $i: $state (log: $OUT/start$i.log)"
    cp "$d/log" "$OUT/start$i.log"
    for t in /proc/$pid/task/*; do echo "== $(cat "$t/comm") $(basename "$t"): $(cat "$t/wchan")"; cat "$t/stack" 2>/dev/null; done >"$OUT/start$i.kstacks" 2>&1
    gdb -q -batch -p $pid -ex "thread apply all bt" >"$OUT/start$i.gdb" 2>&1
  fi
  kill -9 $pid 2>/dev/null
  # Restart mode starts the next one at once, while this one may still be exiting.
  [ "$MODE" = restart ] || while kill -0 $pid 2>/dev/null; do sleep 0.01; done
done
rm -rf "$d"
echo "start-stress: $N starts ($MODE): $ok ok, $failed failed"
[ $failed = 0 ]
