package velocity

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"
)

// InsertIfAbsent, CAS and Incr against the real velocityd.

func valueOf(t *testing.T, ctx context.Context, c *Conn, key string) string {
	t.Helper()
	return string(scalar(t, mustExec(t, ctx, c, "SELECT value FROM kv WHERE key = ?", key)).Bytes)
}

func ttlOf(t *testing.T, ctx context.Context, c *Conn, key string) Value {
	t.Helper()
	return scalar(t, mustExec(t, ctx, c, "SELECT ttl FROM kv WHERE key = ?", key))
}

func TestInsertIfAbsent(t *testing.T) {
	bothTransports(t, func(t *testing.T, extra []string) {
		ctx := context.Background()
		s := startServer(t, serverConfig{cores: 2, extra: extra})
		db := s.alice(ctx)

		if ok, err := db.InsertIfAbsent(ctx, "lock", "worker-7", 0); err != nil || !ok {
			t.Fatalf("first insert: %v, %v", ok, err)
		}
		if ok, err := db.InsertIfAbsent(ctx, "lock", "worker-8", 30*time.Second); err != nil || ok {
			t.Fatalf("second insert: %v, %v", ok, err)
		}
		if v := valueOf(t, ctx, db, "lock"); v != "worker-7" {
			t.Fatal(v)
		}
		if ttl := ttlOf(t, ctx, db, "lock"); !ttl.IsNull() {
			t.Fatalf("a live key keeps its (absent) expiry, got %v", ttl)
		}

		// With a TTL; the key's expiry is left alone by a second try.
		if ok, err := db.InsertIfAbsent(ctx, "lease", []byte{0, 1, 2}, 30*time.Second); err != nil || !ok {
			t.Fatalf("insert with ttl: %v, %v", ok, err)
		}
		if ttl := ttlOf(t, ctx, db, "lease"); ttl.Kind != Int || ttl.Int < 29 || ttl.Int > 30 {
			t.Fatal(ttl)
		}
		if ok, err := db.InsertIfAbsent(ctx, "lease", "other", 0); err != nil || ok {
			t.Fatalf("%v, %v", ok, err)
		}
		if ttl := ttlOf(t, ctx, db, "lease"); ttl.Kind != Int {
			t.Fatal(ttl)
		}

		// An expired key counts as absent.
		if ok, err := db.InsertIfAbsent(ctx, "brief", "a", time.Second); err != nil || !ok {
			t.Fatalf("%v, %v", ok, err)
		}
		time.Sleep(1100 * time.Millisecond)
		if ok, err := db.InsertIfAbsent(ctx, "brief", "b", 0); err != nil || !ok {
			t.Fatalf("after expiry: %v, %v", ok, err)
		}
		if v := valueOf(t, ctx, db, "brief"); v != "b" {
			t.Fatal(v)
		}

		// Data is quoted: it cannot change the statement.
		evil := "x'); DELETE FROM kv WHERE key >= ''; --\n\x00"
		if ok, err := db.InsertIfAbsent(ctx, evil, evil, 0); err != nil || !ok {
			t.Fatalf("%v, %v", ok, err)
		}
		if v := valueOf(t, ctx, db, evil); v != evil {
			t.Fatalf("%q", v)
		}
		if n := scalar(t, mustExec(t, ctx, db, "SELECT COUNT(*) FROM kv")); !n.Equal(IntValue(4)) {
			t.Fatal(n)
		}

		// What cannot be sent is refused before sending.
		for _, ttl := range []time.Duration{-time.Second, 500 * time.Millisecond, 1500 * time.Millisecond, MaxTTL + time.Second} {
			if _, err := db.InsertIfAbsent(ctx, "k", "v", ttl); !errors.Is(err, ErrUsage) {
				t.Fatalf("ttl %v: %v", ttl, err)
			}
		}
		if _, err := db.InsertIfAbsent(ctx, 7, "v", 0); !errors.Is(err, ErrUsage) {
			t.Fatal(err)
		}
		if _, err := db.InsertIfAbsent(ctx, "k", nil, 0); !errors.Is(err, ErrUsage) {
			t.Fatal(err)
		}
		if ok, err := db.InsertIfAbsent(ctx, "max", "v", MaxTTL); err != nil || !ok {
			t.Fatalf("MaxTTL: %v, %v", ok, err)
		}
	})
}

func TestCAS(t *testing.T) {
	bothTransports(t, func(t *testing.T, extra []string) {
		ctx := context.Background()
		s := startServer(t, serverConfig{cores: 2, extra: extra})
		db := s.alice(ctx)

		// A missing key: false, and nothing is created.
		if ok, err := db.CAS(ctx, "k", "old", "new"); err != nil || ok {
			t.Fatalf("missing key: %v, %v", ok, err)
		}
		_, err := db.Exec(ctx, "SELECT value FROM kv WHERE key = 'k'")
		wantCode(t, err, ErrKeyNotFound, CodeKeyNotFound)

		mustExec(t, ctx, db, "INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", "k", "old", 100)
		if ok, err := db.CAS(ctx, "k", "stale", "new"); err != nil || ok {
			t.Fatalf("wrong expected value: %v, %v", ok, err)
		}
		if v := valueOf(t, ctx, db, "k"); v != "old" {
			t.Fatal(v)
		}
		if ok, err := db.CAS(ctx, "k", "old", "new"); err != nil || !ok {
			t.Fatalf("right expected value: %v, %v", ok, err)
		}
		if v := valueOf(t, ctx, db, "k"); v != "new" {
			t.Fatal(v)
		}
		if ttl := ttlOf(t, ctx, db, "k"); ttl.Kind != Int || ttl.Int < 99 || ttl.Int > 100 {
			t.Fatalf("the TTL is kept: %v", ttl)
		}
		// The compare is on exact bytes: binary values, and a prefix is not a match.
		bin := []byte{0xff, 0, '\'', '\n'}
		if ok, err := db.CAS(ctx, "k", "new", bin); err != nil || !ok {
			t.Fatalf("%v, %v", ok, err)
		}
		if ok, err := db.CAS(ctx, "k", bin[:3], "x"); err != nil || ok {
			t.Fatalf("prefix: %v, %v", ok, err)
		}
		if ok, err := db.CAS(ctx, "k", bin, "x"); err != nil || !ok {
			t.Fatalf("binary: %v, %v", ok, err)
		}
		if v := valueOf(t, ctx, db, "k"); v != "x" {
			t.Fatal(v)
		}
		if _, err := db.CAS(ctx, "k", 1, "2"); !errors.Is(err, ErrUsage) {
			t.Fatal(err)
		}
	})
}

func TestIncr(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverConfig{cores: 2})
	db := s.alice(ctx)
	incr := func(key string, by int64) int64 {
		t.Helper()
		n, err := db.Incr(ctx, key, by)
		if err != nil {
			t.Fatalf("Incr(%q, %d): %v", key, by, err)
		}
		return n
	}

	if n := incr("hits", 5); n != 5 {
		t.Fatalf("from absent: %d", n)
	}
	if n := incr("hits", 1); n != 6 {
		t.Fatal(n)
	}
	if n := incr("hits", 1); n != 7 {
		t.Fatal(n)
	}
	if n := incr("hits", -10); n != -3 {
		t.Fatalf("negative: %d", n)
	}
	if n := incr("hits", 0); n != -3 {
		t.Fatal(n)
	}
	if v := valueOf(t, ctx, db, "hits"); v != "-3" {
		t.Fatal(v)
	}
	if n := incr("down", -4); n != -4 {
		t.Fatalf("negative from absent: %d", n)
	}
	if n := incr("zero", 0); n != 0 {
		t.Fatal(n)
	}

	// The ends of int64, and overflow past them: an error, and the value is unchanged.
	if n := incr("max", math.MaxInt64); n != math.MaxInt64 {
		t.Fatal(n)
	}
	_, err := db.Incr(ctx, "max", 1)
	wantCode(t, err, ErrInvalidCommand, CodeInvalidCommand)
	if v := valueOf(t, ctx, db, "max"); v != strconv.FormatInt(math.MaxInt64, 10) {
		t.Fatalf("after overflow: %s", v)
	}
	if n := incr("min", math.MinInt64); n != math.MinInt64 {
		t.Fatal(n)
	}
	_, err = db.Incr(ctx, "min", -1)
	wantCode(t, err, ErrInvalidCommand, CodeInvalidCommand)
	if v := valueOf(t, ctx, db, "min"); v != "-9223372036854775808" {
		t.Fatal(v)
	}
	if n := incr("min", math.MaxInt64); n != -1 {
		t.Fatal(n)
	}
	if n := incr("min", 1); n != 0 {
		t.Fatal(n)
	}
	if n := incr("min", math.MinInt64); n != math.MinInt64 {
		t.Fatalf("value - 2^63 on a present key: %d", n)
	}
	mustExec(t, ctx, db, "INSERT INTO kv (key, value) VALUES ('one', '1')")
	_, err = db.Incr(ctx, "one", math.MaxInt64)
	wantCode(t, err, ErrInvalidCommand, CodeInvalidCommand)
	if v := valueOf(t, ctx, db, "one"); v != "1" {
		t.Fatal(v)
	}

	// A value that is not an integer: an error, nothing changed (TTL included).
	mustExec(t, ctx, db, "INSERT INTO kv (key, value, ttl) VALUES ('name', 'alice', 100)")
	_, err = db.Incr(ctx, "name", 1)
	wantCode(t, err, ErrInvalidCommand, CodeInvalidCommand)
	if v := valueOf(t, ctx, db, "name"); v != "alice" {
		t.Fatal(v)
	}
	if ttl := ttlOf(t, ctx, db, "name"); ttl.Kind != Int {
		t.Fatal(ttl)
	}
	for _, bad := range []string{"07", "+7", "-0", " 7", "7.0", ""} {
		mustExec(t, ctx, db, "INSERT INTO kv (key, value) VALUES ('bad', ?)", bad)
		if _, err := db.Incr(ctx, "bad", 1); !errors.Is(err, ErrInvalidCommand) {
			t.Fatalf("%q: %v", bad, err)
		}
	}

	// A present counter keeps its expiry.
	mustExec(t, ctx, db, "INSERT INTO kv (key, value, ttl) VALUES ('rate', '10', 100)")
	if n := incr("rate", 1); n != 11 {
		t.Fatal(n)
	}
	if ttl := ttlOf(t, ctx, db, "rate"); ttl.Kind != Int || ttl.Int < 99 {
		t.Fatal(ttl)
	}
	if _, err := db.Incr(ctx, 5, 1); !errors.Is(err, ErrUsage) {
		t.Fatal(err)
	}
}

func TestConditionalHelpersOnAPool(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverConfig{cores: 2})
	pool, err := NewPool(ctx, s.options(asAlice), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if ok, err := pool.InsertIfAbsent(ctx, "p", "1", time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if ok, err := pool.InsertIfAbsent(ctx, "p", "2", 0); err != nil || ok {
		t.Fatal(ok, err)
	}
	if ok, err := pool.CAS(ctx, "p", "2", "3"); err != nil || ok {
		t.Fatal(ok, err)
	}
	if ok, err := pool.CAS(ctx, "p", "1", "41"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if n, err := pool.Incr(ctx, "p", 1); err != nil || n != 42 {
		t.Fatal(n, err)
	}
	if _, err := pool.Incr(ctx, "p", math.MaxInt64); !errors.Is(err, ErrInvalidCommand) {
		t.Fatal(err)
	}
}

// Eight connections, one key: no increment and no compare-and-set is lost.
func TestConditionalHelpersUnderConcurrency(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverConfig{cores: 2})
	const workers = 8
	conns := make([]*Conn, workers)
	for i := range conns {
		conns[i] = s.alice(ctx)
	}

	t.Run("incr", func(t *testing.T) {
		const each = 500
		seen := make([][]int64, workers)
		errs := make(chan error, workers)
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < each; i++ {
					n, err := conns[w].Incr(ctx, "counter", 1)
					if err != nil {
						errs <- err
						return
					}
					seen[w] = append(seen[w], n)
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if v := valueOf(t, ctx, conns[0], "counter"); v != strconv.Itoa(workers*each) {
			t.Fatalf("final value %s, want %d", v, workers*each)
		}
		// Each increment saw a value of its own: 1 to 4000, each once.
		got := make(map[int64]bool, workers*each)
		for _, ns := range seen {
			for _, n := range ns {
				if n < 1 || n > workers*each || got[n] {
					t.Fatalf("value %d returned twice or out of range", n)
				}
				got[n] = true
			}
		}
	})

	t.Run("cas loop", func(t *testing.T) {
		const each = 200
		mustExec(t, ctx, conns[0], "INSERT INTO kv (key, value) VALUES ('cas', '0')")
		var mu sync.Mutex
		failed := 0
		errs := make(chan error, workers)
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(c *Conn) {
				defer wg.Done()
				misses := 0
				for done := 0; done < each; {
					r, err := c.Exec(ctx, "SELECT value FROM kv WHERE key = 'cas'")
					if err != nil {
						errs <- err
						return
					}
					v, _ := r.Scalar()
					n, err := strconv.Atoi(string(v.Bytes))
					if err != nil {
						errs <- err
						return
					}
					ok, err := c.CAS(ctx, "cas", strconv.Itoa(n), strconv.Itoa(n+1))
					if err != nil {
						errs <- err
						return
					}
					if ok {
						done++
					} else {
						misses++
					}
				}
				mu.Lock()
				failed += misses
				mu.Unlock()
			}(conns[w])
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if v := valueOf(t, ctx, conns[0], "cas"); v != strconv.Itoa(workers*each) {
			t.Fatalf("final value %s, want %d", v, workers*each)
		}
		t.Logf("%d compare-and-sets lost a race and were retried", failed)
	})
}
