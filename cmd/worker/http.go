package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// check is one dependency /healthz and /readyz report on.
type check struct {
	name string
	run  func(ctx context.Context) error
}

// lockCheck returns a check that takes and gives back a lock of this
// process's own, so that it fails when the engine cannot take locks (a
// Redis that refuses writes), not only when it cannot be read. For the
// file engine (dir not "") it first checks the lock directory: that it is
// still there, since files already open go on working after it is removed
// or renamed while other processes no longer see them, and that it takes
// new files, since the check's own lock file is rewritten in place and so
// goes on working in a directory that is immutable, read-only or full,
// where every new key fails. Concurrent checks take turns.
func lockCheck(locker lock.Locker, dir string) func(ctx context.Context) error {
	host, _ := os.Hostname()
	key := fmt.Sprintf("joblock-healthz-%s-%d", host, os.Getpid())
	turn := make(chan struct{}, 1)
	return func(ctx context.Context) error {
		select {
		case turn <- struct{}{}:
			defer func() { <-turn }()
		case <-ctx.Done():
			return ctx.Err()
		}
		if dir != "" {
			if err := checkLockDir(dir); err != nil {
				return err
			}
		}
		lease, err := locker.Obtain(ctx, key, 10*time.Second)
		if errors.Is(err, lock.ErrRestartGrace) {
			return nil // Redis answered: it restarted moments ago and holds new locks back for a while
		}
		if err != nil {
			return err
		}
		return locker.Release(ctx, lease)
	}
}

// checkLockDir checks that dir is still a directory and takes a new file:
// it creates one of its own (O_CREAT|O_EXCL, a name no lock file has),
// writes to it as a new lock does, and removes it.
func checkLockDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("lock directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("lock directory %s is no longer a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".healthz-probe-*")
	if err != nil {
		return fmt.Errorf("lock directory takes no new lock file: %w", err)
	}
	_, werr := f.WriteString("a health check's probe: new lock files can be written here\n")
	cerr := f.Close()
	rerr := os.Remove(f.Name())
	if err := errors.Join(werr, cerr, rerr); err != nil {
		return fmt.Errorf("lock directory takes no new lock file: %w", err)
	}
	return nil
}

// checkTimeout bounds each check, so that a health request answers well
// within a container healthcheck's timeout.
const checkTimeout = 2 * time.Second

// minAdminToken is the shortest admin token the worker accepts.
const minAdminToken = 16

// status serves the worker's HTTP endpoints.
type status struct {
	manager    *lock.Manager
	met        *metrics
	checks     []check
	adminToken string // "" : lock ids are never shown
	stopping   atomic.Bool
}

// handler serves /healthz (every check), /readyz (the checks, and 503
// from the moment shutdown starts), /metrics (Prometheus) and /locks
// (live locks as JSON; lock ids only to the admin token).
func (s *status) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		s.writeChecks(w, r.Context(), "")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		why := ""
		if s.stopping.Load() {
			why = "shutting down"
		}
		s.writeChecks(w, r.Context(), why)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.met.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /locks", s.locks)
	return mux
}

// healthReport is the JSON body of /healthz and /readyz.
type healthReport struct {
	// Status is "ok", "fail" (a check failed) or "shutting down".
	Status string `json:"status"`
	// Checks maps each check to "ok" or its error.
	Checks map[string]string `json:"checks"`
	// Failed names the failed checks.
	Failed []string `json:"failed,omitempty"`
}

// writeChecks runs every check at once and writes the report: 200 when
// all pass and notReady is "", else 503.
func (s *status) writeChecks(w http.ResponseWriter, ctx context.Context, notReady string) {
	rep := healthReport{Status: "ok", Checks: make(map[string]string, len(s.checks))}
	results := make([]error, len(s.checks))
	var wg sync.WaitGroup
	for i, c := range s.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			results[i] = c.run(cctx)
		}()
	}
	wg.Wait()
	for i, c := range s.checks {
		rep.Checks[c.name] = "ok"
		if results[i] != nil {
			rep.Checks[c.name] = results[i].Error()
			rep.Failed = append(rep.Failed, c.name)
			rep.Status = "fail"
		}
	}
	if notReady != "" {
		rep.Status = notReady
	}
	code := http.StatusOK
	if rep.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rep)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// lockView is what /locks shows of a live lock. LockID, which releases
// the lock, is only shown to a request with the admin token.
type lockView struct {
	Key        string    `json:"key"`
	Fence      uint64    `json:"fence"`
	PID        int       `json:"pid,omitempty"`
	Host       string    `json:"host,omitempty"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	TTLMillis  int64     `json:"ttl_ms"`
	// Limit is set on each slot of a key that admits several holders.
	Limit  int    `json:"limit,omitempty"`
	LockID string `json:"lock_id,omitempty"`
}

// locks lists the live locks. Without an Authorization header the lock
// ids are left out; with one, it must carry the configured admin token.
func (s *status) locks(w http.ResponseWriter, r *http.Request) {
	admin, err := s.admin(r)
	if err != nil {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	held := []lockView{}
	err = s.manager.Locker().Scan(ctx, func(rec lock.Record) bool {
		if rec.State == lock.Held {
			v := lockView{Key: rec.Key, Fence: rec.Fence, PID: rec.PID, Host: rec.Host,
				AcquiredAt: rec.AcquiredAt, ExpiresAt: rec.ExpiresAt, TTLMillis: rec.TTL.Milliseconds(), Limit: rec.Limit}
			if admin {
				v.LockID = rec.Token
			}
			held = append(held, v)
		}
		return true
	})
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "lock engine: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, held)
}

// admin says whether r carries the admin token. A request that presents a
// token that is not the configured one, or any token when none is
// configured, is refused rather than served without ids, so that a
// misconfigured client notices.
func (s *status) admin(r *http.Request) (bool, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return false, nil
	}
	if s.adminToken == "" {
		return false, errors.New("no admin token is configured (JOBLOCK_ADMIN_TOKEN): lock ids are never shown")
	}
	scheme, token, ok := strings.Cut(h, " ")
	// The scheme is case-insensitive (RFC 9110, section 11.1).
	if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(token), []byte(s.adminToken)) != 1 {
		return false, errors.New("admin token not accepted: send Authorization: Bearer <JOBLOCK_ADMIN_TOKEN>")
	}
	return true, nil
}

// healthcheck asks the worker serving HTTP at addr for /healthz, writes
// its answer to out and returns an error unless it is healthy: a
// container healthcheck without curl. An unspecified host (0.0.0.0, ::,
// none) means this host's loopback.
func healthcheck(ctx context.Context, addr string, out io.Writer) error {
	if addr == "" {
		return errors.New("-healthcheck: -http [JOBLOCK_HTTP] is empty: the worker serves no /healthz to ask")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-healthcheck: -http [JOBLOCK_HTTP] %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return fmt.Errorf("-healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(out, resp.Body); err != nil {
		return fmt.Errorf("-healthcheck: reading %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("-healthcheck: %s answered %s", url, resp.Status)
	}
	return nil
}
