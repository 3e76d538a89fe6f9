#!/usr/bin/env bash
# Build Velocity, start a server with a user, show it working, and say how to connect and how to
# run the benchmark. The server stays in the foreground: Ctrl-C stops it cleanly (it finishes
# in-flight requests and says DISCONNECT to its clients), and the script exits with its status.
#   VELOCITY_PASSWORD=... scripts/quickstart.sh     (default: a random password, printed)
#   Options: DATA_DIR (./velocity-data), LISTEN (127.0.0.1:7411), CORES (all CPUs)
#
# Signals: velocityd replaces this script's shell (exec) once the user exists, so it is the one
# process that gets Ctrl-C, from the terminal, exactly once. (A shell that runs it in the
# background and forwards the signal makes it arrive twice: the terminal sends SIGINT to the
# whole foreground process group, server included, and the trap sends SIGTERM on top; velocityd
# takes a second signal during its graceful shutdown as "exit now", with status 1.) The demo
# below runs beside it as an orphaned background job, which ignores SIGINT as every
# background job of a script does.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${DATA_DIR:-./velocity-data}
LISTEN=${LISTEN:-127.0.0.1:7411}
PORT=${LISTEN##*:}
BIN=${CARGO_TARGET_DIR:-target}/release
"${CARGO:-cargo}" build --release --bin velocityd --bin velocity-cli --bin velocity-bench
if ! "$BIN"/velocityd user list --data-dir "$DATA_DIR" 2>/dev/null | grep -q '^admin'; then
  PASSWORD=${VELOCITY_PASSWORD:-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')}
  printf '%s' "$PASSWORD" | "$BIN"/velocityd user add admin --password-stdin --data-dir "$DATA_DIR" >/dev/null
  echo "created user admin with password: $PASSWORD"
else
  PASSWORD=${VELOCITY_PASSWORD:-}
fi
if (echo > /dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; then
  echo "quickstart: something already listens on port $PORT; stop it, or choose another address: LISTEN=127.0.0.1:7412 $0" >&2
  exit 1
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The demo and the how-to, once the server answers; $$ is this script's PID, which becomes
# velocityd's at the exec below.
demo() {
  for _ in $(seq 200); do
    kill -0 $$ 2>/dev/null || return 0
    (echo > /dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
    sleep 0.05
  done
  local fp trust=""
  fp=$("$BIN"/velocityd fingerprint --data-dir "$DATA_DIR")
  if [ -n "$PASSWORD" ]; then
    echo "--- a few statements through velocity-cli (over TLS; this first contact records the"
    echo "    server's fingerprint $fp in ~/.velocity/known_hosts):"
    printf '%s' "$PASSWORD" | "$BIN"/velocity-cli --port "$PORT" -u admin --password-stdin --accept-new-host -c \
      "INSERT INTO kv (key, value) VALUES ('user:1', 'alice'), ('user:2', 'bob'); SELECT key, value FROM kv WHERE key LIKE 'user:%'; SHOW STATUS" ||
      return 0
  else
    trust=" --fingerprint $fp"
  fi
  kill -0 $$ 2>/dev/null || return 0
  cat <<TXT
--- velocityd is listening on $LISTEN (data in $DATA_DIR). Connect with:
    $BIN/velocity-cli --port $PORT -u admin
--- Benchmark it (it writes keys velocity-bench:*, and its last line says which it left behind):
    VELOCITY_PASSWORD=${PASSWORD:-...} $BIN/velocity-bench --port $PORT -u admin$trust --workload mixed:90 --duration-s 10 --plot bench.svg
--- Clients (clients/python, clients/node): their examples read VELOCITY_USER=admin, VELOCITY_PASSWORD,
    VELOCITY_HOST=127.0.0.1 and VELOCITY_PORT=$PORT.
Ctrl-C stops the server.
TXT
}
(demo &)
exec "$BIN"/velocityd --data-dir "$DATA_DIR" --listen "$LISTEN" ${CORES:+--cores "$CORES"}
