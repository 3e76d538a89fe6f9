#!/usr/bin/env bash
# The cross-client check (tests/cross/run.py): each of the five clients (Rust, Python, Node.js,
# Go, Java) writes the same awkward keys and values through its own quoting, each reads back
# every writer's keys, and all dumps must agree byte for byte with the expected set, against the
# real velocityd over TLS and over plain TCP. Arguments go to run.py (--clients, --modes, -v,
# --keep DIR).
#
# Runs after the other suites and installs nothing: it needs what they leave behind and says
# which step to run when something is missing:
#   scripts/test.sh       velocityd and velocity-cli (target/release, or $VELOCITYD), the Python
#                         client in target/pyenv, clients/node/node_modules, cargo and the
#                         crates it downloaded
#   scripts/test-go.sh    Go and golang.org/x/crypto from Debian's packages
#   scripts/test-java.sh  clients/java/target/classes, the JDK and Bouncy Castle's jar
# Then it builds the three compiled runners: the Go runner in a workspace like test-go.sh's
# (offline), the Java runner with javac against the client's classes, and the Rust runner as a
# package whose manifest is written under target/cross/rust (a path dependency on this crate,
# sharing target/ so that only the crate itself is compiled again: a minute or two the first
# time, nothing after).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

export VELOCITYD="${VELOCITYD:-$REPO/target/release/velocityd}"
export VELOCITY_CLI="${VELOCITY_CLI:-$(dirname "$VELOCITYD")/velocity-cli}"
export BCPROV_JAR="${BCPROV_JAR:-/usr/share/java/bcprov.jar}"
GOCODE=/usr/share/gocode/src
JAVA_CLASSES=clients/java/target/classes
PYTHON=target/pyenv/bin/python
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

missing=()
need() { missing+=("$1"$'\n      '"$2"); }
[ -x "$VELOCITYD" ] || need "no velocityd at $VELOCITYD" "run scripts/test.sh, or set VELOCITYD"
[ -x "$VELOCITY_CLI" ] || need "no velocity-cli at $VELOCITY_CLI" "run scripts/test.sh, or set VELOCITY_CLI"
"$PYTHON" -c 'import velocity' 2>/dev/null || need "no Python client in target/pyenv" "run scripts/test.sh"
command -v node >/dev/null || need "no node" "run scripts/test.sh (installs Node.js)"
[ -d clients/node/node_modules/hash-wasm ] || need "no clients/node/node_modules" "run scripts/test.sh (npm ci)"
command -v cargo >/dev/null || need "no cargo" "run scripts/test.sh (installs Rust)"
command -v go >/dev/null && [ -f "$GOCODE/golang.org/x/crypto/argon2/argon2.go" ] ||
    need "no Go with Debian's golang.org/x/crypto" "run scripts/test-go.sh (installs golang-go, golang-golang-x-crypto-dev)"
command -v javac >/dev/null && command -v java >/dev/null || need "no JDK" "run scripts/test-java.sh"
[ -f "$BCPROV_JAR" ] || need "no Bouncy Castle jar at $BCPROV_JAR" "run scripts/test-java.sh (installs libbcprov-java), or set BCPROV_JAR"
if [ ! -f "$JAVA_CLASSES/dev/velocitydb/client/Connection.class" ]; then
    need "no $JAVA_CLASSES" "run scripts/test-java.sh"
elif [ -n "$(find clients/java/src/main -name '*.java' -newer "$JAVA_CLASSES/dev/velocitydb/client/Connection.class" -print -quit)" ]; then
    need "$JAVA_CLASSES is older than clients/java/src/main" "run scripts/test-java.sh again"
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/test-cross.sh cannot run:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 2
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p target/cross

echo "== cross-client check: building the runners =="
# Go: this module and clients/go in one workspace, golang.org/x/* from Debian (see test-go.sh).
(
    . scripts/go-offline.sh
    go_offline "$REPO/target/cross/go.work" "$REPO/clients/go" "$REPO/tests/cross/go"
    cd tests/cross/go
    go vet .
    go build -o "$REPO/target/cross/go/cross" .
)

# Java: one class against the client's classes (-path: bcprov.jar's manifest names jars Debian leaves out).
rm -rf target/cross/java
javac -Xlint:all,-path -Werror -d target/cross/java -cp "$JAVA_CLASSES:$BCPROV_JAR" tests/cross/Cross.java

# Rust: a package of one binary, tests/cross/rust/cross.rs, depending on this crate by path. The
# manifest lives under target/ so that the crate's Cargo.toml stays as it is; the lock file is a
# copy of the crate's, so that the dependencies are the versions already built and tested.
mkdir -p target/cross/rust
cat > target/cross/rust/Cargo.toml <<EOF
# Written by scripts/test-cross.sh.
[package]
name = "velocity-cross"
version = "0.0.0"
edition = "2021"
publish = false

[[bin]]
name = "velocity-cross"
path = "$REPO/tests/cross/rust/cross.rs"

[dependencies]
velocity = { path = "$REPO" }

# As in the crate's Cargo.toml: a patch applies only from the workspace root.
[patch.crates-io]
glommio = { path = "$REPO/vendor/glommio" }

[profile.release]
debug = 1
codegen-units = 4

[workspace]
EOF
cp Cargo.lock target/cross/rust/Cargo.lock
CARGO_TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
[ -x "$CARGO_TARGET/release/velocity-cross" ] ||
    echo "(the Rust runner: the first build compiles the velocity crate once more, a minute or two)"
cargo build --quiet --release --manifest-path target/cross/rust/Cargo.toml --target-dir "$CARGO_TARGET"
export CROSS_RUST_RUNNER="$CARGO_TARGET/release/velocity-cross"

echo "== cross-client check (tests/cross/run.py), velocityd: $VELOCITYD =="
exec "$PYTHON" tests/cross/run.py "$@"
