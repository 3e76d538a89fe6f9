// Quickstart: connect, write, read back, pipeline, handle a missing key.
//
//	VELOCITY_PASSWORD=... go run ./examples/quickstart [-plaintext] [-accept-new-host]
//
// Where and as whom it connects comes from VELOCITY_HOST (default 127.0.0.1), VELOCITY_PORT
// (7411), VELOCITY_USER (admin, the user scripts/quickstart.sh creates) and VELOCITY_PASSWORD
// (no default). It says which of them it had to assume.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	velocity "github.com/velocitydb/velocity-go"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	if fallback == "" {
		fmt.Printf("%s not set\n", name)
	} else {
		fmt.Printf("%s not set; using %s\n", name, fallback)
	}
	return fallback
}

func main() {
	plaintext := flag.Bool("plaintext", false, "the server was started with --plaintext")
	acceptNew := flag.Bool("accept-new-host", false, "trust and record a server seen for the first time")
	flag.Parse()

	host := env("VELOCITY_HOST", velocity.DefaultHost)
	port, err := strconv.Atoi(env("VELOCITY_PORT", strconv.Itoa(velocity.DefaultPort)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "VELOCITY_PORT is not a number:", err)
		os.Exit(2)
	}
	user := env("VELOCITY_USER", "admin")
	password := env("VELOCITY_PASSWORD", "")
	if password == "" {
		fmt.Fprintln(os.Stderr, "set VELOCITY_PASSWORD to the password of", user, "(scripts/quickstart.sh prints the one it made)")
		os.Exit(2)
	}
	if err := run(host, port, user, password, *plaintext, *acceptNew); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(host string, port int, user, password string, plaintext, acceptNew bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := velocity.Connect(ctx, velocity.Options{
		Host: host, Port: port, User: user, Password: password,
		Plaintext: plaintext, AcceptNewHost: acceptNew,
	})
	if err != nil {
		return err
	}
	defer db.Close()
	fmt.Println("connected to", db.ServerInfo().Server, db.Fingerprint())

	if _, err := db.Exec(ctx, "INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", "greeting", "hello, world", 60); err != nil {
		return err
	}
	r, err := db.Exec(ctx, "SELECT value FROM kv WHERE key = ?", "greeting")
	if err != nil {
		return err
	}
	v, err := r.Scalar()
	if err != nil {
		return err
	}
	fmt.Println("greeting =", v.Text())

	p := db.Pipeline()
	for i := 0; i < 1000; i++ {
		p.Add("INSERT INTO kv (key, value) VALUES (?, ?)", fmt.Sprintf("example:%04d", i), fmt.Sprintf("value %d", i))
	}
	replies, err := p.Run(ctx)
	if err != nil {
		return err
	}
	fmt.Println("pipelined", len(replies), "inserts")
	r, err = db.Exec(ctx, "SELECT key, value FROM kv WHERE key LIKE 'example:%' LIMIT 3")
	if err != nil {
		return err
	}
	for _, row := range r.Rows {
		fmt.Println(" ", row[0].Text(), "=", row[1].Text())
	}

	_, err = db.Exec(ctx, "SELECT value FROM kv WHERE key = 'no such key'")
	var verr *velocity.Error
	switch {
	case errors.Is(err, velocity.ErrKeyNotFound) && errors.As(err, &verr):
		fmt.Printf("missing key: %s (wire code %d)\n", verr.Message, verr.Code)
	case err != nil:
		return err
	}
	_, err = db.Exec(ctx, "DELETE FROM kv WHERE key LIKE 'example:%'")
	return err
}
