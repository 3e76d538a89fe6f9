package velocity

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"
)

// Version is this client's version; ClientName is what it says in HELLO.
const (
	Version    = "0.1.0"
	ClientName = "velocity-go/" + Version
	// DefaultHost and DefaultPort are where velocityd listens unless told otherwise.
	DefaultHost = "127.0.0.1"
	DefaultPort = 7411
	// DefaultConnectTimeout bounds Connect when its context has no deadline.
	DefaultConnectTimeout = 30 * time.Second
)

// Options say where and how to connect, whom to trust and how to log in. The zero value
// connects to 127.0.0.1:7411 over TLS, trusts only servers already in ~/.velocity/known_hosts
// and does not log in.
type Options struct {
	Host string // default DefaultHost
	Port int    // default DefaultPort

	// Log in with User and Password (the client derives the Argon2id credential; the password
	// never leaves the process), or User and a Credential from DeriveCredential, or an APIKey.
	// With none of them the connection is made but not logged in (requests get UNAUTHORIZED).
	User       string
	Password   string
	Credential []byte
	APIKey     string

	// Plaintext connects over plain TCP, to a server started with --plaintext. TLS 1.3 otherwise.
	Plaintext bool

	// KnownHosts is the trust-on-first-use file; default ~/.velocity/known_hosts, shared with
	// the other Velocity clients and velocity-cli.
	KnownHosts string
	// AcceptNewHost records a server seen for the first time and goes on. Otherwise AskNewHost,
	// when set, is asked (with "host:port" and the fingerprint); else a new server is refused.
	AcceptNewHost bool
	AskNewHost    func(hostLabel, fingerprint string) bool
	// Fingerprint ("SHA256:...", as `velocityd fingerprint` prints it) accepts exactly that
	// server key, whatever the known-hosts file says.
	Fingerprint string

	// ConnectTimeout bounds Connect when ctx has no deadline: 0 means DefaultConnectTimeout,
	// a negative value no bound beyond ctx.
	ConnectTimeout time.Duration
	// ClientName is sent in HELLO (for the server's logs); default ClientName.
	ClientName string
}

func (o *Options) host() string {
	if o.Host == "" {
		return DefaultHost
	}
	return o.Host
}

func (o *Options) port() int {
	if o.Port == 0 {
		return DefaultPort
	}
	return o.Port
}

// DeriveCredential computes the 32-byte method-1 credential for a server:
// Argon2id(password, SHA-256(auth_salt ‖ user)[:16]) with the server's cost parameters, refused
// when they exceed the client's bounds (m 1 GiB, t 16, p 16). Derive once and pass it as
// Options.Credential to open many connections for the cost of one derivation.
func DeriveCredential(info *ServerInfo, user, password string) ([]byte, error) {
	if len(user) > UsernameBytesMax {
		return nil, usageErrorf("user name is longer than %d bytes", UsernameBytesMax)
	}
	if len(password) > PasswordBytesMax {
		return nil, usageErrorf("password is longer than %d bytes", PasswordBytesMax)
	}
	if info.Argon2MKiB == 0 || info.Argon2MKiB > Argon2MKiBMax || info.Argon2T == 0 || info.Argon2T > Argon2TMax ||
		info.Argon2P == 0 || info.Argon2P > Argon2PMax {
		return nil, protocolErrorf("server asks for Argon2id parameters outside the client's bounds: m=%d KiB, t=%d, p=%d",
			info.Argon2MKiB, info.Argon2T, info.Argon2P)
	}
	h := sha256.New()
	h.Write(info.AuthSalt[:])
	h.Write([]byte(user))
	salt := h.Sum(nil)[:16]
	return argon2.IDKey([]byte(password), salt, info.Argon2T, info.Argon2MKiB, info.Argon2P, 32), nil
}

// credCache lets a pool derive a user's credential once per server salt and cost.
type credCache struct {
	mu   sync.Mutex
	key  string
	cred []byte
}

func (cc *credCache) derive(info *ServerInfo, user, password string) ([]byte, error) {
	if cc == nil {
		return DeriveCredential(info, user, password)
	}
	key := fmt.Sprintf("%x/%d/%d/%d/%s", info.AuthSalt, info.Argon2MKiB, info.Argon2T, info.Argon2P, user)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.cred != nil && cc.key == key {
		return cc.cred, nil
	}
	cred, err := DeriveCredential(info, user, password)
	if err != nil {
		return nil, err
	}
	cc.key, cc.cred = key, cred
	return cred, nil
}

// Conn is one connection to a Velocity server. It is safe for concurrent use by several
// goroutines: their requests are pipelined on the one socket and each gets its own reply (the
// server answers in request order). A Pool spreads work over several connections.
type Conn struct {
	nc   net.Conn
	info *ServerInfo
	// limit is the largest payload accepted from the server: 4 KiB until logged in.
	limit atomic.Uint32

	wmu  sync.Mutex // one writer at a time; requests are queued in the order they are written
	wbuf []byte

	mu      sync.Mutex
	pending []*call // requests sent and not yet answered, oldest first
	err     error   // why the connection ended; nil while it is usable

	readerDone chan struct{}
}

type call struct{ ch chan reply }

// reply is one frame from the server in answer to a request, or why there is none.
type reply struct {
	t       FrameType
	payload []byte
	err     error
}

const writeChunkBytes = 64 << 10

var errClosed = &DisconnectedError{Message: "the connection is closed"}

// Connect opens a connection, checks the server's identity (the TLS key against SERVER_INFO,
// then trust on first use) and logs in as opts say. ctx bounds the whole handshake.
func Connect(ctx context.Context, opts Options) (*Conn, error) {
	return connect(ctx, &opts, nil)
}

func connect(ctx context.Context, o *Options, creds *credCache) (*Conn, error) {
	if _, ok := ctx.Deadline(); !ok && o.ConnectTimeout >= 0 {
		t := o.ConnectTimeout
		if t == 0 {
			t = DefaultConnectTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	if o.APIKey == "" && o.User == "" && (o.Password != "" || o.Credential != nil) {
		return nil, usageErrorf("a password needs a user")
	}
	if o.APIKey == "" && o.User != "" && o.Password == "" && o.Credential == nil {
		return nil, usageErrorf("give a password, a derived credential or an API key")
	}
	if len(o.APIKey) > CredentialBytesMax {
		return nil, usageErrorf("API key is longer than %d bytes", CredentialBytesMax)
	}
	host, port := o.host(), o.port()
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("velocity: cannot connect to %s: %w", addr, ctx.Err())
		}
		return nil, disconnected("cannot connect to %s: %v", addr, err)
	}
	var keyHash []byte
	if !o.Plaintext {
		cfg := &tls.Config{
			// Certificates are not checked against a CA: the server's identity is its key's
			// fingerprint, checked below against SERVER_INFO and the known-hosts file.
			InsecureSkipVerify: true, //nolint:gosec
			MinVersion:         tls.VersionTLS13,
		}
		if net.ParseIP(host) == nil {
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("velocity: TLS handshake with %s: %w", addr, ctx.Err())
			}
			return nil, protocolErrorf("TLS handshake with %s failed (%v); if the server was started with --plaintext, connect with Plaintext: true", addr, err)
		}
		certs := tc.ConnectionState().PeerCertificates
		if len(certs) == 0 {
			tc.Close()
			return nil, trustError("the server presented no certificate")
		}
		h := sha256.Sum256(certs[0].RawSubjectPublicKeyInfo)
		keyHash = h[:]
		nc = tc
	}
	c := &Conn{nc: nc, info: &ServerInfo{MaxPayload: PreauthPayloadBytesMax}, readerDone: make(chan struct{})}
	c.limit.Store(PreauthPayloadBytesMax)
	ok := false
	defer func() {
		if !ok {
			c.fail(errClosed)
			<-c.readerDone
		}
	}()

	name := o.ClientName
	if name == "" {
		name = ClientName
	}
	hello, err := encodeHello(name, []byte{ProtocolVersion})
	if err != nil {
		close(c.readerDone)
		return nil, err
	}
	// The HELLO is queued before the reader starts, so that whatever the server sends first
	// (SERVER_INFO, or ERROR SERVER_OVERLOADED) answers it.
	calls, err := c.send(ctx, 1, func(dst []byte, _ int) []byte { return append(dst, hello...) })
	go c.readLoop()
	if err != nil {
		return nil, err
	}
	r, err := c.wait(ctx, calls[0])
	if err != nil {
		return nil, err
	}
	if r.err != nil {
		var fe *FrameError
		if o.Plaintext && errors.As(r.err, &fe) && fe.Kind == "bad_magic" {
			return nil, protocolErrorf("%s; if the server uses TLS (the default), connect without Plaintext", fe.Message)
		}
		return nil, r.err
	}
	if r.t != TypeServerInfo {
		if err := replyError(r); err != nil {
			return nil, err
		}
		return nil, protocolErrorf("expected SERVER_INFO, got frame type 0x%02x", byte(r.t))
	}
	info, err := parseServerInfo(r.payload)
	if err != nil {
		return nil, err
	}
	if info.Version != ProtocolVersion {
		return nil, protocolErrorf("server chose unsupported protocol version %d", info.Version)
	}
	if keyHash != nil && string(keyHash) != string(info.Fingerprint[:]) {
		return nil, trustError("SERVER_INFO's fingerprint is not the key that the TLS handshake presented: possible man-in-the-middle; refused")
	}
	if err := checkTrust(o, HostLabel(host, port), info.FingerprintString()); err != nil {
		return nil, err
	}
	if info.MaxPayload > PayloadBytesCeiling {
		return nil, protocolErrorf("server announces max_payload %d, beyond the protocol's ceiling", info.MaxPayload)
	}
	c.info = info

	var auth []byte
	switch {
	case o.APIKey != "":
		auth, err = encodeAuthRequest(methodAPIKey, "", []byte(o.APIKey))
	case o.User != "":
		cred := o.Credential
		if cred == nil {
			if cred, err = creds.derive(info, o.User, o.Password); err != nil {
				return nil, err
			}
		}
		auth, err = encodeAuthRequest(methodPassword, o.User, cred)
	}
	if err != nil {
		return nil, err
	}
	if auth != nil {
		calls, err := c.send(ctx, 1, func(dst []byte, _ int) []byte { return append(dst, auth...) })
		if err != nil {
			return nil, err
		}
		r, err := c.wait(ctx, calls[0])
		if err != nil {
			return nil, err
		}
		if r.err != nil {
			return nil, r.err
		}
		if r.t != TypeAuthResponse {
			if err := replyError(r); err != nil {
				return nil, err
			}
			return nil, protocolErrorf("expected AUTH_RESPONSE, got frame type 0x%02x", byte(r.t))
		}
		status, message, err := parseCodeMessage(r.payload)
		if err != nil {
			return nil, err
		}
		if status != 0 {
			return nil, errorFor(status, message)
		}
		c.limit.Store(info.MaxPayload)
	}
	ok = true
	return c, nil
}

// ServerInfo is the server's SERVER_INFO.
func (c *Conn) ServerInfo() *ServerInfo { return c.info }

// Fingerprint is the server's key fingerprint, "SHA256:...".
func (c *Conn) Fingerprint() string { return c.info.FingerprintString() }

// Err is why the connection ended (an error matching ErrDisconnected, ErrProtocolError, or a
// context error when a write was cut short), or nil while it is usable.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close says DISCONNECT and closes the socket. Requests still waiting for replies fail with
// an error matching ErrDisconnected.
func (c *Conn) Close() error {
	// A writer blocked on a server that does not read must not block Close: say goodbye only
	// when the socket is free.
	if c.wmu.TryLock() {
		if c.Err() == nil {
			_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.nc.Write(encodeDisconnect(0, "bye"))
		}
		c.wmu.Unlock()
	}
	c.fail(errClosed)
	<-c.readerDone
	return nil
}

// fail ends the connection with err (the first reason wins) and fails every waiting request.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	waiting := c.pending
	c.pending = nil
	c.mu.Unlock()
	c.nc.Close()
	for _, w := range waiting {
		w.ch <- reply{err: err}
	}
}

// deliver hands a frame to the oldest waiting request.
func (c *Conn) deliver(r reply) bool {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return false
	}
	if len(c.pending) == 0 {
		c.mu.Unlock()
		c.fail(protocolErrorf("unsolicited frame type 0x%02x from the server", byte(r.t)))
		return false
	}
	w := c.pending[0]
	c.pending[0] = nil
	c.pending = c.pending[1:]
	c.mu.Unlock()
	w.ch <- r
	return true
}

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	var dec frameDecoder
	buf := make([]byte, 64<<10)
	var readErr error
	for {
		for {
			t, payload, ok, err := dec.next(c.limit.Load())
			if err != nil {
				var fe *FrameError
				if errors.As(err, &fe) && !fe.Fatal {
					// An unknown frame type: its boundary is intact, so it answers the oldest request.
					if !c.deliver(reply{t: t, err: err}) {
						return
					}
					continue
				}
				c.fail(err)
				return
			}
			if !ok {
				break
			}
			if t == TypeDisconnect {
				code, reason, perr := parseCodeMessage(payload)
				if perr != nil {
					reason = "(malformed DISCONNECT)"
				}
				c.fail(&DisconnectedError{Message: "server disconnected: " + reason, FromServer: true, DisconnectCode: code, Reason: reason})
				return
			}
			if !c.deliver(reply{t: t, payload: payload}) {
				return
			}
		}
		if readErr != nil {
			if errors.Is(readErr, io.EOF) {
				c.fail(disconnected("the server closed the connection"))
			} else {
				c.fail(disconnected("connection lost: %v", readErr))
			}
			return
		}
		var n int
		n, readErr = c.nc.Read(buf)
		dec.feed(buf[:n])
	}
}

// send queues n requests (build appends the i-th frame) and writes them. The replies arrive
// on the returned calls. A write cut short by ctx breaks the connection: it is closed, and the
// error says why. Other write failures mean the connection is going away; the reader then
// tells every waiting request why.
func (c *Conn) send(ctx context.Context, n int, build func(dst []byte, i int) []byte) ([]*call, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	calls := make([]*call, n)
	for i := range calls {
		calls[i] = &call{ch: make(chan reply, 1)}
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.pending = append(c.pending, calls...)
	c.mu.Unlock()

	if err := ctx.Err(); err != nil {
		// Nothing written yet: take the requests back, the connection is unharmed.
		c.mu.Lock()
		if c.err == nil {
			c.pending = c.pending[:len(c.pending)-n]
		}
		c.mu.Unlock()
		return nil, fmt.Errorf("velocity: %w", err)
	}
	deadline, _ := ctx.Deadline()
	_ = c.nc.SetWriteDeadline(deadline)
	var stop, stopped chan struct{}
	if done := ctx.Done(); done != nil {
		stop, stopped = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			select {
			case <-done:
				_ = c.nc.SetWriteDeadline(time.Unix(1, 0)) // interrupts a blocked write
			case <-stop:
			}
		}()
	}
	buf := c.wbuf[:0]
	var werr error
	for i := 0; i < n && werr == nil; i++ {
		buf = build(buf, i)
		if len(buf) >= writeChunkBytes || i == n-1 {
			_, werr = c.nc.Write(buf)
			buf = buf[:0]
		}
	}
	if stop != nil {
		close(stop)
		<-stopped
	}
	if cap(buf) <= 1<<20 {
		c.wbuf = buf[:0]
	} else {
		c.wbuf = nil
	}
	if werr != nil {
		if cerr := ctx.Err(); cerr != nil || errors.Is(werr, os.ErrDeadlineExceeded) {
			if cerr == nil {
				cerr = context.DeadlineExceeded
			}
			err := fmt.Errorf("velocity: a write was cut short, the connection is closed: %w", cerr)
			c.fail(err)
			return nil, err
		}
		// The peer is gone. Whatever it sent before going (an ERROR explaining why) is still
		// read; the read side then ends too.
		_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	}
	return calls, nil
}

// wait is the reply to one request, or ctx's error. A request given up on keeps its place in
// the queue: its reply is read and dropped when it comes, so the connection stays in step.
func (c *Conn) wait(ctx context.Context, w *call) (reply, error) {
	select {
	case r := <-w.ch:
		return r, nil
	default:
	}
	select {
	case r := <-w.ch:
		return r, nil
	case <-ctx.Done():
		return reply{}, fmt.Errorf("velocity: waiting for the server: %w", ctx.Err())
	}
}

// replyError is the error an ERROR frame carries (or a malformed frame), nil for other frames.
func replyError(r reply) error {
	if r.err != nil {
		return r.err
	}
	if r.t != TypeError {
		return nil
	}
	code, message, err := parseCodeMessage(r.payload)
	if err != nil {
		return err
	}
	return errorFor(code, message)
}

// toResult is the result set a reply carries, or its error.
func toResult(r reply) (*Result, error) {
	if err := replyError(r); err != nil {
		return nil, err
	}
	switch r.t {
	case TypeResponse, TypeStats:
		return parseResult(r.payload)
	}
	return nil, protocolErrorf("unexpected frame type 0x%02x in reply to a request", byte(r.t))
}

func (c *Conn) statement(sql string, args []any) (string, error) {
	if len(args) > 0 {
		var err error
		if sql, err = Bind(sql, args...); err != nil {
			return "", err
		}
	}
	if max := c.info.MaxPayload; uint64(len(sql)) > uint64(max) {
		return "", usageErrorf("statement is %d bytes; the server accepts %d", len(sql), max)
	}
	return sql, nil
}

// Exec runs one statement and returns its result. With args, each ? outside a quoted literal
// is replaced by the next argument, quoted so that it cannot change the statement (see Quote);
// without args the statement is sent as it is. An ERROR reply is returned as an *Error that
// matches its code (errors.Is(err, ErrKeyNotFound)). When ctx ends first, Exec returns its
// error at once; the statement may still run, and its reply is dropped when it comes.
func (c *Conn) Exec(ctx context.Context, sql string, args ...any) (*Result, error) {
	sql, err := c.statement(sql, args)
	if err != nil {
		return nil, err
	}
	calls, err := c.send(ctx, 1, func(dst []byte, _ int) []byte { return appendCommand(dst, sql) })
	if err != nil {
		return nil, err
	}
	r, err := c.wait(ctx, calls[0])
	if err != nil {
		return nil, err
	}
	return toResult(r)
}

// Ping sends PING with up to 64 bytes and returns the PONG's echo.
func (c *Conn) Ping(ctx context.Context, data []byte) ([]byte, error) {
	if len(data) > PingPayloadBytesMax {
		return nil, usageErrorf("PING carries at most %d bytes", PingPayloadBytesMax)
	}
	frame := encodePing(data)
	calls, err := c.send(ctx, 1, func(dst []byte, _ int) []byte { return append(dst, frame...) })
	if err != nil {
		return nil, err
	}
	r, err := c.wait(ctx, calls[0])
	if err != nil {
		return nil, err
	}
	if err := replyError(r); err != nil {
		return nil, err
	}
	if r.t != TypePong {
		return nil, protocolErrorf("PING answered with frame type 0x%02x", byte(r.t))
	}
	return r.payload, nil
}

// Stats sends the STATS frame: server counters and latency percentiles as (name, value) rows.
func (c *Conn) Stats(ctx context.Context) (*Result, error) {
	frame := encodeStats()
	calls, err := c.send(ctx, 1, func(dst []byte, _ int) []byte { return append(dst, frame...) })
	if err != nil {
		return nil, err
	}
	r, err := c.wait(ctx, calls[0])
	if err != nil {
		return nil, err
	}
	return toResult(r)
}

// SendRaw sends pre-built bytes (see EncodeFrame) as one request and returns the frame that
// answers it; an ERROR answer is also returned as its *Error. For tests and tools.
func (c *Conn) SendRaw(ctx context.Context, frame []byte) (FrameType, []byte, error) {
	calls, err := c.send(ctx, 1, func(dst []byte, _ int) []byte { return append(dst, frame...) })
	if err != nil {
		return 0, nil, err
	}
	r, err := c.wait(ctx, calls[0])
	if err != nil {
		return 0, nil, err
	}
	return r.t, r.payload, replyError(r)
}

// runPipeline sends every statement at once and collects the replies in order.
func (c *Conn) runPipeline(ctx context.Context, sqls []string) ([]Reply, error) {
	for _, s := range sqls {
		if max := c.info.MaxPayload; uint64(len(s)) > uint64(max) {
			return nil, usageErrorf("statement is %d bytes; the server accepts %d", len(s), max)
		}
	}
	if len(sqls) == 0 {
		return []Reply{}, nil
	}
	calls, err := c.send(ctx, len(sqls), func(dst []byte, i int) []byte { return appendCommand(dst, sqls[i]) })
	if err != nil {
		return nil, err
	}
	replies := make([]Reply, len(calls))
	var first error
	for i, w := range calls {
		r, err := c.wait(ctx, w)
		if err != nil {
			return nil, err
		}
		if r.err != nil {
			var fe *FrameError
			if !errors.As(r.err, &fe) || fe.Fatal {
				return nil, r.err // the connection ended: the rest has no replies
			}
		}
		replies[i].Result, replies[i].Err = toResult(r)
		if first == nil && replies[i].Err != nil {
			first = replies[i].Err
		}
	}
	return replies, first
}
