#!/usr/bin/env bash
# What a Prometheus scrape every second costs: the working tree's build with --metrics-listen,
# measured without and with a scraper (GET /metrics once a second, as Prometheus with
# scrape_interval: 1s), interleaved round by round as scripts/ab.sh does: one server core
# (CPU 0, which also serves the scrapes), the load and the scraper on CPU 1. Medians and with/without
# ratios; the scrapes' count and mean time are checked and shown. The order alternates by round. The scraper is one Python
# process (http.client), as a Prometheus elsewhere would be: no fork per scrape.
#   scripts/metrics-cost.sh [ROUNDS] [SECONDS] [CASE ...]
#   CASE: CONNSxPIPELINE:WORKLOAD, e.g. 50x16:get 50x16:mixed:90 (velocity-bench --workload)
#   SERVER_ARGS: velocityd flags for both (default: --plaintext --audit off --durability none)
#   SCRAPE_INTERVAL_S: seconds between scrapes (default 1)
# Example: SERVER_ARGS="--plaintext --audit off --durability sync" scripts/metrics-cost.sh 3 5 50x16:mixed:90
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}; SECS=${2:-10}; shift $(( $# < 2 ? $# : 2 ))
CASES=("$@"); [ ${#CASES[@]} -gt 0 ] || CASES=(50x16:get)
SERVER_ARGS=${SERVER_ARGS:---plaintext --audit off --durability none}
INTERVAL=${SCRAPE_INTERVAL_S:-1}
KEYS=100000; VALUE=16
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release -q --bin velocityd --bin velocity-bench
bin=target/release
dir=$(mktemp -d -p "$PWD/target"); out=$dir/results.tsv
pid=; scraper=
cleanup() {
  [ -n "$scraper" ] && kill "$scraper" 2>/dev/null
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  wait 2>/dev/null || true; rm -rf "$dir"
}
trap cleanup EXIT
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 400); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

run() { # mode(off|on) case
  local mode=$1 conns=${2%%x*} rest=${2#*x} port mport d
  local pipe=${rest%%:*} workload=${rest#*:}
  port=$(freeport); mport=$(freeport); d=$dir/data-$RANDOM; mkdir -p "$d"
  echo -n bench | "$bin/velocityd" user add bench --password-stdin --data-dir "$d" >/dev/null
  # shellcheck disable=SC2086
  taskset -c 0 "$bin/velocityd" --data-dir "$d" --listen 127.0.0.1:$port --cpu-list 0 \
      --metrics-listen "$mport" $SERVER_ARGS 2>/dev/null &
  pid=$!; waitport "$port"; waitport "$mport"
  bench() { echo -n bench | taskset -c 1 "$bin/velocity-bench" -p "$port" -u bench --password-stdin --plaintext \
      --accept-new-host --known-hosts "$d.kh" --key-prefix key: --keys $KEYS --value-bytes $VALUE --json "$@" 2>/dev/null; }
  bench -c 1 -P 1 --requests 1 --warmup-s 0 >/dev/null   # loads the key space
  local times=$d.scrapes
  : > "$times"
  if [ "$mode" = on ]; then
    # One scraper process (no fork per scrape, so the load generator beside it on CPU 1 loses
    # no more than the scrapes themselves): each scrape's time, one line each; FAIL if it failed.
    taskset -c 1 python3 - "$mport" "$INTERVAL" > "$times" <<'PY' &
import http.client, sys, time
port, interval = int(sys.argv[1]), float(sys.argv[2])
while True:
    t = time.perf_counter()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/metrics")
        r = c.getresponse()
        ok = r.status == 200 and len(r.read()) > 0
        c.close()
    except OSError:
        ok = False
    print(f"{time.perf_counter() - t:.6f}" if ok else "FAIL", flush=True)
    time.sleep(interval)
PY
    scraper=$!
  fi
  local a b j
  a=$(awk '{print $14+$15}' /proc/$pid/stat)
  j=$(bench -c "$conns" -P "$pipe" --workload "$workload" --duration-s "$SECS" --warmup-s 1 --no-populate)
  b=$(awk '{print $14+$15}' /proc/$pid/stat)
  if [ -n "$scraper" ]; then kill "$scraper"; wait "$scraper" 2>/dev/null || true; scraper=; fi
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  python3 - "$j" "$((b - a))" "$(getconf CLK_TCK)" "$times" <<'PY'
import json, sys
j = json.loads(sys.argv[1]); t = int(sys.argv[2]) / int(sys.argv[3])
lines = open(sys.argv[4]).read().split()
fails = lines.count("FAIL"); ok = [float(x) for x in lines if x != "FAIL"]
ops = j["ops_per_s"]; total = ops * (j["seconds"] + 1)
mean_ms = f'{1e3 * sum(ok) / len(ok):.2f}' if ok else "-"
print(f'{ops:.0f}\t{j["p50_ms"]}\t{j["p99_ms"]}\t{t * 1e6 / total:.2f}\t{j["errors"] + j["wrong_replies"]}\t{len(ok)}\t{fails}\t{mean_ms}')
PY
}

printf "round\tcase\tscraper\tops/s\tp50_ms\tp99_ms\tcpu_us/op\terrors\tscrapes\tfailed\tscrape_ms\n" | tee "$out"
for r in $(seq "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    # Odd rounds run without the scraper first, even ones with it first: neither mode always
    # gets the machine as the other left it.
    order="off on"; [ $((r % 2)) = 0 ] && order="on off"
    for m in $order; do
      printf "%s\t%s\t%s\t%s\n" "$r" "$c" "$m" "$(run "$m" "$c")" | tee -a "$out"
    done
  done
done
python3 - "$out" "$INTERVAL" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print(f"\nmedians (on = a scrape every {sys.argv[2]} s, off = none; the same build, --metrics-listen on both)")
print("case\toff ops/s\ton ops/s\ton/off\tp99 off/on ms\tcpu_us/op off/on\tscrapes (failed)\tscrape ms (median of round means)")
for case in dict.fromkeys(r["case"] for r in rows):
    m = {b: [r for r in rows if r["case"] == case and r["scraper"] == b] for b in ("off", "on")}
    med = lambda b, k: statistics.median(float(r[k]) for r in m[b])
    scrapes = sum(int(r["scrapes"]) for r in m["on"]); failed = sum(int(r["failed"]) for r in m["on"])
    ms = [float(r["scrape_ms"]) for r in m["on"] if r["scrape_ms"] != "-"]
    print(f"{case}\t{med('off','ops/s'):.0f}\t{med('on','ops/s'):.0f}\t{med('on','ops/s')/med('off','ops/s'):.3f}"
          f"\t{med('off','p99_ms'):.2f} / {med('on','p99_ms'):.2f}\t{med('off','cpu_us/op'):.2f} / {med('on','cpu_us/op'):.2f}"
          f"\t{scrapes} ({failed})\t{f'{statistics.median(ms):.2f}' if ms else '-'}")
PY
