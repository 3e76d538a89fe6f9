#!/usr/bin/env bash
# The client packages as a user gets them: pack each one (npm pack; python -m build: an sdist,
# and a wheel built from that sdist), install the artifact into a fresh project or virtualenv
# outside the repository, and run the example it ships against a real velocityd started on a
# free port with a user created. Checks what the example prints, with every VELOCITY_* variable
# set and with the quick start's defaults. Needs python3 (venv) and npm; reaches PyPI and the
# npm registry. VELOCITYD=path/to/velocityd to use a built one (else cargo builds it).
#   scripts/test-packages.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
if [ -z "${VELOCITYD:-}" ]; then
  cargo build --release --locked --bin velocityd
  VELOCITYD=$REPO/target/release/velocityd
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/velocity-packages.XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
passed=0
failed=0

# --- a server with the quick start's user, admin, on a free port
PASSWORD=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
printf '%s' "$PASSWORD" | "$VELOCITYD" user add admin --password-stdin --data-dir "$work/data" >/dev/null
for _ in 1 2 3 4 5; do
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$VELOCITYD" --listen "127.0.0.1:$PORT" --cores 1 --data-dir "$work/data" 2>"$work/velocityd.log" &
  pid=$!
  for _ in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || break
    (echo > /dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break 2
    sleep 0.05
  done
  wait "$pid" 2>/dev/null || true # the port was taken between the check and the start: again
  pid=""
done
[ -n "$pid" ] || { echo "velocityd did not start:" >&2; cat "$work/velocityd.log" >&2; exit 1; }
echo "velocityd on 127.0.0.1:$PORT (TLS), user admin"

# run_example NAME DEFAULTS DIR COMMAND...: run an installed example in its project directory
# DIR, with a known_hosts of its own; DEFAULTS=all: every VELOCITY_* variable set,
# DEFAULTS=quickstart: only the port and password (host and user from the quick start's
# defaults). Then check what it printed.
run_example() {
  local name=$1 mode=$2 dir=$3 ok=1
  shift 3
  local env=(HOME="$work/home" VELOCITY_PORT="$PORT" VELOCITY_PASSWORD="$PASSWORD")
  [ "$mode" = all ] && env+=(VELOCITY_HOST=127.0.0.1 VELOCITY_USER=admin)
  mkdir -p "$work/home"
  if ! (cd "$dir" && env -u VELOCITY_HOST -u VELOCITY_USER "${env[@]}" "$@" --accept-new-host) \
      >"$work/out" 2>"$work/err" </dev/null; then
    ok=0
  fi
  for want in "^connected to velocityd/[0-9.]* at 127\.0\.0\.1:$PORT as admin, SHA256:" '^greeting = hello, world$' \
      '^pipelined 1000 inserts$' '^  example:0000 = value 0$' '^missing key: .*(wire code 4)$'; do
    grep -q -- "$want" "$work/out" || { echo "  missing /$want/" >&2; ok=0; }
  done
  if [ "$mode" = quickstart ]; then
    grep -qF "not set, so the quick start's defaults: VELOCITY_HOST=127.0.0.1, VELOCITY_USER=admin" "$work/err" ||
      { echo "  no line naming the defaults taken" >&2; ok=0; }
  elif grep -q 'not set' "$work/err"; then
    echo "  a default was taken with every variable set" >&2; ok=0
  fi
  if [ $ok = 1 ]; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name; it printed:" >&2
    cat "$work/out" "$work/err" >&2
    failed=$((failed + 1))
  fi
}

# --- Python: sdist and wheel, each into a fresh virtualenv
echo "== Python: python -m build, pip install the wheel / the sdist =="
mkdir -p "$work/src"
# A copy without what an editable install leaves in the tree (egg-info, build/, caches).
tar -C clients -c --exclude='*.egg-info' --exclude=build --exclude=dist --exclude=__pycache__ \
  --exclude=.pytest_cache python | tar -C "$work/src" -x
python3 -m venv "$work/buildenv"
"$work/buildenv/bin/pip" install --quiet --disable-pip-version-check build
"$work/buildenv/bin/python" -m build --outdir "$work/dist" "$work/src/python" >"$work/build.log" 2>&1 ||
  { cat "$work/build.log" >&2; exit 1; }
wheel=$(ls "$work"/dist/velocity_client-*.whl)
sdist=$(ls "$work"/dist/velocity_client-*.tar.gz)
echo "built $(basename "$wheel") $(basename "$sdist")"
mkdir -p "$work/py-app"
tar -C "$work/py-app" -x -f "$sdist" --strip-components=2 --wildcards '*/examples/quickstart.py'
for artifact in "$wheel" "$sdist"; do
  kind=wheel mode=all
  [ "$artifact" = "$sdist" ] && kind=sdist mode=quickstart
  python3 -m venv "$work/venv-$kind"
  "$work/venv-$kind/bin/pip" install --quiet --disable-pip-version-check "$artifact"
  run_example "python $kind: examples/quickstart.py ($mode)" "$mode" "$work/py-app" \
    "$work/venv-$kind/bin/python" quickstart.py
done

# --- Node.js: npm pack, npm install the tarball into a fresh project
echo "== Node.js: npm pack, npm install the tarball =="
tarball=$(cd clients/node && npm pack --silent --pack-destination "$work")
echo "packed $tarball"
mkdir -p "$work/node-app"
(
  cd "$work/node-app"
  npm init -y >/dev/null
  npm install --no-audit --no-fund --loglevel=error "$work/$tarball" >/dev/null
  cp node_modules/velocity-client/examples/quickstart.js .
)
for mode in all quickstart; do
  run_example "node tarball: examples/quickstart.js ($mode)" "$mode" "$work/node-app" node quickstart.js
done

# --- What installing from the checkout leaves in it (pip's build/ and egg-info, npm pack's
# tarball) is ignored by git. Only what this step made is removed again.
echo "== build outputs in the checkout are ignored =="
made=()
for p in clients/python/build clients/python/velocity_client.egg-info "clients/node/$tarball"; do
  [ -e "$p" ] || made+=("$p")
done
"$work/venv-wheel/bin/pip" install --quiet --disable-pip-version-check ./clients/python
(cd clients/node && npm pack --silent >/dev/null)
left=$(git status --porcelain --untracked-files=all -- clients)
rm -rf "${made[@]}"
if [ -z "$left" ]; then
  echo "ok   pip install ./clients/python and npm pack leave nothing untracked"
  passed=$((passed + 1))
else
  echo "FAIL untracked after pip install / npm pack:" >&2
  echo "$left" >&2
  failed=$((failed + 1))
fi

echo "packages: $passed passed, $failed failed"
[ "$failed" = 0 ]
