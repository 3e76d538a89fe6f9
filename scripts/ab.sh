#!/usr/bin/env bash
# Before/after: the build at git revision REV against the working tree's build, interleaved
# round by round on the same machine, one server core each (CPU 0, the load on CPU 1), with
# medians and after/before ratios. Use it to show what a change costs or gains. The load comes
# from the working tree's velocity-bench for both builds (16-byte keys `key:%012d`), so only the
# server differs.
#   scripts/ab.sh REV [ROUNDS] [SECONDS] [CASE ...]
#   CASE: CONNSxPIPELINE:WORKLOAD, e.g. 50x16:get 50x1:mixed:90 1x64:set (velocity-bench --workload)
#   SERVER_ARGS: velocityd flags for both (default: --plaintext --audit off --durability none);
#     without --plaintext the load speaks TLS
#   AFTER_ARGS: more flags for the working tree's build only (REV=HEAD then measures a flag)
#   KEYS, VALUE: the key space (100000) and value size in bytes (16)
# The two builds take turns going first, round by round.
# Example: SERVER_ARGS="--plaintext --audit off --durability sync" scripts/ab.sh HEAD~1 3 5 50x16:mixed:90
# Example: AFTER_ARGS="--max-memory 4gb" scripts/ab.sh HEAD 3 5 50x16:set
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: scripts/ab.sh REV [ROUNDS] [SECONDS] [CASE ...]}
ROUNDS=${2:-3}; SECS=${3:-5}; shift $(( $# < 3 ? $# : 3 ))
CASES=("$@"); [ ${#CASES[@]} -gt 0 ] || CASES=(50x16:get 50x1:get)
SERVER_ARGS=${SERVER_ARGS:---plaintext --audit off --durability none}
AFTER_ARGS=${AFTER_ARGS:-}
PLAIN=; [[ " $SERVER_ARGS " == *" --plaintext "* ]] && PLAIN=--plaintext
KEYS=${KEYS:-100000}; VALUE=${VALUE:-16}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

sha=$(git rev-parse --short "$REV")
base=target/ab/$sha
if [ ! -x "$base/target/release/velocityd" ]; then
  rm -rf "$base"; git worktree prune
  git worktree add -f --detach "$base" "$sha" >/dev/null
  (cd "$base" && cargo build --release -q --bin velocityd)
fi
cargo build --release -q --bin velocityd --bin velocity-bench

dir=$(mktemp -d -p "$PWD/target"); out=$dir/results.tsv
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 400); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

run() { # bindir case [extra velocityd flags]
  local bin=$1 conns=${2%%x*} rest=${2#*x} extra=${3:-} port d
  local pipe=${rest%%:*} workload=${rest#*:}
  port=$(freeport); d=$dir/data-$RANDOM; mkdir -p "$d"
  echo -n bench | "$bin/velocityd" user add bench --password-stdin --data-dir "$d" >/dev/null
  # shellcheck disable=SC2086
  taskset -c 0 "$bin/velocityd" --data-dir "$d" --listen 127.0.0.1:$port --cpu-list 0 $SERVER_ARGS $extra 2>/dev/null &
  pid=$!; waitport "$port"
  bench() { echo -n bench | taskset -c 1 target/release/velocity-bench -p "$port" -u bench --password-stdin $PLAIN \
      --accept-new-host --known-hosts "$d.kh" --key-prefix key: --keys $KEYS --value-bytes $VALUE --json "$@" 2>/dev/null; }
  bench -c 1 -P 1 --requests 1 --warmup-s 0 >/dev/null   # loads the key space
  local a b j
  a=$(awk '{print $14+$15}' /proc/$pid/stat)
  j=$(bench -c "$conns" -P "$pipe" --workload "$workload" --duration-s "$SECS" --warmup-s 1 --no-populate)
  b=$(awk '{print $14+$15}' /proc/$pid/stat)
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  python3 - "$j" "$((b - a))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
j = json.loads(sys.argv[1]); t = int(sys.argv[2]) / int(sys.argv[3])
# CPU time covers the warm-up too: scale requests by the measured rate over the whole run.
ops = j["ops_per_s"]; total = ops * (j["seconds"] + 1)
print(f'{ops:.0f}\t{j["p50_ms"]}\t{j["p99_ms"]}\t{t * 1e6 / total:.2f}\t{j["errors"] + j["wrong_replies"]}')
PY
}

printf "round\tcase\tbuild\tops/s\tp50_ms\tp99_ms\tcpu_us/op\terrors\n" | tee "$out"
for r in $(seq "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    order="before after"; [ $((r % 2)) = 0 ] && order="after before"
    for b in $order; do
      bin=target/release extra=$AFTER_ARGS; [ $b = before ] && bin=$base/target/release extra=
      printf "%s\t%s\t%s\t%s\n" "$r" "$c" "$b" "$(run "$bin" "$c" "$extra")" | tee -a "$out"
    done
  done
done
python3 - "$out" "$sha" "$AFTER_ARGS" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print(f"\nmedians (before = {sys.argv[2]}, after = working tree{' with ' + sys.argv[3] if sys.argv[3] else ''})")
print("case\tbefore ops/s\tafter ops/s\tafter/before\tp99 before/after ms\tcpu_us/op before/after")
for case in dict.fromkeys(r["case"] for r in rows):
    m = {b: [r for r in rows if r["case"] == case and r["build"] == b] for b in ("before", "after")}
    med = lambda b, k: statistics.median(float(r[k]) for r in m[b])
    print(f"{case}\t{med('before','ops/s'):.0f}\t{med('after','ops/s'):.0f}\t{med('after','ops/s')/med('before','ops/s'):.2f}"
          f"\t{med('before','p99_ms'):.2f} / {med('after','p99_ms'):.2f}\t{med('before','cpu_us/op'):.2f} / {med('after','cpu_us/op'):.2f}")
PY
