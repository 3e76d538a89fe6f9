// The Go runner of the cross-client check. It has no requirements of its own: it is built only
// inside the workspace that scripts/test-cross.sh writes (target/cross/go.work), which provides
// github.com/velocitydb/velocity-go from clients/go and golang.org/x/* from Debian's sources.
module velocity-cross

go 1.19
