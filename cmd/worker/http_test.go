package main_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fileWorkerEnv returns the environment of a worker on the file engine in
// a fresh directory, with asynq on srv.
func fileWorkerEnv(t *testing.T, srv *redistest.Server) (env []string, dir string) {
	dir = filepath.Join(t.TempDir(), "locks")
	cfg := engine.Config{Engine: engine.File, Dir: dir, RedisURL: srv.URL(), Prefix: srv.Prefix}
	return append(cfg.Env(), "JOBLOCK_ROLE=worker"), dir
}

func TestHealthSaysWhichFailed(t *testing.T) {
	srv := redistest.Start(t)
	env, dir := fileWorkerEnv(t, srv)
	w := startWorker(t, env)
	for _, path := range []string{"/healthz", "/readyz"} {
		code, h := w.health(t, path)
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, "ok", h.Status)
	}

	// The lock directory goes away: the lock engine fails, asynq's Redis
	// does not.
	require.NoError(t, os.Rename(dir, dir+".gone"))
	code, h := w.health(t, "/healthz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "fail", h.Status)
	assert.Equal(t, []string{"lock_engine"}, h.Failed)
	assert.Equal(t, "ok", h.Checks["asynq_broker"])
	assert.Contains(t, h.Checks["lock_engine"], dir, "the error names the directory")
	require.NoError(t, os.Rename(dir+".gone", dir))

	// Redis goes away: asynq's broker fails, the file engine does not.
	srv.Stop()
	code, h = w.health(t, "/healthz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, []string{"asynq_broker"}, h.Failed)
	assert.Equal(t, "ok", h.Checks["lock_engine"])
	assert.Contains(t, h.Checks["asynq_broker"], srv.Addr)
	code, h = w.health(t, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, []string{"asynq_broker"}, h.Failed)

	// A container healthcheck sees the same.
	out, stderr, exit := runWorker(t, nil, "-healthcheck", "-http", w.http)
	assert.Equal(t, 1, exit)
	assert.Contains(t, out, `"asynq_broker"`)
	assert.Contains(t, stderr, "503 Service Unavailable")

	srv.Restart(t)
	require.Eventually(t, func() bool { code, _ := w.health(t, "/healthz"); return code == http.StatusOK },
		30*time.Second, 50*time.Millisecond, "healthy again once Redis is back")
}

func TestReadyzTurnsUnreadyOnShutdown(t *testing.T) {
	srv := redistest.Start(t)
	env, _ := fileWorkerEnv(t, srv)
	w := startWorker(t, env)
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: srv.Addr})
	defer client.Close()
	// An export runs for a second, so shutdown waits for it.
	_, err := client.Enqueue(asynq.NewTask("export:user", []byte(`{"user_id": 7}`)))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(locks(t, w, "")) == 1 }, 10*time.Second, 10*time.Millisecond)

	require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	var h health
	require.Eventually(t, func() bool {
		var code int
		code, h = w.health(t, "/readyz")
		return code == http.StatusServiceUnavailable
	}, 5*time.Second, 5*time.Millisecond, "/readyz still ready after SIGTERM")
	assert.Equal(t, "shutting down", h.Status)
	assert.Empty(t, h.Failed, "unready because of the shutdown, not a failed check")
	<-w.exited
	require.NoError(t, w.cmd.Wait())
	assert.Contains(t, w.logs.String(), `msg=working task=export:user`, "the running export finished")
}

func TestHealthcheckMode(t *testing.T) {
	srv := redistest.Start(t)
	env, _ := fileWorkerEnv(t, srv)
	w := startWorker(t, env)
	_, port, err := net.SplitHostPort(w.http)
	require.NoError(t, err)
	free := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	tests := []struct {
		name     string
		env      []string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"healthy", nil, []string{"-http", w.http}, 0, `"status": "ok"`, ""},
		{"from the environment, any address", []string{"JOBLOCK_HTTP=0.0.0.0:" + port}, nil, 0, `"status": "ok"`, ""},
		{"nothing listening", nil, []string{"-http", free}, 1, "", "connection refused"},
		{"no HTTP", nil, []string{"-http", ""}, 1, "", "-http [JOBLOCK_HTTP] is empty"},
		{"other settings bad", unrelatedBadSettings, []string{"-http", w.http}, 0, `"status": "ok"`, ""},
		{"HTTP address bad", nil, []string{"-http", "notanaddr"}, 2, "", `-http [JOBLOCK_HTTP] "notanaddr": want HOST:PORT`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, code := runWorker(t, tt.env, append([]string{"-healthcheck"}, tt.args...)...)
			assert.Equal(t, tt.wantCode, code, stderr)
			assert.Contains(t, out, tt.wantOut)
			assert.Contains(t, stderr, tt.wantErr)
		})
	}
}

// unrelatedBadSettings are settings a worker refuses to start with, and
// that -healthcheck and -version do not use.
var unrelatedBadSettings = []string{"JOBLOCK_SCHEDULES=nightly=@daily", "JOBLOCK_CONCURRENCY=ten", "JOBLOCK_LEASE=15",
	"JOBLOCK_IN_CONTAINER=yes", "JOBLOCK_ENGINE=etcd", "JOBLOCK_REDIS_URL=redis://:pw#@h", "JOBLOCK_SCHEDULE_TZ=Mars/Olympus",
	"JOBLOCK_ADMIN_TOKEN=short", "JOBLOCK_REDIS_PASSWORD_FILE=/nope"}

// lockEntry is what /locks shows of a lock.
type lockEntry struct {
	Key       string    `json:"key"`
	Fence     uint64    `json:"fence"`
	PID       int       `json:"pid"`
	Host      string    `json:"host"`
	ExpiresAt time.Time `json:"expires_at"`
	TTLMillis int64     `json:"ttl_ms"`
	Limit     int       `json:"limit"`
	LockID    *string   `json:"lock_id"`
}

// locks GETs /locks (with an Authorization header unless auth is "") and
// decodes it; it requires 200.
func locks(t *testing.T, w *workerProc, auth string) []lockEntry {
	t.Helper()
	var headers []string
	if auth != "" {
		headers = append(headers, "Authorization: "+auth)
	}
	code, body := w.request(t, "/locks", headers...)
	require.Equal(t, http.StatusOK, code, body)
	var out []lockEntry
	require.NoError(t, json.Unmarshal([]byte(body), &out), body)
	return out
}

func TestLocksShowIDsOnlyToTheAdmin(t *testing.T) {
	srv := redistest.Start(t)
	const token = "0123456789abcdef0123456789abcdef"
	env, dir := fileWorkerEnv(t, srv)
	workers := map[string]*workerProc{
		"":    startWorker(t, env),
		token: startWorker(t, append(env, "JOBLOCK_ADMIN_TOKEN="+token)),
	}
	fl, err := filelock.New(dir)
	require.NoError(t, err)
	defer fl.Close()
	lease, err := fl.Obtain(context.Background(), "export-user-9", time.Minute)
	require.NoError(t, err)

	tests := []struct {
		name     string
		token    string // configured
		auth     string // sent
		wantCode int
		wantID   bool
	}{
		{"no token configured, none sent", "", "", http.StatusOK, false},
		{"no token configured, one sent", "", "Bearer " + token, http.StatusForbidden, false},
		{"token configured, none sent", token, "", http.StatusOK, false},
		{"token configured, wrong one sent", token, "Bearer " + token[1:] + "x", http.StatusForbidden, false},
		{"token configured, not as Bearer", token, token, http.StatusForbidden, false},
		{"token configured and sent", token, "Bearer " + token, http.StatusOK, true},
		{"token configured, scheme in lower case", token, "bearer " + token, http.StatusOK, true},
		{"token configured, empty one sent", token, "Bearer ", http.StatusForbidden, false},
		{"token configured, the token twice", token, "Bearer " + token + token, http.StatusForbidden, false},
		{"token configured, an overlong one sent", token, "Bearer " + strings.Repeat(token, 2000), http.StatusForbidden, false},
		{"token configured, a prefix of it sent", token, "Bearer " + token[:16], http.StatusForbidden, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var headers []string
			if tt.auth != "" {
				headers = append(headers, "Authorization: "+tt.auth)
			}
			code, body := workers[tt.token].request(t, "/locks", headers...)
			require.Equal(t, tt.wantCode, code, body)
			if !tt.wantID {
				assert.NotContains(t, body, lease.Token, "lock id shown")
			}
			if code != http.StatusOK {
				assert.NotContains(t, body, "export-user-9")
				return
			}
			var got []lockEntry
			require.NoError(t, json.Unmarshal([]byte(body), &got))
			require.Len(t, got, 1, body)
			assert.Equal(t, "export-user-9", got[0].Key)
			assert.Equal(t, lease.Fence, got[0].Fence)
			assert.Equal(t, os.Getpid(), got[0].PID, "the holder")
			assert.WithinDuration(t, lease.ExpiresAt, got[0].ExpiresAt, time.Second)
			if tt.wantID {
				require.NotNil(t, got[0].LockID, body)
				assert.Equal(t, lease.Token, *got[0].LockID)
			} else {
				assert.Nil(t, got[0].LockID, body)
			}
		})
	}
	for _, w := range workers {
		w.stop(t)
	}
}

// TestLocksShowEachSlot: a key taken with a limit shows in /locks as one
// entry per held slot, each with its holder and the limit.
func TestLocksShowEachSlot(t *testing.T) {
	srv := redistest.Start(t)
	env, dir := fileWorkerEnv(t, srv)
	w := startWorker(t, env)
	fl, err := filelock.New(dir)
	require.NoError(t, err)
	defer fl.Close()
	ctx := context.Background()
	fences := map[uint64]bool{}
	for range 2 {
		lease, err := fl.ObtainLimit(ctx, "import-acme", 3, time.Minute)
		require.NoError(t, err)
		fences[lease.Fence] = true
	}
	got := locks(t, w, "")
	require.Len(t, got, 2)
	for _, e := range got {
		assert.Equal(t, "import-acme", e.Key)
		assert.Equal(t, 3, e.Limit)
		assert.Equal(t, os.Getpid(), e.PID)
		assert.True(t, fences[e.Fence], "fence %d is not one of the slots'", e.Fence)
		delete(fences, e.Fence)
	}
	w.stop(t)
}
