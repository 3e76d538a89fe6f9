#!/usr/bin/env bash
# The Java client's suite (clients/java): codec tests against tests/vectors/frames.json, and
# end-to-end tests against the real velocityd built from this repository (started by the tests on
# free loopback ports, TLS and plain TCP). Offline: Maven resolves everything from Debian's
# packages in /usr/share/maven-repo (clients/java/offline-settings.xml, profile `debian`), never
# from the network. Installs what a fresh Debian/Ubuntu machine lacks, through apt-get.
# Uses $VELOCITYD when set (scripts/test.sh exports it); else builds target/release/velocityd.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    command -v apt-get >/dev/null || { echo "please install: $*" >&2; exit 1; }
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}
# A JDK of version 17 or newer.
java_ok() {
    command -v javac >/dev/null && command -v java >/dev/null || return 1
    local v
    v=$(javac -version 2>&1 | sed -n 's/^javac \([0-9]*\).*/\1/p')
    [ -n "$v" ] && [ "$v" -ge 17 ]
}
missing=()
java_ok || missing+=(default-jdk-headless)
# Maven, and the Debian packages that put the build's dependencies and plugins in
# /usr/share/maven-repo: Bouncy Castle (Argon2id), JUnit 5, Gson (reads the vectors), Surefire,
# and the compiler, resources and jar plugins.
for p in maven maven-debian-helper libbcprov-java junit5 libgoogle-gson-java libsurefire-java \
         libmaven-compiler-plugin-java libmaven-resources-plugin-java libmaven-jar-plugin-java; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
fi

if [ -z "${VELOCITYD:-}" ]; then
    if ! command -v cargo >/dev/null; then
        [ -x "$HOME/.cargo/bin/cargo" ] || {
            command -v curl >/dev/null || apt_install curl ca-certificates
            curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        }
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    # velocity-cli too: a test checks that the Rust CLI trusts the known-hosts file Java wrote.
    cargo build --release --locked --bin velocityd --bin velocity-cli
    export VELOCITYD="$PWD/target/release/velocityd"
fi
# End-to-end tests open many sockets; raise the soft open-files limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The plugin versions this machine's Debian release installed (they have no "debian" alias).
plugin_version() {
    ls /usr/share/maven-repo/org/apache/maven/plugins/"$1" 2>/dev/null | grep -E '^[0-9]' | sort -V | tail -n 1
}
props=()
for pair in compiler:maven-compiler-plugin resources:maven-resources-plugin jar:maven-jar-plugin \
            surefire:maven-surefire-plugin clean:maven-clean-plugin; do
    v=$(plugin_version "${pair#*:}")
    [ -n "$v" ] && props+=("-D${pair%%:*}-plugin.version=$v")
done

echo "== Java client (clients/java), velocityd: $VELOCITYD =="
# The local repository lives under target/ (not clients/java/target, which `mvn clean` removes).
mvn -B -ntp -f clients/java/pom.xml -s clients/java/offline-settings.xml -Pdebian \
    -Dmaven.repo.local="$PWD/target/java-m2" "${props[@]}" verify
