package velocity

import (
	"context"
	"reflect"
	"strconv"
	"time"
)

// Conditional writes and counters (docs/protocol.md, "Conditional writes and counters"): each
// helper is one statement, so each is atomic on the key's shard, and its data goes through the
// same quoting as Exec's ? placeholders.

// MaxTTL is the longest expiry the server accepts: 3,153,600,000 s (100 years).
const MaxTTL = 3153600000 * time.Second

// InsertIfAbsent writes key = value only if key is absent (or expired), and reports whether it
// did; a live key is left as it is, value and expiry. ttl 0 means no expiry; otherwise it must
// be a whole number of seconds from 1 s to MaxTTL. key and value are text or bytes (string,
// []byte, a Bytes Value, or a named type over string or []byte).
//
//	ok, err := db.InsertIfAbsent(ctx, "lock:report", "worker-7", 30*time.Second)
func (c *Conn) InsertIfAbsent(ctx context.Context, key, value any, ttl time.Duration) (bool, error) {
	sql, args, err := insertIfAbsentStatement(key, value, ttl)
	if err != nil {
		return false, err
	}
	r, err := c.Exec(ctx, sql, args...)
	if err != nil {
		return false, err
	}
	return r.Affected == 1, nil
}

// CAS (compare and set) replaces key's value with newValue only if key is live and holds
// exactly the bytes expected, and reports whether it did. The key keeps its expiry. A missing
// key or another value is false, not an error. Arguments are text or bytes, as for
// InsertIfAbsent.
func (c *Conn) CAS(ctx context.Context, key, expected, newValue any) (bool, error) {
	sql, args, err := casStatement(key, expected, newValue)
	if err != nil {
		return false, err
	}
	r, err := c.Exec(ctx, sql, args...)
	if err != nil {
		return false, err
	}
	return r.Affected == 1, nil
}

// Incr adds by (which may be negative) to the counter at key and returns its new value, in
// one round trip. An absent (or expired) key counts from 0, so it is created holding by, with
// no expiry; a present key keeps its expiry. The value is the decimal text of a signed 64-bit
// integer, as Redis's INCRBY keeps it. A value that is not such an integer, or a result that
// would overflow int64, is the server's INVALID_COMMAND (errors.Is(err, ErrInvalidCommand)),
// and nothing is changed.
func (c *Conn) Incr(ctx context.Context, key any, by int64) (int64, error) {
	sql, args, err := incrStatement(key, by)
	if err != nil {
		return 0, err
	}
	r, err := c.Exec(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	return counterValue(r)
}

// InsertIfAbsent runs Conn.InsertIfAbsent on a pooled connection.
func (p *Pool) InsertIfAbsent(ctx context.Context, key, value any, ttl time.Duration) (bool, error) {
	var ok bool
	err := p.Do(ctx, func(c *Conn) error {
		var err error
		ok, err = c.InsertIfAbsent(ctx, key, value, ttl)
		return err
	})
	return ok, err
}

// CAS runs Conn.CAS on a pooled connection.
func (p *Pool) CAS(ctx context.Context, key, expected, newValue any) (bool, error) {
	var ok bool
	err := p.Do(ctx, func(c *Conn) error {
		var err error
		ok, err = c.CAS(ctx, key, expected, newValue)
		return err
	})
	return ok, err
}

// Incr runs Conn.Incr on a pooled connection.
func (p *Pool) Incr(ctx context.Context, key any, by int64) (int64, error) {
	var n int64
	err := p.Do(ctx, func(c *Conn) error {
		var err error
		n, err = c.Incr(ctx, key, by)
		return err
	})
	return n, err
}

func insertIfAbsentStatement(key, value any, ttl time.Duration) (string, []any, error) {
	if err := checkBytes("key", key); err != nil {
		return "", nil, err
	}
	if err := checkBytes("value", value); err != nil {
		return "", nil, err
	}
	if ttl == 0 {
		return "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", []any{key, value}, nil
	}
	secs, err := ttlSeconds(ttl)
	if err != nil {
		return "", nil, err
	}
	return "INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", []any{key, value, secs}, nil
}

func casStatement(key, expected, newValue any) (string, []any, error) {
	for _, a := range []struct {
		name string
		v    any
	}{{"key", key}, {"expected value", expected}, {"new value", newValue}} {
		if err := checkBytes(a.name, a.v); err != nil {
			return "", nil, err
		}
	}
	return "UPDATE kv SET value = ? WHERE key = ? AND value = ?", []any{newValue, key, expected}, nil
}

func incrStatement(key any, by int64) (string, []any, error) {
	if err := checkBytes("key", key); err != nil {
		return "", nil, err
	}
	// The absent key's row is by's decimal text; the dialect's integers are unsigned, so a
	// negative by is "value - |by|" (|MinInt64| = 2^63 fits a uint64).
	start := strconv.FormatInt(by, 10)
	if by < 0 {
		return "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = value - ? RETURNING value",
			[]any{key, start, uint64(^by) + 1}, nil
	}
	return "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = value + ? RETURNING value",
		[]any{key, start, uint64(by)}, nil
}

// counterValue is the one value a counter's RETURNING value gives, as an int64.
func counterValue(r *Result) (int64, error) {
	v, err := r.Scalar()
	if err != nil || v.Kind != Bytes {
		return 0, protocolErrorf("a counter's RETURNING value should be one BYTES value; got %d rows of %d columns", len(r.Rows), len(r.Columns))
	}
	n, err := strconv.ParseInt(string(v.Bytes), 10, 64)
	if err != nil {
		return 0, protocolErrorf("a counter's RETURNING value is not a 64-bit integer: %q", v.Bytes)
	}
	return n, nil
}

func ttlSeconds(ttl time.Duration) (int64, error) {
	if ttl < time.Second || ttl > MaxTTL || ttl%time.Second != 0 {
		return 0, usageErrorf("a TTL is a whole number of seconds from 1 s to %d s, or 0 for none (got %v)", int64(MaxTTL/time.Second), ttl)
	}
	return int64(ttl / time.Second), nil
}

// checkBytes refuses an argument that would not quote as a string literal (text or bytes):
// keys and values are byte strings, and Quote would write an integer or NULL, which the
// server refuses in these places.
func checkBytes(name string, v any) error {
	if !isBytesArg(v) {
		return usageErrorf("the %s must be a string or []byte (got %T)", name, v)
	}
	return nil
}

func isBytesArg(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string, []byte:
		return true
	case Value:
		return x.Kind == Bytes
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String:
		return true
	case reflect.Slice:
		return rv.Type().Elem().Kind() == reflect.Uint8
	}
	return false
}
