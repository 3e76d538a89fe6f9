package velocity_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	velocity "github.com/velocitydb/velocity-go"
)

// Compiled (not run: it needs a server) so that the documented use stays correct.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := velocity.Connect(ctx, velocity.Options{
		Host: "127.0.0.1", Port: 7411, User: "alice", Password: "correct horse battery staple",
		AcceptNewHost: true, // first contact: record the server's fingerprint
	})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	if _, err := db.Exec(ctx, "INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", "user:1", "alice", 3600); err != nil {
		log.Fatal(err)
	}
	r, err := db.Exec(ctx, "SELECT key, value, ttl FROM kv WHERE key LIKE ? LIMIT 10", "user:%")
	if err != nil {
		log.Fatal(err)
	}
	for _, row := range r.Rows {
		fmt.Println(row[0].Text(), row[1].Text(), row[2]) // ttl: an INT, or NULL
	}

	_, err = db.Exec(ctx, "SELECT value FROM kv WHERE key = 'nobody'")
	if errors.Is(err, velocity.ErrKeyNotFound) {
		fmt.Println("no such key")
	}

	p := db.Pipeline()
	for i := 0; i < 1000; i++ {
		p.Add("SELECT value FROM kv WHERE key = ?", fmt.Sprintf("user:%d", i))
	}
	replies, err := p.Run(ctx) // err: the first statement's error, every reply still there
	for _, rep := range replies {
		if rep.Err == nil {
			v, _ := rep.Result.Scalar()
			_ = v.Bytes
		}
	}
	_ = err
}

func ExamplePool() {
	ctx := context.Background()
	pool, err := velocity.NewPool(ctx, velocity.Options{User: "alice", Password: "…"}, 8)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	// Any number of goroutines may share the pool.
	if _, err := pool.Exec(ctx, "INSERT INTO kv (key, value) VALUES (?, ?)", "k", []byte{0, 1, 2}); err != nil {
		var verr *velocity.Error
		if errors.As(err, &verr) {
			log.Printf("server said %s (code %d): %s", verr.Code, uint16(verr.Code), verr.Message)
		}
	}
}

func ExampleConn_InsertIfAbsent() {
	ctx := context.Background()
	db, err := velocity.Connect(ctx, velocity.Options{User: "alice", Password: "…"})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	// A lock for 30 s: only one worker gets true; the others see false until it expires.
	got, err := db.InsertIfAbsent(ctx, "lock:report", "worker-7", 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	if got {
		// Hand it over, only if worker-7 still holds it (the lock keeps its expiry).
		if _, err := db.CAS(ctx, "lock:report", "worker-7", "worker-8"); err != nil {
			log.Fatal(err)
		}
	}
}

func ExampleConn_CAS() {
	ctx := context.Background()
	db, err := velocity.Connect(ctx, velocity.Options{User: "alice", Password: "…"})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	// Read, compute, compare-and-set; on false another client won the race: read again.
	for {
		r, err := db.Exec(ctx, "SELECT value FROM kv WHERE key = ?", "greeting")
		if err != nil {
			log.Fatal(err)
		}
		v, _ := r.Scalar()
		ok, err := db.CAS(ctx, "greeting", v.Bytes, strings.ToUpper(v.Text()))
		if err != nil {
			log.Fatal(err)
		}
		if ok {
			break
		}
	}
}

func ExampleConn_Incr() {
	ctx := context.Background()
	db, err := velocity.Connect(ctx, velocity.Options{User: "alice", Password: "…"})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	hits, err := db.Incr(ctx, "hits", 1) // 1 for an absent key, then 2, 3, …
	if errors.Is(err, velocity.ErrInvalidCommand) {
		log.Fatal("hits holds something other than an integer, or would overflow: ", err)
	}
	fmt.Println(hits)
}
