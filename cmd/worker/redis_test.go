package main_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startPair starts two workers on cfg's Redis engine and requires that
// they start cleanly and report healthy.
func startPair(t *testing.T, cfg engine.Config) []*workerProc {
	t.Helper()
	env := append(cfg.Env(), "JOBLOCK_ROLE=worker")
	ws := []*workerProc{startWorker(t, env), startWorker(t, env)}
	for _, w := range ws {
		requireCleanStart(t, w)
		code, h := w.health(t, "/healthz")
		require.Equal(t, http.StatusOK, code, "%+v", h)
	}
	return ws
}

func stopAll(t *testing.T, ws []*workerProc) {
	t.Helper()
	for _, w := range ws {
		w.stop(t)
	}
}

func TestTLS(t *testing.T) {
	srv := redistest.Start(t, redistest.WithTLS(), redistest.WithPassword("tls-test-pw"))
	pwFile := filepath.Join(t.TempDir(), "redis-password")
	require.NoError(t, os.WriteFile(pwFile, []byte("tls-test-pw\n"), 0o600))
	// asynq and the lock engine both reach this Redis only over TLS with
	// the CA and client certificate from the environment, and the
	// password from a file (the URL has none).
	cfg := engine.Config{Engine: engine.Redis, RedisURL: "rediss://" + srv.Addr + "/0", Prefix: srv.Prefix,
		RedisCA: srv.TLS.CA, RedisCert: srv.TLS.Cert, RedisKey: srv.TLS.Key, RedisPasswordFile: pwFile}
	ws := startPair(t, cfg)
	assert.Contains(t, ws[0].logs.String(), "rediss://"+srv.Addr)
	requireDeduplicated(t, asynqClient(t, cfg), ws, "product-tls", 20)
	stopAll(t, ws)
}

func TestRedisRefusalIsNotUnreachable(t *testing.T) {
	const pw = "refusal-test-pw"
	pwSrv := redistest.Start(t, redistest.WithPassword(pw))
	tlsSrv := redistest.Start(t, redistest.WithTLS())
	other := redistest.NewTLSFiles(t)
	refused := []string{"redis refused the credentials at redis://", "check the password"}
	handshake := []string{"redis TLS handshake failed with rediss://" + tlsSrv.Addr + "/0"}
	tests := []struct {
		name string
		cfg  engine.Config
		want []string
	}{
		{"wrong password", engine.Config{RedisURL: "redis://:wrong-pw@" + pwSrv.Addr + "/0"}, append(refused, "WRONGPASS")},
		{"wrong JOBLOCK_REDIS_PASSWORD", engine.Config{RedisURL: "redis://" + pwSrv.Addr + "/0", RedisPassword: "wrong-pw"}, append(refused, "WRONGPASS")},
		{"no password", engine.Config{RedisURL: "redis://" + pwSrv.Addr + "/0"}, append(refused, "NOAUTH")},
		{"wrong CA", engine.Config{RedisURL: tlsSrv.URL(), RedisCA: other.CA, RedisCert: tlsSrv.TLS.Cert, RedisKey: tlsSrv.TLS.Key},
			append(handshake, "certificate signed by unknown authority", "check -redis-ca [JOBLOCK_REDIS_CA]")},
		{"no client certificate", engine.Config{RedisURL: tlsSrv.URL(), RedisCA: tlsSrv.TLS.CA}, append(handshake, "-redis-cert / -redis-key")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Engine, tt.cfg.Dir = engine.File, t.TempDir()
			_, stderr, code := runWorker(t, tt.cfg.Env(), "-http", "")
			assert.Equal(t, 1, code, stderr)
			for _, w := range tt.want {
				assert.Contains(t, stderr, w)
			}
			assert.NotContains(t, stderr, "no Redis answered", "a server answered")
			assert.NotContains(t, stderr, "redis-server", "no advice to start a Redis")
		})
	}
}

// sentinelURL is the worker's URL for s.
func sentinelURL(s *redistest.Sentinel) string {
	return "redis-sentinel://:" + s.Password + "@" + strings.Join(s.Addrs, ",") + "/0?master_name=" + s.MasterName
}

func TestSentinelFailover(t *testing.T) {
	sen := redistest.StartSentinel(t, 1, redistest.WithPassword("sentinel-test-pw"))
	cfg := engine.Config{Engine: engine.Redis, RedisURL: sentinelURL(sen), Prefix: sen.Prefix}
	ws := startPair(t, cfg)
	client := asynqClient(t, cfg)
	requireDeduplicated(t, client, ws, "before-failover", 20)

	promoted := sen.Failover(t)
	// The same processes, no restart: the go-redis failover client follows
	// the Sentinels to the new master, for asynq and for the locks.
	for _, w := range ws {
		require.Eventually(t, func() bool { return strings.Contains(w.logs.String(), promoted) },
			30*time.Second, 50*time.Millisecond, "the worker never heard of the new master %s:\n%s", promoted, w.logs.String())
	}
	requireDeduplicated(t, client, ws, "after-failover", 20)
	for _, w := range ws {
		code, h := w.health(t, "/healthz")
		assert.Equal(t, http.StatusOK, code, "%+v", h)
	}
	stopAll(t, ws)
}

func TestCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	cfg := engine.Config{Engine: engine.Redis, RedisURL: "redis-cluster://" + strings.Join(cl.Addrs, ","), Prefix: "joblocktest:"}
	ws := startPair(t, cfg)
	requireDeduplicated(t, asynqClient(t, cfg), ws, "product-cluster", 20)
	stopAll(t, ws)
}
