package main

import (
	"io"
	"testing"
	"time"

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
