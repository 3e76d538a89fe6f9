// Package velocity is the Go client of Velocity, a key-value database server that speaks a
// binary protocol carrying SQL over one table, kv (key, value, ttl).
//
// Connect opens one connection: TLS 1.3 by default, the server's key checked against the
// fingerprint it announces and then trusted on first use through ~/.velocity/known_hosts (the
// file the other Velocity clients and velocity-cli share), and a login with a password (an
// Argon2id credential derived here: the password never leaves the process) or an API key.
//
//	db, err := velocity.Connect(ctx, velocity.Options{
//		Host: "db.example", User: "alice", Password: pw,
//	})
//	if err != nil { ... }
//	defer db.Close()
//	_, err = db.Exec(ctx, "INSERT INTO kv (key, value) VALUES (?, ?)", "user:1", "alice")
//	r, err := db.Exec(ctx, "SELECT value FROM kv WHERE key = ?", "user:1")
//	if errors.Is(err, velocity.ErrKeyNotFound) { ... }
//	v, _ := r.Scalar() // v.Bytes is []byte("alice"); v.Text() is "alice"
//
// Arguments replace ? placeholders outside quoted literals, each quoted so that data can never
// change a statement (see Quote). Every ERROR the server sends is an *Error carrying its wire
// code, matched with errors.Is against ErrInvalidCredentials, ErrRateLimited,
// ErrInvalidCommand, ErrKeyNotFound, ErrStorageError, ErrProtocolError, ErrServerOverloaded,
// ErrUnauthorized or ErrOutcomeUnknown (from a cluster node: the write may or may not have been
// applied; reading the key tells). A Conn is safe for concurrent use (requests from several
// goroutines are pipelined on its socket); Pipeline sends many statements in one go; Pool
// spreads work over several connections. InsertIfAbsent, CAS and Incr are the server's
// conditional writes and counters, one atomic statement each. Contexts bound every wait.
package velocity
