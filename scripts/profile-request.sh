#!/usr/bin/env bash
# Where one request's time goes, Velocity next to Redis in one run: each server alone on CPU 0,
# its load generator on CPU 1 (as scripts/compare-redis.sh runs them), GET of 100,000 keys of
# 16 B. Per request, from the kernel's own counters over the whole load run (perf stat on the
# server's PID): syscalls by kind, io_uring submissions, completions, poll arms and task-work
# adds, wake-ups and context switches, and server CPU time; the load generator's CPU per request
# (its rusage), so that the client is seen not to be the limit. Then a CPU profile of each
# server (perf record at 4 kHz, software clock: this VM has no PMU) split by DSO and by symbol.
#   scripts/profile-request.sh [SECONDS] [CONNS] [PIPELINE]     (defaults: 10 s, 50, 1)
# Needs root (tracepoints) and perf; installs redis-server from Debian's package when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}; CONNS=${2:-50}; PIPE=${3:-1}
KEYS=100000; VALUE=16
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
command -v perf >/dev/null || { echo "perf is needed (Debian: linux-perf)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -q --bin velocityd --bin velocity-bench
dir=$(mktemp -d -p "$PWD/target")
cleanup() { pkill -f "velocityd --data-dir $dir" 2>/dev/null || true; pkill -f "redis-server 127.0.0.1:$rport" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
vport=$(freeport); rport=$(freeport)
EVENTS=task-clock,raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_poll_arm,io_uring:io_uring_task_add,sched:sched_wakeup,sched:sched_switch

echo -n bench | target/release/velocityd user add bench --password-stdin --data-dir "$dir/v" >/dev/null
taskset -c 0 target/release/velocityd --data-dir "$dir/v" --listen 127.0.0.1:$vport --cpu-list 0 --plaintext --audit off --durability none 2>/dev/null &
vpid=$!
taskset -c 0 redis-server --bind 127.0.0.1 --port $rport --save '' --appendonly no --dir "$dir" >/dev/null &
rpid=$!
waitport $vport; waitport $rport
vbench() { echo -n bench | taskset -c 1 target/release/velocity-bench -p $vport -u bench --password-stdin --plaintext \
  --accept-new-host --known-hosts "$dir/kh" --key-prefix key: --keys $KEYS --value-bytes $VALUE --json "$@" 2>/dev/null; }
vbench -c 1 -P 1 --requests 1 --warmup-s 0 >/dev/null
taskset -c 1 redis-benchmark -p $rport -c 50 -P 64 -n $((KEYS * 4)) -r $KEYS -d $VALUE -t set -q >/dev/null 2>&1
# Redis is driven by a request count: about what it answers in SECS at this depth.
rn=$(( PIPE > 1 ? 400000 * SECS : 80000 * SECS ))

# name pid client...: the client's stdout, its CPU seconds, and the server's counters, in $dir/name.*
measure() {
  local name=$1 pid=$2; shift 2
  perf stat -x, -e "$EVENTS" -p "$pid" -o "$dir/$name.stat" &
  local pstat=$!
  sleep 0.3
  /usr/bin/time -f "%U %S" -o "$dir/$name.time" "$@" > "$dir/$name.out"
  kill -INT $pstat; wait $pstat || true
}
measure velocity $vpid bash -c "$(declare -f vbench); vport=$vport dir=$dir KEYS=$KEYS VALUE=$VALUE; vbench -c $CONNS -P $PIPE --workload get --duration-s $SECS --warmup-s 0 --no-populate"
measure redis $rpid taskset -c 1 redis-benchmark -p $rport -c "$CONNS" -P "$PIPE" -n $rn -r $KEYS -d $VALUE -t get -q

python3 - "$dir" "$rn" <<'PY'
import json, re, sys
d, rn = sys.argv[1], int(sys.argv[2])
def counters(name):
    c = {}
    for line in open(f"{d}/{name}.stat"):
        f = line.strip().split(",")
        if len(f) > 2 and f[0] and f[0][0].isdigit():
            c[f[2]] = float(f[0])
    return c
def client_s(name):
    u, s = open(f"{d}/{name}.time").read().split()[-2:]
    return float(u) + float(s)
v = json.loads(open(f"{d}/velocity.out").read())
txt = open(f"{d}/redis.out").read().replace("\r", "\n")
rps = float(re.findall(r"([0-9.]+) requests per second", txt)[-1])
reqs = {"velocity": v["requests"], "redis": rn}
rate = {"velocity": v["ops_per_s"], "redis": rps}
c = {n: counters(n) for n in reqs}
rows = [("requests/s", lambda n: rate[n], "{:,.0f}")]
rows.append(("server CPU µs per request", lambda n: c[n].get("task-clock", 0) * 1e3 / reqs[n], "{:.2f}"))
rows.append(("client CPU µs per request", lambda n: client_s(n) * 1e6 / reqs[n], "{:.2f}"))
names = [("raw_syscalls:sys_enter", "syscalls, all")] + [(f"syscalls:sys_enter_{s}", s) for s in
        ("recvfrom", "sendto", "read", "write", "io_uring_enter", "epoll_wait", "epoll_pwait")] + [
        (f"io_uring:io_uring_{s}", f"io_uring {s}") for s in ("submit_req", "complete", "poll_arm", "task_add")] + [
        ("sched:sched_wakeup", "wake-ups (by the server)"), ("sched:sched_switch", "context switches")]
for ev, label in names:
    rows.append((label + " per request", lambda n, ev=ev: c[n].get(ev, 0) / reqs[n], "{:.3f}"))
print(f"\n{'per request':<36}{'velocity':>12}{'redis':>12}")
for label, f, fmt in rows:
    print(f"{label:<36}{fmt.format(f('velocity')):>12}{fmt.format(f('redis')):>12}")
PY

# A CPU profile of each server under the same load.
for name in velocity redis; do
  pid=$vpid; [ $name = redis ] && pid=$rpid
  perf record -F 4000 -g -p $pid -o "$dir/$name.data" -- sleep $((SECS / 2)) 2>/dev/null &
  prec=$!
  if [ $name = velocity ]; then
    vbench -c $CONNS -P $PIPE --workload get --duration-s $((SECS / 2 + 1)) --warmup-s 0 --no-populate >/dev/null
  else
    taskset -c 1 redis-benchmark -p $rport -c "$CONNS" -P "$PIPE" -n $((rn * 6 / 10)) -r $KEYS -d $VALUE -t get -q >/dev/null
  fi
  wait $prec || true
  echo; echo "== $name: CPU samples by DSO"
  perf report -i "$dir/$name.data" --stdio --no-children --sort dso 2>/dev/null | grep -E '^ +[0-9]' | head -8  || true
  echo "== $name: top symbols (self)"
  perf report -i "$dir/$name.data" --stdio --no-children --sort sym -g none 2>/dev/null | grep -E '^ +[0-9]' | head -25 || true
done
