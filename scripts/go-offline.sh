# Sourced by scripts/test-go.sh and scripts/test-cross.sh: the offline Go build setting.
# go_offline WORKFILE MODULE_DIR...: write a Go workspace of those modules in which
# golang.org/x/* come from Debian's source packages under $GOCODE, and export the settings that
# keep the go command off the network. go.mod files keep their ordinary requirements.
# Needs REPO (the repository's root) and GOCODE (/usr/share/gocode/src).
go_offline() {
    local work=$1 m x
    shift
    mkdir -p "$(dirname "$work")"
    {
        printf 'go 1.19\n\nuse (\n'
        for m in "$@"; do printf '\t%s\n' "$m"; done
        printf ')\n\nreplace (\n'
        for x in crypto sys net term text; do printf '\tgolang.org/x/%s => %s/golang.org/x/%s\n' "$x" "$GOCODE" "$x"; done
        printf ')\n'
    } > "$work"
    export GOWORK="$work" GOPROXY=off GOSUMDB=off GOFLAGS=-mod=readonly
    export GOCACHE="${GOCACHE:-$REPO/target/go/cache}" GOPATH="${GOPATH:-$REPO/target/go/path}"
}
