#!/usr/bin/env bash
# Memory per key, Velocity's store next to Redis, in one run: 1M keys of 16-byte keys and
# 16-byte values. Velocity: RSS growth of benches/memory.rs. Redis: used_memory and RSS growth
# of a fresh redis-server loaded through redis-cli --pipe.
# Usage: scripts/mem-per-key.sh [KEYS]   (installs redis-server from Debian's package if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-1000000}
if ! command -v redis-server >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
echo "== Velocity store (cargo bench --bench memory, KEYS=$KEYS)"
KEYS=$KEYS cargo bench -q --bench memory 2>/dev/null | tee /tmp/velocity-mem.txt
v=$(sed -n 's/.*rss_bytes_per_key=\([0-9.]*\).*/\1/p' /tmp/velocity-mem.txt)

echo "== Redis $(redis-server --version | awk '{print $3}')"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --save '' --appendonly no --dir "$dir" --daemonize no >/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
rss() { awk '/VmRSS/{print $2*1024}' /proc/$pid/status; }
used() { redis-cli -p "$port" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
r0=$(rss); u0=$(used)
python3 - "$KEYS" <<'PY' | redis-cli -p "$port" --pipe >/dev/null
import sys
n = int(sys.argv[1]); out = sys.stdout.buffer
for i in range(n):
    k = b"key:%012d" % i; v = b"val:%012d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$16\r\n" + k + b"\r\n$16\r\n" + v + b"\r\n")
PY
r1=$(rss); u1=$(used); n=$(redis-cli -p "$port" dbsize)
python3 - "$n" "$r0" "$r1" "$u0" "$u1" "$v" <<'PY'
import sys
n, r0, r1, u0, u1, v = int(sys.argv[1]), *map(int, sys.argv[2:6]), float(sys.argv[6])
r = (r1 - r0) / n; u = (u1 - u0) / n
print(f"keys={n} rss_bytes_per_key={r:.1f} used_memory_bytes_per_key={u:.1f}")
print(f"== ratio (RSS per key): Velocity/Redis = {v / r:.2f}  (Velocity {v:.1f} B, Redis {r:.1f} B)")
PY
