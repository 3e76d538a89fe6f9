package velocity

import (
	"context"
	"fmt"
	"sync"
)

// Reply is the outcome of one pipelined statement: its result, or the error it got.
type Reply struct {
	Result *Result
	Err    error
}

// Pipeline collects statements and sends them together, without waiting for each reply:
//
//	p := conn.Pipeline()
//	for i := 0; i < 10000; i++ {
//		p.Add("INSERT INTO kv (key, value) VALUES (?, ?)", fmt.Sprintf("k%05d", i), "v")
//	}
//	replies, err := p.Run(ctx)
//
// Run returns one Reply per statement, in order. Its error is nil when every statement
// succeeded; otherwise it is the first statement's error, and every reply is still there (all
// were read, so the connection stays in step). A transport failure or the end of ctx returns
// no replies and that error. An argument that cannot be quoted makes Run fail before anything
// is sent. A Pipeline is not for concurrent use; its connection is.
type Pipeline struct {
	conn *Conn
	pool *Pool
	sqls []string
	err  error
}

// Pipeline starts a pipeline on this connection.
func (c *Conn) Pipeline() *Pipeline { return &Pipeline{conn: c} }

// Add queues a statement (with ? placeholders bound to args, as Exec does).
func (p *Pipeline) Add(sql string, args ...any) *Pipeline {
	if p.err != nil {
		return p
	}
	if len(args) > 0 {
		bound, err := Bind(sql, args...)
		if err != nil {
			p.err = fmt.Errorf("pipeline statement %d: %w", len(p.sqls), err)
			return p
		}
		sql = bound
	}
	p.sqls = append(p.sqls, sql)
	return p
}

// Len is the number of statements queued.
func (p *Pipeline) Len() int { return len(p.sqls) }

// Run sends what was queued (emptying the pipeline) and returns the replies.
func (p *Pipeline) Run(ctx context.Context) ([]Reply, error) {
	sqls, err := p.sqls, p.err
	p.sqls, p.err = nil, nil
	if err != nil {
		return nil, err
	}
	if p.pool != nil {
		var replies []Reply
		err := p.pool.Do(ctx, func(c *Conn) error {
			var err error
			replies, err = c.runPipeline(ctx, sqls)
			return err
		})
		return replies, err
	}
	return p.conn.runPipeline(ctx, sqls)
}

// Pool keeps up to a fixed number of connections to one server, opened as they are needed and
// reused, for any number of goroutines. Each operation takes a connection for itself and gives
// it back when done; a connection that has failed is dropped and replaced. Logging in with a
// password derives the Argon2id credential once for the whole pool.
type Pool struct {
	opts   Options
	tokens chan struct{} // one per connection in use or being opened
	creds  credCache

	mu     sync.Mutex
	idle   []*Conn
	closed bool
}

// ErrPoolClosed is returned by a Pool used after Close.
var ErrPoolClosed = fmt.Errorf("%w: the pool is closed", ErrDisconnected)

// NewPool makes a pool of at most size connections and opens the first one, so that an
// untrusted server or a wrong password is found at once.
func NewPool(ctx context.Context, opts Options, size int) (*Pool, error) {
	if size < 1 {
		return nil, usageErrorf("a pool needs at least one connection (got %d)", size)
	}
	p := &Pool{opts: opts, tokens: make(chan struct{}, size)}
	c, err := connect(ctx, &p.opts, &p.creds)
	if err != nil {
		return nil, err
	}
	// A server seen for the first time has been recorded (or asked about) now; the pool's
	// later connections need no asking.
	p.opts.AskNewHost = nil
	p.idle = append(p.idle, c)
	return p, nil
}

// Size is the most connections the pool opens.
func (p *Pool) Size() int { return cap(p.tokens) }

// Idle is the number of open connections not in use.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

func (p *Pool) acquire(ctx context.Context) (*Conn, error) {
	select {
	case p.tokens <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("velocity: waiting for a pooled connection: %w", ctx.Err())
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.tokens
		return nil, ErrPoolClosed
	}
	for len(p.idle) > 0 {
		c := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if c.Err() == nil {
			p.mu.Unlock()
			return c, nil
		}
		c.Close() // ended while idle (idle timeout, server restart): replaced below
	}
	p.mu.Unlock()
	c, err := connect(ctx, &p.opts, &p.creds)
	if err != nil {
		<-p.tokens
		return nil, err
	}
	return c, nil
}

func (p *Pool) release(c *Conn) {
	p.mu.Lock()
	if !p.closed && c.Err() == nil {
		p.idle = append(p.idle, c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
	<-p.tokens
}

// Do runs fn with a connection of its own, then gives the connection back to the pool (fn must
// not keep it, nor close it). fn's error is returned.
func (p *Pool) Do(ctx context.Context, fn func(*Conn) error) error {
	c, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	defer p.release(c)
	return fn(c)
}

// Exec runs one statement on a pooled connection (see Conn.Exec).
func (p *Pool) Exec(ctx context.Context, sql string, args ...any) (*Result, error) {
	var res *Result
	err := p.Do(ctx, func(c *Conn) error {
		var err error
		res, err = c.Exec(ctx, sql, args...)
		return err
	})
	return res, err
}

// Ping pings the server over a pooled connection.
func (p *Pool) Ping(ctx context.Context, data []byte) ([]byte, error) {
	var out []byte
	err := p.Do(ctx, func(c *Conn) error {
		var err error
		out, err = c.Ping(ctx, data)
		return err
	})
	return out, err
}

// Pipeline starts a pipeline that runs on one pooled connection.
func (p *Pool) Pipeline() *Pipeline { return &Pipeline{pool: p} }

// Close closes the idle connections; connections in use are closed when given back.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
	return nil
}
