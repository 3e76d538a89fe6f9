package velocity

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Starts the real velocityd built from this repository on a free loopback port, with a fresh
// data directory and two users (alice: readwrite, reader: readonly), and stops it after the
// test. The binary comes from $VELOCITYD, else target/release/velocityd (built if missing).

const (
	password   = "correct horse battery staple"
	roPassword = "read only please"
)

var repoRoot = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

var (
	buildOnce sync.Once
	buildErr  error
)

func velocitydPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("VELOCITYD"); p != "" {
		return p
	}
	p := filepath.Join(repoRoot, "target", "release", "velocityd")
	buildOnce.Do(func() {
		if _, err := os.Stat(p); err == nil {
			return
		}
		cmd := exec.Command("cargo", "build", "--release", "--locked", "--bin", "velocityd", "--bin", "velocity-cli")
		cmd.Dir = repoRoot
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		buildErr = cmd.Run()
	})
	if buildErr != nil {
		t.Fatalf("building velocityd: %v", buildErr)
	}
	return p
}

// velocityCLIPath is velocity-cli beside velocityd (as cargo builds them), or $VELOCITY_CLI.
func velocityCLIPath(t testing.TB) string {
	if p := os.Getenv("VELOCITY_CLI"); p != "" {
		return p
	}
	p := filepath.Join(filepath.Dir(velocitydPath(t)), "velocity-cli")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("velocity-cli not found beside velocityd (%v); build it or set VELOCITY_CLI", err)
	}
	return p
}

// velocityd runs an administrative subcommand on a data directory and returns its output.
func velocityd(t testing.TB, dataDir, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(velocitydPath(t), append(args, "--data-dir", dataDir)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("velocityd %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type serverConfig struct {
	cores      int
	extra      []string
	port       int    // 0: a free one
	dataDir    string // "": a fresh one with alice and reader
	fsizeBytes int    // a file-size limit standing in for a full disk
}

type server struct {
	t          testing.TB
	dir        string
	dataDir    string
	knownHosts string
	port       int
	tls        bool
	log        string
	cmd        *exec.Cmd
	exited     chan struct{}
}

func startServer(t testing.TB, cfg serverConfig) *server {
	t.Helper()
	if cfg.cores == 0 {
		cfg.cores = 1
	}
	s := &server{t: t, dir: t.TempDir()}
	s.dataDir = cfg.dataDir
	if s.dataDir == "" {
		s.dataDir = filepath.Join(s.dir, "data")
		if err := os.Mkdir(s.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		velocityd(t, s.dataDir, password, "user", "add", "alice", "--role", "readwrite", "--password-stdin")
		velocityd(t, s.dataDir, roPassword, "user", "add", "reader", "--role", "readonly", "--password-stdin")
	}
	s.knownHosts = filepath.Join(s.dir, "known_hosts")
	s.log = filepath.Join(s.dir, "velocityd.log")
	s.tls = true
	for _, a := range cfg.extra {
		if a == "--plaintext" {
			s.tls = false
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.port = cfg.port
		if s.port == 0 {
			s.port = freePort(t)
		}
		args := append([]string{"--listen", fmt.Sprintf("127.0.0.1:%d", s.port), "--cores", strconv.Itoa(cfg.cores),
			"--data-dir", s.dataDir}, cfg.extra...)
		if cfg.fsizeBytes > 0 {
			// The shell's ulimit -f counts 512-byte blocks.
			script := fmt.Sprintf(`ulimit -f %d; exec "$0" "$@"`, cfg.fsizeBytes/512)
			s.cmd = exec.Command("sh", append([]string{"-c", script, velocitydPath(t)}, args...)...)
		} else {
			s.cmd = exec.Command(velocitydPath(t), args...)
		}
		logFile, err := os.Create(s.log)
		if err != nil {
			t.Fatal(err)
		}
		s.cmd.Stderr = logFile
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logFile.Close()
		s.exited = make(chan struct{})
		go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(s.cmd, s.exited)
		if s.waitUp(deadline) {
			break
		}
		if !time.Now().Before(deadline) {
			s.stop()
			log, _ := os.ReadFile(s.log)
			t.Fatalf("velocityd did not start:\n%s", log)
		}
		// It exited: the port was taken, or a start-up error. Try again.
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			log, _ := os.ReadFile(s.log)
			t.Logf("velocityd log (port %d):\n%s", s.port, log)
		}
	})
	return s
}

// waitUp waits until the server accepts connections (true), or has exited or the deadline has
// passed (false).
func (s *server) waitUp(deadline time.Time) bool {
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // in case a test left it stopped
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

func (s *server) signal(sig syscall.Signal) {
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}

// pause stops the server (SIGSTOP) and waits until every one of its threads is stopped: a
// signal is delivered asynchronously, and a thread running on another core could otherwise
// still answer a request sent right after it.
func (s *server) pause() {
	s.signal(syscall.SIGSTOP)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", s.cmd.Process.Pid))
		stopped := len(tasks) > 0
		for _, task := range tasks {
			stat, err := os.ReadFile(task)
			// The state follows the command name in parentheses: "pid (comm) S ...".
			if i := bytes.LastIndexByte(stat, ')'); err != nil || i < 0 || i+2 >= len(stat) || (stat[i+2] != 'T' && stat[i+2] != 't') {
				stopped = false
				break
			}
		}
		if stopped {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.t.Fatal("velocityd did not stop")
}

// options for this server: its transport, a known-hosts file of the test's own, new host
// accepted; edit may change any of it.
func (s *server) options(edit ...func(*Options)) Options {
	o := Options{Host: "127.0.0.1", Port: s.port, Plaintext: !s.tls, KnownHosts: s.knownHosts, AcceptNewHost: true}
	for _, e := range edit {
		e(&o)
	}
	return o
}

func (s *server) connect(ctx context.Context, edit ...func(*Options)) (*Conn, error) {
	return Connect(ctx, s.options(edit...))
}

func asAlice(o *Options) { o.User, o.Password = "alice", password }

// alice is a logged-in connection, closed when the test ends.
func (s *server) alice(ctx context.Context) *Conn {
	s.t.Helper()
	c, err := s.connect(ctx, asAlice)
	if err != nil {
		s.t.Fatalf("connect as alice: %v", err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

func bothTransports(t *testing.T, fn func(t *testing.T, extra []string)) {
	t.Run("tls", func(t *testing.T) { fn(t, nil) })
	t.Run("plaintext", func(t *testing.T) { fn(t, []string{"--plaintext"}) })
}
