package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/engine"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRestartGraceCoversTheLongestLease(t *testing.T) {
	tests := []struct {
		name    string
		env     string // JOBLOCK_RESTART_GRACE
		args    []string
		want    time.Duration
		wantErr string
	}{
		{name: "default", args: []string{"-role", "worker"}, want: 15 * time.Second},
		{name: "raised to a longer lease", args: []string{"-role", "worker", "-lease", "1m"}, want: time.Minute},
		{name: "short leases keep the default", args: []string{"-role", "worker", "-lease", "2s"}, want: 15 * time.Second},
		{name: "set to the longest lease", args: []string{"-role", "worker", "-lease", "2s", "-restart-grace", "3s"}, want: 3 * time.Second},
		{name: "set by the variable", env: "3s", args: []string{"-role", "worker", "-lease", "2s"}, want: 3 * time.Second},
		{name: "off", args: []string{"-restart-grace", "0"}, want: 0},
		{name: "shorter than a rule's lease", args: []string{"-role", "worker", "-lease", "2s", "-restart-grace", "2s"},
			wantErr: "-restart-grace [JOBLOCK_RESTART_GRACE] 2s is shorter than 3s, the lease of api:call tasks"},
		{name: "shorter than -lease", env: "20s", args: []string{"-role", "worker", "-lease", "30s"},
			wantErr: "-restart-grace [JOBLOCK_RESTART_GRACE] 20s is shorter than 30s, the lease of cache:regenerate tasks"},
		{name: "shorter than the cron jobs' lease", args: []string{"-role", "all", "-lease", "2s", "-restart-grace", "5s"},
			wantErr: "5s is shorter than 15s, the lease of the cron jobs: after a Redis restart a new lock could be granted while a holder from before still runs; use at least 15s (or 0 to disable it)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("JOBLOCK_RESTART_GRACE", tt.env)
			cfg, err := parseFlags(append([]string{"-engine", "redis"}, tt.args...), io.Discard)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.engine.RestartGrace)
		})
	}
}

// TestHTTPOnLoopbackByDefault: outside a container the HTTP listener is on
// 127.0.0.1 unless -http or JOBLOCK_HTTP says otherwise; the image sets
// JOBLOCK_HTTP itself (see Dockerfile).
func TestHTTPOnLoopbackByDefault(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "default", want: "127.0.0.1:8080"},
		{name: "in a container, JOBLOCK_HTTP unset", env: map[string]string{envContainer: "1"}, args: []string{"-engine", "redis"}, want: "127.0.0.1:8080"},
		{name: "JOBLOCK_HTTP", env: map[string]string{"JOBLOCK_HTTP": "0.0.0.0:9090"}, want: "0.0.0.0:9090"},
		{name: "-http", args: []string{"-http", "[::1]:9091"}, want: "[::1]:9091"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("JOBLOCK_HTTP", "")
			t.Setenv(envContainer, "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, err := parseFlags(tt.args, io.Discard)
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.httpAddr)
		})
	}
}

// TestLockRedisSharesTheClientOfOneURL: a -lock-redis-url that is
// -redis-url gets no client of its own.
func TestLockRedisSharesTheClientOfOneURL(t *testing.T) {
	const url = "redis://127.0.0.1:1/0"
	cfg := engine.Config{Engine: engine.Redis, RedisURL: url}
	rdb, err := cfg.RedisClient()
	require.NoError(t, err)
	defer rdb.Close()
	for _, lockURL := range []string{"", url} {
		cfg.LockRedisURL = lockURL
		got, err := lockRedis(context.Background(), cfg, rdb, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		assert.Same(t, rdb, got, "-lock-redis-url %q", lockURL)
	}
}
