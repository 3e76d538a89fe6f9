// The Go client's runner for the cross-client check (tests/cross/run.py).
//
//	cross write SPEC PREFIX   insert each SPEC line's key (PREFIX + key) and value
//	cross read                print every x:% key in the canonical form
//
// The server and login come from CROSS_HOST, CROSS_PORT, CROSS_USER, VELOCITY_PASSWORD,
// CROSS_TLS (1/0), CROSS_KNOWN_HOSTS, CROSS_ACCEPT_NEW (1/0); the TTL range a reader accepts
// from CROSS_TTL_MIN and CROSS_TTL_MAX. Every key and value goes through the client's own `?`
// binding: text entries of SPEC as string, bytes entries as []byte.
//
// Built by scripts/test-cross.sh in a workspace (target/cross/go.work) that uses this module
// and clients/go, with golang.org/x/* from Debian's sources, as scripts/test-go.sh does.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	velocity "github.com/velocitydb/velocity-go"
)

func connect(ctx context.Context) (*velocity.Conn, error) {
	port, err := strconv.Atoi(os.Getenv("CROSS_PORT"))
	if err != nil {
		return nil, fmt.Errorf("CROSS_PORT: %w", err)
	}
	return velocity.Connect(ctx, velocity.Options{
		Host:          os.Getenv("CROSS_HOST"),
		Port:          port,
		User:          os.Getenv("CROSS_USER"),
		Password:      os.Getenv("VELOCITY_PASSWORD"),
		Plaintext:     os.Getenv("CROSS_TLS") != "1",
		KnownHosts:    os.Getenv("CROSS_KNOWN_HOSTS"),
		AcceptNewHost: os.Getenv("CROSS_ACCEPT_NEW") == "1",
	})
}

// decode gives a text entry as a string, a bytes entry as a []byte.
func decode(kind, h string) (any, error) {
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, err
	}
	if kind != "text" {
		return b, nil
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("text entry %s is not UTF-8", h)
	}
	return string(b), nil
}

func write(ctx context.Context, spec, prefix string) error {
	text, err := os.ReadFile(spec)
	if err != nil {
		return err
	}
	db, err := connect(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, line := range strings.Split(strings.TrimRight(string(text), "\n"), "\n") {
		f := strings.Split(line, " ")
		if len(f) != 5 {
			return fmt.Errorf("bad spec line %q", line)
		}
		key, err := decode(f[0], f[1])
		if err != nil {
			return err
		}
		value, err := decode(f[2], f[3])
		if err != nil {
			return err
		}
		switch k := key.(type) {
		case string:
			key = prefix + k
		case []byte:
			key = append([]byte(prefix), k...)
		}
		var r *velocity.Result
		if f[4] == "-" {
			r, err = db.Exec(ctx, "INSERT INTO kv (key, value) VALUES (?, ?)", key, value)
		} else {
			ttl, perr := strconv.Atoi(f[4])
			if perr != nil {
				return perr
			}
			r, err = db.Exec(ctx, "INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", key, value, ttl)
		}
		if err != nil {
			return fmt.Errorf("INSERT of %q: %w", key, err)
		}
		if r.Affected != 1 {
			return fmt.Errorf("INSERT of %q affected %d rows", key, r.Affected)
		}
	}
	return nil
}

func token(v velocity.Value) string {
	switch v.Kind {
	case velocity.Null:
		return "null"
	case velocity.Int:
		return "i:" + strconv.FormatInt(v.Int, 10)
	case velocity.Bytes:
		return "b:" + hex.EncodeToString(v.Bytes)
	}
	return fmt.Sprintf("?kind%d", v.Kind)
}

func read(ctx context.Context) error {
	lo, err1 := strconv.ParseInt(os.Getenv("CROSS_TTL_MIN"), 10, 64)
	hi, err2 := strconv.ParseInt(os.Getenv("CROSS_TTL_MAX"), 10, 64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("CROSS_TTL_MIN/CROSS_TTL_MAX: %v %v", err1, err2)
	}
	ttlToken := func(v velocity.Value) string {
		switch {
		case v.Kind == velocity.Null:
			return "-"
		case v.Kind == velocity.Int && lo <= v.Int && v.Int <= hi:
			return "ttl"
		case v.Kind == velocity.Int:
			return "ttl!" + strconv.FormatInt(v.Int, 10)
		}
		return token(v)
	}
	line := func(r velocity.Row) string {
		if len(r) != 3 {
			return fmt.Sprintf("?%d columns", len(r))
		}
		return token(r[0]) + " " + token(r[1]) + " " + ttlToken(r[2])
	}
	sortRows := func(rows []velocity.Row) {
		sort.SliceStable(rows, func(i, j int) bool { return bytes.Compare(rows[i][0].Bytes, rows[j][0].Bytes) < 0 })
	}

	db, err := connect(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	defer out.Flush()

	r, err := db.Exec(ctx, "SELECT COUNT(*) FROM kv WHERE key LIKE ?", "x:%")
	if err != nil {
		return err
	}
	count, err := r.Scalar()
	if err != nil {
		return err
	}
	if count.Kind == velocity.Int {
		fmt.Fprintf(out, "count %d\n", count.Int)
	} else {
		fmt.Fprintf(out, "count %s\n", token(count))
	}

	scan, err := db.Exec(ctx, "SELECT key, value, ttl FROM kv WHERE key LIKE ?", "x:%")
	if err != nil {
		return err
	}
	sortRows(scan.Rows)
	keys := make([]any, 0, len(scan.Rows))
	for _, row := range scan.Rows {
		fmt.Fprintf(out, "scan %s\n", line(row))
		keys = append(keys, row[0].Bytes)
	}
	for _, k := range keys {
		r, err := db.Exec(ctx, "SELECT key, value, ttl FROM kv WHERE key = ?", k)
		if err != nil {
			return fmt.Errorf("point read of %x: %w", k, err)
		}
		if len(r.Rows) != 1 {
			return fmt.Errorf("point read of %x: %d rows", k, len(r.Rows))
		}
		fmt.Fprintf(out, "point %s\n", line(r.Rows[0]))
	}
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(keys)), ", ")
	in, err := db.Exec(ctx, "SELECT key, value, ttl FROM kv WHERE key IN ("+marks+")", keys...)
	if err != nil {
		return err
	}
	sortRows(in.Rows)
	for _, row := range in.Rows {
		fmt.Fprintf(out, "in %s\n", line(row))
	}
	return nil
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	var err error
	switch {
	case len(os.Args) == 4 && os.Args[1] == "write":
		err = write(ctx, os.Args[2], os.Args[3])
	case len(os.Args) == 2 && os.Args[1] == "read":
		err = read(ctx)
	default:
		err = fmt.Errorf("usage: cross write SPEC PREFIX | cross read")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cross:", err)
		os.Exit(1)
	}
}
