// Package redistest gives tests a Redis: the one at REDIS_ADDR when set,
// else a redis-server found on PATH started on a free port for the test,
// else an in-process miniredis (logged as such). Set JOBLOCK_TEST_REDIS to
// "server" to forbid the miniredis fallback, as CI does.
package redistest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Kinds of Redis a Server can be.
const (
	KindExternal  = "REDIS_ADDR"
	KindServer    = "redis-server"
	KindMiniredis = "miniredis"
)

// Server is a Redis for one test.
type Server struct {
	Addr string
	Kind string
	// Prefix is a key prefix unique to this test; use it for every key.
	Prefix string
	// Password is the password the server requires (WithPassword), or "".
	Password string
	// TLS holds the client's certificate files when the server speaks
	// only TLS (WithTLS), else nil.
	TLS *TLSFiles

	err     error // from an Option
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	bin     string        // redis-server unless set
	dir     string
	port    int
	argsFor func(port int, dir string) []string
}

// Option configures a server Start starts.
type Option func(*Server)

// WithPassword makes the server require pw, and use pw when it replicates
// from a master.
func WithPassword(pw string) Option {
	return func(s *Server) {
		s.Password = pw
		s.extend("--requirepass", pw, "--masterauth", pw)
	}
}

// WithArgs adds args to the server's command line (say "--appendonly",
// "yes" for a server that keeps its data across Restart).
func WithArgs(args ...string) Option { return func(s *Server) { s.extend(args...) } }

// extend adds args to the server's command line.
func (s *Server) extend(args ...string) {
	prev := s.argsFor
	s.argsFor = func(port int, dir string) []string { return append(prev(port, dir), args...) }
}

// New returns a Redis for t as the package comment describes, stopped when
// t ends.
func New(t testing.TB) *Server {
	t.Helper()
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		return &Server{Addr: addr, Kind: KindExternal, Prefix: newPrefix()}
	}
	if _, err := exec.LookPath("redis-server"); err == nil {
		return Start(t)
	}
	if os.Getenv("JOBLOCK_TEST_REDIS") == "server" {
		t.Fatal("redistest: JOBLOCK_TEST_REDIS=server but no redis-server on PATH and no REDIS_ADDR")
	}
	m := miniredis.RunT(t)
	realTime(t, m)
	t.Logf("redistest: no REDIS_ADDR and no redis-server on PATH: using in-process miniredis at %s", m.Addr())
	return &Server{Addr: m.Addr(), Kind: KindMiniredis, Prefix: newPrefix()}
}

// newPrefix is a key prefix of a test's own.
func newPrefix() string { return "joblocktest:" + rand.Text()[:10] + ":" }

// newServer is a redis-server of t's own, not yet launched: in a directory
// of its own, with a key prefix of its own, on serverArgs.
func newServer(t testing.TB) *Server {
	return &Server{Kind: KindServer, dir: t.TempDir(), Prefix: newPrefix(), argsFor: serverArgs}
}

// RequireReal skips t, saying why, when s is the in-process miniredis
// fallback: its TTLs advance on a ticker rather than in real time, and
// asynq needs more of Redis than it emulates. CI forbids the fallback, so
// these tests always run there.
func (s *Server) RequireReal(t testing.TB, what string) {
	t.Helper()
	if s.Kind == KindMiniredis {
		t.Skipf("%s needs a real Redis (miniredis emulates TTLs and cannot host asynq): install redis-server or set REDIS_ADDR", what)
	}
}

// realTime makes miniredis expire keys as time passes, as Redis does; by
// itself it only expires them when told to fast-forward.
func realTime(t testing.TB, m *miniredis.Miniredis) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				m.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })
}

// Start starts a redis-server of the test's own on a free port, skipping
// the test if there is no redis-server binary, configured by opts. Use it
// where the test must stop or restart the server, or needs a password or
// TLS.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("JOBLOCK_TEST_REDIS") == "server" {
			t.Fatal("redistest: JOBLOCK_TEST_REDIS=server but no redis-server on PATH")
		}
		t.Skip("redistest: needs a real redis-server of the test's own (miniredis cannot stand in) and none is on PATH: install redis-server")
	}
	s := newServer(t)
	for _, o := range opts {
		o(s)
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
	s.launchFresh(t, func() { s.setPort(FreePort(t)) })
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) setPort(port int) {
	s.port = port
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// errPortTaken: the server could not listen on a port chosen for it,
// which another process took between the choice and the server's start.
var errPortTaken = errors.New("redistest: a port chosen for the server was taken before it started")

// launchRetries is how many times launchFresh chooses ports again.
const launchRetries = 5

// launchFresh launches the server on ports pick chooses (free when chosen:
// tests running beside this one may take them before the server listens),
// choosing again when one was taken.
func (s *Server) launchFresh(t testing.TB, pick func()) {
	t.Helper()
	for try := 1; ; try++ {
		pick()
		err := s.launch()
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || try == launchRetries {
			t.Fatal(err)
		}
	}
}

func serverArgs(port int, dir string) []string {
	return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--loglevel", "warning", "--logfile", filepath.Join(dir, "redis.log")}
}

func (s *Server) launch() error {
	bin := s.bin
	if bin == "" {
		bin = "redis-server"
	}
	cmd := exec.Command(bin, s.argsFor(s.port, s.dir)...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	if err := s.waitReady(); err != nil {
		s.Stop()
		return err
	}
	return nil
}

// options returns go-redis options for the server: its address, password
// and TLS settings.
func (s *Server) options() *redis.Options {
	opt := &redis.Options{Addr: s.Addr, Password: s.Password}
	if s.TLS != nil {
		opt.TLSConfig = s.TLS.clientConfig()
	}
	return opt
}

// waitReady waits until the server this Server started answers at its
// address: the process id it reports is the one started, so that another
// server that took the port is not mistaken for it.
func (s *Server) waitReady() error {
	opt := s.options()
	opt.MaxRetries = -1
	c := redis.NewClient(opt)
	defer c.Close()
	addr, dir, pid := s.Addr, s.dir, strconv.Itoa(s.cmd.Process.Pid)
	log := func() []byte {
		b, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
		return b
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-s.exited:
			if l := log(); bytes.Contains(l, []byte("Address already in use")) {
				return fmt.Errorf("%w: %s\n%s", errPortTaken, addr, l)
			}
			return fmt.Errorf("redistest: the server for %s exited at start:\n%s", addr, log())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := c.Info(ctx, "server").Result()
		cancel()
		if err == nil {
			if strings.Contains(info, "process_id:"+pid+"\r\n") {
				return nil
			}
			err = fmt.Errorf("another server (not pid %s) answers there", pid)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: redis-server at %s not ready: %v\n%s", addr, err, log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server this test started, if any, with SIGKILL: what it
// had not saved is gone.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart kills the server and starts it again on the same port and data
// directory: empty, unless the test had it SAVE a snapshot or gave it
// persistence, which it then loads.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if s.Kind != KindServer {
		t.Fatalf("redistest: Restart needs a server from Start, not %s", s.Kind)
	}
	s.Stop()
	if err := s.launch(); err != nil {
		t.Fatal(err)
	}
}

// Client returns a client for the server, closed when t ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(s.options())
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// URL returns the server's redis:// URL (rediss:// with TLS), password
// included, database 0.
func (s *Server) URL() string {
	scheme := "redis://"
	if s.TLS != nil {
		scheme = "rediss://"
	}
	auth := ""
	if s.Password != "" {
		auth = url.UserPassword("", s.Password).String() + "@"
	}
	return scheme + auth + s.Addr + "/0"
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
