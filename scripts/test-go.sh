#!/usr/bin/env bash
# The Go client's suite (clients/go): go vet, then go test against the real velocityd.
# Installs what a fresh Debian/Ubuntu machine lacks: Go and golang.org/x/crypto, as Debian
# packages (golang-go, golang-golang-x-crypto-dev) through apt-get. Builds offline: this
# machine reaches Debian's packages but not the Go module proxy, so the packaged x/crypto
# (and the x/sys it imports) are wired in by a workspace file under target/go that this script
# writes. That is a build setting only: clients/go/go.mod keeps the ordinary
# `require golang.org/x/crypto` that a user's `go get` resolves through the proxy.
#   VELOCITYD=path/to/velocityd scripts/test-go.sh   (default: target/release/velocityd, built
#   with cargo when missing, with velocity-cli beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    command -v apt-get >/dev/null || { echo "please install: $*" >&2; exit 1; }
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}
GOCODE=/usr/share/gocode/src
if ! command -v go >/dev/null || [ ! -f "$GOCODE/golang.org/x/crypto/argon2/argon2.go" ]; then
    apt_install golang-go golang-golang-x-crypto-dev
fi
grep -q '^func IDKey' "$GOCODE/golang.org/x/crypto/argon2/argon2.go" || {
    echo "the installed golang.org/x/crypto has no argon2.IDKey" >&2; exit 1; }

if [ -z "${VELOCITYD:-}" ]; then
    if [ ! -x target/release/velocityd ] || [ ! -x target/release/velocity-cli ]; then
        command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
        cargo build --release --locked --bin velocityd --bin velocity-cli
    fi
    export VELOCITYD="$REPO/target/release/velocityd"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The workspace: this module, with golang.org/x/* taken from Debian's source packages.
. scripts/go-offline.sh
go_offline "$REPO/target/go/go.work" "$REPO/clients/go"

echo "== Go client (clients/go) =="
cd clients/go
go version
go vet ./...

# go.mod and go.sum as a user's `go get` sees them, without the workspace: a module cache
# holding the Debian sources under the versions go.mod requires, with the published module
# hashes from go.sum. The go command checks each go.mod file against go.sum (Debian's are
# byte-identical to the published ones) and refuses a build that needs an entry go.sum lacks.
# Only where Debian ships exactly the required versions.
modcache="$REPO/target/go/modcache"
user_build=yes
for name in crypto sys; do
    want=$(grep -o "golang.org/x/$name v[0-9][0-9.]*" go.mod | cut -d' ' -f2)
    have=v$(dpkg-query -W -f='${Version}' "golang-golang-x-$name-dev" 2>/dev/null | sed 's/^[0-9]*://; s/[-+~].*//')
    if [ "$want" != "$have" ]; then
        echo "(no check of go.sum without the workspace: Debian has golang.org/x/$name $have, go.mod requires $want)"
        user_build=no
        break
    fi
done
if [ "$user_build" = yes ]; then
    chmod -R u+w "$modcache" 2>/dev/null || true
    rm -rf "$modcache"
    for name in crypto sys; do
        ver=$(grep -o "golang.org/x/$name v[0-9][0-9.]*" go.mod | cut -d' ' -f2)
        dl="$modcache/cache/download/golang.org/x/$name/@v"
        mkdir -p "$dl" "$modcache/golang.org/x"
        cp "$GOCODE/golang.org/x/$name/go.mod" "$dl/$ver.mod"
        printf '{"Version":"%s"}\n' "$ver" > "$dl/$ver.info"
        grep "^golang.org/x/$name $ver h1:" go.sum | cut -d' ' -f3 > "$dl/$ver.ziphash"
        cp -r "$GOCODE/golang.org/x/$name" "$modcache/golang.org/x/$name@$ver"
    done
    GOWORK=off GOMODCACHE="$modcache" go vet ./...
    echo "go.mod and go.sum build without the workspace"
fi

go test -count=1 "$@" ./...
