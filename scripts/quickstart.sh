#!/usr/bin/env bash
# Build Velocity, start a server with a user, show it working, and say how to connect.
# The server stays in the foreground: Ctrl-C stops it (it says DISCONNECT to its clients).
#   VELOCITY_PASSWORD=... scripts/quickstart.sh     (default: a random password, printed)
#   Options: DATA_DIR (./velocity-data), LISTEN (127.0.0.1:7411), CORES (all CPUs)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${DATA_DIR:-./velocity-data}
LISTEN=${LISTEN:-127.0.0.1:7411}
PORT=${LISTEN##*:}
cargo build --release --bin velocityd --bin velocity-cli
if ! target/release/velocityd user list --data-dir "$DATA_DIR" 2>/dev/null | grep -q '^admin'; then
  PASSWORD=${VELOCITY_PASSWORD:-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')}
  printf '%s' "$PASSWORD" | target/release/velocityd user add admin --password-stdin --data-dir "$DATA_DIR"
  echo "created user admin with password: $PASSWORD"
else
  PASSWORD=${VELOCITY_PASSWORD:-}
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
target/release/velocityd --data-dir "$DATA_DIR" --listen "$LISTEN" ${CORES:+--cores "$CORES"} &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.05; done
if [ -n "$PASSWORD" ]; then
  echo "--- a few statements through velocity-cli (over TLS; this first contact records the"
  echo "    server's fingerprint $(target/release/velocityd fingerprint --data-dir "$DATA_DIR") in ~/.velocity/known_hosts):"
  printf '%s' "$PASSWORD" | target/release/velocity-cli --port "$PORT" -u admin --password-stdin --accept-new-host -c \
    "INSERT INTO kv (key, value) VALUES ('user:1', 'alice'), ('user:2', 'bob'); SELECT key, value FROM kv WHERE key LIKE 'user:%'; SHOW STATUS"
fi
cat <<TXT
--- velocityd is listening on $LISTEN (data in $DATA_DIR). Connect with:
    target/release/velocity-cli --port $PORT -u admin
Ctrl-C stops the server.
TXT
wait $pid
