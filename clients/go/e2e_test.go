package velocity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// End to end against the real velocityd built from this repository, over TLS and plain TCP.

func mustExec(t *testing.T, ctx context.Context, c *Conn, sql string, args ...any) *Result {
	t.Helper()
	r, err := c.Exec(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return r
}

func scalar(t *testing.T, r *Result) Value {
	t.Helper()
	v, err := r.Scalar()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantCode(t *testing.T, err error, target error, code Code) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got %v, want %v", err, target)
	}
	if c, ok := CodeOf(err); !ok || c != code {
		t.Fatalf("CodeOf(%v) = %v, %v; want %v", err, c, ok, code)
	}
}

func TestSeedExamplesInOrder(t *testing.T) {
	bothTransports(t, func(t *testing.T, extra []string) {
		ctx := context.Background()
		s := startServer(t, serverConfig{cores: 2, extra: extra})
		db := s.alice(ctx)
		_, err := db.Exec(ctx, "SELECT value FROM kv WHERE key = 'user:1';")
		wantCode(t, err, ErrKeyNotFound, 4)
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeKeyNotFound || e.Message == "" {
			t.Fatalf("%#v", err)
		}
		if r := mustExec(t, ctx, db, "INSERT INTO kv (key, value) VALUES ('user:1', 'alice');"); r.Affected != 1 {
			t.Fatal(r.Affected)
		}
		if v := scalar(t, mustExec(t, ctx, db, "SELECT value FROM kv WHERE key = 'user:1';")); v.Kind != Bytes || string(v.Bytes) != "alice" {
			t.Fatal(v)
		}
		if r := mustExec(t, ctx, db, "UPDATE kv SET value = 'alice_updated' WHERE key = 'user:1';"); r.Affected != 1 {
			t.Fatal(r.Affected)
		}
		if got := mustExec(t, ctx, db, "SELECT value FROM kv WHERE key = 'user:1';").Text(); !reflect.DeepEqual(got, [][]string{{"alice_updated"}}) {
			t.Fatal(got)
		}
		if r := mustExec(t, ctx, db, "DELETE FROM kv WHERE key = 'user:1';"); r.Affected != 1 {
			t.Fatal(r.Affected)
		}
		if r := mustExec(t, ctx, db, "DELETE FROM kv WHERE key = 'user:1';"); r.Affected != 0 {
			t.Fatal(r.Affected)
		}
		_, err = db.Exec(ctx, "UPDATE kv SET value = 'x' WHERE key = 'user:1';")
		wantCode(t, err, ErrKeyNotFound, 4)
		batch := "INSERT INTO kv (key, value) VALUES \n  ('user:1', 'alice'),\n  ('user:2', 'bob'),\n  ('user:3', 'charlie');"
		if r := mustExec(t, ctx, db, batch); r.Affected != 3 {
			t.Fatal(r.Affected)
		}
		like := mustExec(t, ctx, db, "SELECT key, value FROM kv WHERE key LIKE 'user:%' LIMIT 100;")
		if !reflect.DeepEqual(like.Columns, []string{"key", "value"}) {
			t.Fatal(like.Columns)
		}
		if got := like.Text(); !reflect.DeepEqual(got, [][]string{{"user:1", "alice"}, {"user:2", "bob"}, {"user:3", "charlie"}}) {
			t.Fatal(got)
		}
		rng := mustExec(t, ctx, db, "SELECT key, value FROM kv WHERE key >= 'user:1' AND key <= 'user:9';")
		if !reflect.DeepEqual(rng.Rows, like.Rows) {
			t.Fatal(rng.Rows)
		}
		count := mustExec(t, ctx, db, "SELECT COUNT(*) FROM kv;")
		if !reflect.DeepEqual(count.Columns, []string{"count"}) || !scalar(t, count).Equal(IntValue(3)) {
			t.Fatal(count)
		}
		stats := mustExec(t, ctx, db, "SHOW STATS;").Map()
		if !stats["keys"].Equal(IntValue(3)) {
			t.Fatal(stats["keys"])
		}
		status := mustExec(t, ctx, db, "SHOW STATUS;").Map()
		if !status["shards"].Equal(IntValue(2)) {
			t.Fatal(status["shards"])
		}
		wantTLS := "off"
		if s.tls {
			wantTLS = "TLS 1.3"
		}
		if status["tls"].Text() != wantTLS || status["user"].Text() != "alice" {
			t.Fatal(status)
		}
		if db.ServerInfo().TLS() != s.tls || db.ServerInfo().Shards != 2 || !strings.HasPrefix(db.ServerInfo().Server, "velocityd/") {
			t.Fatalf("%+v", db.ServerInfo())
		}
		if echo, err := db.Ping(ctx, []byte("hi")); err != nil || string(echo) != "hi" {
			t.Fatal(echo, err)
		}
		if st, err := db.Stats(ctx); err != nil || !reflect.DeepEqual(st.Columns, []string{"name", "value"}) {
			t.Fatal(st, err)
		}
		if _, err := db.Ping(ctx, make([]byte, 65)); !errors.Is(err, ErrUsage) {
			t.Fatal(err)
		}
	})
}

func TestPipeliningTenThousandStatements(t *testing.T) {
	bothTransports(t, func(t *testing.T, extra []string) {
		ctx := context.Background()
		s := startServer(t, serverConfig{cores: 2, extra: extra})
		db := s.alice(ctx)
		const n = 10_000
		p := db.Pipeline()
		for i := 0; i < n; i++ {
			p.Add("INSERT INTO kv (key, value) VALUES (?, ?)", fmt.Sprintf("k%05d", i), fmt.Sprintf("v%d", i))
		}
		if p.Len() != n {
			t.Fatal(p.Len())
		}
		replies, err := p.Run(ctx)
		if err != nil || len(replies) != n {
			t.Fatalf("%d replies, %v", len(replies), err)
		}
		for i, r := range replies {
			if r.Err != nil || r.Result.Affected != 1 {
				t.Fatalf("insert %d: %+v", i, r)
			}
		}
		if p.Len() != 0 {
			t.Fatal("Run leaves the pipeline empty")
		}
		for i := 0; i < n; i++ {
			p.Add("SELECT value FROM kv WHERE key = ?", fmt.Sprintf("k%05d", i))
		}
		p.Add("SELECT value FROM kv WHERE key = 'missing'")
		replies, err = p.Run(ctx)
		wantCode(t, err, ErrKeyNotFound, 4)
		if len(replies) != n+1 {
			t.Fatal(len(replies))
		}
		for i, r := range replies[:n] {
			if r.Err != nil || scalar(t, r.Result).Text() != fmt.Sprintf("v%d", i) {
				t.Fatalf("select %d: %+v", i, r)
			}
		}
		if !errors.Is(replies[n].Err, ErrKeyNotFound) || replies[n].Result != nil {
			t.Fatalf("%+v", replies[n])
		}
		// The first error comes back after every reply was read: the connection stays in step.
		replies, err = db.Pipeline().Add("SELECT nonsense").Add("SELECT COUNT(*) FROM kv").Run(ctx)
		wantCode(t, err, ErrInvalidCommand, 3)
		if replies[1].Err != nil || !scalar(t, replies[1].Result).Equal(IntValue(n)) {
			t.Fatalf("%+v", replies[1])
		}
		// Concurrent Exec calls on one connection are pipelined, and each gets its own reply.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := g; i < 2000; i += 8 {
					r, err := db.Exec(ctx, "SELECT value FROM kv WHERE key = ?", fmt.Sprintf("k%05d", i))
					if err != nil {
						errs <- err
						return
					}
					if v, _ := r.Scalar(); v.Text() != fmt.Sprintf("v%d", i) {
						errs <- fmt.Errorf("key %d: got %v", i, v)
						return
					}
				}
			}(g)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// Pipelines run by several goroutines at once on one connection do not interleave.
		errs = make(chan error, 4)
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				p := db.Pipeline()
				for i := g; i < n; i += 4 {
					p.Add("SELECT key, value FROM kv WHERE key = ?", fmt.Sprintf("k%05d", i))
				}
				replies, err := p.Run(ctx)
				if err != nil {
					errs <- err
					return
				}
				for j, r := range replies {
					i := g + 4*j
					if got := r.Result.Text(); len(got) != 1 || got[0][0] != fmt.Sprintf("k%05d", i) || got[0][1] != fmt.Sprintf("v%d", i) {
						errs <- fmt.Errorf("goroutine %d, key %d: %v", g, i, got)
						return
					}
				}
			}(g)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if v := scalar(t, mustExec(t, ctx, db, "SELECT COUNT(*) FROM kv")); !v.Equal(IntValue(n)) {
			t.Fatal(v)
		}
		// An argument that cannot be quoted fails the pipeline before anything is sent.
		_, err = db.Pipeline().Add("INSERT INTO kv (key, value) VALUES ('a', 'b')").Add("SELECT ?", 1.5).Run(ctx)
		if !errors.Is(err, ErrUsage) {
			t.Fatal(err)
		}
		if _, err := db.Exec(ctx, "SELECT value FROM kv WHERE key = 'a'"); !errors.Is(err, ErrKeyNotFound) {
			t.Fatal(err)
		}
	})
}

func TestUserDataCannotEscapeItsLiteral(t *testing.T) {
	bothTransports(t, func(t *testing.T, extra []string) {
		ctx := context.Background()
		s := startServer(t, serverConfig{extra: extra})
		db := s.alice(ctx)
		hostile := []string{"'; DELETE FROM kv; --", "it's", "\x00\xff binary", "\n\t", "ключ ✓", "%_\\", "?", "x", "\u00a0", "''", "X'00'"}
		mustExec(t, ctx, db, "INSERT INTO kv (key, value) VALUES ('keep', 'me')")
		for _, h := range hostile {
			mustExec(t, ctx, db, "INSERT INTO kv (key, value) VALUES (?, ?)", h, h)
			if got := mustExec(t, ctx, db, "SELECT value FROM kv WHERE key = ?", h).Text(); !reflect.DeepEqual(got, [][]string{{h}}) {
				t.Fatalf("%q: %q", h, got)
			}
			raw := append([]byte(h), 0xfe)
			qk, _ := Quote(raw)
			mustExec(t, ctx, db, "INSERT INTO kv (key, value) VALUES ("+qk+", "+qk+")")
			if v := scalar(t, mustExec(t, ctx, db, "SELECT value FROM kv WHERE key = ?", raw)); !bytes.Equal(v.Bytes, raw) {
				t.Fatalf("%q: %q", raw, v.Bytes)
			}
		}
		if v := scalar(t, mustExec(t, ctx, db, "SELECT value FROM kv WHERE key = 'keep'")); v.Text() != "me" {
			t.Fatal(v)
		}
		if v := scalar(t, mustExec(t, ctx, db, "SELECT COUNT(*) FROM kv")); !v.Equal(IntValue(int64(1 + 2*len(hostile)))) {
			t.Fatal(v)
		}
		// A ? inside a quoted literal is text, not a placeholder.
		if r := mustExec(t, ctx, db, "SELECT key FROM kv WHERE key IN (?, '?') ORDER BY key", "keep"); !reflect.DeepEqual(r.Text(), [][]string{{"?"}, {"keep"}}) {
			t.Fatal(r.Text())
		}
	})
}

func TestLargeBinaryValuesRoundTrip(t *testing.T) {
	bothTransports(t, func(t *testing.T, extra []string) {
		ctx := context.Background()
		s := startServer(t, serverConfig{extra: extra})
		db := s.alice(ctx)
		// 400 KiB of every byte value: an X'...' literal of 800 KiB, within the 1 MiB default.
		big := make([]byte, 400<<10)
		for i := range big {
			big[i] = byte(i*7 + i>>8)
		}
		mustExec(t, ctx, db, "INSERT INTO kv (key, value) VALUES (?, ?)", []byte{0, 0xff}, big)
		v := scalar(t, mustExec(t, ctx, db, "SELECT value FROM kv WHERE key = ?", []byte{0, 0xff}))
		if v.Kind != Bytes || !bytes.Equal(v.Bytes, big) {
			t.Fatalf("read back %d bytes", len(v.Bytes))
		}
		r := mustExec(t, ctx, db, "SELECT key FROM kv WHERE key < 'a'")
		if len(r.Rows) != 1 || !bytes.Equal(r.Rows[0][0].Bytes, []byte{0, 0xff}) {
			t.Fatal(r.Rows)
		}
	})
}

func TestTTLAndNull(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverConfig{extra: []string{"--plaintext"}})
	db := s.alice(ctx)
	mustExec(t, ctx, db, "INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", "t", "v", 100)
	mustExec(t, ctx, db, "INSERT INTO kv (key, value) VALUES ('n', 'v')")
	rows := mustExec(t, ctx, db, "SELECT key, ttl FROM kv WHERE key IN ('t', 'n')").Map()
	if !rows["n"].IsNull() || rows["t"].Kind != Int || rows["t"].Int <= 0 || rows["t"].Int > 100 {
		t.Fatal(rows)
	}
	r := mustExec(t, ctx, db, "SELECT key, value, ttl FROM kv ORDER BY key DESC")
	if !reflect.DeepEqual(r.Columns, []string{"key", "value", "ttl"}) || r.Rows[0][0].Text() != "t" || r.Rows[1][2].Kind != Null {
		t.Fatal(r)
	}
}

func TestEveryErrorCodeTheClientCanProvoke(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverConfig{extra: []string{"--plaintext", "--rate-limit-conn", "5:5", "--max-connections", "3"}})
	// INVALID_CREDENTIALS
	_, err := s.connect(ctx, func(o *Options) { o.User, o.Password = "alice", "wrong" })
	wantCode(t, err, ErrInvalidCredentials, 1)
	db := s.alice(ctx)
	// INVALID_COMMAND, saying where the problem is
	_, err = db.Exec(ctx, "SELECT value FORM kv")
	wantCode(t, err, ErrInvalidCommand, 3)
	if !strings.Contains(err.Error(), "FORM") {
		t.Fatal(err)
	}
	// KEY_NOT_FOUND
	_, err = db.Exec(ctx, "UPDATE kv SET value = 'x' WHERE key = 'absent'")
	wantCode(t, err, ErrKeyNotFound, 4)
	// PROTOCOL_ERROR: an unknown frame type is answered, and the connection stays open.
	typ, _, err := db.SendRaw(ctx, EncodeFrame(0x7f, nil))
	wantCode(t, err, ErrProtocolError, 6)
	if typ != TypeError {
		t.Fatal(typ)
	}
	if echo, err := db.Ping(ctx, []byte("still here")); err != nil || string(echo) != "still here" {
		t.Fatal(echo, err)
	}
	// RATE_LIMITED: 5 requests/s with a burst of 5 on this connection.
	p := db.Pipeline()
	for i := 0; i < 20; i++ {
		p.Add("SELECT COUNT(*) FROM kv")
	}
	replies, err := p.Run(ctx)
	wantCode(t, err, ErrRateLimited, 2)
	limited := 0
	for _, r := range replies {
		if errors.Is(r.Err, ErrRateLimited) {
			limited++
		}
	}
	if limited == 0 || len(replies) != 20 {
		t.Fatal(limited, len(replies))
	}
	db.Close()
	// UNAUTHORIZED: a read-only user writing, and a command before logging in.
	ro, err := s.connect(ctx, func(o *Options) { o.User, o.Password = "reader", roPassword })
	if err != nil {
		t.Fatal(err)
	}
	_, err = ro.Exec(ctx, "INSERT INTO kv (key, value) VALUES ('a', 'b')")
	wantCode(t, err, ErrUnauthorized, 8)
	ro.Close()
	anon, err := s.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = anon.Exec(ctx, "SELECT COUNT(*) FROM kv")
	wantCode(t, err, ErrUnauthorized, 8)
	anon.Close()
	// SERVER_OVERLOADED: beyond --max-connections.
	var held []*Conn
	for i := 0; i < 3; i++ {
		held = append(held, s.alice(ctx))
	}
	_, err = s.connect(ctx, asAlice)
	wantCode(t, err, ErrServerOverloaded, 7)
	for _, c := range held {
		c.Close()
	}
	// A framing violation is answered with PROTOCOL_ERROR, then the server closes.
	time.Sleep(200 * time.Millisecond)
	db = s.alice(ctx)
	_, _, err = db.SendRaw(ctx, append([]byte("VELX"), make([]byte, 10)...))
	wantCode(t, err, ErrProtocolError, 6)
	_, err = db.Ping(ctx, nil)
	if !errors.Is(err, ErrDisconnected) {
		t.Fatal(err)
	}
	if !errors.Is(db.Err(), ErrDisconnected) {
		t.Fatal(db.Err())
	}
}

func TestResultTooLargeAndStatementTooLong(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverConfig{extra: []string{"--plaintext", "--max-payload", "4096"}})
	db := s.alice(ctx)
	if db.ServerInfo().MaxPayload != 4096 {
		t.Fatal(db.ServerInfo().MaxPayload)
	}
	p := db.Pipeline()
	for i := 0; i < 10; i++ {
		p.Add("INSERT INTO kv (key, value) VALUES (?, ?)", fmt.Sprintf("big%d", i), strings.Repeat("v", 1000))
	}
	if _, err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	// A result beyond max_payload is refused with INVALID_COMMAND, asking for LIMIT.
	_, err := db.Exec(ctx, "SELECT key, value FROM kv")
	wantCode(t, err, ErrInvalidCommand, 3)
	if !strings.Contains(err.Error(), "LIMIT") {
		t.Fatal(err)
	}
	// Paging as the profile says works.
	var keys []string
	last := ""
	for {
		r := mustExec(t, ctx, db, "SELECT key, value FROM kv WHERE key > ? LIMIT 2", last)
		if r.Len() == 0 {
			break
		}
		for _, row := range r.Rows {
			keys = append(keys, row[0].Text())
		}
		last = keys[len(keys)-1]
	}
	if len(keys) != 10 {
		t.Fatal(keys)
	}
	// A statement longer than max_payload is refused by the client, before sending.
	_, err = db.Exec(ctx, "INSERT INTO kv (key, value) VALUES ('k', ?)", strings.Repeat("v", 5000))
	if !errors.Is(err, ErrUsage) {
		t.Fatal(err)
	}
	if _, err := db.Ping(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func TestStorageErrorWhenTheDiskIsFull(t *testing.T) {
	// A file-size limit stands in for a full disk: the write that does not fit is refused with
	// STORAGE_ERROR and is not applied.
	ctx := context.Background()
	s := startServer(t, serverConfig{extra: []string{"--plaintext", "--audit", "off"}, fsizeBytes: 24 * 1024})
	db := s.alice(ctx)
	refused := -1
	for i := 0; i < 1000 && refused < 0; i++ {
		_, err := db.Exec(ctx, "INSERT INTO kv (key, value) VALUES (?, ?)", fmt.Sprintf("k%d", i), strings.Repeat("v", 200))
		if err != nil {
			wantCode(t, err, ErrStorageError, 5)
			refused = i
		}
	}
	if refused <= 0 {
		t.Fatal("no write was refused", refused)
	}
	if v := scalar(t, mustExec(t, ctx, db, "SELECT COUNT(*) FROM kv")); !v.Equal(IntValue(int64(refused))) {
		t.Fatal(v, refused)
	}
	_, err := db.Exec(ctx, "SELECT value FROM kv WHERE key = ?", fmt.Sprintf("k%d", refused))
	wantCode(t, err, ErrKeyNotFound, 4)
}

func TestAPIKeyLogin(t *testing.T) {
	// Waiting for the key file to be reloaded means failed logins; throttling is tested in Rust.
	ctx := context.Background()
	s := startServer(t, serverConfig{extra: []string{"--login-fail-threshold", "0"}})
	key := strings.TrimSpace(velocityd(t, s.dataDir, "", "apikey", "create", "--user", "alice"))
	var db *Conn
	var err error
	for i := 0; i < 50; i++ { // the server picks up a new key within a second
		db, err = s.connect(ctx, func(o *Options) { o.APIKey = key })
		if !errors.Is(err, ErrInvalidCredentials) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if u := mustExec(t, ctx, db, "SHOW STATUS").Map()["user"].Text(); u != "alice" {
		t.Fatal(u)
	}
	_, err = s.connect(ctx, func(o *Options) { o.APIKey = "vk_00000000_nope" })
	wantCode(t, err, ErrInvalidCredentials, 1)
}

func TestTrustOnFirstUsePinningAndAChangedKey(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverConfig{})
	dir := t.TempDir()
	kh := filepath.Join(dir, "kh", "known_hosts")
	_, err := s.connect(ctx, func(o *Options) { o.KnownHosts, o.AcceptNewHost = kh, false })
	if !errors.Is(err, ErrTrust) || !strings.Contains(err.Error(), "unknown server") {
		t.Fatal(err)
	}
	if _, err := os.Stat(kh); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("an unknown server was recorded")
	}
	var asked [][2]string
	_, err = s.connect(ctx, func(o *Options) {
		o.KnownHosts, o.AcceptNewHost = kh, false
		o.AskNewHost = func(h, fp string) bool { asked = append(asked, [2]string{h, fp}); return false }
	})
	if !errors.Is(err, ErrTrust) || len(asked) != 1 || asked[0][0] != fmt.Sprintf("127.0.0.1:%d", s.port) || !strings.HasPrefix(asked[0][1], "SHA256:") {
		t.Fatal(err, asked)
	}
	if _, err := os.Stat(kh); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused server was recorded")
	}
	db, err := s.connect(ctx, asAlice, func(o *Options) { o.KnownHosts, o.AcceptNewHost = kh, true })
	if err != nil {
		t.Fatal(err)
	}
	fp := db.Fingerprint()
	db.Close()
	line, _ := os.ReadFile(kh)
	if string(line) != fmt.Sprintf("127.0.0.1:%d %s\n", s.port, fp) {
		t.Fatalf("%q", line)
	}
	// The operator's command prints the same fingerprint.
	if got := strings.TrimSpace(velocityd(t, s.dataDir, "", "fingerprint")); got != fp {
		t.Fatal(got, fp)
	}
	c, err := s.connect(ctx, func(o *Options) { o.KnownHosts, o.AcceptNewHost = kh, false })
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// A server asked about and accepted is recorded too.
	kh2 := filepath.Join(dir, "asked")
	c, err = s.connect(ctx, func(o *Options) {
		o.KnownHosts, o.AcceptNewHost = kh2, false
		o.AskNewHost = func(string, string) bool { return true }
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got, _ := LookupKnownHost(kh2, HostLabel("127.0.0.1", s.port)); got != fp {
		t.Fatal(got)
	}
	// Pinning.
	other := filepath.Join(dir, "other")
	c, err = s.connect(ctx, func(o *Options) { o.KnownHosts, o.AcceptNewHost, o.Fingerprint = other, false, fp })
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, err = s.connect(ctx, func(o *Options) { o.KnownHosts, o.Fingerprint = other, "SHA256:"+strings.Repeat("A", 43) })
	if !errors.Is(err, ErrTrust) || !strings.Contains(err.Error(), "pinned") {
		t.Fatal(err)
	}
	// The Rust CLI trusts the file the Go client wrote.
	cli := exec.Command(velocityCLIPath(t), "--port", fmt.Sprint(s.port), "-u", "alice", "--password-stdin",
		"--known-hosts", kh, "-c", "SHOW STATUS")
	cli.Stdin = strings.NewReader(password)
	if out, err := cli.CombinedOutput(); err != nil {
		t.Fatalf("velocity-cli: %v\n%s", err, out)
	}
	// Another server (another identity key) on the same port: refused loudly, even when new
	// hosts are accepted, and the file is left alone.
	port := s.port
	s.stop()
	s2 := startServer(t, serverConfig{port: port})
	_, err = s2.connect(ctx, func(o *Options) { o.KnownHosts, o.AcceptNewHost = kh, true })
	if !errors.Is(err, ErrTrust) || !strings.Contains(err.Error(), "HAS CHANGED") || !strings.Contains(err.Error(), fp) {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(kh); string(after) != string(line) {
		t.Fatalf("the known-hosts file changed: %q", after)
	}
	// The default file is $HOME/.velocity/known_hosts.
	home := t.TempDir()
	t.Setenv("HOME", home)
	c, err = s2.connect(ctx, func(o *Options) { o.KnownHosts = "" })
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got, _ := LookupKnownHost(filepath.Join(home, ".velocity", "known_hosts"), HostLabel("127.0.0.1", port)); got != c.Fingerprint() {
		t.Fatal(got)
	}
}

func TestTLSAndPlaintextMismatchesGiveClearErrors(t *testing.T) {
	ctx := context.Background()
	tlsServer := startServer(t, serverConfig{})
	plain := startServer(t, serverConfig{extra: []string{"--plaintext"}})
	_, err := tlsServer.connect(ctx, func(o *Options) { o.Plaintext = true })
	if !errors.Is(err, ErrProtocolError) || !strings.Contains(err.Error(), "without Plaintext") {
		t.Fatal(err)
	}
	_, err = plain.connect(ctx, func(o *Options) { o.Plaintext = false })
	if !errors.Is(err, ErrProtocolError) || !strings.Contains(err.Error(), "Plaintext: true") {
		t.Fatal(err)
	}
}

func TestPoolSharedByManyGoroutines(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverConfig{cores: 2})
	pool, err := NewPool(ctx, s.options(asAlice), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				k, v := fmt.Sprintf("g%02d:%03d", g, i), fmt.Sprintf("%d*%d", g, i)
				if _, err := pool.Exec(ctx, "INSERT INTO kv (key, value) VALUES (?, ?)", k, v); err != nil {
					errs <- err
					return
				}
				r, err := pool.Exec(ctx, "SELECT value FROM kv WHERE key = ?", k)
				if err != nil {
					errs <- err
					return
				}
				if got, _ := r.Scalar(); got.Text() != v {
					errs <- fmt.Errorf("%s: %v", k, got)
					return
				}
			}
			replies, err := pool.Pipeline().Add("SELECT COUNT(*) FROM kv WHERE key LIKE ?", fmt.Sprintf("g%02d:%%", g)).Run(ctx)
			if err != nil {
				errs <- err
				return
			}
			if v, _ := replies[0].Result.Scalar(); !v.Equal(IntValue(100)) {
				errs <- fmt.Errorf("goroutine %d count %v", g, v)
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if pool.Idle() < 1 || pool.Idle() > pool.Size() {
		t.Fatal(pool.Idle())
	}
	if v := scalar(t, mustExecPool(t, ctx, pool, "SELECT COUNT(*) FROM kv")); !v.Equal(IntValue(1600)) {
		t.Fatal(v)
	}
	// Every pooled connection is alice's, logged in with the one derived credential.
	err = pool.Do(ctx, func(c *Conn) error {
		if u := mustExec(t, ctx, c, "SHOW STATUS").Map()["user"].Text(); u != "alice" {
			return fmt.Errorf("user %q", u)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	if _, err := pool.Exec(ctx, "SELECT COUNT(*) FROM kv"); !errors.Is(err, ErrPoolClosed) || !errors.Is(err, ErrDisconnected) {
		t.Fatal(err)
	}
	// A pool to a server it cannot trust, or with a wrong password, fails at once.
	if _, err := NewPool(ctx, s.options(func(o *Options) { o.User, o.Password = "alice", "nope" }), 2); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatal(err)
	}
}

func mustExecPool(t *testing.T, ctx context.Context, p *Pool, sql string, args ...any) *Result {
	t.Helper()
	r, err := p.Exec(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return r
}

func TestIdleTimeoutDisconnectAndThePoolReplacesTheConnection(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverConfig{extra: []string{"--plaintext", "--idle-timeout-s", "1"}})
	db := s.alice(ctx)
	pool, err := NewPool(ctx, s.options(asAlice), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	mustExecPool(t, ctx, pool, "INSERT INTO kv (key, value) VALUES ('a', '1')")
	time.Sleep(2500 * time.Millisecond)
	// The lone connection was told DISCONNECT; it says so.
	_, err = db.Exec(ctx, "SELECT value FROM kv WHERE key = 'a'")
	var d *DisconnectedError
	if !errors.As(err, &d) || !d.FromServer || !errors.Is(err, ErrDisconnected) {
		t.Fatalf("%#v", err)
	}
	// The pool drops its dead idle connection and opens another.
	if v := scalar(t, mustExecPool(t, ctx, pool, "SELECT value FROM kv WHERE key = 'a'")); v.Text() != "1" {
		t.Fatal(v)
	}
}

func TestServerShutdownSaysDisconnect(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverConfig{})
	db := s.alice(ctx)
	mustExec(t, ctx, db, "INSERT INTO kv (key, value) VALUES ('a', '1')")
	s.stop()
	deadline := time.Now().Add(5 * time.Second)
	for db.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var d *DisconnectedError
	if !errors.As(db.Err(), &d) || !d.FromServer || d.Reason == "" {
		t.Fatalf("%#v", db.Err())
	}
	if _, err := db.Exec(ctx, "SELECT value FROM kv WHERE key = 'a'"); !errors.Is(err, ErrDisconnected) {
		t.Fatal(err)
	}
}

func TestContextsBoundWaitsAndKeepTheConnectionInStep(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverConfig{extra: []string{"--plaintext"}})
	db := s.alice(ctx)
	mustExec(t, ctx, db, "INSERT INTO kv (key, value) VALUES ('a', '1'), ('b', '2')")
	// A context that has already ended sends nothing; the connection is unharmed.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := db.Exec(done, "DELETE FROM kv WHERE key = 'a'"); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if v := scalar(t, mustExec(t, ctx, db, "SELECT value FROM kv WHERE key = 'a'")); v.Text() != "1" {
		t.Fatal(v)
	}
	// A server that does not answer (stopped): the deadline ends the wait.
	s.pause()
	stopped := true
	defer func() {
		if stopped {
			s.signal(syscall.SIGCONT)
		}
	}()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	start := time.Now()
	_, err := db.Exec(short, "SELECT value FROM kv WHERE key = 'a'")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatal(err, time.Since(start))
	}
	// Connecting is bounded by its context too.
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = s.connect(short, asAlice)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	// Cancelling while waiting.
	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	if _, err := db.Pipeline().Add("SELECT value FROM kv WHERE key = 'b'").Run(cctx); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	s.signal(syscall.SIGCONT)
	stopped = false
	// The replies given up on are read and dropped: the next request gets its own reply.
	if v := scalar(t, mustExec(t, ctx, db, "SELECT value FROM kv WHERE key = 'b'")); v.Text() != "2" {
		t.Fatal(v)
	}
	if v := scalar(t, mustExec(t, ctx, db, "SELECT value FROM kv WHERE key = 'a'")); v.Text() != "1" {
		t.Fatal(v)
	}
	if db.Err() != nil {
		t.Fatal(db.Err())
	}
}

func TestExampleProgram(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to run the example: %v", err)
	}
	ctx := context.Background()
	s := startServer(t, serverConfig{extra: []string{"--plaintext"}})
	home := t.TempDir()
	run := func(env ...string) (string, error) {
		cmd := exec.Command(goTool, "run", "./examples/quickstart", "-plaintext", "-accept-new-host")
		cmd.Env = append(os.Environ(), append([]string{"HOME=" + home}, env...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("VELOCITY_HOST=127.0.0.1", fmt.Sprintf("VELOCITY_PORT=%d", s.port), "VELOCITY_USER=alice", "VELOCITY_PASSWORD="+password)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"connected to velocityd/", "greeting = hello, world", "pipelined 1000 inserts",
		"example:0000 = value 0", "missing key:", "wire code 4"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not set") {
		t.Fatalf("every variable was set:\n%s", out)
	}
	db := s.alice(ctx)
	if v := scalar(t, mustExec(t, ctx, db, "SELECT COUNT(*) FROM kv WHERE key LIKE 'example:%'")); !v.Equal(IntValue(0)) {
		t.Fatal("the example cleans up after itself", v)
	}
	// Without the variables it says what it assumes, and what it cannot do without a password.
	out, err = run("VELOCITY_HOST=", "VELOCITY_PORT=", "VELOCITY_USER=", "VELOCITY_PASSWORD=")
	if err == nil {
		t.Fatalf("ran without a password:\n%s", out)
	}
	for _, want := range []string{"VELOCITY_HOST not set", "VELOCITY_PORT not set", "VELOCITY_USER not set", "VELOCITY_PASSWORD not set"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}
